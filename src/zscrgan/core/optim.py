"""RMSProp and Adam with TensorFlow 1 semantics (the authors' code) or PyTorch's.

PyTorch's RMSprop starts its mean-square accumulator at zero and adds epsilon outside
the square root; TF1's starts it at ONES and adds epsilon inside. In the first steps
that makes TF1's updates about lr * g (tiny), PyTorch's about lr * sign(g) / sqrt(1-alpha)
(large). Adam differs only in where epsilon sits. ``tf1=False`` reproduces
torch.optim.RMSprop / Adam (tests/core/test_optim.py checks it against them).

The arithmetic lives in two pure functions over lists of tensors, so that
``compile=True`` can hand them to torch.compile: one fused pass over parameters,
gradients and state instead of one pass per operation. On the CPU that made the
generator's update of 18.4M parameters 8 ms instead of 31 (docs/performance.md); it
costs about 30 s of compilation once per process and needs a C++ compiler.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer


def rmsprop_update(params, grads, mean_squares, lr: float, decay: float, eps: float, tf1: bool,
                   clip: float) -> None:
    for p, g, ms in zip(params, grads, mean_squares):
        ms.mul_(decay).addcmul_(g, g, value=1.0 - decay)
        denom = (ms + eps).sqrt() if tf1 else ms.sqrt().add_(eps)
        p.addcdiv_(g, denom, value=-lr)
        if clip > 0:
            p.clamp_(-clip, clip)


def adam_update(params, grads, firsts, seconds, step_size, bc2_sqrt, beta1: float, beta2: float, eps: float) -> None:
    """p <- p - step_size * m / (sqrt(v) / bc2_sqrt + eps), in torch.optim.Adam's order of
    operations (so eager results equal its bit for bit). Compiled, the step-dependent
    ``step_size`` and ``bc2_sqrt`` come in as 0-d tensors, so that a new step does not
    recompile; the update then rounds differently in the last bit."""
    for p, g, m, v in zip(params, grads, firsts, seconds):
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        if isinstance(step_size, torch.Tensor):
            p.sub_(step_size * m / denom)
        else:
            p.addcdiv_(m, denom, value=-step_size)


class _ListOptimizer(Optimizer):
    """Collects a group's params with gradients and their state lists, filling new state."""

    def __init__(self, params, defaults: dict, update, compile: bool):
        super().__init__(params, defaults)
        self._compiled = compile
        self._update = torch.compile(update, dynamic=False) if compile else update

    def _lists(self, group: dict, init: dict) -> tuple[list, list, dict]:
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if not self.state[p]:
                self.state[p].update({k: (make(p) if callable(make) else make) for k, make in init.items()})
        return params, [p.grad for p in params], {k: [self.state[p][k] for p in params] for k in init}


class RMSProp(_ListOptimizer):
    """ms <- decay*ms + (1-decay)*g^2;  p <- p - lr * g / sqrt(ms + eps)  (tf1: ms starts at 1)
    or p <- p - lr * g / (sqrt(ms) + eps)  (tf1=False, torch.optim.RMSprop: ms starts at 0);
    then, with ``clip`` > 0, p <- clamp(p, -clip, clip) (the WGAN critic's weight clipping)."""

    def __init__(self, params, lr: float, decay: float = 0.9, eps: float | None = None, tf1: bool = True,
                 clip: float = 0.0, compile: bool = False):
        eps = (1e-10 if tf1 else 1e-8) if eps is None else eps
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps, tf1=tf1, clip=clip), rmsprop_update, compile)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            start = torch.ones_like if group["tf1"] else torch.zeros_like
            params, grads, state = self._lists(group, {"ms": start})
            if params:
                self._update(params, grads, state["ms"], group["lr"], group["decay"], group["eps"], group["tf1"],
                             group["clip"])


class Adam(_ListOptimizer):
    """TF1: p <- p - lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps);
    tf1=False (torch.optim.Adam): p <- p - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)."""

    def __init__(self, params, lr: float, betas=(0.5, 0.999), eps: float = 1e-8, tf1: bool = True,
                 compile: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, tf1=tf1), adam_update, compile)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads, state = self._lists(group, {"m": torch.zeros_like, "v": torch.zeros_like, "step": 0})
            if not params:
                continue
            step = state["step"][0] + 1
            for p in params:
                self.state[p]["step"] = step
            beta1, beta2 = group["betas"]
            bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
            # TF1 folds sqrt(bc2) into the step size, torch divides sqrt(v) by it: eps differs
            step_size, bc2_sqrt = (group["lr"] * bc2**0.5 / bc1, 1.0) if group["tf1"] else (group["lr"] / bc1, bc2**0.5)
            if self._compiled:
                step_size, bc2_sqrt = (torch.tensor(x, dtype=params[0].dtype, device=params[0].device)
                                       for x in (step_size, bc2_sqrt))
            self._update(params, grads, state["m"], state["v"], step_size, bc2_sqrt, beta1, beta2, group["eps"])


def make_optimizers(model, cfg) -> dict[str, Optimizer]:
    """The three optimisers of a run: generator (+ encoder), critic, CSEM.

    ``cfg.optimizer == "tf1"`` gives the reference semantics; ``"torch"`` gives PyTorch's
    RMSprop / Adam with their default epsilons and zero-initialised state.
    """
    if cfg.optimizer not in ("tf1", "torch"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose tf1 or torch")
    tf1, compile = cfg.optimizer == "tf1", cfg.compile
    return {
        "generator": RMSProp(model.generator_params(), lr=cfg.generator_lr, tf1=tf1, compile=compile),
        "critic": RMSProp(list(model.critic.parameters()), lr=cfg.discriminator_lr, tf1=tf1, clip=cfg.clip_val,
                          compile=compile),
        "csem": Adam(list(model.csem.parameters()), lr=cfg.CSEM_lr, betas=(0.5, 0.999), tf1=tf1, compile=compile),
    }
