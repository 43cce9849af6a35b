"""`zscrgan compare` end to end on the built-in data with a tiny budget."""
import csv

import pytest

from zscrgan.cli import main
from zscrgan.recipes import RECIPES

TINY = ["--gf_dim", "32", "--df_dim", "32", "--embed_dim", "16", "--z_dim", "8", "--e_steps", "3",
        "--m_steps", "3", "--n_critic", "2", "--batch_size", "8", "--epochs", "1"]


@pytest.mark.slow
def test_compare_runs_every_method_and_writes_tables(tmp_path, capsys):
    assert main(["compare", "--seeds", "0", "--out_dir", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "compare_builtin.csv").open()))
    by_protocol = {p: [r["method"] for r in rows if r["protocol"] == p] for p in
                   ("per_class", "per_class_prototype", "val_per_class", "val_per_class_prototype")}
    rows = [r for r in rows if r["protocol"] == "per_text"]
    assert [r["method"] for r in rows] == ["ridge", "devise", "cca", *RECIPES]  # the built-in data has 5 texts a class
    assert all(methods == [r["method"] for r in rows] for methods in by_protocol.values())
    md = (tmp_path / "compare_builtin.md").read_text()
    for r in rows:
        assert 0.0 <= float(r["prec@50_mean"]) <= 1.0
        assert f"| {r['method']} | {float(r['prec@50_mean']):.4f} ± 0.0000 | {float(r['map@50_mean']):.4f}" in md
    # the linear baselines solve the built-in data's linear text map far above chance (1/12)
    assert float(rows[0]["prec@50_mean"]) > 0.5
    assert f"| ridge | {float(rows[0]['prec@50_mean']):.4f} ± 0.0000 |" in out  # the table is printed too
    # both recipes trained under validation selection with their own output folders
    for recipe in ("original", "improved"):
        assert (tmp_path / "ckt_logs" / f"builtin_{recipe}_seed0_logs" / "summary.json").is_file()


def test_compare_rejects_an_unknown_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--methods", "ridge,magic"])
    assert exit_info.value.code == 2
    assert "--methods: unknown 'magic'" in capsys.readouterr().err


def test_compare_headline_uses_select_k_and_keeps_each_method_done_before_a_failure(tmp_path, capsys, monkeypatch):
    from zscrgan.errors import DataError
    from zscrgan.experiments import compare

    def fail(*args, **kw):
        raise DataError("injected failure")
    monkeypatch.setattr(compare.Run, "train", fail)
    assert main(["compare", "--methods", "ridge,original", "--select_k", "5", "--seeds", "0",
                 "--out_dir", str(tmp_path), *TINY]) == 1
    captured = capsys.readouterr()
    assert "injected failure" in captured.err
    said = [line for line in captured.out.splitlines() if line.startswith("compare: ")]  # each method as it starts and ends
    assert [line.split(":")[1] for line in said] == [" ridge seed 0", " ridge seed 0", " original seed 0"]
    assert said[1].startswith("compare: ridge seed 0: done in") and "Prec@5" in said[1]
    rows = list(csv.DictReader((tmp_path / "compare_builtin.csv").open()))
    assert [(r["method"], r["protocol"]) for r in rows] == [  # the built-in data has 5 texts a class
        ("ridge", "per_text"), ("ridge", "per_class"), ("ridge", "per_class_prototype"), ("ridge", "val_per_class"),
        ("ridge", "val_per_class_prototype")]
    assert {"prec@5_mean", "map@5_mean", "prec@50_mean"} <= set(rows[0])
    assert (tmp_path / "compare_builtin.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the bars, after each method
    assert "| method | Prec@5 | mAP@5 | Prec@50 | mAP@50 |" in (tmp_path / "compare_builtin.md").read_text()


def test_the_plot_has_a_bar_per_method_and_protocol_at_the_table_means(monkeypatch):
    from zscrgan.experiments import compare

    drawn = {}
    monkeypatch.setattr(compare, "plot_compare", lambda figures, metric, title: drawn.update(
        figures=figures, metric=metric, title=title) or b"png")
    runs = {"ridge": [({"test": {"prec@5": 0.5}, "test_class": {"prec@5": 0.7}, "val_class": {"prec@5": 0.9}}, 1.0),
                      ({"test": {"prec@5": 0.7}, "test_class": {"prec@5": 0.9}, "val_class": {"prec@5": 0.9}}, 1.0)],
            "tuned": [({"test": {"prec@5": 0.4}}, 2.0), ({"test": {"prec@5": 0.6}}, 2.0)]}
    assert compare.plot(runs, [0, 1], 5) == b"png"
    sd = 0.2 ** 0.5 / 10 ** 0.5  # sample sd of two values 0.2 apart: 0.1414
    per_text, per_class = "every text a query", "per class: the mean text's query"
    assert drawn["metric"] == "Prec@5" and list(drawn["figures"]) == [per_text, per_class]  # no val bars
    assert drawn["figures"][per_text] == {"ridge": pytest.approx((0.6, sd)), "tuned": pytest.approx((0.5, sd))}
    assert drawn["figures"][per_class] == {"ridge": pytest.approx((0.8, sd))}
