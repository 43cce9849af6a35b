"""The on-disk index folder shared by `zscrgan index` (writer) and `search` / `serve` (readers).

    INDEX/manifest.json   run, checkpoint hash, featurizers, counts, index kind, state
    INDEX/photos.sqlite   one row per photo: id, relative path, sha256, size, mtime, width,
                          height, known class, common-space embedding, JPEG thumbnail;
                          and the unreadable files skipped, with the reason
    INDEX/vectors.npz     the FAISS index (GalleryIndex.to_bytes) and the photo id of each row
    INDEX/classes.npz     per class of the data set: id, name, seen flag, query embedding
    INDEX/.lock           held (flock) by the `zscrgan index` writing the folder

Why this shape: SQLite commits are atomic and survive kill -9, so the photo table is the
source of truth and grows one committed batch at a time; every other file is derived from it
and replaced atomically (``files.write_atomic``) at the end of a run. A reader never sees a
half-written file, only, after an interrupted run, a vectors.npz one run behind the table.
"""
from __future__ import annotations

import contextlib
import io
import os
import sqlite3
from pathlib import Path

import numpy as np

from zscrgan.errors import DataError
from zscrgan.files import FolderLock, read_json_object, write_atomic, write_json

FORMAT = "zscrgan-index/1"
MANIFEST, DB, VECTORS, CLASSES = "manifest.json", "photos.sqlite", "vectors.npz", "classes.npz"

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    class TEXT, embedding BLOB NOT NULL, thumb BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL);
"""
# A photo's path is its text, or, for a name that is not UTF-8, its raw bytes (a BLOB in the same
# column): stored losslessly, and still the file's one key (stored_path / file_path convert).
META_COLUMNS = ("id", "path", "sha256", "size", "mtime_ns", "width", "height", "class")
# photos.sqlite's layout version, in SQLite's user_version: 0 is the same layout written before
# versions were kept (taken as 1, and stamped so by the next writer); a newer one is refused.
SCHEMA_VERSION = 1


def stored_path(rel: str) -> str | bytes:
    """``rel`` (relative, surrogate-escaped where not UTF-8, as os.walk gives it) as the table keeps it."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        return os.fsencode(rel)


def file_path(stored: str | bytes) -> str:
    """The relative path a stored one stands for (the inverse of :func:`stored_path`)."""
    return os.fsdecode(stored) if isinstance(stored, bytes) else stored


def connect(folder: Path, readonly: bool = False) -> sqlite3.Connection:
    path = Path(folder) / DB
    if readonly:
        if not path.is_file():
            raise DataError(f"{path}: not found; is {folder} an index folder made by zscrgan index?")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise DataError(f"{path}: photo table of schema version {version}, newer than this zscrgan reads "
                        f"({SCHEMA_VERSION}); upgrade zscrgan, or index into a new --out folder")
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")  # readers (serve) keep reading while index writes
        conn.executescript(SCHEMA)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def sqlite_errors(folder: Path):
    """SQLite's own errors (``database or disk is full``, a damaged file) as one line naming the table."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DataError(f"{Path(folder) / DB}: {exc}; the photos committed before it are kept: "
                        f"fix that, then rerun the same command to continue") from None


def read_manifest(folder: Path) -> dict:
    manifest = read_json_object(Path(folder) / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise DataError(f"{folder}: not an index folder made by zscrgan index (no {MANIFEST} of format {FORMAT})")
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    write_json(Path(folder) / MANIFEST, manifest)


def write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run zscrgan index to the end first") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None


def folder_lock(folder: Path, command: str) -> FolderLock:
    """FOLDER/.lock, held by the ``command`` (`zscrgan index`, `zscrgan shard`) writing the folder."""
    return FolderLock(folder, f"{{folder}}: another {command} (PID {{pid}}) is writing this folder; wait for it to finish")


def all_embeddings(conn: sqlite3.Connection, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [N], embeddings float32 [N, dim]) in id order, read in blocks."""
    n = conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
    ids, out = np.empty(n, np.int64), np.empty((n, dim), np.float32)
    cursor = conn.execute("SELECT id, embedding FROM photos ORDER BY id")
    row = 0
    while rows := cursor.fetchmany(65536):
        rows = rows[: n - row]  # rows committed after the count (a concurrent writer) wait for the next run
        ids[row:row + len(rows)] = [r[0] for r in rows]
        out[row:row + len(rows)] = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, dim)
        row += len(rows)
    return ids[:row], out[:row]
