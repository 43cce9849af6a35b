"""A run owns its folders: a lock, no silent mixing with an earlier run, no leftovers.

A run writes ``ckt_logs/NAME_logs/`` and ``retrieved_res/NAME_res/``. :class:`RunFolder`

* checks both can be written before any work starts (so a read-only disk fails in one line
  at the start, not after hours of training);
* holds an ``flock`` on ``NAME_logs/.lock`` while the run lives; the file holds the PID, so a
  second run with the same name refuses naming the holder. The kernel drops the lock when
  the process dies, even by kill -9, so a stale lock cannot block anyone;
* refuses a folder holding another run's outputs unless the run resumes (``--resume``) or
  replaces them (``--overwrite``, which deletes them first: stale ``acc*.pkl``, plots and
  report.html would otherwise sit beside the new summary);
* removes temporary files left by a write that was killed half way (``files.write_atomic``
  names them ``.<file>.<random>.tmp``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from zscrgan.config import DEFAULT_K, RESUMABLE
from zscrgan.data.dataset import resolve_dataset_dir, write_pickle
from zscrgan.errors import UserError
from zscrgan.files import LOCK_FILE, FolderLock, check_writable, write_atomic
from zscrgan.runfiles import ARGS_FILE, CONFIG_FILE, LAST_CHECKPOINT, RUN_FILES

# a round's scored views (metrics.jsonl keys, summary.json's "selected"): every text a query, on the
# validation and the unseen classes; on data with many texts a class, one query per class too, in two
# forms: the mean text's query (_class) and the mean of the texts' queries (_prototype)
RECORD_VIEWS = ("val", "val_class", "val_prototype", "test", "test_class", "test_prototype")
PER_CLASS_FORMS = {"class": "the query of the mean of its texts", "prototype": "the mean of its texts' queries"}
MAX_RETRIEVAL_LISTS = 100_000  # retrieval lists written per pickle (write_retrieval)


class RunFolder:
    """The two output folders of one run; ``mode`` is "new", "resume" or "overwrite"."""

    def __init__(self, run_dir: Path, res_dir: Path, mode: str = "new"):
        self.run_dir, self.res_dir, self.mode = Path(run_dir), Path(res_dir), mode
        self._lock = FolderLock(self.run_dir, "{folder}: another zscrgan run (PID {pid}) is writing this folder; "
                                              "wait for it to end, or give this run another --name")

    def outputs(self) -> list[Path]:
        """Files an earlier run left: its records, checkpoints, plots and retrieval lists."""
        found = [self.run_dir / name for name in RUN_FILES if (self.run_dir / name).is_file()]
        found += sorted(self.run_dir.glob("*.png")) if self.run_dir.is_dir() else []
        found += sorted(self.res_dir.glob("acc*.pkl")) if self.res_dir.is_dir() else []
        return found

    def leftovers(self) -> list[Path]:
        """Temporary files of atomic writes that never finished (the writer was killed)."""
        return [p for d in (self.run_dir, self.res_dir) if d.is_dir() for p in d.glob(".*.tmp")]

    def check(self) -> None:
        """Everything that would stop this run, changing nothing (run before any slow work)."""
        check_writable(self.run_dir, create=False)
        check_writable(self.res_dir, create=False)
        if (self.run_dir / LOCK_FILE).is_file():
            self.lock()
            self.unlock()
        self.check_ownership()

    def check_ownership(self) -> None:
        if self.mode != "new":
            return
        found = self.outputs()
        if found:
            names = ", ".join(p.name for p in found[:4]) + (" ..." if len(found) > 4 else "")
            raise UserError(f"{self.run_dir}: holds an earlier run's outputs ({names}); --resume {self.run_dir} "
                            f"continues it, --overwrite replaces it, --name NEW keeps it beside")

    def lock(self) -> None:
        """Take the folder's lock, or a UserError naming the PID of the run holding it."""
        self._lock.acquire()

    def unlock(self) -> None:
        self._lock.release()

    def open(self) -> "RunFolder":
        """Check, lock, tidy: remove half-written files, and the old outputs under --overwrite."""
        check_writable(self.run_dir)
        check_writable(self.res_dir)
        self.lock()
        try:
            self.check_ownership()
            stale = self.leftovers()
            if self.mode == "overwrite" or (self.mode == "resume" and not (self.run_dir / LAST_CHECKPOINT).is_file()):
                stale += self.outputs()  # nothing to resume from: what is there is not this run's
            for path in stale:
                path.unlink(missing_ok=True)
        except BaseException:
            self.unlock()
            raise
        return self

    # ---- what a run writes (each file atomically) -----------------------------------------
    def write(self, name: str, payload: bytes) -> None:
        write_atomic(self.run_dir / name, payload)

    def write_json(self, name: str, value, lines: bool = False) -> None:
        """``lines``: one JSON object per line (:data:`zscrgan.runfiles.METRICS_FILE`), else one indented document."""
        text = "".join(json.dumps(row) + "\n" for row in value) if lines else json.dumps(value, indent=1)
        self.write(name, text.encode())

    def write_config(self, config: dict) -> None:
        self.write(ARGS_FILE, "".join(f"{k}: {v}\n" for k, v in config.items()).encode())
        self.write_json(CONFIG_FILE, config)

    def retrieval_path(self, k: int, figures: dict) -> Path:
        """Where the retrieval lists of a round with these unseen-class ``figures`` are written."""
        prec = figures[f"prec@{k}"]
        return self.res_dir / (f"acc{prec:.3f}.pkl" if k == DEFAULT_K else f"acc_p{k}_{prec:.3f}.pkl")

    def write_retrieval(self, k: int, figures: dict, lists: list, only: bool = False) -> Path:
        """``acc<Prec@50>.pkl`` as upstream names it; ``acc_p<K>_<Prec@K>.pkl`` when selecting on
        another K. ``only``: remove the earlier ones first (--select last keeps one file).

        One entry per query text, every query, up to :data:`MAX_RETRIEVAL_LISTS` (FLO_cap's 11,549
        caption queries wrote 1.35 MB, so about 12 MB at the cap);
        past that, an evenly spaced sample of that many queries, in query order (a caption set of
        millions of texts would otherwise write gigabytes)."""
        if len(lists) > MAX_RETRIEVAL_LISTS:
            lists = [lists[i] for i in np.linspace(0, len(lists) - 1, MAX_RETRIEVAL_LISTS).round().astype(int)]
        path = self.retrieval_path(k, figures)
        if only:
            for old in self.res_dir.glob("acc*.pkl"):
                old.unlink()
        write_pickle(path, lists)
        return path

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.unlock()


