"""A plain, step-by-step EM round: the executable specification of trainer.EMTrainer.

Each step is written the obvious way: one generator forward per critic step, three
separate critic calls, the encoder run on the wrong text itself. It consumes noise laid
out exactly as the fast trainer draws it, so tests/experiments/test_trainer.py can demand equal
parameters. A test oracle, so it lives with the tests, not in the model package.
"""
from __future__ import annotations

import torch

from zscrgan.core.losses import critic_loss, csem_loss, kl_quirk, kl_standard, max_margin


def _step(optimizer, loss, params) -> None:
    for p, g in zip(params, torch.autograd.grad(loss, params)):
        p.grad = g
    optimizer.step()


def critic_steps(model, optimizer, cfg, x, t, eps, z) -> None:
    """x, t: [k, B, .]; eps, z: [k*B, .] (step-major)."""
    k, b = x.shape[:2]
    params = list(model.critic.parameters())
    for j in range(k):
        rows = slice(j * b, (j + 1) * b)
        with torch.no_grad():
            x_hat = model.generate(t[j], eps[rows], z[rows])[0]
        loss = critic_loss(model.critic(x_hat, t[j]), model.critic(x[j].roll(1, 0), t[j]), model.critic(x[j], t[j]))
        _step(optimizer, loss, params)
        # The critic's optimiser clips already (make_optimizers); clipping here again is a no-op
        # when it does, and makes tests/experiments/test_trainer.py fail when it does not.
        if cfg.clip_val > 0:
            with torch.no_grad():
                for p in params:
                    p.clamp_(-cfg.clip_val, cfg.clip_val)


def generator_step(model, optimizer, cfg, x, t, eps, z) -> None:
    """x, t: [B, .]; eps, z: [2B, .] (right rows, then wrong rows)."""
    b = len(x)
    t_w, x_w = t.roll(1, 0), x.roll(1, 0)
    x_hat, c, mu, ls = model.generate(t, eps[:b], z[:b])
    x_hat_w, _, mu_w, ls_w = model.generate(t_w, eps[b:], z[b:])
    kl = kl_standard if cfg.kl_standard else kl_quirk
    loss = (-model.critic(x_hat, t).mean()
            + csem_loss(model.csem(x_hat), model.csem(x_hat_w), c, cfg.csem_per_row)
            + cfg.mm_reg_coeff * max_margin(x_hat, x, x_w, cfg.mmr_hinge, cfg.mmr_margin)
            + cfg.kl_div_coefficient * (kl(mu, ls) + kl(mu_w, ls_w)) / 2)
    _step(optimizer, loss, model.generator_params())


def csem_steps(model, optimizer, cfg, t, eps, z, x) -> None:
    """t, x: [m, B, .]; eps, z: [2*m*B, .] (all right rows step-major, then all wrong rows)."""
    m, b = t.shape[:2]
    for j in range(m):
        right, wrong = slice(j * b, (j + 1) * b), slice((m + j) * b, (m + j + 1) * b)
        with torch.no_grad():
            x_hat, c, _, _ = model.generate(t[j], eps[right], z[right])
            x_hat_w = model.generate(t[j].roll(1, 0), eps[wrong], z[wrong])[0]
        loss = csem_loss(model.csem(x_hat), model.csem(x_hat_w), c, cfg.csem_per_row)
        if cfg.csem_real:  # the real images too, towards their class's code
            loss = loss + csem_loss(model.csem(x[j]), model.csem(x[j].roll(1, 0)), c, cfg.csem_per_row)
        _step(optimizer, loss, list(model.csem.parameters()))


def run_round(trainer, model, optimizers) -> None:
    """One round of the plain loop on ``trainer``'s data, batches and noise source."""
    cfg, b, per = trainer.cfg, trainer.cfg.batch_size, trainer.cfg.n_critic + 1
    batches = trainer.round_batches()
    img, txt = batches["images"], batches["texts"]
    for i in range(cfg.e_steps):
        crit, gen = slice(i * per, i * per + cfg.n_critic), i * per + cfg.n_critic
        critic_steps(model, optimizers["critic"], cfg, trainer.images[img[crit]], trainer.texts[txt[crit]],
                     *trainer.draw_noise(cfg.n_critic * b))
        generator_step(model, optimizers["generator"], cfg, trainer.images[img[gen]], trainer.texts[txt[gen]],
                       *trainer.draw_noise(2 * b))
    m_rows = txt[cfg.e_steps * per:]
    csem_steps(model, optimizers["csem"], cfg, trainer.texts[m_rows], *trainer.draw_noise(2 * m_rows.numel()),
               trainer.images[img[cfg.e_steps * per:]])
