"""`zscrgan report RUN_DIR`: plots and one self-contained HTML page for a training run.

Reads what the trainer leaves in RUN_DIR:

    metrics.jsonl  one JSON object per EM round (required): "round", "loss_*",
                   "test"/"val" dicts of "prec@K", "map@K", "recall@K"
    config.json    the run's flat configuration (optional)
    summary.json   selected round and figures, best-on-test figures, per-class Prec@K,
                   "dataset", "data_dir" (optional: absent while a run is still going)

and writes prec_at_k.png, losses.png, per_class.png (when summary.json has per-class
figures) and report.html, each atomically, so a report read while it is being rewritten
is never half a file. Every key but the file metrics.jsonl is optional: the trainer's
output grows over time, and an older run must still give a report.

The best-on-test figure is always labelled "optimistic": choosing the round on the test
classes leaks test information into the result, so it is shown beside, never instead of,
the figure chosen on validation classes.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from zscrgan.config import DEFAULT_K
from zscrgan.console import Parser
from zscrgan.data.dataset import read_classnames
from zscrgan.errors import DataError
from zscrgan.experiments.runfolder import PER_CLASS_FORMS
from zscrgan.files import read_json_object, write_atomic
from zscrgan.runfiles import CONFIG_FILE, METRICS_FILE, REPORT_FILE, SUMMARY_FILE

OPTIMISTIC = "optimistic: chosen on the test classes"


def read_rounds(path: Path) -> list[dict]:
    """The per-round records (metrics.jsonl is written atomically, so every line is whole)."""
    if not path.is_file():
        folder = "" if path.parent.is_dir() else f" (no folder {path.parent})"
        raise DataError(f"{path}: file not found{folder}; is this a training run folder?")
    rounds = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is not a JSON object")
        rounds.append(row)
    if not rounds:
        raise DataError(f"{path}: no rounds recorded yet")
    return rounds


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _series(rounds: list[dict], pick) -> tuple[list, list]:
    """(round, value) pairs for the rounds where ``pick(row)`` is a number."""
    xs, ys = [], []
    for i, row in enumerate(rounds):
        value = _number(pick(row))
        if value is not None:
            xs.append(row.get("round", i + 1))
            ys.append(value)
    return xs, ys


def _split(row: dict, split: str) -> dict:
    """A round's figures on ``split`` ("test" or "val"); {} where it was not scored."""
    value = row.get(split)
    return value if isinstance(value, dict) else {}


