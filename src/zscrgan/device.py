"""Which torch device a command runs on (one ``--device`` flag and one rule for every command), and
how several worker processes share this machine's CPU threads."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch

from zscrgan.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "auto (cuda where one is available, else cpu), cpu or cuda"


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda when available, else cpu; ``cuda`` without a GPU is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(name)


def add_device_flag(parser) -> None:
    """``--device {auto,cpu,cuda}`` on an argparse parser (commands built from a dataclass get it from the field)."""
    parser.add_argument("--device", default="auto", choices=DEVICES, help=DEVICE_HELP)


# ---- worker processes ------------------------------------------------------------------------
SPAWN = multiprocessing.get_context("spawn")  # fresh processes: forking a process that has run OpenMP can hang


def thread_share(workers: int) -> int:
    """Each of ``workers`` processes' equal share of this process's torch threads (at least 1)."""
    return max(1, torch.get_num_threads() // workers)


def spawn_pool(workers: int, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes; each sets its own threads (:func:`thread_share`)."""
    return ProcessPoolExecutor(workers, mp_context=SPAWN, initializer=initializer, initargs=initargs)
