"""`zscrgan index --plan N`: memory and disk of each index kind at N photos, before building one.

    zscrgan index --plan 10000000 --dim 256 [--kind ivfpq] [--out INDEX]

Like autofaiss' budgets: the figures are arithmetic on the index layouts (faiss' own sizes
per vector), not measurements; docs/performance.md has measured ones to compare. Every kind
also needs photos.sqlite (embedding + thumbnail + metadata per photo), counted in "total
disk". The chosen ``--kind`` (default exact) must fit the free space where ``--out`` would go,
or the plan ends with a one-line refusal.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from zscrgan.errors import DataError
from zscrgan.search.diskindex import PQSpec
from zscrgan.search.gallery import KINDS, ivf_cells
from zscrgan.search.shipped import open_model

THUMB_BYTES = 12_000  # a 256 px JPEG at quality 80: about 8 to 15 KB (assumed, not measured per set)
ROW_BYTES = 200  # path, hash, sizes, class: SQLite row and index overhead (assumed)
HNSW_M = 32


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} PB"


def sqlite_bytes(n: int, dim: int) -> int:
    """photos.sqlite: per photo its embedding, a thumbnail and the row's metadata."""
    return n * (dim * 4 + THUMB_BYTES + ROW_BYTES)


def estimate(n: int, dim: int) -> dict[str, dict]:
    """{kind: {serve_ram, index_disk, total_disk, build_ram}} in bytes, for N photos of dim-d vectors."""
    vec, ids = n * dim * 4, n * 8
    sqlite = sqlite_bytes(n, dim)
    nlist = ivf_cells(n)
    pq = PQSpec.for_size(n, dim)
    rows = {
        "exact": {"serve_ram": vec + ids, "index_disk": vec + ids, "build_ram": 3 * vec},
        "ivf": {"serve_ram": vec + 2 * ids + nlist * dim * 4, "index_disk": vec + 2 * ids, "build_ram": 3 * vec},
        "hnsw": {"serve_ram": vec + ids + n * HNSW_M * 2 * 4 * 1.05, "index_disk": vec + ids + n * HNSW_M * 2 * 4 * 1.05,
                 "build_ram": 3 * vec + n * HNSW_M * 8},
        # served memory-mapped: the centroids, the photo-id array, ~250 MB of process, and the list
        # pages queries touch (all of them, at worst: 10M measured 1.0 GB against 1.06 GB here)
        "ivfpq": {"serve_ram": pq.nlist * dim * 4 + ids + 250e6 + n * pq.bytes_per_vector(),
                  "index_disk": n * pq.bytes_per_vector() + ids + vec,  # + exact.f32 for re-ranking
                  "build_ram": 2 * vec + pq.train_size(n) * dim * 4},
    }
    for row in rows.values():
        row["total_disk"] = row["index_disk"] + sqlite
    rows["ivfpq"]["note"] = (f"nlist {pq.nlist}, PQ{pq.m}x{pq.nbits}; {human(vec)} of it is exact.f32 "
                             f"(--no-exact-vectors drops it)")
    return rows


def print_plan(n: int, kind: str = "exact", out=None, dim: int | None = None, run_dir=None,
               model: str | None = None) -> int:
    """Print the table of every kind for ``n`` photos of ``dim``-d vectors (or the dim of a run folder's
    model, or of a shipped ``model``); refuse when ``kind`` does not fit the disk under ``out``."""
    if dim is None and (run_dir or model):
        dim = open_model(run_dir, model).embed_dim
    if dim is None:
        raise DataError("--plan needs --dim D (or --model NAME or --run RUN to read it from the model)")
    where = Path(out) if out else Path.cwd()
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    rows = estimate(n, dim)
    print(f"zscrgan index --plan {n:,} photos, dim {dim}: photos.sqlite alone is "
          f"{human(sqlite_bytes(n, dim))} (thumbnail {THUMB_BYTES // 1000} KB assumed); "
          f"{human(free)} free at {probe}")
    print(f"{'kind':7s} {'serve RAM':>10s} {'index disk':>11s} {'total disk':>11s} {'build RAM':>10s}  fits")
    for name in KINDS:
        r = rows[name]
        fits = "yes" if r["total_disk"] <= free else "NO"
        print(f"{name:7s} {human(r['serve_ram']):>10s} {human(r['index_disk']):>11s} {human(r['total_disk']):>11s} "
              f"{human(r['build_ram']):>10s}  {fits}{'  (' + r['note'] + ')' if 'note' in r else ''}")
    chosen = rows[kind]
    if chosen["total_disk"] > free:
        raise DataError(f"--plan {n}: kind {kind} needs {human(chosen['total_disk'])} at {probe}, "
                        f"only {human(free)} free; use another disk (--out) or fewer photos")
    return 0


__all__ = ["estimate", "print_plan"]
