"""`zscrgan compare`: the baselines and both ZSCRGAN recipes on one data set, honestly.

    zscrgan compare --dataset FLO --data_root ../shared/data --seeds 0,1,2 --epochs 15

Every method sees the same split per seed: a fraction of the seen classes is held out for
validation; baselines choose their hyperparameters there, ZSCRGAN runs choose their round
there (``--select val``); all are then scored once on the unseen classes. Prints one table
(Prec@50, mAP@50 as mean +- sd over seeds, training seconds) and writes it as Markdown and
CSV beside the runs. Every ``zscrgan train`` flag applies to the ZSCRGAN runs.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import replace
from pathlib import Path

import torch

from .baselines import BASELINES, fit_baseline
from .config import RECIPES, Config, build_parser, check_config, parse_args_with_config, parse_seeds, run_name
from .data import split_validation, write_atomic
from .metrics import parse_ks, score_retrieval
from .run import Run, load_run_data, mean_sd, pick_device

METHODS = (*BASELINES, *RECIPES)


def score_baseline(model, data, classes, ks, device) -> dict:
    texts, q_labels = data.stacked_texts(classes)
    images, g_labels = data.stacked_images(classes)
    with torch.no_grad():
        q = model.embed_texts(torch.from_numpy(texts).to(device))
        g = model.embed_images(torch.from_numpy(images).to(device))
    return score_retrieval(q, torch.from_numpy(q_labels).to(device), g,
                           torch.from_numpy(g_labels).to(device), ks=ks).as_dict()


def run_method(method: str, cfg: Config, seed: int, data) -> tuple[dict, float]:
    """Unseen-class figures of one method and seed, and its training seconds.

    ``cfg`` is unresolved: the recipe switches left at None take the method's recipe values.
    ``data`` is the loaded data set the baselines fit on (ZSCRGAN runs load their own, so
    that validation selection reads the unseen classes only after selecting).
    """
    if method in RECIPES:
        base = run_name(replace(cfg, seeds=""))
        run_cfg = replace(cfg, recipe=method, seed=seed, seeds="", select="val",
                          name=f"{base}_{method}_seed{seed}").resolved()
        summary = Run(run_cfg).train()
        return summary["selected"]["test"], summary["train_seconds"]
    device = pick_device(cfg.device)
    train, val = split_validation(data, cfg.val_fraction, seed)
    start = time.perf_counter()
    model = fit_baseline(method, data, train, val, seed=seed, device=device)
    seconds = time.perf_counter() - start
    return score_baseline(model, data, data.unseen, parse_ks(cfg.eval_k), device), seconds


def table(results: dict, seeds: list[int]) -> tuple[str, str]:
    """Markdown and CSV of mean +- sd over seeds per method."""
    rows = []
    for method, runs in results.items():
        prec = mean_sd([figures["prec@50"] for figures, _ in runs])
        mAP = mean_sd([figures["map@50"] for figures, _ in runs])
        rows.append((method, *prec, *mAP, mean_sd([seconds for _, seconds in runs])[0]))
    md = [f"Unseen classes; every method selected on validation classes; mean ± sd over seeds "
          f"{','.join(map(str, seeds))}.", "", "| method | Prec@50 | mAP@50 | train s |", "|---|---|---|---|"]
    md += [f"| {m} | {p:.4f} ± {ps:.4f} | {a:.4f} ± {as_:.4f} | {s:.1f} |" for m, p, ps, a, as_, s in rows]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "prec@50_mean", "prec@50_sd", "map@50_mean", "map@50_sd", "train_seconds", "seeds"])
    for m, p, ps, a, as_, s in rows:
        writer.writerow([m, f"{p:.6f}", f"{ps:.6f}", f"{a:.6f}", f"{as_:.6f}", f"{s:.2f}", len(seeds)])
    return "\n".join(md) + "\n", buf.getvalue()


def main(argv: list[str]) -> int:
    parser = build_parser("zscrgan compare")
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list from {', '.join(METHODS)}")
    parser.set_defaults(seeds="0,1,2", report=False)
    args = parse_args_with_config(parser, argv)
    methods = [m.strip() for m in args.pop("methods").split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown[0]!r}; choose from {', '.join(METHODS)}")
    cfg = Config(**args)
    problems = check_config(cfg.resolved())
    if problems:
        parser.error(problems[0])
    seeds = parse_seeds(cfg.seeds)
    data = load_run_data(cfg)[0] if set(methods) & set(BASELINES) else None
    results = {m: [run_method(m, cfg, s, data) for s in seeds] for m in methods}
    md, csv_text = table(results, seeds)
    out = Path(cfg.out_dir) / f"compare_{run_name(replace(cfg, seeds=''))}"
    write_atomic(out.with_suffix(".md"), md.encode())
    write_atomic(out.with_suffix(".csv"), csv_text.encode())
    print(md + f"written to {out}.md and {out}.csv")
    return 0
