"""The fast EM steps against a plain step-by-step loop with the same noise draws."""
import copy

import pytest
import torch

from zscrgan.config import Config
from zscrgan import reference
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


@pytest.fixture
def float64():
    """Normalised optimisers turn rounding-level gradient differences into lr-sized steps
    where a gradient is near zero, so the comparison runs in float64. (The critic's output
    bias has an exactly-zero gradient under L_D, so it moves by rounding noise only: ~1e-10.)"""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("recipe", ["original", "improved"])
def test_fast_round_matches_plain_loop(recipe, float64):
    fast, plain = tiny_trainer(recipe=recipe), tiny_trainer(recipe=recipe)
    start = copy.deepcopy(fast.model.state_dict())
    torch.manual_seed(1)
    fast.run_round()
    torch.manual_seed(1)
    reference.run_round(plain, plain.model, plain.optimizers)
    for name, p_fast in fast.model.named_parameters():
        p_plain = dict(plain.model.named_parameters())[name]
        torch.testing.assert_close(p_fast, p_plain, rtol=1e-9, atol=1e-9, msg=name)
        assert not torch.equal(p_fast, start[name]), f"{name} was not trained"


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
