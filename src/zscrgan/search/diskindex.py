"""The compressed on-disk index (kind ``ivfpq``): train once, add parts anywhere, merge on disk, mmap.

A flat index of 10M 1024-d vectors needs 40 GB of RAM. IVF + product quantisation stores each
vector as ``m`` bytes in one of ``nlist`` cells; the cells live in one file (faiss'
``OnDiskInvertedLists``) that a server memory-maps, so it starts in seconds and its RSS is the
centroids plus the pages queries touch. The flow, each step a pure function of files:

    train(sample)                      -> TRAINED   empty index: centroids, [OPQ], PQ codebooks
    add_part(TRAINED, vectors, first)  -> one part index file (any machine, in parallel)
    merge(TRAINED, parts, folder)      -> folder/ivfpq.index + ivfpq.ivfdata (faiss merge_ondisk)
    open_merged(folder)                -> the index; its lists file memory-mapped read-only

Ids are gallery rows (0..N-1): a part holding rows [first, first + n) adds them with those ids,
so merged results index the ``ids`` array of vectors.npz and ``exact.f32`` (the unit vectors,
row-aligned, float32, kept for re-ranking the top candidates, read with pread; optional).

Why not ``faiss.read_index(path, IO_FLAG_MMAP)``: that flag includes IO_FLAG_SKIP_IVF_DATA, so
on an OnDiskInvertedLists index it leaves the lists unmapped and a search segfaults (faiss
1.15). ``OnDiskInvertedLists`` always mmaps its file; IO_FLAG_READ_ONLY maps it read-only and
IO_FLAG_ONDISK_SAME_DIR finds it beside the index file, so the folder can be moved.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zscrgan.errors import DataError, require
from zscrgan.evaluation.metrics import unit
from zscrgan.files import write_atomic

TRAINED, MERGED, IVFDATA, EXACT = "ivfpq.trained", "ivfpq.index", "ivfpq.ivfdata", "exact.f32"
TRAIN_PER_CELL = 64  # k-means sample per coarse centroid (faiss warns below 39)
TRAIN_PQ = 65536  # PQ codebooks learn well from this many vectors; more only costs time
IVFPQ_MAX_CELLS = 65536  # enough for 100M vectors (faiss' guidance)
PQ_MIN_PER_CELL = 39  # training vectors per cell below which faiss' k-means warns


def cell_count(n: int, most: int, per_cell: int = 1) -> int:
    """The k-means cells of an IVF index over n vectors, for every kind that has them: about
    4 sqrt(N) (faiss' guidance), at most ``most``, at least ``per_cell`` vectors each, at least 1."""
    return int(max(1, min(most, round(4 * n ** 0.5), n // per_cell)))


def _faiss():
    return require("faiss", "search", "kind ivfpq")


@dataclass(frozen=True)
class PQSpec:
    """The shape of an ivfpq index: cells, sub-quantisers (bytes per vector), optional OPQ rotation."""

    dim: int
    nlist: int
    m: int
    opq: bool = False
    nbits: int = 8  # fewer for small galleries: a codebook of 2**nbits needs 39 samples per centroid

    @classmethod
    def for_size(cls, n: int, dim: int, opq: bool = False) -> "PQSpec":
        """:func:`cell_count` cells (at most 65536, 39 vectors each), m = dim/4 sub-quantisers of 8 bits.

        dim/4, not dim/8: with 10,000 photos a class, dim/8 codes put only 0.49 of the true top
        10 among the 300 best PQ candidates, dim/4 codes 0.94 (docs/performance.md)."""
        nlist = cell_count(n, IVFPQ_MAX_CELLS, PQ_MIN_PER_CELL)
        nbits = int(min(8, max(4, np.log2(max(n, 1) / PQ_MIN_PER_CELL))))
        return cls(dim, nlist, cls.default_m(dim), opq, nbits)

    @staticmethod
    def default_m(dim: int) -> int:
        """Sub-quantisers: the largest divisor of dim up to dim/4 (at least 1)."""
        m = max(1, dim // 4)
        while dim % m:
            m -= 1
        return m

    @property
    def factory(self) -> str:
        return f"{f'OPQ{self.m},' if self.opq else ''}IVF{self.nlist},PQ{self.m}x{self.nbits}"

    def train_size(self, n: int) -> int:
        return int(min(n, max(TRAIN_PER_CELL * self.nlist, TRAIN_PQ)))

    def bytes_per_vector(self) -> int:
        return (self.m * self.nbits + 7) // 8 + 8  # the PQ code and its int64 id


@contextlib.contextmanager
def _quiet_stdout():
    """faiss prints progress ('resizing ...', 'IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename
    ...') on the C stdout: a library's chatter, dropped, so `zscrgan search --json` and `--paths`
    print only their answers (its errors still arrive, as the exceptions it raises)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


def _flush_c_stdio() -> None:
    """fflush(NULL): what faiss left in the C stdout buffer goes where fd 1 points now."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def _write(faiss, index, path: Path) -> None:
    """faiss.write_index via a temporary name and rename: no half file under the real name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(faiss, path: Path, flags: int = 0):
    if not Path(path).is_file():
        raise DataError(f"{path}: index file not found")
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:160]
        raise DataError(f"{path}: not a readable faiss index, truncated or damaged ({first})") from None


def quiet_kmeans(faiss, index) -> None:
    """No "WARNING clustering N points to K centroids: please provide at least ..." on stderr: the
    cell count is ours (:func:`cell_count`), not a
    thing the user can fix, and k-means is still right. faiss reads ``min_points_per_centroid``
    only for that warning, so nothing else changes."""
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:  # not an IVF index faiss can reach into: its warning stays
        return
    ivf.cp.min_points_per_centroid = 0
    if hasattr(ivf, "pq"):
        ivf.pq.cp.min_points_per_centroid = 0


def train(sample: np.ndarray, spec: PQSpec, path: Path) -> Path:
    """Train the coarse cells, OPQ and PQ codebooks once, on a sample of the whole gallery."""
    faiss = _faiss()
    sample = unit(sample)
    if len(sample) < spec.nlist:
        raise DataError(f"ivfpq with {spec.nlist} cells needs at least that many training vectors, got {len(sample)}")
    index = faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
    # the factory turns on polysemous training (Hamming filtering we do not use): 2 to 3x the train time
    faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    quiet_kmeans(faiss, index)
    index.train(sample)
    _write(faiss, index, Path(path))
    return Path(path)


def fingerprint(index) -> str:
    """A hash of everything training decided (centroids, PQ codebooks, OPQ matrix): parts added
    from different trainings cannot be merged, their codes mean different things."""
    faiss = _faiss()
    ivf = faiss.extract_index_ivf(index)
    digest = hashlib.sha256(f"{index.d} {ivf.nlist} {ivf.code_size}".encode())
    digest.update(ivf.quantizer.reconstruct_n(0, ivf.nlist).tobytes())
    digest.update(faiss.vector_to_array(faiss.downcast_index(ivf).pq.centroids).tobytes())
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            digest.update(faiss.vector_to_array(faiss.downcast_VectorTransform(index.chain.at(i)).A).tobytes())
    return digest.hexdigest()


def add_part(trained: Path, chunks, first_row: int, out: Path) -> int:
    """Encode one part's vectors (an array, or an iterable of arrays) as rows first_row.. into
    its own index file; returns the row count. Needs only TRAINED, so it runs anywhere."""
    faiss = _faiss()
    index = _read(faiss, trained)
    row = first_row
    for chunk in ([chunks] if isinstance(chunks, np.ndarray) else chunks):
        chunk = unit(chunk)
        index.add_with_ids(chunk, np.arange(row, row + len(chunk), dtype=np.int64))
        row += len(chunk)
    _write(faiss, index, Path(out))
    return row - first_row


def merge(trained: Path, parts: list[Path], folder: Path, expected_rows: int | None = None) -> int:
    """Merge part index files into folder/ivfpq.index + ivfpq.ivfdata (mmap-able); returns rows.

    Every part is checked (readable, same training) before anything is written, and the
    result is built in a staging folder then renamed in, so a refusal leaves ``folder`` as it was.
    """
    faiss = _faiss()
    merge_ondisk = require("faiss.contrib.ondisk", "search", "kind ivfpq").merge_ondisk
    folder = Path(folder)
    base = _read(faiss, trained)
    want, total = fingerprint(base), 0
    for part in parts:
        index = _read(faiss, part, faiss.IO_FLAG_MMAP)
        if fingerprint(index) != want:
            raise DataError(f"{part}: its quantiser differs from {trained}'s (added from another training); "
                            f"add the part again from {trained}")
        total += index.ntotal
        del index
    if expected_rows is not None and total != expected_rows:
        raise DataError(f"{folder}: the parts hold {total} vectors, expected {expected_rows}; a part is missing or repeated")
    stage = folder / f".merge-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with _quiet_stdout():
            merge_ondisk(base, [str(s) for s in parts], str(stage / IVFDATA))
        faiss.write_index(base, str(stage / MERGED))
        del base
        for name in (IVFDATA, MERGED):  # the data first: a reader finds no index without its lists
            os.replace(stage / name, folder / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return total


def open_merged(folder: Path, nprobe: int = 64):
    """The merged index, memory-mapped: RSS is the centroids plus the list pages queries touch."""
    faiss = _faiss()
    folder = Path(folder)
    if not (folder / IVFDATA).is_file():
        raise DataError(f"{folder / IVFDATA}: not found; the ivfpq index of {folder} was not merged to the end")
    with _quiet_stdout():
        index = _read(faiss, folder / MERGED, faiss.IO_FLAG_READ_ONLY | faiss.IO_FLAG_ONDISK_SAME_DIR)
    faiss.extract_index_ivf(index).nprobe = min(nprobe, faiss.extract_index_ivf(index).nlist)
    return index


class ExactRows:
    """The kept exact vectors, read row by row with pread: re-ranking touches a few hundred
    scattered rows per query, and a memory map would fault in (and count in RSS) 64 KB around
    each one; pread leaves them in the page cache, outside the server's RSS."""

    def __init__(self, path: Path, dim: int, rows: int):
        self.path, self.dim, self.rows = path, dim, rows
        self.fd = os.open(path, os.O_RDONLY)
        self.row_bytes = dim * 4

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        buf = b"".join(os.pread(self.fd, self.row_bytes, int(i) * self.row_bytes) for i in ids)
        if len(buf) != len(ids) * self.row_bytes:
            raise DataError(f"{self.path}: shorter than its {self.rows} rows; truncated since opened")
        return np.frombuffer(buf, np.float32).reshape(len(ids), self.dim)

    def __del__(self):
        try:
            os.close(self.fd)
        except (OSError, AttributeError, TypeError):
            pass


def open_exact(folder: Path, dim: int, rows: int) -> ExactRows | None:
    """The kept exact vectors (for re-ranking); None when not kept."""
    path = Path(folder) / EXACT
    if not path.is_file():
        return None
    if path.stat().st_size != rows * dim * 4:
        raise DataError(f"{path}: {path.stat().st_size} bytes, expected {rows} x {dim} float32; truncated or stale")
    return ExactRows(path, dim, rows)


BUILD_PART_ROWS = 1_000_000  # vectors per part index added before the on-disk merge


def write_ivfpq(out: Path, vectors: np.ndarray, opq: bool, keep_vectors: bool):
    """Train on a sample, add the gallery in parts of BUILD_PART_ROWS, merge on disk into ``out``."""
    n, dim = vectors.shape
    spec = PQSpec.for_size(n, dim, opq)
    stage = out / f".ivfpq-build-{os.getpid()}"
    stage.mkdir(exist_ok=True)
    try:
        picks = np.sort(np.random.default_rng(0).choice(n, spec.train_size(n), replace=False))
        train(vectors[picks], spec, stage / TRAINED)
        parts = []
        for first in range(0, n, BUILD_PART_ROWS):
            parts.append(stage / f"part-{first // BUILD_PART_ROWS:05d}.index")
            add_part(stage / TRAINED, vectors[first:first + BUILD_PART_ROWS], first, parts[-1])
        if keep_vectors:
            write_atomic(out / EXACT, unit(vectors))  # written from the array's buffer: no bytes copy
        else:
            (out / EXACT).unlink(missing_ok=True)
        merge(stage / TRAINED, parts, out, expected_rows=n)
        os.replace(stage / TRAINED, out / TRAINED)  # kept: later parts can be added from it
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return spec


__all__ = ["PQSpec", "cell_count", "train", "add_part", "merge", "open_merged", "open_exact", "fingerprint",
           "ExactRows", "TRAINED", "MERGED", "IVFDATA", "EXACT", "write_ivfpq"]
