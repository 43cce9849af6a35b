"""Past one machine, measured: the on-disk ivfpq index at 1M and 10M vectors, and shards/s.

    OMP_NUM_THREADS=1 python benchmarks/scale.py index --sizes 1000000,10000000 --dim 256 --nlist 2048 \
        --out /tmp/scale --ivf_at 1000000
    python benchmarks/scale.py shards --run RUN --images PHOTOS --copies 4 --shard_size 20

``index``: synthetic vectors with class structure (``--classes`` class means, noise 0.5 per
dimension, as benchmarks/serve_load.py), generated in chunks straight into the index shards
and exact.f32, never all in memory. Per size: train s (on the first ``64 * nlist`` vectors; the
stream is i.i.d., so that is a random sample), add s (shards of 1M, one after the other here;
independent, so N machines would take 1/N), merge s, disk, then a fresh child process serves the
folder as `zscrgan serve` does (``GalleryIndex.open_disk`` + the photo-id array): open s, RSS,
per-query ms (one query at a time) at each of ``--nprobes`` and recall@10 against exact brute force over the regenerated
chunks, on ``--queries`` queries. ``--ivf_at N`` adds the in-memory IVF-Flat at N for comparison.

``shards``: `zscrgan shard` on ``--copies`` copies of a photo folder with the local distributor
on 1 and 2 processes and Ray local on 2 CPUs; shards/s and photos/s of the whole command
(model loading included, as a user sees it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 100_000
NOISE = 0.5


def chunks(n: int, dim: int, classes: int, seed: int, start: int = 0):
    """Rows [start, n) in chunks of CHUNK, each chunk from its own seed: regenerable at will."""
    means = np.random.default_rng(seed).standard_normal((classes, dim)).astype(np.float32)
    for first in range(start - start % CHUNK, n, CHUNK):
        rng = np.random.default_rng([seed, first // CHUNK])
        m = min(CHUNK, n - first)
        x = means[rng.integers(0, classes, m)] + NOISE * rng.standard_normal((m, dim), np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield first, x


def queries(q: int, dim: int, classes: int, seed: int) -> np.ndarray:
    means = np.random.default_rng(seed).standard_normal((classes, dim)).astype(np.float32)
    rng = np.random.default_rng([seed, 999_999])
    x = means[rng.integers(0, classes, q)] + NOISE * rng.standard_normal((q, dim), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(qs: np.ndarray, n: int, dim: int, classes: int, seed: int, k: int = 10) -> np.ndarray:
    """The true top-k ids by brute force over the regenerated chunks, never all in memory."""
    import torch

    from zscrgan.search.gallery import running_topk

    _, ids = running_topk(torch.from_numpy(qs), (torch.from_numpy(x) for _, x in chunks(n, dim, classes, seed)), k)
    return ids.numpy()


SERVE_CHILD = r"""
import json, sys, time, numpy as np, faiss
faiss.omp_set_num_threads(1)
from zscrgan.search.gallery import GalleryIndex
folder, dim, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
nprobes = [int(p) for p in sys.argv[4].split(",")]
reranks = [int(r) for r in sys.argv[5].split(",")]
def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    return {k: round(int(f[k].split()[0]) / 1024) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
t = time.perf_counter()
index = GalleryIndex.open_disk(folder, dim, nprobe=nprobes[0])
ids = np.arange(n, dtype=np.int64)  # the photo-id array IndexReader keeps
out = {"open_s": round(time.perf_counter() - t, 3), "rss_open_mb": rss()}
qs = np.load(folder + "/queries.npy")
for nprobe in nprobes:
  for rerank in reranks:
    index.set_search(nprobe=nprobe, rerank=rerank)
    times, found = [], []
    for q in qs:
        t = time.perf_counter()
        _, got = index.search(q[None], 10)
        times.append((time.perf_counter() - t) * 1000)
        found.append(ids[got[0]])
    np.save(f"{folder}/found_{nprobe}_{rerank}.npy", np.array(found))
    out[f"nprobe_{nprobe}_rerank_{rerank}"] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                                               "p95_ms": round(float(np.percentile(times, 95)), 2)}
