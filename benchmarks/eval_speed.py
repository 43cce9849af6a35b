"""Time `score_retrieval` against the bare work it cannot avoid (`q @ g.T` + `torch.topk`).

The ratio shows what exact tie-breaking, chunking and the metric bookkeeping cost on top
of the similarity product itself. Random data, so ties are rare and the boundary fix
costs only its comparison pass.

    python benchmarks/eval_speed.py --device cpu --queries 1000 --gallery 100000 --dim 1024
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from zscrgan.config import parse_ks
from zscrgan.device import add_device_flag, pick_device
from zscrgan.evaluation.metrics import score_retrieval


def timed(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls after ``warmup`` untimed ones."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_flag(parser)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--ks", default="10,50,100")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    ks = parse_ks(args.ks)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(args.queries, args.dim, generator=gen).to(device)
    g = torch.randn(args.gallery, args.dim, generator=gen).to(device)
    ql = torch.randint(0, args.classes, (args.queries,), generator=gen).to(device)
    gl = torch.randint(0, args.classes, (args.gallery,), generator=gen).to(device)

    def baseline():
        sims = F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
        return torch.topk(sims, min(max(ks), args.gallery), dim=1)

    def ours():
        return score_retrieval(q, ql, g, gl, ks=ks, chunk_size=args.chunk_size)

    print(f"device {device}, {args.queries} queries x {args.gallery} gallery, dim {args.dim}, "
          f"ks {ks}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    base = statistics.median(timed(baseline, device, args.warmup, args.repeats))
    full = statistics.median(timed(ours, device, args.warmup, args.repeats))
    print(f"baseline  normalise + q @ g.T + topk : {base:9.1f} ms (median of {args.repeats})")
    print(f"score_retrieval                      : {full:9.1f} ms (median of {args.repeats})")
    print(f"ratio                                : {full / base:9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
