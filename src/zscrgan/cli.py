"""The `zscrgan` command: one subcommand per job, each owned by its own module.

    zscrgan train     --dataset FLO ...      train and evaluate (zscrgan.experiments.train)
    zscrgan evaluate  CHECKPOINT             recompute metrics from a checkpoint (zscrgan.experiments.evaluate)
    zscrgan report    RUN_DIR                plots and an HTML page of a run (zscrgan.experiments.report)
    zscrgan compare   --dataset FLO          baselines vs ZSCRGAN recipes (zscrgan.experiments.compare)
    zscrgan tune      --dataset FLO --trials 40   hyperparameter search on validation classes (zscrgan.experiments.tune)
    zscrgan featurize images|texts ...       photos / descriptions to vectors (zscrgan.data.featurize)
    zscrgan data      build|split|check|convert   make and validate data sets (zscrgan.data.command)
    zscrgan models                           the models shipped with zscrgan (zscrgan.search.shipped)
    zscrgan index     --model flowers --images DIR --out INDEX   make photos searchable (zscrgan.search.index)
    zscrgan shard     --run RUN --images DIR --out SHARDS  embed photos in shards, local or Ray (zscrgan.search.shard)
    zscrgan search    INDEX "description"    photos by description (zscrgan.search.reader)
    zscrgan serve     INDEX                  HTTP API and web page (zscrgan.search.serve)
    zscrgan --version
"""
from __future__ import annotations

import importlib
import os
import sys

from zscrgan import __version__
from zscrgan.errors import Interrupted, UserError

COMMANDS = {
    "train": ("zscrgan.experiments.train", "train_main"),
    "evaluate": ("zscrgan.experiments.evaluate", "evaluate_main"),
    "report": ("zscrgan.experiments.report", "main"),
    "compare": ("zscrgan.experiments.compare", "main"),
    "tune": ("zscrgan.experiments.tune", "main"),
    "featurize": ("zscrgan.data.featurize", "main"),
    "data": ("zscrgan.data.command", "main"),
    "models": ("zscrgan.search.shipped", "main"),
    "index": ("zscrgan.search.index", "main"),
    "shard": ("zscrgan.search.shard", "main"),
    "search": ("zscrgan.search.reader", "main"),
    "serve": ("zscrgan.search.serve", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"zscrgan {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"zscrgan: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[command]
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return func(rest) or 0
    except UserError as exc:  # DataError included
        print(f"zscrgan {command}: error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"zscrgan {command}: interrupted; {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"zscrgan {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zscrgan evaluate ... | head`: the reader has all it wanted
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        except (OSError, ValueError):  # stdout is not a real file (under test)
            pass
        return 141
    except OSError as exc:  # a read-only or full disk, a folder we may not write: one line, not a traceback
        print(f"zscrgan {command}: error: {os_error(exc)}", file=sys.stderr)
        return 1


def os_error(exc: OSError) -> str:
    """'PATH: Permission denied' from an OSError, whichever of its fields are set."""
    where = exc.filename if exc.filename is not None else ""
    what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else what


if __name__ == "__main__":
    sys.exit(main())
