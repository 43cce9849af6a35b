"""Files written whole or not at all, and the small checks around them.

:func:`write_atomic` is how every output of the project reaches disk (a temporary file, then a
rename), so a killed run leaves the last complete file, never half of a new one.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import tempfile
from pathlib import Path

from zscrgan.errors import DataError, UserError

# Fault injection for tests: a process writing a file of this name kills itself (SIGKILL) once
# the temporary file is written, as a power cut or kill -9 would, leaving the .tmp behind.
KILL_AFTER_TMP = "ZSCRGAN_KILL_AFTER_TMP"


def write_atomic(path: Path, payload: bytes) -> None:
    """Write bytes (or an array's buffer) to ``path`` via a temporary file ``.<name>.<random>.tmp`` and rename, so no half
    file is left; a temporary file a killed writer leaves is removed by the next run (experiments/runfolder.py).
    An OSError that names no file (a full disk) is raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        if os.environ.get(KILL_AFTER_TMP) == path.name:
            os.kill(os.getpid(), signal.SIGKILL)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write (a full disk) names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def write_json(path: Path, value, indent: int | None = 1) -> None:
    """``value`` as a JSON document (indented one space a level, as every JSON file here), atomically."""
    write_atomic(path, json.dumps(value, indent=indent).encode())


def read_json_object(path: Path) -> dict:
    """A JSON object from ``path``, or {} when the file is absent; DataError when malformed."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


def check_writable(folder: Path, flag: str = "--out_dir", create: bool = True) -> None:
    """A one-line UserError unless files can be made in ``folder``. ``create=False`` leaves no
    trace: it tries an unnamed scratch file in the nearest folder that exists."""
    folder = Path(folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
        if not folder.is_dir():
            raise UserError(f"{folder}: is a file, not a folder; choose another {flag}")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{folder}: cannot write here ({exc.strerror or exc}); choose another {flag}") from None


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """The file's SHA-256 in hex, read in blocks (a checkpoint, a shard: what a manifest pins)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


LOCK_FILE = ".lock"


class FolderLock:
    """An exclusive flock on FOLDER/.lock holding the owner's PID, so two writers never share a
    folder; the kernel frees it when the owner dies, even by kill -9. The file stays after release:
    removing it would let two writers lock two different files.

    ``busy`` is the one-line UserError for a folder already held; ``{folder}`` and ``{pid}`` are
    filled in.
    """

    def __init__(self, folder: Path, busy: str):
        self.folder, self.busy = Path(folder), busy
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(self.busy.format(folder=self.folder, pid=holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
