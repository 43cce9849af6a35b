"""Time the search path's query embedding of a noisy run (``--eval_mean`` off) against embedding
each row alone, the way search embedded until issue 29 (not a test).

Search wants a query's embedding not to depend on its batch, so every row gets the noise it would
draw alone. Every row alone starts the same rng, so the batch can share one row's draws and run as
one pass (:class:`zscrgan.core.embedding.QueryEmbedder` with ``independent_rows``). Prints rows a
second both ways, their ratio and the largest difference between the two (float rounding only).
An index of a run's data set embeds every text of every class for its class table. Measured end to
end (docs/performance.md): ``zscrgan index --run`` of a noisy flowers_cap run (81,877 captions, 3
draws) took 1,040 s row by row and 89 s with shared draws, on a 2-core CPU shared with other jobs.

    python benchmarks/query_embed_speed.py --rows 2000 --samples 3
"""
from __future__ import annotations

import argparse
import time

import torch

from zscrgan.console import positive_int
from zscrgan.core.embedding import QueryEmbedder, embed_queries, eval_rng
from zscrgan.core.networks import ZSCRGAN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=positive_int, default=2000, help="texts embedded")
    parser.add_argument("--samples", type=positive_int, default=3, help="noise draws averaged a query (--eval_samples)")
    parser.add_argument("--text_dim", type=positive_int, default=384, help="MiniLM's 384 (FLO_cap)")
    parser.add_argument("--image_dim", type=positive_int, default=1280, help="EfficientNet-Lite0's 1280")
    parser.add_argument("--width", type=positive_int, default=256, help="--gf_dim, --df_dim and --embed_dim")
    parser.add_argument("--z_dim", type=positive_int, default=64)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = ZSCRGAN(args.text_dim, args.image_dim, args.width, args.z_dim, args.width, args.width).eval()
    texts = torch.randn(args.rows, args.text_dim)

    start = time.perf_counter()
    alone = torch.cat([embed_queries(model, row[None], args.samples, False, eval_rng(0, 0, "cpu")) for row in texts])
    per_row = time.perf_counter() - start

    embedder = QueryEmbedder(model, args.samples, False, eval_rng(0, 0, "cpu"), independent_rows=True)
    start = time.perf_counter()
    batched = embedder.embed_texts(texts)
    shared = time.perf_counter() - start

    print(f"{args.rows} texts, {args.samples} noise draws each, {torch.get_num_threads()} threads")
    print(f"  each row alone:          {args.rows / per_row:10.0f} rows/s")
    print(f"  one pass, shared draws:  {args.rows / shared:10.0f} rows/s  ({per_row / shared:.0f}x)")
    print(f"  largest difference: {(alone - batched).abs().max().item():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
