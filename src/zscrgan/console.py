"""What a command shows on the terminal: one-line argument errors, progress, lines above it.

* :class:`Parser` is argparse with a one-line error (the problem, then where the rest is),
  instead of a usage block that buries the line that matters;
* :func:`progress` is tqdm on a terminal and plain lines elsewhere, so a log written to a
  file or through ``| tee`` holds no carriage-return frames.
"""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: 'PROG: error: MESSAGE (PROG --help for the rest)'."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help for the rest)\n")


def comma_list(text: str) -> list[str]:
    """A flag's comma list, "a, b,,c" -> ["a", "b", "c"]: items stripped, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def is_terminal() -> bool:
    """Whether stderr (where progress goes) is a terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class progress:
    """tqdm where stderr is a terminal; elsewhere one plain line per ``every`` steps and at the end.

    Used as ``with progress(total, "featurize", "img", every=100) as bar: bar.update(n)``.
    """

    def __init__(self, total: int, desc: str, unit: str, every: int = 1, initial: int = 0):
        """``every=0``: no plain lines (the caller prints its own line per step)."""
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = self.last = initial
        self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr) if is_terminal() else None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.every and (self.n - self.last >= self.every or self.n == self.total):
            self.last = self.n
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def say(line: str, prefix: str = "", file=None) -> None:
    """A line above any live progress bar (print where there is none); stdout unless ``file``."""
    tqdm.write(prefix + line, file=file)
