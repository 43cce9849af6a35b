"""`zscrgan train`: one run, or one run per seed (--seeds), in this process or several.

    zscrgan train                          # built-in demo data, about 2 minutes on 2 cores
    zscrgan train --dataset FLO --data_root ../shared/data --epochs 20
    zscrgan train --dataset FLO --select val --seeds 0,1,2

Each run is experiments.run.Run (its outputs are listed there); with --seeds the mean and sd over
the runs go to ``ckt_logs/NAME_seeds.json`` (zscrgan.runfiles.seeds_file).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from zscrgan.config import Config, parse_config, parse_seeds, run_name
from zscrgan.device import spawn_pool, thread_share
from zscrgan.experiments.run import Run, prepare_process, run_folder
from zscrgan.experiments.runfolder import aggregate
from zscrgan.files import write_json
from zscrgan.runfiles import seeds_file


def _train_one(cfg: Config, threads: int) -> dict:
    """A worker process's run (train_in_processes)."""
    torch.set_num_threads(threads)
    prepare_process(cfg)
    return Run(cfg).train()


def train_in_processes(configs: list[Config], workers: int) -> list[dict]:
    """Train the runs ``workers`` at a time in fresh processes, splitting this process's threads.

    Each run is the same as on its own with that many threads (same seeds, same outputs);
    docs/performance.md has the throughput measured on 2 cores.
    """
    with spawn_pool(workers) as pool:
        return list(pool.map(_train_one, configs, [thread_share(workers)] * len(configs)))


def preflight(configs: list[Config]) -> None:
    """Before any round: every run's folders writable, unlocked and not another run's."""
    for cfg in configs:
        run_folder(cfg).check()


def train_main(argv: list[str]) -> int:
    cfg = parse_config(argv)[0].resolved()
    prepare_process(cfg)
    if not cfg.seeds:
        preflight([cfg])
        Run(cfg).train()
        return 0
    seeds = parse_seeds(cfg.seeds)
    configs = [replace(cfg, seed=s) for s in seeds]
    preflight(configs)
    if cfg.workers > 1 and len(seeds) > 1:
        summaries = train_in_processes(configs, min(cfg.workers, len(seeds)))
    else:
        summaries = [Run(c).train() for c in configs]
    table = aggregate(summaries)
    base = run_name(replace(cfg, seeds=""))
    write_json(seeds_file(cfg.out_dir, base), {"seeds": seeds, "mean_sd": table, "runs": summaries})
    print(f"over seeds {seeds}:")
    for view, figures in table.items():
        print(f"  {view}: " + ", ".join(f"{k} {m:.4f} +- {s:.4f}" for k, (m, s) in figures.items()))
    return 0
