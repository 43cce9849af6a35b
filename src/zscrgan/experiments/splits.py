"""`zscrgan compare --splits N`: the comparison repeated over N random draws of the unseen classes.

Zero-shot figures move with the choice of unseen classes far more than with the seed, so a claim
is checked over several draws (docs/results.md, "Over several class splits"). Split k (k = 0..N-1,
its split seed) draws, with seed k, as many unseen classes as the standard split has from all the
data set's classes; every other class is seen, and each seed then holds out its validation classes
from those as a standard compare does. A split is a data set folder under the compare's folder: the
source's text and image pickles linked, its own class id lists, and ``split.json`` recording the
split seed, the classes and each seed's validation classes.

Every finished (split, method, seed) cell is kept in the folder's ``cells.jsonl``; ``--resume``
reuses them (and continues an interrupted ZSCRGAN run from its last.pt), so a stopped compare
loses nothing and a later ``--splits`` larger than the first adds only the new splits.

The paired comparison sets each method against the best baseline (the baseline with the highest
mean Prec@K of that protocol): per split, the method's mean over seeds minus the baseline's; the
table gives the mean and sd of that difference over the splits and how many splits it wins.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from zscrgan.config import Config
from zscrgan.data.dataset import (
    CLASSNAMES_FILE,
    IMAGE_FILE,
    SEEN_FILE,
    TEXT_FILE,
    UNSEEN_FILE,
    ZeroShotData,
    draw_classes,
    read_class_ids,
    resolve_dataset_dir,
    split_validation,
    write_pickle,
)
from zscrgan.errors import DataError, UserError
from zscrgan.evaluation.baselines import BASELINES
from zscrgan.experiments.report import plot_paired
from zscrgan.experiments.runfolder import config_differences, mean_sd
from zscrgan.files import read_json_object, write_atomic, write_json

SPLIT_FILE = "split.json"
CELLS_FILE = "cells.jsonl"
SETTINGS_FILE = "compare.json"


@dataclass
class Split:
    """One draw of the unseen classes: split seed ``index``, its data set folder and classes."""

    index: int
    folder: Path
    seen: list
    unseen: list
    val: dict  # seed -> that seed's validation classes (drawn from ``seen``)


def draw_split(classes: list, n_unseen: int, index: int, seeds: list[int], val_fraction: float,
               folder: Path) -> Split:
    """Split ``index``, to be written to ``folder``: ``n_unseen`` of ``classes`` drawn with seed ``index``
    as unseen, the rest seen, and per seed the validation classes a run of that seed holds out
    (dataset.split_validation)."""
    unseen = draw_classes(classes, n_unseen, index)
    seen = [c for c in classes if c not in set(unseen)]
    ids = ZeroShotData({}, {}, seen, unseen, str(folder))  # the name its errors give
    val = {seed: split_validation(ids, val_fraction, seed)[1] for seed in seeds}
    return Split(index, folder, seen, unseen, val)


def write_split(split: Split, source: Path) -> None:
    """The split as a data set folder: the source's vectors (and class names) linked, its own id lists."""
    split.folder.mkdir(parents=True, exist_ok=True)
    for name in (TEXT_FILE, IMAGE_FILE, CLASSNAMES_FILE):
        target, link = (source / name).resolve(), split.folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        if target.is_file():
            os.symlink(target, link)
    write_pickle(split.folder / SEEN_FILE, split.seen)
    write_pickle(split.folder / UNSEEN_FILE, split.unseen)
    record = {"split": split.index, "split_seed": split.index, "source": str(source.resolve()),
              "seen": split.seen, "unseen": split.unseen, "val": {str(s): v for s, v in split.val.items()}}
    write_json(split.folder / SPLIT_FILE, record)


