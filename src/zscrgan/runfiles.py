"""Where a run NAME's files go and what they are called: ``OUT/ckt_logs/NAME_logs/`` and
``OUT/retrieved_res/NAME_res/``.

Names only, so that everything from ``config`` (``--resume RUN`` finds a run's config.json) to the
scripts spells them one way; zscrgan.runs reads the files back.
"""
from __future__ import annotations

from pathlib import Path

# What a run writes into ckt_logs/NAME_logs/ (besides its plots, *.png)
METRICS_FILE = "metrics.jsonl"  # one JSON object per EM round
SUMMARY_FILE = "summary.json"  # the selected and best-on-test figures, written at the end
CONFIG_FILE, ARGS_FILE = "config.json", "args.txt"  # the run's settings, as JSON and as upstream's lines
BEST_CHECKPOINT, LAST_CHECKPOINT = "best.pt", "last.pt"  # the selected round's, and the latest round's
REPORT_FILE = "report.html"
RUN_FILES = (METRICS_FILE, SUMMARY_FILE, BEST_CHECKPOINT, LAST_CHECKPOINT, ARGS_FILE, CONFIG_FILE, REPORT_FILE)


def run_dirs(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """The run NAME's two folders under ``out_dir``: its records and checkpoints, its retrieval lists."""
    return Path(out_dir) / "ckt_logs" / f"{name}_logs", Path(out_dir) / "retrieved_res" / f"{name}_res"


def seeds_file(out_dir: str | Path, name: str) -> Path:
    """Where ``--seeds`` writes the mean and sd over the runs NAME_seed<S>."""
    return Path(out_dir) / "ckt_logs" / f"{name}_seeds.json"
