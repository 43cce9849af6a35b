"""The fast EM steps against a plain step-by-step loop with the same noise draws."""
import copy
import resource
import sys

import numpy as np
import pytest
import reference
import torch
from helpers import caption_data, tied_captions_set

from zscrgan.config import Config
from zscrgan.data.synthetic import make_builtin_dataset
from zscrgan.experiments import trainer as trainer_module
from zscrgan.experiments.trainer import EMTrainer, retain_freed_memory


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


@pytest.mark.parametrize("switches", [dict(recipe="original"), dict(recipe="improved"),
                                      dict(recipe="improved", csem_real=True),
                                      dict(recipe="tuned", generator_linear=True),
                                      dict(recipe="tuned", ridge_path=True)])
def test_fast_round_matches_plain_loop(switches, float64):
    fast, plain = tiny_trainer(**switches), tiny_trainer(**switches)
    start = copy.deepcopy(fast.model.state_dict())
    torch.manual_seed(1)
    fast.run_round()
    torch.manual_seed(1)
    reference.run_round(plain, plain.model, plain.optimizers)
    for name, p_fast in fast.model.named_parameters():
        p_plain = dict(plain.model.named_parameters())[name]
        torch.testing.assert_close(p_fast, p_plain, rtol=1e-9, atol=1e-9, msg=name)
        assert not torch.equal(p_fast, start[name]), f"{name} was not trained"


def test_ridge_path_starts_at_the_ridge_fit_chosen_on_validation_classes():
    """--ridge_path: with the MLP's last layer zeroed, the generator is exactly ReLU(ridge's
    prediction + the training images' mean), lambda being the one validation chose."""
    from zscrgan.evaluation.baselines import fit_baseline

    data = make_builtin_dataset(n_seen=10, n_unseen=3, images_per_class=7, texts_per_class=2)
    train, val = data.seen[:7], data.seen[7:]
    torch.manual_seed(0)
    trainer = EMTrainer(tiny_config(recipe="tuned", ridge_path=True), data, train, "cpu", val)
    ridge = fit_baseline("ridge", data, train, val, seed=0)
    model = trainer.model
    with torch.no_grad():
        model.generator.fc3.weight.zero_()
        text = torch.from_numpy(data.stacked_texts(data.unseen)[0])
        c, z = torch.randn(len(text), 8), torch.randn(len(text), 4)
        expected = torch.relu((text - ridge.text_mean) @ ridge.text_map + ridge.image_mean)
        torch.testing.assert_close(model.generator(c, z, text), expected)
    assert any(p is model.generator.text_path.weight for p in model.generator_params())


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_building_a_trainer_leaves_the_process_malloc_settings_alone(monkeypatch):
    """retain_freed_memory changes the whole process: only the training command calls it. Every
    mallopt call is recorded (none made yet in this process, as far as the trainer knows)."""
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append(param)
            return 1

    monkeypatch.setattr(trainer_module, "_retained", False)
    monkeypatch.setattr(trainer_module.ctypes, "CDLL", lambda name: Libc())
    data = make_builtin_dataset()
    trainer = EMTrainer(Config(gf_dim=32, df_dim=32, embed_dim=16, z_dim=8).resolved(), data, data.seen, "cpu")
    trainer.run_round()
    assert calls == []
    assert retain_freed_memory() is True and calls == [-4, -1, -2]  # what a call would have left behind


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_generator_steps_reuse_freed_memory_instead_of_page_faulting():
    """Each step's fresh gradients land in memory the last step freed, not in new pages
    (what it was without: docs/performance.md, "Freed memory is kept for reuse")."""
    data = make_builtin_dataset()
    cfg = Config(gf_dim=2048, df_dim=64, embed_dim=256, z_dim=32).resolved()
    trainer = EMTrainer(cfg, data, data.seen, "cpu")
    assert retain_freed_memory() is True
    grad_pages = sum(p.numel() for p in trainer._gen_params) * 4 // 4096
    rows = trainer.round_batches()
    for i in range(8):
        if i == 3:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        trainer.generator_step(rows["images"][i], rows["texts"][i], trainer.draw_noise(2 * cfg.batch_size))
    per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    assert per_step < grad_pages / 2, f"{per_step:.0f} page faults per step; the gradients are {grad_pages} pages"


def test_original_trains_on_each_class_s_first_caption_only():
    data = caption_data()
    tiny = dict(gf_dim=8, df_dim=8, embed_dim=4, z_dim=2, e_steps=2, m_steps=2, batch_size=4)
    for recipe, first_only in (("original", True), ("improved", False)):
        trainer = EMTrainer(Config(recipe=recipe, **tiny).resolved(), data, data.seen, "cpu")
        rows = trainer.round_batches()["texts"].reshape(-1)
        firsts = set(trainer.sampler.text_offsets.tolist())
        assert set(rows.tolist()) <= firsts if first_only else not set(rows.tolist()) <= firsts


@pytest.mark.parametrize("recipe", ["original", "tuned"])  # original: the first text of a class, unless own captions
def test_the_e_step_trains_on_each_photos_own_captions(recipe):
    data = tied_captions_set(tied=True, n_seen=6, n_unseen=2)
    cfg = Config(recipe=recipe, own_captions=True, gf_dim=32, df_dim=32, embed_dim=16, z_dim=8, batch_size=8,
                 e_steps=2, m_steps=2, n_critic=1).resolved()
    trainer = EMTrainer(cfg, data, data.seen, "cpu")
    rows = trainer.round_batches()
    ties = np.concatenate([data.text_photos[c] + sum(len(data.images[k]) for k in data.seen[:i])
                           for i, c in enumerate(data.seen)])  # each text's global image row
    assert torch.equal(torch.from_numpy(ties)[rows["texts"]], rows["images"])