def make_splits(cfg: Config, n_splits: int, seeds: list[int], folder: Path) -> list[Split]:
    """The first ``n_splits`` splits of the data set ``cfg`` names, written under ``folder``."""
    if not cfg.dataset:
        raise UserError("--splits draws classes from a data set folder: give --dataset (the built-in data has one split)")
    source = resolve_dataset_dir(cfg.dataset, cfg.data_root)
    seen, unseen = read_class_ids(source)
    try:
        classes = sorted(seen + unseen)  # the draw depends on the classes, not on how the id lists order them
    except TypeError:  # ids of mixed types
        classes = seen + unseen
    splits = []
    for index in range(n_splits):
        split = draw_split(classes, len(unseen), index, seeds, cfg.val_fraction, folder / f"split{index}")
        write_split(split, source)
        splits.append(split)
    return splits


class Cells:
    """The finished (split, method, seed) cells of a compare over splits: ``cells.jsonl`` in its folder,
    rewritten whole as each cell ends; the compare's settings beside it (``compare.json``), so that
    ``--resume`` never mixes cells of different settings."""

    def __init__(self, folder: Path, cfg: Config):
        self.path = folder / CELLS_FILE
        settings = folder / SETTINGS_FILE
        asked = asdict(cfg)
        self.done: dict[tuple[int, str, int], tuple[dict, float]] = {}
        if self.path.exists() and not (cfg.resume or cfg.overwrite):
            raise UserError(f"{folder}: holds an earlier compare over splits ({CELLS_FILE}); --resume to continue "
                            "it (its finished cells are kept), or --overwrite to start over")
        if self.path.exists() and cfg.resume:
            changed = config_differences(read_json_object(settings), asked) if settings.exists() else ""
            if changed:
                raise UserError(f"{settings}: made with {changed}; drop the differing flags to resume, "
                                "or --overwrite to start over")
            self.done = read_cells(self.path)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(settings, asked)
        self.write()

    def write(self) -> None:
        write_cells(self.path, self.done)

    def add(self, split: int, method: str, seed: int, figures: dict, seconds: float) -> None:
        self.done[(split, method, seed)] = (figures, seconds)
        self.write()


def write_cells(path: Path, done: dict[tuple[int, str, int], tuple[dict, float]]) -> None:
    """``done`` as a ``cells.jsonl`` (what :func:`read_cells` reads back), written atomically."""
    lines = [json.dumps({"split": k, "method": m, "seed": s, "figures": f, "seconds": sec})
             for (k, m, s), (f, sec) in done.items()]
    write_atomic(path, "".join(line + "\n" for line in lines).encode())


