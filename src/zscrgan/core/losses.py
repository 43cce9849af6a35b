"""The losses of ZSCRGAN (docs/algorithm.md, "The losses"), each with its quirk and its fix.

The ``original`` recipe uses the quirky forms; the flags select the fixed ones.
All reductions are means over the batch unless a docstring says otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MARGIN = 2.0  # the constant of the max-margin regulariser in the reference code


def critic_loss(d_fake: torch.Tensor, d_wrong: torch.Tensor, d_real: torch.Tensor) -> torch.Tensor:
    """L_D = (mean D(x_hat, t) + mean D(x_w, t)) / 2 - mean D(x, t)."""
    return (d_fake.mean() + d_wrong.mean()) / 2 - d_real.mean()


def max_margin(x_hat: torch.Tensor, x: torch.Tensor, x_wrong: torch.Tensor, hinge: bool = False,
               margin: float = MARGIN) -> torch.Tensor:
    """MMR = mean |x_hat - x|_1 - mean |x_hat - x_w|_1 + 2 (L1 summed over features).

    Quirk: no hinge, so it is unbounded below. ``hinge=True`` is the usual triplet form
    mean_b max(0, |x_hat - x|_1 - |x_hat - x_w|_1 + margin). Upstream's margin, 2, is tiny
    beside L1 distances summed over 1280 features, so ``margin`` is a hyperparameter here.
    """
    d_pos = (x_hat - x).abs().sum(1)
    d_neg = (x_hat - x_wrong).abs().sum(1)
    if hinge:
        return F.relu(d_pos - d_neg + margin).mean()
    return d_pos.mean() - d_neg.mean() + margin


def csem_loss(emb_real: torch.Tensor, emb_wrong: torch.Tensor, c: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """log(1 + exp(cos_w - cos_r)) with cos_r = cos(CSEM(x_hat), c), cos_w = cos(CSEM(x_hat_w), c).

    Quirk: softplus of the difference of batch means. ``per_row=True`` takes the mean of
    the per-row softplus instead.
    """
    cos_r = F.cosine_similarity(emb_real, c, dim=1)
    cos_w = F.cosine_similarity(emb_wrong, c, dim=1)
    if per_row:
        return F.softplus(cos_w - cos_r).mean()
    return F.softplus(cos_w.mean() - cos_r.mean())


def kl_quirk(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """The reference code's KL term (not a KL divergence).

    f(a, s) = mean(-s + 0.5 * (-1 + exp(2s) + a^2)), m = (mu + log_sigma) / 2,
    KL = (f(mu, m) + f(log_sigma, m)) / 2.
    """
    m = (mu + log_sigma) / 2

    def f(a, s):
        return (-s + 0.5 * (-1.0 + torch.exp(2.0 * s) + a * a)).mean()

    return 0.5 * (f(mu, m) + f(log_sigma, m))


def kl_standard(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), averaged over elements as StackGAN does."""
    return (-log_sigma + 0.5 * (-1.0 + torch.exp(2.0 * log_sigma) + mu * mu)).mean()
