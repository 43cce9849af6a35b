"""The fast EM steps against a plain step-by-step loop with the same noise draws."""
import copy

import pytest
import torch

from zscrgan.config import Config
from zscrgan.losses import critic_loss, csem_loss, kl_quirk, kl_standard, max_margin
from zscrgan.optim import make_optimizers
from zscrgan.synthetic import make_builtin_dataset
from zscrgan.trainer import EMTrainer


def tiny_config(**kw):
    base = dict(batch_size=6, gf_dim=16, df_dim=12, embed_dim=8, z_dim=4, e_steps=2, n_critic=3,
                m_steps=4, clip_val=0.05)
    return Config(**{**base, **kw}).resolved()


def tiny_trainer(**kw):
    data = make_builtin_dataset(n_seen=10, n_unseen=3, images_per_class=7, texts_per_class=2)
    torch.manual_seed(0)
    return EMTrainer(tiny_config(**kw), data, data.seen, "cpu")


def step(opt, loss, params):
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()


def reference_critic(model, opt, cfg, x, t, eps, z):
    k, b = x.shape[:2]
    params = list(model.critic.parameters())
    for j in range(k):
        rows = slice(j * b, (j + 1) * b)
        with torch.no_grad():
            x_hat = model.generate(t[j], eps[rows], z[rows])[0]
        xj, tj = x[j], t[j]
        loss = critic_loss(model.critic(x_hat, tj), model.critic(xj.roll(1, 0), tj), model.critic(xj, tj))
        step(opt, loss, params)
        with torch.no_grad():
            for p in params:
                p.clamp_(-cfg.clip_val, cfg.clip_val)


def reference_generator(model, opt, cfg, x, t, eps, z):
    b = len(x)
    t_w, x_w = t.roll(1, 0), x.roll(1, 0)
    x_hat, c, mu, ls = model.generate(t, eps[:b], z[:b])
    x_hat_w, _, mu_w, ls_w = model.generate(t_w, eps[b:], z[b:])  # encoder run on the wrong text itself
    kl = kl_standard if cfg.kl_standard else kl_quirk
    loss = (-model.critic(x_hat, t).mean()
            + csem_loss(model.csem(x_hat), model.csem(x_hat_w), c, cfg.csem_per_row)
            + cfg.mm_reg_coeff * max_margin(x_hat, x, x_w, cfg.mmr_hinge)
            + cfg.kl_div_coefficient * (kl(mu, ls) + kl(mu_w, ls_w)) / 2)
    step(opt, loss, model.generator_params())


def reference_csem(model, opt, cfg, t, eps, z):
    m, b = t.shape[:2]
    for j in range(m):
        right, wrong = slice(j * b, (j + 1) * b), slice((m + j) * b, (m + j + 1) * b)
        with torch.no_grad():
            x_hat, c, _, _ = model.generate(t[j], eps[right], z[right])
            x_hat_w = model.generate(t[j].roll(1, 0), eps[wrong], z[wrong])[0]
        loss = csem_loss(model.csem(x_hat), model.csem(x_hat_w), c, cfg.csem_per_row)
        step(opt, loss, list(model.csem.parameters()))


@pytest.mark.parametrize("recipe", ["original", "improved"])
def test_fast_steps_match_plain_loop(recipe):
    fast = tiny_trainer(recipe=recipe)
    cfg = fast.cfg
    model = copy.deepcopy(fast.model)
    opts = make_optimizers(model, cfg)
    torch.manual_seed(1)
    batches = fast.round_batches()
    img, txt = batches["images"], batches["texts"]
    b, per = cfg.batch_size, cfg.n_critic + 1
    for i in range(cfg.e_steps):
        crit, gen = slice(i * per, i * per + cfg.n_critic), i * per + cfg.n_critic
        noise_c = fast.draw_noise(cfg.n_critic * b)
        noise_g = fast.draw_noise(2 * b)
        fast.critic_steps(img[crit], txt[crit], noise_c)
        fast.generator_step(img[gen], txt[gen], noise_g)
        reference_critic(model, opts["critic"], cfg, fast.images[img[crit]], fast.texts[txt[crit]], *noise_c)
        reference_generator(model, opts["generator"], cfg, fast.images[img[gen]], fast.texts[txt[gen]], *noise_g)
    m_rows = txt[cfg.e_steps * per:]
    noise_m = fast.draw_noise(2 * m_rows.numel())
    fast.csem_steps(m_rows, noise_m)
    reference_csem(model, opts["csem"], cfg, fast.texts[m_rows], *noise_m)

    moved = 0
    for (name, p_fast), p_ref in zip(fast.model.named_parameters(), model.parameters()):
        torch.testing.assert_close(p_fast, p_ref, rtol=1e-4, atol=1e-6, msg=name)
        moved += int(not torch.equal(p_fast, copy.deepcopy(tiny_trainer(recipe=recipe).model).state_dict()[name]))
    assert moved == len(list(model.parameters()))  # every parameter was trained


def test_critic_is_clipped_and_round_reports_finite_losses():
    trainer = tiny_trainer()
    losses = trainer.run_round()
    assert set(losses) >= {"loss_critic", "loss_generator", "loss_csem", "loss_mmr", "loss_kl"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for p in trainer.model.critic.parameters():
        assert p.abs().max().item() <= trainer.cfg.clip_val + 1e-7


def test_run_round_is_reproducible_from_seed():
    a, b = tiny_trainer(), tiny_trainer()
    torch.manual_seed(5)
    la = a.run_round()
    torch.manual_seed(5)
    lb = b.run_round()
    assert la == lb
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
