"""Each loss against values computed by hand on a tiny case."""
import math

import pytest
import torch

from zscrgan.core.losses import critic_loss, csem_loss, kl_quirk, kl_standard, max_margin


def test_critic_loss_by_hand():
    d_fake, d_wrong, d_real = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0]), torch.tensor([4.0, 6.0])
    # (mean 2 + mean 1) / 2 - mean 5 = 1.5 - 5
    assert critic_loss(d_fake, d_wrong, d_real).item() == pytest.approx(-3.5)


def test_max_margin_unhinged_and_hinged_by_hand():
    x_hat = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])          # |.|_1 = 2, 2  -> mean 2
    x_w = torch.tensor([[1.0, 9.0], [0.0, 0.5]])        # |.|_1 = 7, 0.5 -> mean 3.75
    assert max_margin(x_hat, x, x_w).item() == pytest.approx(2 - 3.75 + 2)
    # per row: max(0, 2 - 7 + 2) = 0, max(0, 2 - 0.5 + 2) = 3.5 -> mean 1.75
    assert max_margin(x_hat, x, x_w, hinge=True).item() == pytest.approx(1.75)
    # margin 6: max(0, 2 - 7 + 6) = 1, max(0, 2 - 0.5 + 6) = 7.5 -> mean 4.25
    assert max_margin(x_hat, x, x_w, hinge=True, margin=6.0).item() == pytest.approx(4.25)
    # unhinged is unbounded below, hinged is not
    far = x_w * 100
    assert max_margin(x_hat, x, far).item() < -100
    assert max_margin(x_hat, x, far, hinge=True).item() == 0.0


def test_csem_loss_by_hand():
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    real = torch.tensor([[2.0, 0.0], [1.0, 1.0]])       # cos = 1, 1/sqrt2
    wrong = torch.tensor([[0.0, 3.0], [0.0, -1.0]])     # cos = 0, -1
    cos_r, cos_w = [1.0, 1 / math.sqrt(2)], [0.0, -1.0]
    quirk = math.log1p(math.exp(sum(cos_w) / 2 - sum(cos_r) / 2))
    per_row = sum(math.log1p(math.exp(w - r)) for w, r in zip(cos_w, cos_r)) / 2
    assert csem_loss(real, wrong, c).item() == pytest.approx(quirk, rel=1e-6)
    assert csem_loss(real, wrong, c, per_row=True).item() == pytest.approx(per_row, rel=1e-6)


def test_kl_quirk_by_hand():
    mu = torch.tensor([[0.5, -1.0]])
    ls = torch.tensor([[0.0, 0.2]])
    m = [(0.5 + 0.0) / 2, (-1.0 + 0.2) / 2]

    def f(a, s):
        return sum(-si + 0.5 * (-1 + math.exp(2 * si) + ai * ai) for ai, si in zip(a, s)) / len(a)

    expected = 0.5 * (f([0.5, -1.0], m) + f([0.0, 0.2], m))
    assert kl_quirk(mu, ls).item() == pytest.approx(expected, rel=1e-6)


def test_kl_standard_is_the_gaussian_kl():
    mu, ls = torch.tensor([[0.3, -0.7, 1.1]]), torch.tensor([[0.1, -0.4, 0.25]])
    p = torch.distributions.Normal(mu, ls.exp())
    q = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    assert kl_standard(mu, ls).item() == pytest.approx(torch.distributions.kl_divergence(p, q).mean().item(), rel=1e-6)
    assert kl_standard(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0
