"""Sharded featurize + embed: the photo list cut into shards, each turned into files by a pure worker.

    SHARDS/plan.json                run key (checkpoint, encoder, photo folder), shard size, count
    SHARDS/plan.parquet             the photo list: path, shard (fixed when first seen)
    SHARDS/shard-00007.npy          float32 [rows, embed_dim]: common-space vectors of readable photos
    SHARDS/shard-00007.parquet      per photo: path, size, mtime_ns, sha256, width, height, class,
                                    thumb (JPEG), row (into the .npy; -1 if skipped), skipped (reason)
    SHARDS/shard-00007.done.json    written last: run key, sizes and SHA-256 of both files

Why: one worker featurizes about 12 photos/s on 2 cores, so millions of photos need many
machines. :class:`ShardWorker` is a pure function of (photo bytes, model) -> files, holding the
model between shards, so a process pool or a Ray actor can run it anywhere that sees SHARDS.
A shard is finished when its done file matches its files; a rerun skips finished shards, a
killed one leaves no done file (the data files are written atomically first), and
`zscrgan index --shards SHARDS` loads the finished shards instead of embedding those photos.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from zscrgan.data.encoders import PHOTO_BATCH
from zscrgan.data.photos import MAX_FILE_MB, MAX_MEGAPIXELS, class_lookup, known_class, read_photo
from zscrgan.errors import DataError, require
from zscrgan.files import LOCK_FILE, read_json_object, write_atomic, write_json
from zscrgan.search.shipped import reopen

FORMAT = "zscrgan-shards/1"
PLAN, PLAN_ROWS = "plan.json", "plan.parquet"


def _pa():
    return (require("pyarrow", "ray", "sharded indexing"), require("pyarrow.parquet", "ray", "sharded indexing"))


def name(shard: int) -> str:
    return f"shard-{shard:05d}"


def run_key(checkpoint_sha256: str, encoder: str, images: Path) -> str:
    """What makes two shards comparable: the same weights, featurizer and photo folder."""
    text = f"{checkpoint_sha256} {encoder} {Path(images).resolve()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parquet_bytes(table) -> bytes:
    _, pq = _pa()
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_plan(folder: Path) -> dict:
    plan = read_json_object(Path(folder) / PLAN)
    if plan.get("format") != FORMAT:
        raise DataError(f"{folder}: not a shard folder made by zscrgan shard (no {PLAN} of format {FORMAT})")
    return plan


def make_plan(folder: Path, files: list[str], key: str, about: dict, shard_size: int) -> tuple[dict, dict]:
    """(plan, {shard: [paths]}); photos not yet in the plan become new shards at its end.

    A shard's photo list never changes once written, so its files stay valid across reruns.
    """
    pa, pq = _pa()
    folder = Path(folder)
    plan = {"format": FORMAT, "key": key, **about, "shard_size": shard_size, "shards": 0}
    paths, shard_of = [], []
    if (folder / PLAN).is_file():
        old = read_plan(folder)
        if old["key"] != key:
            raise DataError(f"{folder}: shards of another run (checkpoint {old.get('checkpoint_sha256', '?')[:12]}, "
                            f"encoder {old.get('image_encoder')}, photos {old.get('images')}); use a new --out folder")
        plan = {**old, **about}
        try:
            table = pq.read_table(folder / PLAN_ROWS)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{folder / PLAN_ROWS}: not a readable parquet file ({type(exc).__name__})") from None
        paths, shard_of = table["path"].to_pylist(), table["shard"].to_pylist()
    elif folder.is_dir() and any(p.name != LOCK_FILE for p in folder.iterdir()):
        raise DataError(f"{folder}: exists and is not a shard folder; give an empty or new --out folder")
    known = set(paths)
    new = [p for p in files if p not in known]
    first = plan["shards"]
    for i, p in enumerate(new):
        paths.append(p)
        shard_of.append(first + i // shard_size)
    plan["shards"] = first + -(-len(new) // shard_size)
    if new or not (folder / PLAN).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / PLAN_ROWS, _parquet_bytes(pa.table({"path": pa.array(paths, pa.string()),
                                                                  "shard": pa.array(shard_of, pa.int32())})))
        write_json(folder / PLAN, plan)
    groups: dict[int, list[str]] = {}
    for p, s in zip(paths, shard_of):
        groups.setdefault(s, []).append(p)
    return plan, groups


def is_finished(folder: Path, shard: int, key: str) -> bool:
    """A done file of this run whose data files have the recorded sizes (cheap; no hashing)."""
    done = Path(folder) / f"{name(shard)}.done.json"
    try:
        record = json.loads(done.read_text())
        return record["key"] == key and all((Path(folder) / f).stat().st_size == size
                                            for f, (size, _) in record["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_shard(folder: Path, shard: int, key: str) -> tuple[list[dict], np.ndarray]:
    """(photo rows, embeddings) of a finished shard, every file checked against its done record."""
    _, pq = _pa()
    folder = Path(folder)
    done = folder / f"{name(shard)}.done.json"
    record = read_json_object(done)
    if not record:
        raise DataError(f"{done}: not found; shard {shard} is not finished (rerun zscrgan shard)")
    if record.get("key") != key:
        raise DataError(f"{done}: from another run (key {record.get('key')}, this plan's {key}); rerun zscrgan shard "
                        f"into a new folder")
    payloads = {}  # each file read once: the bytes checked are the bytes parsed
    for file, (size, digest) in record["files"].items():
        path = folder / file
        try:
            payloads[file] = data = path.read_bytes()
        except OSError:
            data = None
        if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            got = "no" if data is None else len(data)
            raise DataError(f"{path}: truncated or changed since written ({got} bytes, recorded {size}); "
                            f"delete {done.name} and rerun zscrgan shard to redo it")
    parquet, npy = (payloads.get(f"{name(shard)}{suffix}") for suffix in (".parquet", ".npy"))
    if parquet is None or npy is None:
        raise DataError(f"{done}: does not record both data files; delete it and rerun zscrgan shard to redo it")
    rows = pq.read_table(io.BytesIO(parquet)).to_pylist()
    emb = np.load(io.BytesIO(npy), allow_pickle=False)
    return rows, emb


class ShardWorker:
    """Holds the CNN and the trained CSEM; turns photos into rows, the one place that does:
    `zscrgan shard` runs it over each shard (one per process or Ray actor), `zscrgan index` over its
    pending photos.

    ``photo_batch`` (photos per CNN call) stays the fixed default for shards, so every distributor
    computes the same vectors; an index passes its --batch_size, as it always has.
    """

    def __init__(self, run, encoder: str, class_names: list[str], max_megapixels: float = MAX_MEGAPIXELS,
                 max_file_mb: float = MAX_FILE_MB, photo_batch: int = PHOTO_BATCH):
        self.run = run  # a TrainedRun: a run folder or a shipped model
        self.encoders = run.encoders(image_encoder=encoder, photo_batch=photo_batch)  # the CNN loads at the first photo
        self.max_pixels, self.max_bytes = int(max_megapixels * 1e6), int(max_file_mb * 1e6)
        self.class_lookup = class_lookup(class_names)

    @classmethod
    def load(cls, source: dict, encoder: str, class_names: list[str], max_megapixels: float, max_file_mb: float,
             threads: int = 1) -> "ShardWorker":
        """A worker in a process of its own: the model reopened from ``TrainedRun.source``, torch
        pinned to ``threads`` (one per worker keeps several workers from fighting over cores)."""
        torch.set_num_threads(threads)
        return cls(reopen(source), encoder, class_names, max_megapixels, max_file_mb)

    def read(self, images: Path, rel: str) -> tuple[dict, np.ndarray | None] | None:
        """(the photo's row, its CNN input), or (the row with the reason in ``skipped``, None) for a
        file that will not read; None if it is gone since the scan (the index's next scan drops it).

        A row has the columns of a shard's parquet file; ``row`` (into the embeddings) is the caller's
        to set. Size and mtime are of the descriptor read (:func:`read_photo`)."""
        got = read_photo(images / rel, self.max_pixels, keep=True, max_bytes=self.max_bytes)
        st = got.stat if got.stat is not None else _stat(images / rel)  # no descriptor: it would not open
        if st is None:
            return None
        row = {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": None, "width": None,
               "height": None, "class": known_class(rel, self.class_lookup), "thumb": None, "row": -1,
               "skipped": None}
        if isinstance(got, str):
            row["skipped"] = str(got)
            return row, None
        row.update(thumb=got.thumb, width=got.width, height=got.height, sha256=got.sha256)
        return row, got.pixels

    def embed(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Common-space vectors, float32 [n, embed_dim], of CNN inputs."""
        if not pixels:
            return np.zeros((0, self.run.embed_dim), np.float32)
        return self.run.embed_images(self.encoders.encode_pixels(pixels)).astype(np.float32)

    def __call__(self, folder: str, images: str, shard: int, paths: list[str], key: str) -> int:
        """Write shard ``shard``'s files and its done record; returns the photos embedded."""
        pa, _ = _pa()
        folder, images = Path(folder), Path(images)
        meta, pixels = [], []
        for rel in paths:
            got = self.read(images, rel)
            if got is None:
                continue
            row, photo_pixels = got
            if photo_pixels is not None:
                row["row"] = len(pixels)
                pixels.append(photo_pixels)
            meta.append(row)
        emb = self.embed(pixels)
        schema = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                            ("sha256", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                            ("class", pa.string()), ("thumb", pa.binary()), ("row", pa.int32()),
                            ("skipped", pa.string())], metadata={"zscrgan_key": key, "shard": str(shard)})
        files = {f"{name(shard)}.npy": _npy_bytes(emb),
                 f"{name(shard)}.parquet": _parquet_bytes(pa.Table.from_pylist(meta, schema))}
        for file, payload in files.items():
            write_atomic(folder / file, payload)
        record = {"key": key, "shard": shard, "photos": len(meta), "rows": int(len(emb)),
                  "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "files": {f: [len(p), hashlib.sha256(p).hexdigest()] for f, p in files.items()}}
        write_json(folder / f"{name(shard)}.done.json", record, indent=None)
        return len(emb)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, np.float32), allow_pickle=False)
    return buf.getvalue()


def finished_rows(folder: Path, plan: dict):
    """Yield (photo rows, embeddings) of every finished shard, checked; refuses a damaged one."""
    for shard in range(plan["shards"]):
        if (Path(folder) / f"{name(shard)}.done.json").is_file():
            yield load_shard(folder, shard, plan["key"])


__all__ = ["ShardWorker", "make_plan", "load_shard", "is_finished", "finished_rows", "read_plan", "run_key", "name"]
