"""Optimisers with TensorFlow 1 semantics, which the authors' code trained with.

PyTorch's RMSprop starts its mean-square accumulator at zero and adds epsilon outside
the square root; TF1's starts it at ONES and adds epsilon inside. In the first steps
that makes TF1's updates about lr * g (tiny), PyTorch's about lr * sign(g) / sqrt(1-alpha)
(large). Adam differs only in where epsilon sits. Both are written with foreach kernels.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer


def _with_state(optimizer: Optimizer, group: dict, init) -> tuple[list, list]:
    """The group's params that have a gradient, and their grads; ``init(p)`` fills new state."""
    params = [p for p in group["params"] if p.grad is not None]
    for p in params:
        if not optimizer.state[p]:
            optimizer.state[p].update(init(p))
    return params, [p.grad for p in params]


class TF1RMSProp(Optimizer):
    """ms <- decay*ms + (1-decay)*g^2 (ms starts at 1);  p <- p - lr * g / sqrt(ms + eps)."""

    def __init__(self, params, lr: float, decay: float = 0.9, eps: float = 1e-10):
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads = _with_state(self, group, lambda p: {"ms": torch.ones_like(p)})
            if not params:
                continue
            ms = [self.state[p]["ms"] for p in params]
            torch._foreach_mul_(ms, group["decay"])
            torch._foreach_addcmul_(ms, grads, grads, value=1.0 - group["decay"])
            denom = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])


class TF1Adam(Optimizer):
    """TF1 Adam: p <- p - lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)."""

    def __init__(self, params, lr: float, betas=(0.5, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads = _with_state(
                self, group, lambda p: {"m": torch.zeros_like(p), "v": torch.zeros_like(p), "step": 0})
            if not params:
                continue
            beta1, beta2 = group["betas"]
            m = [self.state[p]["m"] for p in params]
            v = [self.state[p]["v"] for p in params]
            step = self.state[params[0]]["step"] + 1
            for p in params:
                self.state[p]["step"] = step
            torch._foreach_lerp_(m, grads, 1.0 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1.0 - beta2)
            lr_t = group["lr"] * (1.0 - beta2**step) ** 0.5 / (1.0 - beta1**step)
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, m, denom, value=-lr_t)


def make_optimizers(model, cfg) -> dict[str, Optimizer]:
    """The three optimisers of a run: generator (+ encoder), critic, CSEM.

    ``cfg.optimizer == "tf1"`` gives the reference semantics; ``"torch"`` gives PyTorch's
    RMSprop / Adam with their default epsilons and zero-initialised state.
    """
    gen, critic, csem = model.generator_params(), list(model.critic.parameters()), list(model.csem.parameters())
    if cfg.optimizer == "tf1":
        return {
            "generator": TF1RMSProp(gen, lr=cfg.generator_lr),
            "critic": TF1RMSProp(critic, lr=cfg.discriminator_lr),
            "csem": TF1Adam(csem, lr=cfg.CSEM_lr, betas=(0.5, 0.999)),
        }
    if cfg.optimizer == "torch":
        return {
            "generator": torch.optim.RMSprop(gen, lr=cfg.generator_lr, alpha=0.9, foreach=True),
            "critic": torch.optim.RMSprop(critic, lr=cfg.discriminator_lr, alpha=0.9, foreach=True),
            "csem": torch.optim.Adam(csem, lr=cfg.CSEM_lr, betas=(0.5, 0.999), foreach=True),
        }
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose tf1 or torch")
