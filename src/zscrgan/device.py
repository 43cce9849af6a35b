"""Which torch device a command runs on: one ``--device`` flag and one rule for every command."""
from __future__ import annotations

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
