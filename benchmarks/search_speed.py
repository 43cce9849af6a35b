"""Build time, search time and recall@k of each GalleryIndex kind, beside plain torch top-k.

``ivfpq`` is built as `zscrgan index --kind ivfpq` builds it (:func:`diskindex.write_ivfpq`: its own
cell count, exact vectors kept for re-ranking) in a temporary folder, then opened memory-mapped.

The baseline is what ``score_retrieval`` does for one query chunk: normalise, ``q @ g.T``,
``torch.topk``. Its ids are the reference for recall, so "exact" should show 1.0.
Data: random clustered float32 (points around ``--centers`` random centres), because
approximate indexes behave very differently on clustered data than on isotropic noise.
Threads default to 1 so runs on a shared machine are comparable.

    python benchmarks/search_speed.py --gallery 100000 --queries 1000 --dim 1024 --k 50
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zscrgan.search import diskindex
from zscrgan.search.gallery import KINDS, GalleryIndex, faiss, recall_at_k


def build(kind: str, gallery: torch.Tensor, args, folder: str) -> GalleryIndex:
    if kind == "ivfpq":
        diskindex.write_ivfpq(Path(folder), gallery.numpy(), opq=False, keep_vectors=True)
        return GalleryIndex.open_disk(folder, args.dim, nprobe=args.nprobe)
    index = GalleryIndex(args.dim, kind=kind, nlist=args.nlist, nprobe=args.nprobe, hnsw_m=args.hnsw_m,
                         ef_search=args.ef_search, ef_construction=args.ef_construction)
    index.add(gallery)
    index.build()
    return index


def clustered(n: int, dim: int, centers: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` points, each a random centre plus Gaussian noise of std ``noise``."""
    which = torch.randint(0, len(centers), (n,), generator=gen)
    return centers[which] + noise * torch.randn(n, dim, generator=gen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--centers", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--ef-construction", type=int, default=40)
    args = parser.parse_args(argv)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]

    torch.set_num_threads(args.threads)
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(args.centers, args.dim, generator=gen)
    gallery = clustered(args.gallery, args.dim, centers, args.noise, gen)
    queries = clustered(args.queries, args.dim, centers, args.noise, gen)
    print(f"gallery {args.gallery} x queries {args.queries} x dim {args.dim}, k {args.k}, "
          f"{args.threads} thread(s), faiss {getattr(faiss, '__version__', 'absent')}, torch {torch.__version__}")

    start = time.perf_counter()
    g = F.normalize(gallery, dim=1)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    _, exact_ids = torch.topk(F.normalize(queries, dim=1) @ g.T, args.k, dim=1)
    search_ms = (time.perf_counter() - start) * 1e3
    exact_ids = exact_ids.numpy()
    del g
    print(f"{'kind':<16}{'build s':>10}{'search ms':>12}{'ms/query':>10}{'recall@' + str(args.k):>11}")
    print(f"{'torch q@g.T':<16}{build_s:>10.2f}{search_ms:>12.1f}{search_ms / args.queries:>10.3f}{1.0:>11.3f}")

    for kind in kinds:
        folder = tempfile.TemporaryDirectory()
        start = time.perf_counter()
        index = build(kind, gallery, args, folder.name)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        _, ids = index.search(queries, args.k)
        search_ms = (time.perf_counter() - start) * 1e3
        recall = recall_at_k(ids, exact_ids, args.k)
        print(f"{kind:<16}{build_s:>10.2f}{search_ms:>12.1f}{search_ms / args.queries:>10.3f}{recall:>11.3f}",
              flush=True)
        del index
        folder.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