def config_differences(saved: dict, asked: dict) -> str:
    """'--gf_dim 32, this run asks 64; --df_dim 32, this run asks 64': every setting, outside
    :data:`zscrgan.config.RESUMABLE`, where a checkpoint's config and this run's differ; "" when none.
    A data set given as a NAME by an older run matches the same folder given as a path."""
    def same_data(old: str, new: str) -> bool:
        if not old or not new:
            return old == new
        try:
            return os.path.abspath(resolve_dataset_dir(old, saved.get("data_root", "datasets"))) == os.path.abspath(new)
        except ValueError:
            return old == new

    changed = []
    for key, old in saved.items():
        if key in RESUMABLE or key not in asked or asked[key] == old:
            continue
        if key == "dataset" and same_data(old, asked[key]):
            continue
        changed.append(f"--{key} {old}, this run asks {asked[key]}")
    return "; ".join(changed)


def view_figures(view: str, scores, per_class: dict) -> dict:
    """One scored view as metrics.jsonl and summary.json record it (scoring.score_views' result):
    ``view`` (every text a query) and ``{view}_{form}`` for each per-class form."""
    return {view: scores.as_dict()} | {f"{view}_{form}": figures.as_dict() for form, figures in per_class.items()}


def per_class_table(scores, classes) -> dict:
    """summary.json's per-class figures: {"prec@50": {"<class id>": value, ...}, ...}."""
    return {key: {str(c): float(v) for c, v in zip(classes, values)} for key, values in scores.per_class.items()}


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(summaries: list[dict]) -> dict:
    """mean and sd over seeds of every reported figure."""
    table = {}
    for view, key, name in (("selected", "test", "selected"), ("selected", "test_class", "selected_per_class"),
                            ("selected", "test_prototype", "selected_prototype"), ("best_on_test", "test", "best_on_test")):
        rows = [s[view][key] for s in summaries if key in s.get(view, {})]
        if rows and len(rows) == len(summaries):
            table[name] = {k: mean_sd([r[k] for r in rows]) for k in rows[0]}
    return table
