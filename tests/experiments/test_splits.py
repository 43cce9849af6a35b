"""`zscrgan compare --splits N`: the class splits, the cells kept for --resume, the paired comparison."""
import csv
import json

import numpy as np
import pytest

from helpers import small_set
from zscrgan.cli import main
from zscrgan.config import Config
from zscrgan.data.dataset import load_dataset
from zscrgan.errors import DataError, UserError
from zscrgan.experiments import compare
from zscrgan.experiments.splits import CELLS_FILE, Cells, make_splits, paired, paired_markdown, splits_csv

TINY = ["--gf_dim", "32", "--df_dim", "32", "--embed_dim", "16", "--z_dim", "8", "--e_steps", "3", "--m_steps", "3",
        "--n_critic", "2", "--batch_size", "8", "--epochs", "1", "--select_k", "5"]


def test_splits_are_disjoint_recorded_and_load_as_data_sets(tmp_path):
    source = small_set(tmp_path / "small")  # 12 seen, 4 unseen classes
    full = load_dataset(source)
    classes = sorted(full.seen + full.unseen)
    splits = make_splits(Config(dataset=str(source)), 4, [0, 1], tmp_path / "out")
    for k, split in enumerate(splits):
        assert split.index == k and split.folder == tmp_path / "out" / f"split{k}"
        assert len(split.unseen) == 4 and not set(split.seen) & set(split.unseen)
        assert sorted(split.seen + split.unseen) == classes
        for seed in (0, 1):  # each seed's validation classes: 20% of the split's seen classes
            assert len(split.val[seed]) == 2 and set(split.val[seed]) <= set(split.seen)
        record = json.loads((split.folder / "split.json").read_text())
        assert record == {"split": k, "split_seed": k, "source": str(source.resolve()), "seen": split.seen,
                          "unseen": split.unseen, "val": {"0": split.val[0], "1": split.val[1]}}
        data = load_dataset(split.folder)  # a data set folder like any other: the source's vectors, its own ids
        assert (data.seen, data.unseen) == (split.seen, split.unseen)
        assert all(np.array_equal(data.images[c], full.images[c]) and np.array_equal(data.texts[c], full.texts[c])
                   for c in classes)
    assert len({tuple(s.unseen) for s in splits}) == 4  # four different draws


def test_the_same_split_seed_draws_the_same_split(tmp_path):
    source = small_set(tmp_path / "small")
    first = make_splits(Config(dataset=str(source)), 3, [0], tmp_path / "a")
    again = make_splits(Config(dataset=str(source)), 5, [0], tmp_path / "b")  # more splits: the first three unchanged
    assert [(s.seen, s.unseen, s.val) for s in first] == [(s.seen, s.unseen, s.val) for s in again[:3]]


