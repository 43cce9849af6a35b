"""Round selection, early stopping, collapse detection and --config, unit by unit and end to end."""
import json
import math

import pytest
import torch
from helpers import TINY, read_jsonl

from zscrgan.cli import main
from zscrgan.evaluation.metrics import collapse_stats, is_collapsed
from zscrgan.errors import UserError
from zscrgan.evaluation.selection import Selector, check_select_k


def rec(round_, val=None, test=None, collapsed=False, k=10):
    r = {"round": round_, "collapsed": collapsed}
    if val is not None:
        r["val"] = {f"prec@{k}": val}
    if test is not None:
        r["test"] = {f"prec@{k}": test}
    return r


# ---- Selector --------------------------------------------------------------------------------

def test_val_policy_keeps_the_best_validation_round_and_the_best_test_round_apart():
    sel = Selector("val", k=10)
    news = [sel.update(rec(r, v, t)) for r, v, t in [(1, 0.2, 0.5), (2, 0.4, 0.1), (3, 0.3, 0.9)]]
    assert news == [True, True, False]
    assert (sel.round, sel.score) == (2, 0.4)
    assert (sel.test_round, sel.test_score) == (3, 0.9)


def test_a_collapsed_round_is_never_chosen_over_a_sound_one():
    sel = Selector("val", k=10)
    sel.update(rec(1, 0.9, collapsed=True))  # chosen: nothing else yet
    assert sel.round == 1 and sel.collapsed
    assert sel.update(rec(2, 0.1))  # sound beats collapsed, though its figure is lower
    assert not sel.update(rec(3, 0.95, collapsed=True))
    assert (sel.round, sel.score, sel.collapsed) == (2, 0.1, False)


def test_last_policy_stores_no_score_and_always_takes_the_newest_round():
    sel = Selector("last")
    for r in (1, 2, 3):
        assert sel.update(rec(r, test=0.5))
    assert sel.round == 3 and sel.score is None and sel.describe() == "round 3"


def test_patience_stops_after_that_many_rounds_without_a_new_best():
    sel = Selector("val", k=10, patience=2)
    stops = []
    for r, v in enumerate([0.1, 0.3, 0.2, 0.3, 0.5, 0.4], start=1):
        sel.update(rec(r, v))
        stops.append(sel.should_stop())
    # round 3 and 4 bring nothing better than 0.3 (ties do not count): stop after round 4
    assert stops == [False, False, False, True, False, False]


def test_selector_state_round_trips():
    sel = Selector("val", k=10, patience=3)
    for r, v in enumerate([0.1, 0.3, 0.2], start=1):
        sel.update(rec(r, v, v / 2))
    other = Selector("val", k=10, patience=3)
    other.load_state_dict(sel.state_dict())
    assert other.state_dict() == sel.state_dict()


# ---- collapse statistics ---------------------------------------------------------------------

def brute_force_overlap(labels, topk, k):
    shared, pairs = 0, 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] != labels[j]:
                shared += len(set(topk[i][:k]) & set(topk[j][:k]))
                pairs += 1
    return shared / (pairs * k)


def test_ranking_overlap_matches_a_brute_force_count():
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    topk = torch.stack([torch.randperm(9, generator=gen)[:4] for _ in labels])
    stats = collapse_stats(torch.randn(6, 5, generator=gen), labels, topk, 3)
    assert stats["ranking_overlap"] == pytest.approx(brute_force_overlap(labels.tolist(), topk.tolist(), 3))


def test_query_spread_is_the_mean_pairwise_cosine_distance():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    cos = [0.0, math.sqrt(0.5), math.sqrt(0.5)]  # pairs (0,1), (0,2), (1,2)
    stats = collapse_stats(q, torch.tensor([0, 1, 2]), torch.zeros(3, 1, dtype=torch.long), 1)
    assert stats["query_spread"] == pytest.approx(1 - sum(cos) / 3)


def test_identical_queries_are_collapsed_and_distinct_ones_are_not():
    labels = torch.tensor([0, 1, 2])
    same = collapse_stats(torch.ones(3, 4), labels, torch.tensor([[0, 1], [0, 1], [0, 1]]), 2)
    assert same == {"ranking_overlap": 1.0, "query_spread": 0.0} and is_collapsed(same)
    apart = collapse_stats(torch.eye(3), labels, torch.tensor([[0, 1], [2, 3], [4, 5]]), 2)
    assert apart["ranking_overlap"] == 0.0 and not is_collapsed(apart)
    assert collapse_stats(torch.ones(2, 4), torch.tensor([0, 0]), torch.zeros(2, 1, dtype=torch.long), 1)[
        "ranking_overlap"] is None  # one class: no pair of different classes


# ---- end to end ------------------------------------------------------------------------------