out["rss_after_mb"] = rss()
print(json.dumps(out))
"""


def bench_ivfpq(n: int, args) -> dict:
    import faiss

    from zscrgan.search import diskindex as di
    from zscrgan.search.gallery import recall_at_k

    faiss.omp_set_num_threads(args.threads)
    folder = Path(args.out) / f"ivfpq_{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = di.PQSpec(args.dim, args.nlist or di.PQSpec.for_size(n, args.dim).nlist, args.m or di.PQSpec.for_size(n, args.dim).m)
    row = {"n": n, "dim": args.dim, "nlist": spec.nlist, "pq": f"PQ{spec.m}x{spec.nbits}"}
    t = time.perf_counter()
    need = spec.train_size(n)
    sample = np.concatenate([x for _, x in chunks(need, args.dim, args.classes, args.seed)])[:need]
    di.train(sample, spec, folder / di.TRAINED)
    del sample
    row["train_s"] = round(time.perf_counter() - t, 1)
    t, parts = time.perf_counter(), []
    with open(folder / di.EXACT, "wb") as exact:
        for first in range(0, n, args.shard_rows):
            last = min(n, first + args.shard_rows)

            def stream():
                for _, x in chunks(last, args.dim, args.classes, args.seed, start=first):
                    exact.write(x.tobytes())
                    yield x
            parts.append(folder / f"part-{len(parts):03d}.index")
            di.add_part(folder / di.TRAINED, stream(), first, parts[-1])
            print(f"  {n}: shard {len(parts)} added ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    row["add_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    di.merge(folder / di.TRAINED, parts, folder, expected_rows=n)
    row["merge_s"] = round(time.perf_counter() - t, 1)
    for p in parts:
        p.unlink()
    row["disk_gb"] = {f: round((folder / f).stat().st_size / 1e9, 3) for f in (di.MERGED, di.IVFDATA, di.EXACT)}
    qs = queries(args.queries, args.dim, args.classes, args.seed)
    np.save(folder / "queries.npy", qs)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    child = subprocess.run([sys.executable, "-c", SERVE_CHILD, str(folder), str(args.dim), str(n), args.nprobes, args.reranks],
                           capture_output=True, text=True, env=env, timeout=3600)
    if child.returncode:
        raise SystemExit(child.stderr[-2000:])
    row.update(json.loads(child.stdout.strip().splitlines()[-1]))
    t = time.perf_counter()
    sub = qs[: args.exact_queries]
    truth = exact_top(sub, n, args.dim, args.classes, args.seed)
    row["exact_s"] = round(time.perf_counter() - t, 1)
    for nprobe in args.nprobes.split(","):
        for rerank in args.reranks.split(","):
            found = np.load(folder / f"found_{nprobe}_{rerank}.npy")[: len(sub)]
            row[f"nprobe_{nprobe}_rerank_{rerank}"]["recall@10"] = round(recall_at_k(found, truth, 10), 4)
    row["recall_queries"] = len(sub)
    if not args.keep:
        shutil.rmtree(folder)
    return row


def bench_ivf(n: int, args) -> dict:
    import faiss

    from zscrgan.search.gallery import GalleryIndex, recall_at_k

    faiss.omp_set_num_threads(args.threads)
    x = np.concatenate([c for _, c in chunks(n, args.dim, args.classes, args.seed)])
    t = time.perf_counter()
    index = GalleryIndex(args.dim, "ivf", nlist=1024, nprobe=args.nprobe)
    index.add(x)
    index.build()
    row = {"n": n, "kind": "ivf", "nlist": 1024, "nprobe": args.nprobe, "build_s": round(time.perf_counter() - t, 1),
           "memory_gb": round(n * (args.dim * 4 + 8) / 1e9, 2)}
    qs = queries(args.queries, args.dim, args.classes, args.seed)
    times, found = [], []
    for q in qs:
        t = time.perf_counter()
        found.append(index.search(q[None], 10)[1][0])
        times.append((time.perf_counter() - t) * 1000)
    sub = qs[: args.exact_queries]
    row.update(p50_ms=round(float(np.percentile(times, 50)), 2), p95_ms=round(float(np.percentile(times, 95)), 2),
               **{"recall@10": round(recall_at_k(np.array(found)[: len(sub)], exact_top(sub, n, args.dim, args.classes, args.seed), 10), 4)})
    return row


def bench_shards(args) -> list[dict]:
    from zscrgan.search.shard import build_shards

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        for i in range(args.copies):
            shutil.copytree(args.images, photos / f"copy{i}", ignore=shutil.ignore_patterns("*.md", "*.txt"))
        for distributor, workers in (("local", 1), ("local", 2), ("ray", 2)):
            t = time.perf_counter()
            got = build_shards(args.run, photos, Path(tmp) / f"{distributor}{workers}", args.shard_size, distributor, workers)
            wall = time.perf_counter() - t
            rows.append({"distributor": distributor, "workers": workers, "shards": got["shards"], "photos": got["photos"],
                         "wall_s": round(wall, 1), "shards_per_s": round(got["shards"] / wall, 2),
                         "photos_per_s": round(got["photos"] / wall, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("index", "shards"))
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=0, help="default: diskindex.PQSpec.for_size")
    parser.add_argument("--m", type=int, default=0, help="PQ sub-quantisers (bytes a vector); default dim/4")
    parser.add_argument("--nprobe", type=int, default=64, help="ivf at --ivf_at")
    parser.add_argument("--nprobes", default="64,128", help="ivfpq: served at each")
    parser.add_argument("--reranks", default="300,1000", help="ivfpq: exact re-ranking depths served at each")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact_queries", type=int, default=100, help="queries scored by brute force for recall")
    parser.add_argument("--shard_rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ivf_at", type=int, default=0)
    parser.add_argument("--out", default="/tmp/zscrgan_scale")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--run")
    parser.add_argument("--images", type=Path)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--shard_size", type=int, default=20)
    args = parser.parse_args()
    if args.what == "shards":
        bench_shards(args)
        return
    for n in (int(s) for s in args.sizes.split(",")):
        print(json.dumps(bench_ivfpq(n, args)), flush=True)
    if args.ivf_at:
        print(json.dumps(bench_ivf(args.ivf_at, args)), flush=True)


if __name__ == "__main__":
    main()