def _k_of(key: str) -> int:
    tail = key.partition("@")[2]
    return int(tail) if tail.isdigit() else 0


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def plot_precision(rounds: list[dict], summary: dict) -> bytes:
    """Prec@K per round, solid for test and dashed for validation, one colour per K."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    keys = sorted({k for row in rounds for split in ("test", "val") for k in _split(row, split)
                   if k.startswith("prec@")}, key=_k_of)
    for n, key in enumerate(keys):
        for split, style in (("test", "-"), ("val", "--")):
            xs, ys = _series(rounds, lambda row: _split(row, split).get(key))
            if xs:
                ax.plot(xs, ys, style, color=f"C{n}", marker=".", label=f"{split} {key}")
    marks = [("selected_round", f"selected ({summary.get('select', '?')})", "k", "-"),
             ("best_on_test_round", "best on test (optimistic)", "grey", ":")]
    for key, label, colour, style in marks:
        if _number(summary.get(key)) is not None:
            ax.axvline(summary[key], color=colour, linestyle=style, linewidth=1, label=label)
    collapsed = collapsed_rounds(rounds)
    for n, x in enumerate(collapsed):
        ax.axvspan(x - 0.4, x + 0.4, color="red", alpha=0.15, linewidth=0,
                   label="collapsed (queries rank alike)" if n == 0 else None)
    ax.set_xlabel("EM round")
    ax.set_ylabel("Prec@K")
    ax.set_title("Retrieval precision per round")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return _png(fig)


def collapsed_rounds(rounds: list[dict]) -> list:
    """Rounds whose record says ``"collapsed": true`` (every query ranked the gallery alike)."""
    return [row.get("round", i + 1) for i, row in enumerate(rounds) if row.get("collapsed") is True]


def plot_losses(rounds: list[dict]) -> bytes:
    """One small panel per loss: their scales differ by orders of magnitude."""
    names = sorted({k for row in rounds for k in row if k.startswith("loss_")})
    cols = max(1, min(3, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4 * cols, 2.6 * rows))
    if not names:
        fig.text(0.5, 0.5, "no losses recorded", ha="center", va="center")
    for n, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.plot(*_series(rounds, lambda row: row.get(name)), color=f"C{n}", marker=".")
        ax.set_title(name.removeprefix("loss_"), fontsize=10)
        ax.set_xlabel("EM round", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _classnames(summary: dict, run_dir: Path) -> dict[str, str]:
    """Class names from ``<data_dir>/classnames.json``; a relative data_dir is tried from
    the current folder, then from the run folder. Missing or broken: ids are shown."""
    data_dir = summary.get("data_dir")
    if not isinstance(data_dir, str):
        return {}
    for folder in (Path(data_dir), run_dir / data_dir):
        if folder.is_dir():
            try:
                return {str(k): v for k, v in read_classnames(folder).items()}
            except DataError as exc:
                print(f"zscrgan report: warning: {exc}; showing class ids", file=sys.stderr)
                return {}
    return {}


def class_bars(summary: dict, run_dir: Path) -> tuple[str, list[tuple[str, float]]] | None:
    """("prec@K", [(class label, value)] in ascending order) from summary.json, or None.

    K is the run's selection K (summary "select_k", 50 for older runs): on a small gallery
    Prec@50 is the same for every class, which says nothing. Classes without a figure (NaN: no query) are left out; labels
    are class names when classnames.json has them. Ascending,
    because barh draws the first bar at the bottom: the best class ends up on top.
    """
    table = summary.get("per_class")
    if not isinstance(table, dict):
        return None
    keys = [k for k in table if k.startswith("prec@") and isinstance(table[k], dict)]
    if not keys:
        return None
    wanted, upstream = f"prec@{summary.get('select_k', DEFAULT_K)}", f"prec@{DEFAULT_K}"
    key = wanted if wanted in keys else upstream if upstream in keys else keys[0]
    values = {str(c): _number(v) for c, v in table[key].items()}
    names = _classnames(summary, run_dir)
    bars = sorted((v, names.get(c, f"class {c}")) for c, v in values.items() if v is not None and math.isfinite(v))
    return (key, [(label, v) for v, label in bars]) if bars else None


def plot_compare(figures: dict[str, dict[str, tuple[float, float]]], metric: str, title: str) -> bytes:
    """`zscrgan compare`'s table as grouped bars: one group per method, one bar per query protocol
    (``figures[protocol][method] = (mean, sd)`` over seeds), sd as error bars."""
    methods = list(dict.fromkeys(m for per in figures.values() for m in per))
    width = 0.8 / max(1, len(figures))
    fig = Figure(figsize=(1.6 + 1.2 * len(methods), 3.6))
    ax = fig.add_subplot()
    for i, (protocol, per) in enumerate(figures.items()):
        xs = [j + (i - (len(figures) - 1) / 2) * width for j, m in enumerate(methods) if m in per]
        ax.bar(xs, [per[m][0] for m in methods if m in per], width, yerr=[per[m][1] for m in methods if m in per],
               capsize=3, label=protocol, color=f"C{i}")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_paired(panels: dict[str, dict[str, list[float]]], metric: str, title: str) -> bytes:
    """`zscrgan compare --splits`' paired comparison: one panel per query protocol, per method one
    dot per split (its difference from the best baseline) and a bar at their mean; 0 is a tie."""
    fig = Figure(figsize=(1.6 + 3.2 * max(1, len(panels)), 3.6))
    for i, (label, per) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for j, diffs in enumerate(per.values()):
            ax.scatter([j] * len(diffs), diffs, s=14, color=f"C{j}", alpha=0.8)
            if diffs:
                ax.hlines(sum(diffs) / len(diffs), j - 0.3, j + 0.3, color=f"C{j}", linewidth=2)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(per)), list(per), fontsize=8)
        ax.set_title(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            ax.set_ylabel(metric)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def plot_per_class(key: str, bars: list[tuple[str, float]]) -> bytes:
    fig = Figure(figsize=(7, 1.2 + 0.25 * len(bars)))
    ax = fig.add_subplot()
    ax.barh(range(len(bars)), [v for _, v in bars], color="C0")
    ax.set_yticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
    ax.set_xlabel(key.replace("prec", "Prec"))
    ax.set_title(f"Per-class {key} of the selected round")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _fmt_metric(value) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.4f}"


def _fmt_value(value) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value))


def _summary_rows(summary: dict, rounds: list[dict]) -> list[tuple[str, object, dict]]:
    """(label, round, test-figure dict) rows for the summary table."""
    def figures(block, split):
        return block.get(split) if isinstance(block, dict) and isinstance(block.get(split), dict) else None
    select = summary.get("select", "?")
    rows = []
    selected = summary.get("selected")
    how = {"val": "on the validation classes", "test": "on the test classes (optimistic)",
           "last": "as the last round"}.get(select, f"by {select!r}")
    for split, where in (("test", "test"), ("val", "validation")):
        views = [(split, "")] + [(f"{split}_{form}", f", one query per class ({what})")
                                 for form, what in PER_CLASS_FORMS.items()]
        for view, per_class in views:
            if figures(selected, view):
                rows.append((f"round chosen {how}: figures on the {where} classes{per_class}",
                             summary.get("selected_round"), figures(selected, view)))
    if figures(summary.get("best_on_test"), "test"):
        rows.append((f"best on test ({OPTIMISTIC})", summary.get("best_on_test_round"),
                     figures(summary["best_on_test"], "test")))
    if not rows:  # no summary yet: the run is going on, show where it stands
        last = rounds[-1]
        rows.append(("last round so far (no summary.json)", last.get("round", len(rounds)), _split(last, "test")))
    merged: list = []  # --select test picks the best-on-test round itself: one row, both labels
    for label, rnd, figs in rows:
        same = next((i for i, (_, r, f) in enumerate(merged) if r == rnd and f == figs), None)
        if same is None:
            merged.append((label, rnd, figs))
        else:
            merged[same] = (f"{merged[same][0]}; also the {label}", rnd, figs)
    return merged


def _table(headers: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def render_html(run_dir: Path, summary: dict, config: dict, rounds: list[dict], images: dict[str, bytes]) -> str:
    rows = _summary_rows(summary, rounds)
    keys = sorted({k for _, _, figs in rows for k in figs}, key=lambda k: (k.partition("@")[0], _k_of(k)))
    collapsed = collapsed_rounds(rounds)
    summary_table = _table(["figure", "round"] + [html.escape(k) for k in keys],
                           [[html.escape(label), _fmt_value(rnd) + (" (collapsed)" if rnd in collapsed else "")]
                            + [_fmt_metric(figs.get(k)) for k in keys] for label, rnd, figs in rows])
    collapsed_note = (f"<p>Collapsed rounds (every query ranks the gallery alike; shaded red in the plot): "
                      f"{', '.join(map(str, collapsed))}.</p>" if collapsed else "")
    shown = dict(config)
    if shown.get("epochs") == 0:  # older runs saved the flag, not the count it stood for
        shown["epochs"] = f"0 (the default: {len(rounds)} rounds recorded)"
    config_table = _table(["setting", "value"], [[html.escape(str(k)), _fmt_value(shown[k])] for k in sorted(shown)]) \
        if config else "<p>no config.json</p>"
    plots = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in images.items())
    title = html.escape(f"ZSCRGAN run {run_dir.resolve().name}" + (f" on {summary['dataset']}" if "dataset" in summary else ""))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{title}</h1>
<h2>Summary</h2>
<p>{len(rounds)} rounds recorded. Figures chosen on the test classes are optimistic:
choosing the round with the test data overstates what an unseen class would get.</p>
{summary_table}
{collapsed_note}
<h2>Plots</h2>
{plots}
<h2>Configuration</h2>
{config_table}
</body></html>
"""


def write_report(run_dir: str | Path) -> Path:
    """Write the PNGs and report.html into ``run_dir``; returns the HTML path."""
    run_dir = Path(run_dir)
    rounds = read_rounds(run_dir / METRICS_FILE)
    config = read_json_object(run_dir / CONFIG_FILE)
    summary = read_json_object(run_dir / SUMMARY_FILE)
    images = {"prec_at_k.png": plot_precision(rounds, summary), "losses.png": plot_losses(rounds)}
    per_class = class_bars(summary, run_dir)
    if per_class:
        images["per_class.png"] = plot_per_class(*per_class)
    for name, png in images.items():
        write_atomic(run_dir / name, png)
    out = run_dir / REPORT_FILE
    write_atomic(out, render_html(run_dir, summary, config, rounds, images).encode())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan report", description="Plots and an HTML page for a training run.")
    parser.add_argument("run_dir", help="folder the trainer wrote (metrics.jsonl, config.json, summary.json)")
    args = parser.parse_args(argv)
    print(f"wrote {write_report(args.run_dir)}")
    return 0


__all__ = ["write_report", "main", "read_rounds", "class_bars"]