def test_splits_need_a_data_set_folder(tmp_path, capsys):
    assert main(["compare", "--splits", "2", "--methods", "ridge", "--out_dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == ("zscrgan compare: error: --splits draws classes from a data set folder: "
                                               "give --dataset (the built-in data has one split)")


def figures(prec, map_):
    return {"test": {"prec@50": prec, "map@50": map_}}


# two seeds a split; per split the mean over seeds is, for Prec@50 / mAP@50:
#   ridge  0.50/0.30  0.40/0.20  0.60/0.40   mean Prec 0.5000 (the best baseline)
#   cca    0.45/0.25  0.50/0.30  0.50/0.30   mean Prec 0.4833
#   tuned  0.55/0.30  0.35/0.25  0.60/0.45   differences from ridge: Prec +0.05 -0.05 0.00, mAP 0.00 +0.05 +0.05
RESULTS = {
    0: {"ridge": [(figures(0.4, 0.2), 1.0), (figures(0.6, 0.4), 1.0)],
        "cca": [(figures(0.45, 0.25), 2.0), (figures(0.45, 0.25), 2.0)],
        "tuned": [(figures(0.5, 0.3), 30.0), (figures(0.6, 0.3), 30.0)]},
    1: {"ridge": [(figures(0.4, 0.2), 1.0), (figures(0.4, 0.2), 1.0)],
        "cca": [(figures(0.5, 0.3), 2.0), (figures(0.5, 0.3), 2.0)],
        "tuned": [(figures(0.3, 0.2), 30.0), (figures(0.4, 0.3), 30.0)]},
    2: {"ridge": [(figures(0.6, 0.4), 1.0), (figures(0.6, 0.4), 1.0)],
        "cca": [(figures(0.5, 0.3), 2.0), (figures(0.5, 0.3), 2.0)],
        "tuned": [(figures(0.6, 0.45), 30.0), (figures(0.6, 0.45), 30.0)]},
}


def test_paired_differences_against_a_hand_computed_table():
    best, diffs = paired(RESULTS, "test", 50)
    assert best == "ridge"
    assert diffs["tuned"]["prec"] == pytest.approx({0: 0.05, 1: -0.05, 2: 0.0})
    assert diffs["tuned"]["map"] == pytest.approx({0: 0.0, 1: 0.05, 2: 0.05})
    assert diffs["cca"]["prec"] == pytest.approx({0: -0.05, 1: 0.1, 2: -0.1})
    md = paired_markdown(RESULTS, {"test": "Unseen classes"}, 50)
    assert "the best baseline, **ridge**" in md
    # tuned: Prec differences mean 0, sd 0.05, ahead on one split (a tie is no win); mAP mean 0.0333, sd 0.0289
    assert "| tuned | +0.0000 ± 0.0500 | +0.0333 ± 0.0289 | 1 of 3 | 2 of 3 |" in md
    assert "| cca | -0.0167 ± 0.1041 | -0.0167 ± 0.1041 | 1 of 3 | 1 of 3 |" in md
    rows = {(r["method"], r["split"]): r for r in csv.DictReader(splits_csv(RESULTS, {"test": "per_text"}, 50).splitlines())}
    assert rows[("tuned", "1")]["prec@50_mean"] == "0.350000" and rows[("tuned", "1")]["diff_prec@50"] == "-0.050000"
    assert rows[("ridge", "0")]["prec@50_sd"] == f"{np.std([0.4, 0.6], ddof=1):.6f}"
    over_all = rows[("tuned", "all")]  # mean +- sd over the 3 splits x 2 seeds
    assert over_all["prec@50_mean"] == f"{np.mean([0.5, 0.6, 0.3, 0.4, 0.6, 0.6]):.6f}"
    assert over_all["prec@50_sd"] == f"{np.std([0.5, 0.6, 0.3, 0.4, 0.6, 0.6], ddof=1):.6f}"
    assert (over_all["diff_prec@50"], over_all["splits_won_prec"], over_all["splits_won_map"], over_all["n"]) == \
        ("0.000000", "1", "2", "6")
    assert rows[("ridge", "all")]["diff_prec@50"] == ""  # the best baseline is not compared with itself


def test_cells_refuse_to_mix_with_an_earlier_compare(tmp_path):
    cfg = Config(dataset="x", gf_dim=32)
    Cells(tmp_path, cfg).add(0, "ridge", 0, figures(0.5, 0.3), 1.0)
    with pytest.raises(UserError, match="holds an earlier compare over splits .*--resume to continue"):
        Cells(tmp_path, cfg)
    with pytest.raises(UserError, match="made with --gf_dim 32, this run asks 64"):
        Cells(tmp_path, Config(dataset="x", gf_dim=64, resume=True))
    assert Cells(tmp_path, Config(dataset="x", gf_dim=32, resume=True, epochs=9)).done == {
        (0, "ridge", 0): (figures(0.5, 0.3), 1.0)}  # --epochs may change on resuming, as for a run
    assert Cells(tmp_path, Config(dataset="x", gf_dim=64, overwrite=True)).done == {}
    (tmp_path / CELLS_FILE).write_text('{"split": 0}\n')
    with pytest.raises(DataError, match=f"{CELLS_FILE}: line 1 is not a cell"):
        Cells(tmp_path, Config(dataset="x", gf_dim=64, resume=True))


@pytest.mark.slow
def test_compare_over_splits_end_to_end_and_resumed(tmp_path, capsys, monkeypatch):
    source = small_set(tmp_path / "small")
    argv = ["compare", "--dataset", str(source), "--methods", "ridge,improved", "--seeds", "0", "--splits", "2",
            "--out_dir", str(tmp_path), *TINY]
    assert main(argv) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("compare: [")]
    assert [line.split(":")[1] for line in said[::2]] == [" [1/4] split 0 ridge seed 0", " [2/4] split 0 improved seed 0",
                                                          " [3/4] split 1 ridge seed 0", " [4/4] split 1 improved seed 0"]
    out = tmp_path / "compare_small_splits"
    cells = [json.loads(line) for line in (out / CELLS_FILE).read_text().splitlines()]
    assert [(c["split"], c["method"], c["seed"]) for c in cells] == [(0, "ridge", 0), (0, "improved", 0),
                                                                     (1, "ridge", 0), (1, "improved", 0)]
    for k in (0, 1):  # each run trained on its split's seen classes
        config = json.loads((tmp_path / "ckt_logs" / f"small_split{k}_improved_seed0_logs" / "config.json").read_text())
        assert config["dataset"] == str((out / f"split{k}").resolve())
    rows = list(csv.DictReader((tmp_path / "compare_small_splits.csv").open()))
    per_text = [(r["method"], r["split"]) for r in rows if r["protocol"] == "per_text"]
    assert per_text == [("ridge", "0"), ("ridge", "1"), ("ridge", "all"), ("improved", "0"), ("improved", "1"),
                        ("improved", "all")]
    ridge = [float(c["figures"]["test"]["prec@5"]) for c in cells if c["method"] == "ridge"]
    assert float(rows[2]["prec@5_mean"]) == pytest.approx(np.mean(ridge), abs=1e-6)
    assert "mean ± sd over 2 splits x seeds 0" in (tmp_path / "compare_small_splits.md").read_text()
    assert (tmp_path / "compare_small_splits_paired.png").read_bytes()[:4] == b"\x89PNG"
    before = (tmp_path / "compare_small_splits.csv").read_bytes()

    # --resume with a third split: only its cells run, the first two splits' are kept
    trained = []
    real = compare.run_method
    monkeypatch.setattr(compare, "run_method", lambda m, cfg, seed, data: trained.append(cfg.name) or real(m, cfg, seed, data))
    assert main([*argv[:-len(TINY)], *TINY, "--splits", "3", "--resume"]) == 0
    assert trained == ["small_split2", "small_split2"]
    rows = list(csv.DictReader((tmp_path / "compare_small_splits.csv").open()))
    assert [r["split"] for r in rows if r["protocol"] == "per_text" and r["method"] == "ridge"] == ["0", "1", "2", "all"]
    # --resume with nothing left: no training, the same tables as the two-split run
    trained.clear()
    assert main([*argv, "--resume"]) == 0
    assert trained == [] and (tmp_path / "compare_small_splits.csv").read_bytes() == before


def test_tables_of_a_compare_still_running_say_how_many_runs_each_method_has(tmp_path):
    partial = {k: dict(by_method) for k, by_method in RESULTS.items()}
    partial[2] = {**partial[2], "tuned": []}  # split 2's tuned runs not done yet
    md = compare.write_split_tables(tmp_path / "compare_x_splits", partial, [0, 1], 50)
    assert "mean ± sd over 3 splits x seeds 0,1 (so far: ridge 6 runs, cca 6 runs, tuned 4 runs)." in md
    assert "| tuned | +0.0000 ± 0.0707 | +0.0250 ± 0.0354 | 1 of 2 | 1 of 2 |" in md  # paired on splits 0 and 1 only
    complete = compare.write_split_tables(tmp_path / "compare_x_splits", RESULTS, [0, 1], 50)
    assert "mean ± sd over 3 splits x seeds 0,1." in complete
    assert {p.name for p in tmp_path.iterdir()} == {"compare_x_splits.md", "compare_x_splits.csv",
                                                    "compare_x_splits.png", "compare_x_splits_paired.png"}
