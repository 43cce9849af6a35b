"""What every `zscrgan` command shares about failing: one line, and the next step.

* :class:`UserError` is anything the person running a command can fix (a bad flag value, a
  missing GPU, a checkpoint that will not load, a locked folder); `zscrgan` prints its message
  as one line and exits 1. :class:`DataError` is the kind about a data file;
* :func:`require` imports an optional dependency or says in one line which extra installs it;
* :class:`Interrupted` is Ctrl-C carrying the command that continues the work.
"""
from __future__ import annotations

import importlib


class UserError(Exception):
    """A problem the user can fix; the message is one line and says what to do."""


class DataError(UserError, ValueError):
    """Bad input data; the message is one line and names the file (a ValueError for old callers)."""


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or raise a one-line UserError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs {module.split('.')[0]}: pip install 'zscrgan[{extra}]'") from None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the command that resumes (str(exc) is printed after 'interrupted; ')."""
