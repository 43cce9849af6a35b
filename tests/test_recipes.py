"""The recipes: what each one sets, and that improved no longer collapses at upstream's widths."""
import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from zscrgan.cli import main
from zscrgan.config import Config, check_config, choice_problems, parse_config
from zscrgan.recipes import RECIPES, TUNED_WIDTHS, recipe_warnings


def test_original_keeps_upstreams_values():
    cfg = Config().resolved()
    assert (cfg.CSEM_lr, cfg.kl_div_coefficient, cfg.mm_reg_coeff, cfg.clip_val, cfg.n_critic, cfg.m_steps) == \
           (0.002, 1.0, 2.0, 0.01, 5, 100)
    assert (cfg.generator_lr, cfg.discriminator_lr, cfg.optimizer) == (0.0002, 0.0002, "tf1")


def test_improved_rate_shrinks_with_the_generator_width():
    at = {w: Config(recipe="improved", gf_dim=w).resolved().generator_lr for w in (128, 256, 1024, 2048)}
    assert at[128] == at[256] == 0.003  # chosen at 256; never raised for narrower nets
    assert at[1024] == pytest.approx(0.0015) and at[2048] == pytest.approx(0.003 / 8 ** 0.5)


def test_tuned_clip_shrinks_with_the_critic_width():
    at = {w: Config(recipe="tuned", df_dim=w).resolved().clip_val for w in (128, 256, 1024)}
    assert at[128] == at[256] == 0.0519 and at[1024] == pytest.approx(0.0519 / 4)
    assert Config(recipe="tuned", df_dim=1024, clip_val=0.05).resolved().clip_val == 0.05  # a flag wins


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("widths", [{}, TUNED_WIDTHS], ids=["upstream widths", "tuned widths"])
def test_every_recipe_gives_a_complete_usable_config(recipe, widths):
    """No setting is left for the trainer to guess: a recipe fills every field a flag left at None,
    with values every command accepts."""
    cfg = Config(recipe=recipe, **widths).resolved()
    assert [f.name for f in fields(cfg) if getattr(cfg, f.name) is None] == []
    assert check_config(cfg) == [] and choice_problems(asdict(cfg)) == []


def test_a_flag_overrides_the_recipe():
    cfg = Config(recipe="tuned", m_steps=7, CSEM_lr=0.1).resolved()
    assert (cfg.m_steps, cfg.CSEM_lr) == (7, 0.1)


@pytest.mark.slow
def test_improved_at_upstreams_widths_does_not_collapse_on_flo(flo_dir, tmp_path):
    """At gf_dim 2048 the old fixed rate 0.003 killed the generator's ReLU output by round 2 (validation
    Prec@50 stuck at 1/16, every query ranking the gallery alike); the width-aware rate trains."""
    assert main(["train", "--dataset", str(flo_dir), "--recipe", "improved", "--epochs", "2", "--select", "val",
                 "--no-report", "--out_dir", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "ckt_logs" / "FLO_logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["collapsed"] for r in rows] == [False, False]
    assert rows[-1]["val"]["prec@50"] > 0.15, rows[-1]["val"]  # chance 1/16; measured 0.246, 0.256, 0.271 on seeds 0-2
    assert rows[-1]["collapse"]["val"]["ranking_overlap"] < 0.5


def test_tuned_warns_away_from_the_widths_it_was_measured_at(tmp_path, capsys):
    from helpers import TINY
    assert main(["train", "--recipe", "tuned", "--epochs", "1", *TINY, "--out_dir", str(tmp_path)]) == 0
    assert "warning: --recipe tuned was chosen at --gf_dim 256" in capsys.readouterr().out
    reduced = ["--gf_dim", "256", "--df_dim", "256", "--embed_dim", "256", "--z_dim", "64", "--e_steps", "2",
               "--m_steps", "2", "--n_critic", "1", "--no-report", "--epochs", "1"]
    assert main(["train", "--recipe", "tuned", *reduced, "--out_dir", str(tmp_path / "b")]) == 0
    assert "--recipe tuned was chosen" not in capsys.readouterr().out
    assert recipe_warnings(Config(recipe="tuned").resolved()) == []  # upstream's widths: measured too


@pytest.mark.parametrize("name", ["flo_cap.json", "flowers_cap.json"])
def test_shipped_config_files_give_the_settings_they_document(name):
    """examples/*.json are what docs/results.md says they are: `tuned` at 256/256/256/64, selected
    on validation classes; flo_cap.json with the 1,000 E-steps a round that pass the baselines."""
    path = Path(__file__).resolve().parents[1] / "examples" / name
    cfg = parse_config(["--config", str(path)])[0].resolved()
    assert check_config(cfg) == []
    assert (cfg.recipe, cfg.select, cfg.epochs, cfg.gf_dim, cfg.df_dim, cfg.embed_dim, cfg.z_dim) == \
        ("tuned", "val", 8, 256, 256, 256, 64)
    assert cfg.e_steps == (1000 if name == "flo_cap.json" else 100)