def read_cells(path: Path) -> dict[tuple[int, str, int], tuple[dict, float]]:
    """A ``cells.jsonl``: {(split, method, seed): (figures, training seconds)}."""
    done = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            cell = json.loads(line)
            done[(cell["split"], cell["method"], cell["seed"])] = (cell["figures"], cell["seconds"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: line {number} is not a cell ({exc}); --overwrite to start over") from None
    return done


def by_split(done: dict, splits: list[int], methods: list[str], seeds: list[int]) -> dict:
    """{split: {method: [(figures, seconds) per finished seed]}} of the cells ``done`` asked for."""
    return {k: {m: [done[(k, m, s)] for s in seeds if (k, m, s) in done] for m in methods} for k in splits}


def per_split(results: dict, view: str, key: str) -> dict[str, dict[int, float]]:
    """{method: {split: mean over its seeds of ``figures[view][key]``}} for the methods and splits done."""
    table: dict[str, dict[int, float]] = {}
    for split, by_method in results.items():
        for method, runs in by_method.items():
            if runs and all(view in f for f, _ in runs):
                table.setdefault(method, {})[split] = mean_sd([f[view][key] for f, _ in runs])[0]
    return table


def paired(results: dict, view: str, k: int) -> tuple[str | None, dict]:
    """The best baseline of ``view`` (highest mean Prec@K over its splits) and, per other method, its
    per-split differences from it in Prec@K and mAP@K on the splits both have done:
    ``{method: {"prec": {split: d}, "map": {split: d}}}``."""
    prec, maps = per_split(results, view, f"prec@{k}"), per_split(results, view, f"map@{k}")
    baselines = [m for m in prec if m in BASELINES]
    if not baselines:
        return None, {}
    best = max(baselines, key=lambda m: mean_sd(prec[m].values())[0])
    diffs = {}
    for method in prec:
        if method == best:
            continue
        shared = [s for s in prec[method] if s in prec[best]]
        diffs[method] = {"prec": {s: prec[method][s] - prec[best][s] for s in shared},
                         "map": {s: maps[method][s] - maps[best][s] for s in shared}}
    return best, diffs


def paired_markdown(results: dict, views: dict, k: int) -> str:
    """One paired table per protocol in ``views`` ({record key: what it is})."""
    md = []
    for view, what in views.items():
        best, diffs = paired(results, view, k)
        if best is None or not diffs:
            continue
        md += [f"{what}: each method against the best baseline, **{best}** (highest mean Prec@{k}); per split its "
               f"mean over seeds minus {best}'s, then mean ± sd over the splits, and the splits where it is ahead.", "",
               f"| method | Δ Prec@{k} | Δ mAP@{k} | splits ahead (Prec@{k}) | splits ahead (mAP@{k}) |",
               "|---|---|---|---|---|"]
        for method, d in diffs.items():
            p, m = mean_sd(d["prec"].values()), mean_sd(d["map"].values())
            md.append(f"| {method} | {p[0]:+.4f} ± {p[1]:.4f} | {m[0]:+.4f} ± {m[1]:.4f} | "
                      f"{wins(d['prec'])} of {len(d['prec'])} | {wins(d['map'])} of {len(d['map'])} |")
        md.append("")
    return "\n".join(md)


def wins(diffs: dict) -> int:
    """Splits where the method is strictly ahead."""
    return sum(d > 0 for d in diffs.values())


def splits_csv(results: dict, views: dict, k: int) -> str:
    """Per method, protocol and split: Prec@K and mAP@K (mean and sd over seeds) and the difference
    from the protocol's best baseline; then a row ``split=all``: mean and sd over splits x seeds,
    the mean difference and the splits won."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "protocol", "split", f"prec@{k}_mean", f"prec@{k}_sd", f"map@{k}_mean", f"map@{k}_sd",
                     "best_baseline", f"diff_prec@{k}", f"diff_map@{k}", "splits_won_prec", "splits_won_map",
                     "train_seconds", "n"])
    for view, protocol in views.items():
        best, diffs = paired(results, view, k)
        methods = dict.fromkeys(m for by_method in results.values() for m in by_method)
        for method in methods:
            d = diffs.get(method, {"prec": {}, "map": {}})
            cells = []
            for split, by_method in results.items():
                runs = by_method.get(method, [])
                if not runs or not all(view in f for f, _ in runs):
                    continue
                cells += runs
                writer.writerow([method, protocol, split, *figure_columns(runs, view, k), best or "",
                                 _number(d["prec"].get(split)), _number(d["map"].get(split)), "", "",
                                 f"{mean_sd([s for _, s in runs])[0]:.2f}", len(runs)])
            if cells:
                won = (wins(d["prec"]), wins(d["map"])) if d["prec"] else ("", "")
                writer.writerow([method, protocol, "all", *figure_columns(cells, view, k), best or "",
                                 _number(mean_sd(d["prec"].values())[0] if d["prec"] else None),
                                 _number(mean_sd(d["map"].values())[0] if d["map"] else None), *won,
                                 f"{mean_sd([s for _, s in cells])[0]:.2f}", len(cells)])
    return buf.getvalue()


def figure_columns(runs: list, view: str, k: int) -> list[str]:
    prec = mean_sd([f[view][f"prec@{k}"] for f, _ in runs])
    maps = mean_sd([f[view][f"map@{k}"] for f, _ in runs])
    return [f"{v:.6f}" for v in (*prec, *maps)]


def _number(value) -> str:
    return "" if value is None else f"{value:.6f}"


def plot(results: dict, views: dict, k: int) -> bytes:
    """The per-split differences of each method from each protocol's best baseline (report.plot_paired)."""
    panels = {}
    for view, label in views.items():
        best, diffs = paired(results, view, k)
        if best is not None and diffs:
            panels[f"{label}: minus {best}"] = {m: list(d["prec"].values()) for m, d in diffs.items()}
    return plot_paired(panels, f"Δ Prec@{k} against the best baseline", f"one dot a split ({len(results)} splits)")
