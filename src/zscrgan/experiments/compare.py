"""`zscrgan compare`: the baselines and the ZSCRGAN recipes (original, improved, tuned) on one data set, honestly.

    zscrgan compare --dataset FLO --data_root ../shared/data --seeds 0,1,2 --epochs 15

Every method sees the same split per seed: a fraction of the seen classes is held out for
validation; baselines choose their hyperparameters there, ZSCRGAN runs choose their round
there (``--select val``); all are then scored once on the unseen classes. Prints a table per
query protocol (Prec@50, mAP@50 as mean +- sd over seeds, training seconds): every text a query;
on data with many texts a class, one query per class in its two forms, on the unseen classes and
on the validation classes (where a reader chooses between the forms); and writes them as Markdown
and CSV beside the runs, with the unseen-class Prec@K as a bar chart (PNG). Every ``zscrgan train``
flag applies to the ZSCRGAN runs.

    zscrgan compare --dataset ../shared/data/FLO --seeds 0,1 --splits 5 --epochs 8

does the same over 5 seeded draws of the unseen classes (zscrgan.experiments.splits): mean ± sd over
splits x seeds, and each method against the best baseline split by split; ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
import csv
import io
import time
from dataclasses import replace
from pathlib import Path

from zscrgan.config import DEFAULT_K, Config, parse_config, parse_seeds, run_name
from zscrgan.console import comma_list, positive_int, say
from zscrgan.data.dataset import split_validation
from zscrgan.device import pick_device
from zscrgan.errors import Interrupted
from zscrgan.evaluation.baselines import BASELINES, fit_baseline
from zscrgan.evaluation.scoring import score_views
from zscrgan.experiments.report import plot_compare
from zscrgan.experiments.run import Run, prepare_process
from zscrgan.experiments.runfolder import mean_sd, view_figures
from zscrgan.experiments.splits import CELLS_FILE, Cells, by_split, make_splits, paired_markdown, splits_csv
from zscrgan.experiments.splits import plot as plot_splits
from zscrgan.experiments.train import preflight
from zscrgan.files import check_writable, write_atomic
from zscrgan.recipes import RECIPES
from zscrgan.runfiles import run_dirs
from zscrgan.runs import load_run_data

METHODS = (*BASELINES, *RECIPES)


def recipe_config(method: str, cfg: Config, seed: int) -> Config:
    """The ZSCRGAN run of ``method`` (a recipe) and ``seed``: validation-selected, in its own folder.

    ``cfg`` is unresolved: the recipe switches left at None take the method's recipe values.
    """
    return replace(cfg, recipe=method, seed=seed, seeds="", select="val",
                   name=recipe_run_name(run_name(replace(cfg, seeds="")), method, seed)).resolved()


def recipe_run_name(base: str, method: str, seed: int) -> str:
    """NAME of the run of recipe ``method`` and ``seed`` in a compare of the runs named ``base``."""
    return f"{base}_{method}_seed{seed}"


def splits_folder(out_dir: str | Path, base: str) -> Path:
    """Where ``compare --splits`` of the runs named ``base`` writes its cells and tables."""
    return Path(out_dir) / f"compare_{base}_splits"


def split_run_name(base: str, split: int) -> str:
    """NAME of the runs on split ``split`` of a compare --splits of the runs named ``base``."""
    return f"{base}_split{split}"


def split_cell_run_dir(folder: Path, split: int, method: str, seed: int) -> Path:
    """The run folder (ckt_logs/NAME_logs) of a recipe's cell in the compare --splits ``folder``."""
    base = folder.name.removeprefix("compare_").removesuffix("_splits")
    return run_dirs(folder.parent, recipe_run_name(split_run_name(base, split), method, seed))[0]


# the query protocols (docs/results.md, "Caption-level flowers"): every text a query (the figures every
# method is selected on), and one query per class in two forms, on the unseen classes; the per-class
# forms on the validation classes too, where a reader chooses between them
# record key -> (its name in the CSV, what it is)
PROTOCOLS = {"test": ("per_text", "Unseen classes, every text a query"),
             "test_class": ("per_class", "Unseen classes, one query per class, the query of the mean of its texts"),
             "test_prototype": ("per_class_prototype",
                                "Unseen classes, one query per class, the mean of its texts' queries"),
             "val_class": ("val_per_class", "Validation classes (those each method was selected on: for choosing "
                           "a per-class form, not for ranking methods), one query per class, the query of the mean of its texts"),
             "val_prototype": ("val_per_class_prototype", "Validation classes (those each method was selected on: for "
                               "choosing a per-class form, not for ranking methods), one query per class, the mean of its texts' queries")}


