"""Training and evaluation speed against the hardware's own ceiling (not a test).

    python benchmarks/speed.py                               # FLO from ../shared, default sizes
    python benchmarks/speed.py --synthetic 200,100,1024,2048 # classes, images/class, text dim, image dim
    python benchmarks/speed.py --device cuda --rounds 3
    python benchmarks/speed.py --recipe tuned --gf_dim 256 --df_dim 256   # any zscrgan train flag, --config too

Prints seconds per EM round, optimizer steps per second, evaluation milliseconds, peak
memory, the FLOPs of a round counted from the layer sizes, the peak matrix-product rate
measured here in the same process, their ratio (the round's distance from its FLOP
floor). The plain step-by-step loop the trainer is tested against (tests/reference.py) is a test
oracle, not timed here (docs/performance.md has its last measured figures).
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

from zscrgan.config import Config, parse_config
from zscrgan.console import positive_int
from zscrgan.core.embedding import QueryEmbedder
from zscrgan.data.synthetic import make_builtin_dataset
from zscrgan.device import pick_device
from zscrgan.evaluation.scoring import score_views
from zscrgan.experiments.run import prepare_process
from zscrgan.experiments.trainer import EMTrainer
from zscrgan.runs import load_run_data

DEFAULT_FLO = Path(__file__).resolve().parents[2] / "shared" / "data" / "FLO"


def round_flops(cfg: Config, text_dim: int, image_dim: int) -> float:
    """Multiply-adds x 2 of one EM round as EMTrainer computes it (its exact savings included)."""
    T, D, E, Z, G1, F, B = text_dim, image_dim, cfg.embed_dim, cfg.z_dim, cfg.gf_dim, cfg.df_dim, cfg.batch_size
    G2 = 2 * G1
    enc, gen = T * 2 * E, (E + Z) * G1 + G1 * G2 + G2 * D
    critic_step = B * (enc + gen) + 2 * (3 * B * D * F + B * T * F)           # frozen G fwd; D fwd + weight grads
    gen_step = (2 * B * enc                                                  # encoder fwd + weight grads
                + 3 * 2 * B * gen                                            # G fwd, weight grads, input grads
                + 2 * B * (D + T) * F                                        # critic fwd + grad to x_hat
                + 2 * 2 * 2 * B * D * E)                                     # CSEM fwd + grad to x_hat (2B rows)
    csem_step = B * enc + 2 * B * gen + 2 * 2 * B * D * E                    # frozen fwd; CSEM fwd + weight grads
    macs = cfg.e_steps * (cfg.n_critic * critic_step + gen_step) + cfg.m_steps * csem_step
    return 2.0 * macs


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_rate(device, sizes=(1024, 2048, 4096), repeats=5) -> float:
    """The best rate of large square float32 products here: the ceiling the floor uses."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b
        for _ in range(repeats):
            best = max(best, 2 * n**3 / timed(lambda: a @ b, device))
    return best


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def speed_flags(parser) -> None:
    """The benchmark's own flags, beside every zscrgan train flag (the model, recipe and data set)."""
    parser.add_argument("--synthetic", help="classes,images_per_class,text_dim,image_dim: generated data instead")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="timed rounds (after one warm-up round)")


def main(argv=None) -> int:
    cfg, args = parse_config(argv, "benchmarks/speed.py", description=__doc__.splitlines()[0], extra=speed_flags,
                             defaults=dict(dataset=str(DEFAULT_FLO)))
    cfg = cfg.resolved()
    device = pick_device(cfg.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    prepare_process(cfg)  # as zscrgan train does: a fixed thread count, freed memory retained (--retain_memory)
    if args.synthetic:
        n, per, t_dim, i_dim = (int(v) for v in args.synthetic.split(","))
        data = make_builtin_dataset(n_seen=int(n * 0.8), n_unseen=n - int(n * 0.8), images_per_class=per,
                                    text_dim=t_dim, image_dim=i_dim)
    else:
        data = load_run_data(cfg)[0]
    torch.manual_seed(0)
    trainer = EMTrainer(cfg, data, data.seen, device)
    steps = cfg.e_steps * (cfg.n_critic + 1) + cfg.m_steps
    flops = round_flops(cfg, data.text_dim, data.image_dim)
    rate = peak_matmul_rate(device)

    trainer.run_round()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    round_times = [timed(trainer.run_round, device) for _ in range(args.rounds)]
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.rounds
    fast = sorted(round_times)[len(round_times) // 2]

    ks = (10, 50, 100)
    embedder = QueryEmbedder.for_round(trainer.model, cfg, 1, device)
    score_views(embedder, data, data.unseen, ks, device)
    eval_ms = 1000 * timed(lambda: score_views(embedder, data, data.unseen, ks, device), device)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    floor = flops / rate
    print(f"data: {data.summary()}")
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"FLOPs per EM round: {flops / 1e12:.3f} TFLOP as computed ({steps} optimizer steps)")
    print(f"optimiser updates: {'compiled' if cfg.compile else 'eager'}")
    print(f"malloc: {'freed memory retained (retain_freed_memory)' if cfg.retain_memory else 'glibc defaults'}")
    print(f"peak matmul rate measured here: {rate / 1e9:.1f} GFLOP/s  -> FLOP floor {floor:.2f} s/round")
    print(f"fast trainer:  {fast:.2f} s/round (median of {len(round_times)}), {steps / fast:.1f} steps/s, "
          f"{flops / fast / 1e9:.1f} GFLOP/s, {fast / floor:.2f}x the floor; {faults:.0f} page faults per round")
    print(f"evaluation of the unseen classes: {eval_ms:.1f} ms")
    print(f"peak RSS {rss_mb:.0f} MB" + (f", CUDA max allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
                                          if device.type == "cuda" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
