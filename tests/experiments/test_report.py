"""`zscrgan report` on a small run folder written by hand."""
import base64
import json

import pytest

from zscrgan.cli import main as cli_main
from zscrgan.experiments.report import class_bars, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(tmp_path, with_val=True, with_summary=True):
    """Three EM rounds the way the trainer writes them, plus config, summary, class names."""
    data_dir = tmp_path / "data" / "TOY"
    data_dir.mkdir(parents=True)
    (data_dir / "classnames.json").write_text(json.dumps({"3": "sunflower", "7": "daisy", "9": "tulip"}))
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for rnd in (1, 2, 3):
        row = {"round": rnd, "seconds": 1.5, "loss_critic": -0.1 * rnd, "loss_generator": 2.0 / rnd,
               "loss_mmr": 0.4,
               "test": {"prec@10": 0.2 * rnd, "prec@50": 0.1 * rnd, "map@50": 0.05 * rnd, "recall@50": 0.3}}
        if with_val:
            row["val"] = {"prec@10": 0.25, "prec@50": 0.15 + 0.01 * rnd}
        rows.append(row)
    rows[1].pop("loss_mmr")  # optional keys come and go
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(json.dumps({"dataset": "TOY", "lr_generator": 0.000123, "rounds": 3}))
    if with_summary:
        summary = {"select": "val" if with_val else "last", "selected_round": 2,
                   "selected": {"test": {"prec@50": 0.2, "map@50": 0.1}, "val": {"prec@50": 0.17}},
                   "best_on_test_round": 3, "best_on_test": {"test": {"prec@50": 0.3, "map@50": 0.15}},
                   "per_class": {"prec@50": {"3": 0.5, "7": 0.1, "9": 0.25}},
                   "dataset": "TOY", "data_dir": str(data_dir)}
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def assert_png(path):
    payload = path.read_bytes()
    assert payload.startswith(PNG_MAGIC) and len(payload) > 5000, path


def test_cli_writes_plots_and_a_self_contained_page(tmp_path, capsys):
    run = fake_run(tmp_path)
    assert cli_main(["report", str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    for name in ("prec_at_k.png", "losses.png", "per_class.png"):
        assert_png(run / name)
    page = (run / "report.html").read_text()
    for name in ("prec_at_k.png", "losses.png", "per_class.png"):
        assert "data:image/png;base64," + base64.b64encode((run / name).read_bytes()).decode() in page
    assert "<td>lr_generator</td><td>0.000123</td>" in page and "<td>rounds</td><td>3</td>" in page
    assert "best on test (optimistic: chosen on the test classes)" in page
    # columns map@50, prec@50: the val-selected round's test figures and the best-on-test ones
    assert "<td>round chosen on the validation classes: figures on the test classes</td><td>2</td>" \
           "<td>0.1000</td><td>0.2000</td></tr>" in page
    assert "<td>best on test (optimistic: chosen on the test classes)</td><td>3</td>" \
           "<td>0.1500</td><td>0.3000</td></tr>" in page
    assert "round chosen on the validation classes: figures on the test classes" in page
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))  # atomic writes left nothing


def test_optional_parts_may_be_missing(tmp_path):
    run = fake_run(tmp_path, with_val=False, with_summary=False)
    (run / "config.json").unlink()
    page = write_report(run).read_text()
    assert_png(run / "prec_at_k.png")
    assert not (run / "per_class.png").exists()
    assert "no config.json" in page
    # round 3's test figures, columns map@50, prec@10, prec@50, recall@50
    assert ("<td>last round so far (no summary.json)</td><td>3</td><td>0.1500</td><td>0.6000</td><td>0.3000</td>"
            "<td>0.3000</td></tr>") in page


def test_per_class_bars_use_names_best_on_top(tmp_path):
    run = fake_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert class_bars(summary, run) == ("prec@50", [("daisy", 0.1), ("tulip", 0.25), ("sunflower", 0.5)])
    summary["per_class"]["prec@50"]["11"] = float("nan")  # a class without queries: no bar
    summary["data_dir"] = str(tmp_path / "elsewhere")  # names unavailable: ids are shown
    assert class_bars(summary, run)[1] == [("class 7", 0.1), ("class 9", 0.25), ("class 3", 0.5)]


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "absent", "absent/metrics.jsonl: file not found (no folder"),
    (lambda tmp: tmp, "metrics.jsonl: file not found; is this a training run folder?"),
])
def test_missing_metrics_is_a_one_line_error(tmp_path, capsys, make, message):
    assert cli_main(["report", str(make(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zscrgan report: error: ") and message in err and err.count("\n") == 1


def test_corrupt_line_names_the_file_and_line(tmp_path, capsys):
    run = fake_run(tmp_path)
    (run / "metrics.jsonl").write_text('{"round": 1}\nnot json\n{"round": 3}\n')
    assert cli_main(["report", str(run)]) == 1
    assert "metrics.jsonl: line 2 is not valid JSON" in capsys.readouterr().err


def test_report_of_a_small_run_has_its_real_round_count_one_row_per_figure_and_selection_k(tmp_path):
    """Through `zscrgan train` (report on): --select test makes the selected round the best-on-test one."""
    import html
    import re

    from helpers import TINY, small_set

    small_set(tmp_path / "TOY")
    assert cli_main(["train", "--dataset", str(tmp_path / "TOY"), "--epochs", "2", "--select_k", "5",
                     *[a for a in TINY if a != "--no-report"], "--out_dir", str(tmp_path)]) == 0
    run = tmp_path / "ckt_logs" / "TOY_logs"
    page = (run / "report.html").read_text()
    assert "<td>epochs</td><td>2</td>" in page
    rows = [html.unescape(r) for r in re.findall(r"<tr><td>(round chosen[^<]*|best on test[^<]*)</td>", page)]
    assert rows == ["round chosen on the test classes (optimistic): figures on the test classes; "
                    "also the best on test (optimistic: chosen on the test classes)",
                    # TOY has 2 texts a class: the per-class figures too, in both forms
                    "round chosen on the test classes (optimistic): figures on the test classes, one query per "
                    "class (the query of the mean of its texts)",
                    "round chosen on the test classes (optimistic): figures on the test classes, one query per "
                    "class (the mean of its texts' queries)"]
    summary = json.loads((run / "summary.json").read_text())
    assert class_bars(summary, run)[0] == "prec@5"


def test_collapsed_rounds_are_marked_and_an_old_default_epochs_names_the_count(tmp_path):
    run = fake_run(tmp_path)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[1]["collapsed"] = True
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(json.dumps({"epochs": 0}))
    page = write_report(run).read_text()
    assert "<td>2 (collapsed)</td>" in page and "Collapsed rounds (every query ranks the gallery alike" in page
    assert "<td>epochs</td><td>0 (the default: 3 rounds recorded)</td>" in page