def run_method(method: str, cfg: Config, seed: int, data) -> tuple[dict, float]:
    """Figures of one method and seed by :data:`PROTOCOLS` key (the per-class ones only on data with
    many texts per class), and its training seconds.

    ``data`` is the loaded data set the baselines fit on (ZSCRGAN runs load their own, so
    that validation selection reads the unseen classes only after selecting).
    """
    if method in RECIPES:
        summary = Run(recipe_config(method, cfg, seed)).train()
        return {k: v for k, v in summary["selected"].items() if k in PROTOCOLS}, summary["train_seconds"]
    device = pick_device(cfg.device)
    train, val = split_validation(data, cfg.val_fraction, seed)
    start = time.perf_counter()
    model = fit_baseline(method, data, train, val, seed=seed, device=device, select_k=cfg.select_k,
                         own_photo=cfg.photo_pairs)
    seconds = time.perf_counter() - start
    ks = cfg.scored_ks()
    test, _, per_class = score_views(model, data, data.unseen, ks, device, details=False,
                                     per_class=data.many_texts)
    figures = view_figures("test", test, per_class)
    if data.many_texts:  # the validation classes' per-class forms, for choosing between them
        _, _, per_class = score_views(model, data, val, ks, device, details=False, per_class=True)
        figures |= {f"val_{form}": scores.as_dict() for form, scores in per_class.items()}
    return figures, seconds


# the unseen-class protocols in the plot's legend
PLOT_LABELS = {"test": "every text a query", "test_class": "per class: the mean text's query",
               "test_prototype": "per class: the mean of the texts' queries"}


def plot(results: dict, over: str, k: int = DEFAULT_K) -> bytes:
    """Prec@K of every method on the unseen classes, one bar per query protocol (mean ± sd ``over``
    what the runs are: "seeds 0,1,2")."""
    figures = {}
    for view, label in PLOT_LABELS.items():
        done = {m: mean_sd([f[view][f"prec@{k}"] for f, _ in runs]) for m, runs in results.items()
                if runs and all(view in f for f, _ in runs)}
        if done:
            figures[label] = done
    return plot_compare(figures, f"Prec@{k}", f"unseen classes; mean ± sd over {over}")


def table(results: dict, over: str, k: int = DEFAULT_K) -> tuple[str, str]:
    """Markdown and CSV of mean +- sd ``over`` the runs ("seeds 0,1,2") per method and query protocol: Prec@K and mAP@K for
    the selection K, then for K = 50 too when that differs (upstream's figure; it saturates on small
    galleries)."""
    ks = [k] if k == DEFAULT_K else [k, DEFAULT_K]
    heads = [f"{m}@{kk}" for kk in ks for m in ("Prec", "mAP")]
    md, buf = [], io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "protocol", *[f"{h.lower()}_{x}" for h in heads for x in ("mean", "sd")],
                     "train_seconds", "seeds"])
    for view, (protocol, what) in PROTOCOLS.items():
        rows = []
        for method, runs in results.items():
            if all(view in f for f, _ in runs):
                figures = [mean_sd([f[view][f"{m}@{kk}"] for f, _ in runs]) for kk in ks for m in ("prec", "map")]
                rows.append((method, figures, mean_sd([seconds for _, seconds in runs])[0], len(runs)))
        if not rows:
            continue
        md += [f"{what}; every method selected on validation classes (Prec@{k}, every text a "
               f"query); mean ± sd over {over}.", "",
               "| method | " + " | ".join(heads) + " | train s |", "|---" * (len(heads) + 2) + "|"]
        md += [f"| {m} | " + " | ".join(f"{a:.4f} ± {b:.4f}" for a, b in figs) + f" | {s:.1f} |"
               for m, figs, s, _ in rows]
        md.append("")
        for m, figs, s, n in rows:
            writer.writerow([m, protocol,
                             *[f"{v:.6f}" for pair in figs for v in pair], f"{s:.2f}", n])
    return "\n".join(md), buf.getvalue()


def main(argv: list[str]) -> int:
    def method_list(text: str) -> list[str]:
        methods = comma_list(text)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown[0]!r}; choose from {', '.join(METHODS)}")
        return methods

    def own_flags(parser):
        parser.add_argument("--methods", type=method_list, default=",".join(METHODS),
                            help=f"comma list from {', '.join(METHODS)}")
        parser.add_argument("--splits", type=positive_int, default=0, metavar="N",
                            help="compare over N draws of the unseen classes (split seeds 0..N-1) from all the data "
                                 "set's classes, of the standard split's sizes (zscrgan.experiments.splits); "
                                 "default: the data set's own split")

    cfg, own = parse_config(argv, "zscrgan compare", description=__doc__.splitlines()[0], extra=own_flags,
                            defaults=dict(seeds="0,1,2", report=False))
    methods, n_splits = own.methods, own.splits
    seeds = parse_seeds(cfg.seeds)
    prepare_process(cfg)
    if n_splits:
        return compare_splits(cfg, methods, seeds, n_splits)
    out = Path(cfg.out_dir) / f"compare_{run_name(replace(cfg, seeds=''))}"
    # every check before the first fit: the table's folder, each run's folders, the data
    check_writable(out.parent, create=False)
    preflight([recipe_config(m, cfg, s) for m in methods if m in RECIPES for s in seeds])
    data = load_run_data(cfg)[0] if set(methods) & set(BASELINES) else None
    results = {}
    try:
        for method in methods:
            results[method] = []
            for seed in seeds:
                say(f"compare: {method} seed {seed}: training")
                figures, seconds = run_method(method, cfg, seed, data)
                results[method].append((figures, seconds))
                say(f"compare: {method} seed {seed}: done in {seconds:.1f} s, Prec@{cfg.select_k} "
                    f"{figures['test'][f'prec@{cfg.select_k}']:.4f}")
            over = f"seeds {','.join(map(str, seeds))}"
            md, csv_text = table(results, over, cfg.select_k)  # after each method: a late failure loses nothing
            write_atomic(out.with_suffix(".md"), md.encode())
            write_atomic(out.with_suffix(".csv"), csv_text.encode())
            write_atomic(out.with_suffix(".png"), plot(results, over, cfg.select_k))
    except KeyboardInterrupt:
        done = f"; the methods done are in {out}.csv" if len(results) > 1 else ""
        raise Interrupted(f"rerun the same zscrgan compare command with --resume to continue{done}") from None
    print(md + f"written to {out}.md, {out}.csv and {out}.png")
    return 0


