"""The real entry point with a tiny budget: outputs, resume, selection, evaluate, bad flags."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from helpers import TINY, read_jsonl, small_set, tied_captions_set

from zscrgan.cli import main
from zscrgan.data.dataset import save_dataset


def test_train_writes_upstreams_outputs(tmp_path, capsys):
    folder = small_set(tmp_path / "data" / "TOY")
    assert main(["train", "--dataset", "TOY", "--data_root", str(tmp_path / "data"), "--epochs", "3",
                 "--out_dir", str(tmp_path), *TINY]) == 0
    logs = tmp_path / "ckt_logs" / "TOY_logs"
    last = capsys.readouterr().out.splitlines()[-1]  # the run ends by saying where its outputs are
    history = read_jsonl(logs / "metrics.jsonl")
    assert [h["round"] for h in history] == [1, 2, 3]
    for h in history:
        assert {"test", "seconds", "loss_critic", "loss_generator", "loss_csem"} <= set(h)
        assert "prec_at_50" not in h  # upstream's figure is test["prec@50"], once
    assert "batch_size: 8" in (logs / "args.txt").read_text()
    summary = json.loads((logs / "summary.json").read_text())
    best = max(history, key=lambda h: h["test"]["prec@50"])
    assert summary["selected_round"] == best["round"]
    files = list((tmp_path / "retrieved_res" / "TOY_res").glob("acc*.pkl"))
    assert f"acc{best['test']['prec@50']:.3f}.pkl" in [f.name for f in files]
    newest = tmp_path / "retrieved_res" / "TOY_res" / f"acc{best['test']['prec@50']:.3f}.pkl"
    assert last == f"outputs: {logs}/ (best.pt, summary.json); retrieval lists: {newest}"
    lists = pickle.loads(files[0].read_bytes())
    data_unseen = pickle.loads((folder / "testids.pkl").read_bytes())
    assert len(lists) == 4 * 2  # one entry per query: 4 unseen classes x 2 texts
    for entry in lists:
        (query, retrieved), = entry.items()
        assert query in data_unseen and len(retrieved) == 48  # top 50 of a 48-image gallery
        assert set(retrieved) <= set(data_unseen)
    ckpt = torch.load(logs / "best.pt", weights_only=True)
    assert ckpt["config"]["batch_size"] == 8 and ckpt["round"] == best["round"]


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
    args = ["train", "--epochs", "3", *TINY]
    assert main([*args, "--out_dir", str(tmp_path / "whole")]) == 0
    assert main(["train", "--epochs", "2", *TINY, "--out_dir", str(tmp_path / "split")]) == 0
    assert main([*args, "--out_dir", str(tmp_path / "split"), "--resume"]) == 0
    whole = read_jsonl(tmp_path / "whole" / "ckt_logs" / "builtin_logs" / "metrics.jsonl")
    split = read_jsonl(tmp_path / "split" / "ckt_logs" / "builtin_logs" / "metrics.jsonl")
    drop = {"seconds", "eval_seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in whole] == \
           [{k: v for k, v in h.items() if k not in drop} for h in split]


def test_resume_refuses_a_changed_hyperparameter(tmp_path, capsys):
    assert main(["train", "--epochs", "1", *TINY, "--out_dir", str(tmp_path)]) == 0
    capsys.readouterr()
    changed = [a if a != "32" else "64" for a in TINY]
    assert main(["train", "--epochs", "2", *changed, "--out_dir", str(tmp_path), "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.pt: made with --gf_dim 32, this run asks 64" in err[0]


def test_val_selection_never_reads_unseen_before_selecting(tmp_path, capsys):
    small_set(tmp_path / "NANS", nan_unseen=True)
    code = main(["train", "--dataset", str(tmp_path / "NANS"), "--select", "val", "--select_k", "10",
                 "--epochs", "2", "--out_dir", str(tmp_path), *TINY])
    # every round trained and was scored on validation classes; only the final scoring of the
    # selected round reads the unseen classes, and that is where the NaNs are found
    assert code == 1
    assert "image_embed_dict.pkl: class" in capsys.readouterr().err
    history = read_jsonl(tmp_path / "ckt_logs" / "NANS_logs" / "metrics.jsonl")
    assert [h["round"] for h in history] == [1, 2]
    assert all("val" in h and "test" not in h for h in history)
    assert (tmp_path / "ckt_logs" / "NANS_logs" / "best.pt").is_file()


@pytest.mark.parametrize("extra", [[], ["--ridge_path"]])
def test_val_selection_summary_and_evaluate_reproduces(tmp_path, capsys, extra):
    small_set(tmp_path / "TOY")
    assert main(["train", "--dataset", str(tmp_path / "TOY"), "--select", "val", "--track_test",
                 "--select_k", "10", "--epochs", "2", "--out_dir", str(tmp_path), *TINY, *extra]) == 0
    out = capsys.readouterr().out
    assert "validation-selected" in out and "best-on-test (optimistic)" in out
    logs = tmp_path / "ckt_logs" / "TOY_logs"
    summary = json.loads((logs / "summary.json").read_text())
    assert {"val", "test"} <= set(summary["selected"]) and "best_on_test" in summary
    history = {h["round"]: h for h in read_jsonl(logs / "metrics.jsonl")}
    selected = summary["selected_round"]
    assert summary["selected"]["test"] == history[selected]["test"]
    assert history[selected]["val"]["prec@10"] == max(h["val"]["prec@10"] for h in history.values())
    # TOY has 2 texts a class: every round also scored one query per class, in both forms
    assert all({"val_class", "val_prototype", "test_class", "test_prototype"} <= set(h) for h in history.values())
    assert "per class (one query a class, the mean of its texts' queries)" in out
    assert main(["evaluate", str(logs / "best.pt"), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    for view in ("test", "test_class", "test_prototype"):
        assert result[view] == summary["selected"][view]


def test_val_selection_without_track_test_on_a_folder_end_to_end(tmp_path, capsys):
    """The honest protocol as a user runs it: rounds see validation classes only; the selected
    round alone is scored on the unseen classes, once, with one retrieval file; evaluate agrees."""
    small_set(tmp_path / "TOY")
    assert main(["train", "--dataset", str(tmp_path / "TOY"), "--select", "val", "--select_k", "10",
                 "--epochs", "3", "--out_dir", str(tmp_path), *TINY]) == 0
    assert "validation-selected" in capsys.readouterr().out
    logs = tmp_path / "ckt_logs" / "TOY_logs"
    history = {h["round"]: h for h in read_jsonl(logs / "metrics.jsonl")}
    assert sorted(history) == [1, 2, 3] and all("test" not in h for h in history.values())
    summary = json.loads((logs / "summary.json").read_text())
    selected = summary["selected_round"]
    assert history[selected]["val"]["prec@10"] == max(h["val"]["prec@10"] for h in history.values())
    assert summary["selected"]["val"] == history[selected]["val"] and "best_on_test" not in summary
    files = list((tmp_path / "retrieved_res" / "TOY_res").glob("acc*.pkl"))
    assert [f.name for f in files] == [f"acc_p10_{summary['selected']['test']['prec@10']:.3f}.pkl"]
    assert len(pickle.loads(files[0].read_bytes())) == 4 * 2
    assert main(["evaluate", str(logs / "best.pt"), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["test"] == summary["selected"]["test"]


def test_seeds_report_mean_and_sd(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--seeds", "0,1", *TINY, "--out_dir", str(tmp_path)]) == 0
    combined = json.loads((tmp_path / "ckt_logs" / "builtin_seeds.json").read_text())
    p = [r["selected"]["test"]["prec@50"] for r in combined["runs"]]
    mean, sd = combined["mean_sd"]["selected"]["prec@50"]
    assert mean == pytest.approx(np.mean(p)) and sd == pytest.approx(np.std(p, ddof=1))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  selected: "))
    assert f"prec@50 {mean:.4f} +- {sd:.4f}" in line


@pytest.mark.slow
def test_seeds_in_worker_processes_match_runs_one_after_another(tmp_path):
    """--workers 2 trains the seeds in 2 processes of 1 thread; each matches a 1-thread run here."""
    args = ["train", "--epochs", "2", "--seeds", "0,1", *TINY]
    assert main(args + ["--workers", "2", "--out_dir", str(tmp_path / "par")]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    try:
        assert main(args + ["--out_dir", str(tmp_path / "seq")]) == 0
    finally:
        torch.set_num_threads(threads)
    for seed in (0, 1):
        par, seq = (read_jsonl(tmp_path / d / "ckt_logs" / f"builtin_seed{seed}_logs" / "metrics.jsonl")
                    for d in ("par", "seq"))
        assert [(h["test"], h["loss_generator"]) for h in par] == [(h["test"], h["loss_generator"]) for h in seq]
    par, seq = (json.loads((tmp_path / d / "ckt_logs" / "builtin_seeds.json").read_text())["mean_sd"]
                for d in ("par", "seq"))
    assert par == seq


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch_size", "0"], "--batch_size must be at least 1, got 0"),
    (["train", "--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["train", "--recipe", "magic"], "invalid choice: 'magic'"),
    (["train", "--eval_k", "10,x"], "--eval_k: invalid K 'x'"),
])
def test_bad_flags_exit_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_is_one_line_error(tmp_path, capsys):
    assert main(["train", "--dataset", "NOPE", "--data_root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NOPE: data set folder not found" in err[0]


@pytest.mark.slow
def test_flo_few_rounds_well_above_chance(flo_dir, tmp_path):
    """Real data, real entry point: 20 unseen flower classes, chance Prec@50 = 0.05."""
    assert main(["train", "--dataset", str(flo_dir), "--out_dir", str(tmp_path), "--recipe", "improved",
                 "--epochs", "4", "--gf_dim", "256", "--df_dim", "256", "--embed_dim", "256", "--z_dim", "64",
                 "--no-report"]) == 0
    history = read_jsonl(tmp_path / "ckt_logs" / "FLO_logs" / "metrics.jsonl")
    assert history[-1]["test"]["prec@50"] > 0.15, [h["test"]["prec@50"] for h in history]


@pytest.mark.parametrize("flag, calls", [([], 1), (["--no-retain_memory"], 0)])
def test_train_sets_malloc_once_behind_its_flag(tmp_path, monkeypatch, flag, calls):
    from zscrgan.experiments import run
    made = []
    monkeypatch.setattr(run, "retain_freed_memory", lambda: made.append(1))
    assert main(["train", "--epochs", "1", "--device", "cpu", *TINY, *flag, "--out_dir", str(tmp_path)]) == 0
    assert len(made) == calls


def test_a_full_disk_names_the_file_and_the_resume_and_metrics_match_last_pt(tmp_path, capsys, monkeypatch):
    """Disk full while writing round 2's last.pt: one line naming it and the resume command; metrics.jsonl
    lists no round that last.pt does not hold (issue 28, 9). The write fails for real, into /dev/full."""
    import tempfile

    real_mkstemp, made = tempfile.mkstemp, []

    def full_disk_for_round_2(*args, prefix="", **kwargs):
        fd, name = real_mkstemp(*args, prefix=prefix, **kwargs)
        made.append(prefix)
        if prefix == ".last.pt." and made.count(prefix) == 2:
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, No space left on device
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", full_disk_for_round_2)
    args = ["train", "--epochs", "3", *TINY, "--out_dir", str(tmp_path)]
    assert main(args) == 1
    logs = tmp_path / "ckt_logs" / "builtin_logs"
    assert capsys.readouterr().err == (f"zscrgan train: error: {logs / 'last.pt'}: No space left on device; once "
                                       f"fixed, continue with: zscrgan train --resume {logs}\n")
    assert [h["round"] for h in read_jsonl(logs / "metrics.jsonl")] == [1]
    assert torch.load(logs / "last.pt", weights_only=True)["round"] == 1
    assert not [p for p in logs.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
    assert main([*args, "--resume"]) == 0
    assert [h["round"] for h in read_jsonl(logs / "metrics.jsonl")] == [1, 2, 3]


def test_training_with_own_captions_and_photo_pairs(tmp_path, capsys):
    data = tied_captions_set(tied=True, n_seen=8, n_unseen=3)
    save_dataset(data, tmp_path / "tied")
    argv = ["train", "--dataset", str(tmp_path / "tied"), "--out_dir", str(tmp_path), "--epochs", "1",
            "--recipe", "tuned", "--select", "val", "--select_k", "5", *TINY]
    assert main(argv + ["--own_captions", "--photo_pairs"]) == 0
    small_set(tmp_path / "untied")
    assert main(["train", "--dataset", str(tmp_path / "untied"), "--own_captions", "--out_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{tmp_path / 'untied' / 'caption_photos.npz'}: not found; --own_captions needs which photo" in err