def test_an_unconstrained_critic_collapses_the_generator_and_the_run_says_so(tmp_path, capsys):
    """No weight clipping, no max-margin pull, a fast critic: the generator's ReLU output dies."""
    unstable = ["--gf_dim", "256", "--df_dim", "256", "--embed_dim", "16", "--z_dim", "8", "--e_steps", "10",
                "--m_steps", "4", "--n_critic", "2", "--batch_size", "8", "--clip_val", "0",
                "--mm_reg_coeff", "0", "--discriminator_lr", "0.01", "--generator_lr", "0.03"]
    assert main(["train", "--recipe", "improved", "--epochs", "2", *unstable, "--no-report",
                 "--out_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "round 1: collapsed: every query ranks the gallery alike" in out
    history = read_jsonl(tmp_path / "ckt_logs" / "builtin_logs" / "metrics.jsonl")
    assert history[0]["collapsed"] is True and history[0]["collapse"]["test"]["ranking_overlap"] == 1.0
    summary = json.loads((tmp_path / "ckt_logs" / "builtin_logs" / "summary.json").read_text())
    assert summary["collapsed_rounds"] == [h["round"] for h in history if h["collapsed"]]


def test_a_non_finite_loss_stops_the_run_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    assert main(["train", "--recipe", "improved", "--epochs", "4", *TINY, "--generator_lr", "0.3",
                 "--discriminator_lr", "0.3", "--out_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "round 2: the critic loss is nan; stopped keeping the checkpoints of round 1 (last.pt)" in out
    logs = tmp_path / "ckt_logs" / "builtin_logs"
    assert [h["round"] for h in read_jsonl(logs / "metrics.jsonl")] == [1]
    assert torch.load(logs / "last.pt", weights_only=True)["round"] == 1
    assert json.loads((logs / "summary.json").read_text())["stopped"].startswith("round 2: the critic loss is nan")


def test_patience_ends_the_run_at_the_first_round_past_the_plateau(tmp_path, capsys):
    assert main(["train", "--select", "val", "--select_k", "10", "--patience", "1", "--epochs", "12",
                 *TINY, "--out_dir", str(tmp_path)]) == 0
    logs = tmp_path / "ckt_logs" / "builtin_logs"
    figures = [h["val"]["prec@10"] for h in read_jsonl(logs / "metrics.jsonl")]
    first_without_gain = next(i for i in range(1, len(figures)) if figures[i] <= max(figures[:i]))
    assert len(figures) == first_without_gain + 1 < 12
    assert f"stopped after round {len(figures)}: no better val Prec@10 for 1 rounds" in capsys.readouterr().out


def test_select_k_beyond_every_validation_class_is_refused_in_one_line(tmp_path, capsys):
    assert main(["train", "--select", "val", "--select_k", "500", *TINY, "--out_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--select_k 500 is larger than every validation class's gallery (at most 80 images)" in err[0]
    assert not (tmp_path / "ckt_logs").exists()


def test_config_file_round_trips_and_flags_override_it(tmp_path):
    assert main(["train", "--epochs", "1", *TINY, "--out_dir", str(tmp_path / "a")]) == 0
    saved = tmp_path / "a" / "ckt_logs" / "builtin_logs" / "config.json"
    assert main(["train", "--config", str(saved), "--out_dir", str(tmp_path / "b")]) == 0
    first = json.loads(saved.read_text())
    again = json.loads((tmp_path / "b" / "ckt_logs" / "builtin_logs" / "config.json").read_text())
    assert {k: v for k, v in again.items() if k not in ("out_dir", "config")} == \
           {k: v for k, v in first.items() if k not in ("out_dir", "config")}
    assert main(["train", "--config", str(saved), "--gf_dim", "16", "--out_dir", str(tmp_path / "c")]) == 0
    third = json.loads((tmp_path / "c" / "ckt_logs" / "builtin_logs" / "config.json").read_text())
    assert third["gf_dim"] == 16 and third["df_dim"] == 32


def test_config_file_with_an_unknown_setting_is_refused(tmp_path, capsys):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"gf_dim": 32, "learning_rate": 0.1}))
    assert main(["train", "--config", str(path), "--out_dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"zscrgan train: error: {path}: unknown setting learning_rate"


def test_config_file_value_outside_a_flags_choices_is_refused(tmp_path, capsys):
    """argparse checks choices only on the command line; a settings file's values are checked too."""
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"optimizer": "adam"}))
    assert main(["train", "--config", str(path), "--out_dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == \
        f"zscrgan train: error: {path}: --optimizer must be one of tf1, torch, got adam"
    assert not (tmp_path / "ckt_logs").exists()


def test_one_validation_class_is_refused_and_two_warn():
    with pytest.raises(UserError, match="--select val holds out only 1 validation class: its gallery holds only"):
        check_select_k("val", 5, [40])
    assert any("only 2 validation classes" in w for w in check_select_k("val", 5, [40, 40]))