# the unseen-class protocols the paired comparison is made on: record key -> what it is
UNSEEN_VIEWS = {view: what for view, (_, what) in PROTOCOLS.items() if view.startswith("test")}


def compare_splits(cfg: Config, methods: list[str], seeds: list[int], n_splits: int) -> int:
    """The comparison over ``n_splits`` draws of the unseen classes (zscrgan.experiments.splits): every
    (split, method, seed) cell trained and recorded in turn, the tables rewritten after each."""
    base = run_name(replace(cfg, seeds=""))
    out = splits_folder(cfg.out_dir, base)
    check_writable(out.parent, create=False)
    cells = Cells(out, cfg)
    splits = make_splits(cfg, n_splits, seeds, out)
    configs = {s.index: replace(cfg, dataset=str(s.folder), name=split_run_name(base, s.index)) for s in splits}
    todo = [(s.index, m, seed) for s in splits for m in methods for seed in seeds if (s.index, m, seed) not in cells.done]
    preflight([recipe_config(m, configs[k], seed) for k, m, seed in todo if m in RECIPES])
    total = n_splits * len(methods) * len(seeds)
    say(f"compare: {n_splits} splits x {len(methods)} methods x {len(seeds)} seeds = {total} cells"
        + (f"; {total - len(todo)} done before, kept" if len(todo) < total else "") + f"; outputs in {out}")
    data = {}  # the split whose data the baselines fit on, loaded once

    def tables() -> str:
        return write_split_tables(out, by_split(cells.done, [s.index for s in splits], methods, seeds), seeds,
                                  cfg.select_k)

    try:
        for n, (k, method, seed) in enumerate(todo, 1):
            if method in BASELINES and k not in data:
                data = {k: load_run_data(configs[k])[0]}
            say(f"compare: [{n}/{len(todo)}] split {k} {method} seed {seed}: training")
            figures, seconds = run_method(method, configs[k], seed, data.get(k))
            cells.add(k, method, seed, figures, seconds)
            say(f"compare: [{n}/{len(todo)}] split {k} {method} seed {seed}: done in {seconds:.1f} s, "
                f"Prec@{cfg.select_k} {figures['test'][f'prec@{cfg.select_k}']:.4f}")
            tables()  # after each cell, so a long compare's tables show how far it got
    except KeyboardInterrupt:
        raise Interrupted(f"rerun the same zscrgan compare command with --resume to continue; the finished cells "
                          f"are in {out / CELLS_FILE}") from None
    print(tables() + f"written to {out}.md, {out}.csv, {out}.png and {out}_paired.png")
    return 0


def write_split_tables(out: Path, results: dict, seeds: list[int], k: int) -> str:
    """The tables of a compare over splits (``results[split][method]``: its finished runs) as Markdown,
    CSV (per split, then over all) and two plots: the figures over splits x seeds, and the paired
    differences from the best baseline per split."""
    done = [split for split, by_method in results.items() if any(by_method.values())]
    pooled = {m: [run for by_method in results.values() for run in by_method[m]]
              for m in next(iter(results.values()))}
    over = f"{len(done)} splits x seeds {','.join(map(str, seeds))}"
    if len({len(runs) for runs in pooled.values()}) > 1:  # a compare still running: say so
        over += " (so far: " + ", ".join(f"{m} {len(runs)} runs" for m, runs in pooled.items()) + ")"
    md, _ = table({m: runs for m, runs in pooled.items() if runs}, over, k)
    md += "\n" + paired_markdown(results, UNSEEN_VIEWS, k)
    write_atomic(out.with_suffix(".md"), md.encode())
    write_atomic(out.with_suffix(".csv"), splits_csv(results, {v: PROTOCOLS[v][0] for v in UNSEEN_VIEWS}, k).encode())
    write_atomic(out.with_suffix(".png"), plot({m: runs for m, runs in pooled.items() if runs}, over, k))
    write_atomic(out.with_name(out.name + "_paired.png"), plot_splits(results, PLOT_LABELS, k))
    return md
