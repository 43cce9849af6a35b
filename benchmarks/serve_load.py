"""Latency under load of `zscrgan serve` over a synthetic 1M-photo index, and GalleryIndex alone.

    python benchmarks/serve_load.py --photos 1000000 --dim 256 --clients 32 --seconds 20

1. GalleryIndex at N vectors: exact and IVF (build s, resident memory, ms per single query,
   recall@10 of IVF against exact), on clustered data (points around --centers centres):
   approximate indexes behave very differently on clustered data than on isotropic noise.
2. An index folder of N synthetic photos (the SQLite table without real thumbnails, the IVF
   vectors, a class table) served by `zscrgan serve`'s app under uvicorn in a child process;
   --clients concurrent clients POST /search {like_id: random, k: 10} for --seconds; p50 /
   p95 / p99 latency, requests/s and errors. Text queries add the sentence encoder and the
   generator on top (measured separately by --text_ms with a real run, not here).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zscrgan import photostore as ps
from zscrgan.search import GalleryIndex, recall_at_k


def clustered(n: int, dim: int, centers: int, rng, chunk: int = 100_000) -> np.ndarray:
    means = rng.standard_normal((centers, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        out[start:start + m] = means[rng.integers(0, centers, m)] + 0.5 * rng.standard_normal((m, dim), np.float32)
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_index(vectors: np.ndarray, queries: np.ndarray, nlist: int, nprobe: int) -> tuple[dict, GalleryIndex]:
    rows, exact_ids = {}, None
    for kind in ("exact", "ivf"):
        before = rss_mb()
        start = time.perf_counter()
        index = GalleryIndex(vectors.shape[1], kind, nlist=nlist, nprobe=nprobe)
        index.add(vectors)
        index.build()
        build = time.perf_counter() - start
        n_single = 50 if kind == "exact" else len(queries)
        start = time.perf_counter()
        for q in queries[:n_single]:
            index.search(q[None], 10)
        ms = (time.perf_counter() - start) / n_single * 1000
        _, ids = index.search(queries[:n_single], 10)
        if kind == "exact":
            exact_ids = ids
            recall = 1.0
        else:
            recall = recall_at_k(ids[: len(exact_ids)], exact_ids, 10)
        rows[kind] = {"build_s": round(build, 1), "peak_rss_growth_mb": round(rss_mb() - before),
                      "ms_per_query": round(ms, 2), "recall@10": round(recall, 4)}
        print(kind, rows[kind], flush=True)
        if kind == "exact":
            del index
    return rows, index


def write_index_folder(folder: Path, index: GalleryIndex, vectors: np.ndarray, centers: int) -> None:
    """A synthetic index folder in the real layout (thumbnails are one tiny JPEG shared by all)."""
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (8, 8), (120, 160, 90)).save(buf, "JPEG")
    thumb = buf.getvalue()
    conn = ps.connect(folder)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.executemany("INSERT INTO photos (id, path, sha256, size, mtime_ns, width, height, class, embedding, thumb) "
                         "VALUES (?, ?, '', 0, 0, 8, 8, NULL, ?, ?)",
                         ((i + 1, f"synthetic/{i:07d}.jpg", vectors[i].tobytes(), thumb) for i in range(len(vectors))))
    conn.close()
    dim = vectors.shape[1]
    ps.write_npz(folder / ps.VECTORS, index=index.to_bytes(), ids=np.arange(1, len(vectors) + 1), kind=np.array("ivf"))
    ps.write_npz(folder / ps.CLASSES, ids=np.array([str(i) for i in range(centers)]),
                 names=np.array([f"class{i}" for i in range(centers)]), seen=np.ones(centers, bool),
                 embeddings=vectors[:centers].copy())
    ps.write_manifest(folder, {"format": ps.FORMAT, "run": {"embed_dim": dim, "checkpoint": "", "run": "",
                                                            "checkpoint_sha256": "", "text_encoder": None},
                               "images": str(folder), "kind": "ivf", "state": "ready",
                               "counts": {"photos": len(vectors)}})


SERVER = """
import sys, uvicorn
from zscrgan.query import IndexReader
from zscrgan.serve import create_app
uvicorn.run(create_app(IndexReader(sys.argv[1], load_model=False)), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning")
"""


async def load(base: str, n_photos: int, clients: int, seconds: float) -> dict:
    import httpx

    latencies, errors, rng = [], 0, np.random.default_rng(1)
    stop = time.perf_counter() + seconds

    async def client(http):
        nonlocal errors
        while time.perf_counter() < stop:
            body = {"like_id": int(rng.integers(1, n_photos + 1)), "k": 10}
            start = time.perf_counter()
            try:
                reply = await http.post(base + "/search", json=body)
                ok = reply.status_code == 200 and len(reply.json()["results"]) == 10
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        took = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"clients": clients, "seconds": round(took, 1), "requests": len(ms), "errors": errors,
            "req_per_s": round(len(ms) / took, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def serve_and_load(folder: Path, n: int, clients: int, seconds: float) -> dict:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(folder), str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("server exited")
                time.sleep(0.5)
        return asyncio.run(load(base, n, clients, seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--centers", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=64)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--threads", type=int, default=0, help="faiss threads (0: its default)")
    args = parser.parse_args()
    if args.threads:
        import faiss
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    vectors = clustered(args.photos, args.dim, args.centers, rng)
    queries = clustered(args.queries, args.dim, args.centers, np.random.default_rng(7))
    print(f"{args.photos} x {args.dim} clustered vectors, {os.cpu_count()} CPUs", flush=True)
    rows, ivf = bench_index(vectors, queries, args.nlist, args.nprobe)
    with tempfile.TemporaryDirectory(prefix="zscrgan-load-") as tmp:
        start = time.perf_counter()
        write_index_folder(Path(tmp), ivf, vectors, args.centers)
        print(f"index folder written in {time.perf_counter() - start:.0f} s", flush=True)
        del ivf, vectors
        rows["serve"] = serve_and_load(Path(tmp), args.photos, args.clients, args.seconds)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
