"""The four networks of ZSCRGAN, as in the authors' code (docs/algorithm.md, "The four networks").

Every layer is initialised N(0, 0.02) with zero biases; LeakyReLU has slope 0.2.
Noise is never drawn inside a network: callers pass ``eps`` and ``z`` in, so a step is a
pure function of its inputs and a test can replay it with the same draws.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.2


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state_dict) that computes y^T = W x^T + b on the CPU.

    The batch then is the wide dimension of the products (forward W x^T, input gradient
    W^T g), which MKL splits between cores far better at this model's batch 32 to 160
    (measured in docs/performance.md, "Products with the batch as their wide dimension").
    The [out, batch] result is copied back to row-major
    [batch, out] (1 MB at batch 64), the layout the next product is fastest with.
    Other devices use F.linear.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        if self.bias is None:
            return torch.mm(self.weight, x.T).T.contiguous()
        return torch.addmm(self.bias.unsqueeze(1), self.weight, x.T).T.contiguous()


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases, the init of the reference code."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def truncated_normal(shape, rng: torch.Generator | None = None, device=None, bound: float = 2.0) -> torch.Tensor:
    """Standard normal truncated at +-bound (TF's truncated_normal), by inverse CDF.

    TF redraws values beyond the bound; sampling the truncated CDF gives the same law
    with one uniform draw per value.
    """
    cdf_lo = 0.5 * (1.0 + math.erf(-bound / math.sqrt(2.0)))
    u = torch.rand(shape, generator=rng, device=device)
    u = cdf_lo + (1.0 - 2.0 * cdf_lo) * u
    return (torch.erfinv(2.0 * u - 1.0) * math.sqrt(2.0)).clamp_(-bound, bound)


class TextEncoder(nn.Module):
    """Conditioning augmentation: text -> (mu, log_sigma); c = mu + exp(log_sigma) * eps."""

    def __init__(self, text_dim: int, embed_dim: int):
        super().__init__()
        self.fc = Linear(text_dim, 2 * embed_dim)
        self.embed_dim = embed_dim

    def stats(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.leaky_relu(self.fc(text), LEAK)
        return h[:, : self.embed_dim], h[:, self.embed_dim :]

    @staticmethod
    def sample(mu: torch.Tensor, log_sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(log_sigma) * eps


class Generator(nn.Module):
    """[c, z] -> gf_dim -> 2*gf_dim -> image_dim (ReLU): a representative image embedding.

    ``linear=True`` (``--generator_linear``) adds a linear map of the code beside the MLP,
    ReLU(MLP(c, z) + W c) with W starting at zero: with a few dozen training classes a linear
    text-to-image map generalises better than the MLP alone (docs/results.md).
    ``text_dim`` (``--ridge_path``) adds an affine map of the raw text, ReLU(MLP(c, z) + A t + b),
    which :meth:`ZSCRGAN.start_text_path` sets to a ridge regression fit.
    """

    def __init__(self, embed_dim: int, z_dim: int, gf_dim: int, image_dim: int, linear: bool = False,
                 text_dim: int = 0):
        super().__init__()
        self.fc1 = Linear(embed_dim + z_dim, gf_dim)
        self.fc2 = Linear(gf_dim, 2 * gf_dim)
        self.fc3 = Linear(2 * gf_dim, image_dim)
        self.skip = Linear(embed_dim, image_dim, bias=False) if linear else None
        self.text_path = Linear(text_dim, image_dim) if text_dim else None

    def forward(self, c: torch.Tensor, z: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        h = F.leaky_relu(self.fc1(torch.cat([c, z], dim=1)), LEAK)
        h = F.leaky_relu(self.fc2(h), LEAK)
        out = self.fc3(h)
        if self.skip is not None:
            out = out + self.skip(c)
        if self.text_path is not None:
            out = out + self.text_path(text)
        return F.relu(out)


class Critic(nn.Module):
    """WGAN critic on [image feature, raw text vector] (conditioned on t, not on c).

    Its first layer, Linear([x, t]), is held as an image half (with the bias) and a text
    half: the same function and parameters, but a step that scores several image batches
    against one text batch computes the text half once and needs no slicing of a weight.
    """

    def __init__(self, image_dim: int, text_dim: int, df_dim: int):
        super().__init__()
        self.fc_image = Linear(image_dim, df_dim)
        self.fc_text = Linear(text_dim, df_dim, bias=False)
        self.fc2 = Linear(df_dim, 1)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(self.fc_image(image) + self.fc_text(text), LEAK)).squeeze(1)

    def score_shared_text(self, images: list[torch.Tensor], text: torch.Tensor) -> list[torch.Tensor]:
        """D(x_k, t) for several image batches that share one text batch, in one product."""
        text_part = self.fc_text(text)
        h = self.fc_image(torch.cat(images)).view(len(images), *text_part.shape) + text_part
        return list(self.fc2(F.leaky_relu(h, LEAK)).squeeze(-1).unbind(0))


class CSEM(nn.Module):
    """Common space embedding mapper: image feature (real or generated) -> embed_dim."""

    def __init__(self, image_dim: int, embed_dim: int):
        super().__init__()
        self.fc = Linear(image_dim, embed_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.fc(image), LEAK)


class ZSCRGAN(nn.Module):
    """The four networks together, built from the data dims and the hyperparameters."""

    def __init__(self, text_dim: int, image_dim: int, embed_dim: int, z_dim: int, gf_dim: int, df_dim: int,
                 generator_linear: bool = False, ridge_path: bool = False):
        super().__init__()
        self.encoder = TextEncoder(text_dim, embed_dim)
        self.generator = Generator(embed_dim, z_dim, gf_dim, image_dim, generator_linear, text_dim if ridge_path else 0)
        self.critic = Critic(image_dim, text_dim, df_dim)
        self.csem = CSEM(image_dim, embed_dim)
        self.z_dim = z_dim
        init_weights(self)
        if generator_linear:  # starts as upstream's generator; training grows the linear part
            nn.init.zeros_(self.generator.skip.weight)

    @torch.no_grad()
    def start_text_path(self, text_mean: torch.Tensor, text_map: torch.Tensor, image_mean: torch.Tensor) -> None:
        """Set the text path to the affine map t -> (t - text_mean) @ text_map + image_mean (a ridge fit)."""
        path = self.generator.text_path
        path.weight.copy_(text_map.T)
        path.bias.copy_(image_mean - text_mean @ text_map)

    def generator_params(self) -> list[nn.Parameter]:
        """What the E-step's generator update trains: text encoder + generator."""
        return list(self.encoder.parameters()) + list(self.generator.parameters())

    def generate(self, text: torch.Tensor, eps: torch.Tensor, z: torch.Tensor):
        """t -> (x_hat, c, mu, log_sigma) for given noise draws."""
        mu, log_sigma = self.encoder.stats(text)
        c = self.encoder.sample(mu, log_sigma, eps)
        return self.generator(c, z, text), c, mu, log_sigma
