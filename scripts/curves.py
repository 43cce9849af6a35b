"""Learning curves of several runs side by side: validation and unseen Prec@K per round.

    python scripts/curves.py --runs original=runs/full_original/ckt_logs/FLO_seed{0,1,2}_logs \
        --runs improved=runs/full_improved/ckt_logs/FLO_seed{0,1,2}_logs --out docs/curves_flo.png

Each ``--runs LABEL=DIR[,DIR...]`` is one recipe: its runs' metrics.jsonl are averaged round by
round over the seeds that reached that round (thin lines: each seed). Writes the PNG and prints
a Markdown table of the means, the round each run selected and its training seconds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from zscrgan.experiments.report import read_rounds
from zscrgan.files import read_json_object
from zscrgan.runfiles import METRICS_FILE, SUMMARY_FILE


def read_run(folder: Path) -> tuple[list[dict], dict]:
    """A run's per-round records and its summary.json ({} before the run has ended)."""
    return read_rounds(folder / METRICS_FILE), read_json_object(folder / SUMMARY_FILE)


def series(rows: list[dict], split: str, key: str) -> dict[int, float]:
    return {r["round"]: r[split][key] for r in rows if split in r and r[split].get(key) is not None}


def mean_by_round(per_seed: list[dict[int, float]]) -> dict[int, float]:
    rounds = sorted(set().union(*per_seed))
    return {r: float(np.mean([s[r] for s in per_seed if r in s])) for r in rounds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", action="append", required=True, help="LABEL=DIR[,DIR...] (run folders)")
    parser.add_argument("--k", type=int, default=50, help="the K of Prec@K plotted")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    key = f"prec@{args.k}"
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    lines = []
    for n, spec in enumerate(args.runs):
        label, _, dirs = spec.partition("=")
        runs = [read_run(Path(d)) for d in dirs.split(",") if d]
        for split, style in (("val", "--"), ("test", "-")):
            per_seed = [series(rows, split, key) for rows, _ in runs]
            per_seed = [s for s in per_seed if s]
            if not per_seed:
                continue
            for s in per_seed:
                ax.plot(list(s), list(s.values()), style, color=f"C{n}", alpha=0.25, linewidth=0.8)
            mean = mean_by_round(per_seed)
            name = "validation" if split == "val" else "unseen"
            ax.plot(list(mean), list(mean.values()), style, color=f"C{n}", marker=".", label=f"{label}, {name}")
            lines.append((label, name, mean))
        chosen = [(s.get("selected_round"), s.get("train_seconds")) for _, s in runs if s]
        if chosen:
            print(f"{label}: selected rounds {[c[0] for c in chosen]}, training seconds {[c[1] for c in chosen]}")
    ax.set_xlabel("EM round")
    ax.set_ylabel(f"Prec@{args.k}")
    ax.set_title(f"Prec@{args.k} per round (thick: mean over seeds; dashed: validation classes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    rounds = sorted(set().union(*(m for _, _, m in lines)))
    print("| recipe | classes | " + " | ".join(str(r) for r in rounds) + " |")
    print("|---|---|" + "---|" * len(rounds))
    for label, name, mean in lines:
        print(f"| {label} | {name} | " + " | ".join(f"{mean[r]:.3f}" if r in mean else "" for r in rounds) + " |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
