"""What a `zscrgan tune` study shows: its best trial, plots and one HTML page (tune.py runs the study)."""
from __future__ import annotations

import base64
import html
import io
import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never a window: optuna's plots draw through pyplot
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from zscrgan.errors import require
from zscrgan.files import write_atomic


def best_trial(study):
    """The best completed trial, or None before any trial completed (Optuna raises there)."""
    return study.best_trial if any(t.state.name == "COMPLETE" for t in study.trials) else None


def write_study_report(study, folder: Path, k: int) -> None:
    """history.png, importances.png (from 2 completed trials), rounds.png and study.html showing them."""
    plots = require("optuna.visualization.matplotlib", "tune", "tuning")

    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    pictures = {"history.png": ("optimisation history", plots.plot_optimization_history),
                "rounds.png": (f"val prec@{k} per round (pruned trials stop early)", plots.plot_intermediate_values)}
    if len(done) >= 2:
        pictures["importances.png"] = ("parameter importances", plots.plot_param_importances)
    shown = []
    for file, (title, plot) in pictures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=90)
            plt.close(figure)
            write_atomic(folder / file, buffer.getvalue())
            shown.append((title, buffer.getvalue()))
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials or no spread: skip the plot
            continue
    rows = "".join(f"<tr><td>{t.number}<td>{t.state.name}<td>{'' if t.value is None else f'{t.value:.4f}'}"
                   f"<td>{html.escape(json.dumps(t.params))}</tr>" for t in study.trials)
    best, name = best_trial(study), html.escape(study.study_name)
    head = (f"best val prec@{k} {best.value:.4f} (trial {best.number}), kept in best_config.json: "
            f"<code>{html.escape(json.dumps(best.params))}</code>" if best else "no completed trial yet")
    images = "".join(f"<h2>{title}</h2><img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                     for title, png in shown)
    page = (f"<!doctype html><meta charset='utf-8'><title>study {name}</title><h1>study {name}</h1><p>{head}</p>"
            f"{images}<h2>trials</h2><table border=1 cellpadding=3><tr><th>trial<th>state<th>val prec@{k}<th>params"
            f"</tr>{rows}</table>")
    write_atomic(folder / "study.html", page.encode())
