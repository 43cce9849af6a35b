"""What every `zscrgan` command shares about failing: one line, and the next step.

* :class:`UserError` is anything the person running a command can fix (a bad flag value, a
  missing GPU, a checkpoint that will not load, a locked folder); `zscrgan` prints its message
  as one line and exits 1. :class:`DataError` is the kind about a data file;
* :class:`Parser` is argparse with a one-line error (the problem, then where the rest is),
  instead of a usage block that buries the line that matters;
* :func:`require` imports an optional dependency or says in one line which extra installs it;
* :class:`Interrupted` is Ctrl-C carrying the command that continues the work;
* :func:`progress` is tqdm on a terminal and plain lines elsewhere, so a log written to a
  file or through ``| tee`` holds no carriage-return frames.
"""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm


class UserError(Exception):
    """A problem the user can fix; the message is one line and says what to do."""


class DataError(UserError, ValueError):
    """Bad input data; the message is one line and names the file (a ValueError for old callers)."""


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or raise a one-line UserError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs {module.split('.')[0]}: pip install 'zscrgan[{extra}]'") from None


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: 'PROG: error: MESSAGE (PROG --help for the rest)'."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help for the rest)\n")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the command that resumes (str(exc) is printed after 'interrupted; ')."""


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
