"""Plot unseen Prec@50 per caption against the number of training classes, one line a method.

Reads the CSVs `zscrgan compare` wrote for data sets split with fewer seen classes
(docs/results.md, "More seen classes help the baselines more than ZSCRGAN"):

    python scripts/seen_curve.py --runs "lc/cmp_*/compare_*.csv" --out docs/curve_seen_classes.png

Each CSV's data set name must read sN_dD (N seen classes, draw D); draws are averaged, and 20% of
the seen classes are validation (split_validation's rule), so the x axis is the training classes.
"""
from __future__ import annotations

import argparse
import csv
import glob
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read(pattern: str) -> dict:
    """{method: {training classes: [Prec@50 per caption, one a draw]}}."""
    found = defaultdict(lambda: defaultdict(list))
    for path in sorted(glob.glob(pattern)):
        seen = int(re.search(r"_s(\d+)_d\d+\.csv$", path).group(1))
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row["protocol"] == "per_text":
                    found[row["method"]][seen - max(1, round(0.2 * seen))].append(float(row["prec@50_mean"]))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="glob of compare CSVs, e.g. 'lc/cmp_*/compare_*.csv'")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for method, points in read(args.runs).items():
        xs = sorted(points)
        ax.plot(xs, [np.mean(points[x]) for x in xs], marker="o", label=method)
    ax.set(xlabel="training classes (FLO_cap, the 20 unseen classes fixed)", ylabel="unseen Prec@50 per caption",
           title="More seen classes help the linear maps more than ZSCRGAN")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
