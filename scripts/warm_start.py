"""Does ZSCRGAN's training improve on ridge regression when it starts from it? (issue 10)

    python scripts/warm_start.py --dataset ../shared/data/FLO --recipe tuned --ridge_path \\
        --gf_dim 256 --df_dim 256 --embed_dim 256 --z_dim 64 --epochs 8 --seeds 0,1,2 --out_dir runs/warm_start

For each seed: the seed's validation split (as ``--select val``), a trainer built from the
flags (with ``--ridge_path`` the generator's text path starts as the ridge fit), and before
training (round 0) and after each round, validation Prec@50 of
- the common space (the run's own evaluation: CSEM(G(mu)) against CSEM(photo)), and
- the generator alone in image space (:class:`ImageSpaceRetriever`), and
- the same on the training classes (their texts querying their images: does training fit them?),
beside ridge's on the validation classes. Only seen classes are read: the unseen ones stay untouched.
Writes warm_start.json, warm_start.md (the mean table) and warm_start.png to --out_dir.
Any `zscrgan train` flag applies.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from zscrgan.config import DEFAULT_K, Config, parse_config, parse_seeds
from zscrgan.core.embedding import QueryEmbedder, common_space_centre
from zscrgan.core.networks import ZSCRGAN
from zscrgan.data.dataset import split_validation
from zscrgan.evaluation.baselines import fit_baseline, validation_scorer
from zscrgan.evaluation.scoring import score_views
from zscrgan.experiments.run import prepare_process
from zscrgan.experiments.trainer import EMTrainer
from zscrgan.files import write_atomic, write_json
from zscrgan.runs import load_run_data

VIEWS = ("common space", "generator in image space", "generator in image space, training classes")


class ImageSpaceRetriever:
    """The generator alone: its noise-free output G(mu, 0) scored against the photos in image space.

    Both sides are centred on ``centre`` (the training images' mean feature), as ridge's are, so
    the figure compares the generator as a text-to-image map with ridge's map, the CSEM left out.
    """

    def __init__(self, model: ZSCRGAN, centre: torch.Tensor):
        self.model, self.centre = model, centre

    @torch.no_grad()
    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        mu, _ = self.model.encoder.stats(texts)
        return self.model.generator(mu, torch.zeros(len(texts), self.model.z_dim, device=texts.device), texts) - self.centre

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return images - self.centre


def one_seed(cfg: Config, data) -> dict:
    train, val = split_validation(data, cfg.val_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    trainer = EMTrainer(cfg, data, train, "cpu", val)
    image_centre = trainer.images.mean(0)
    score_val, score_train = validation_scorer(data, val, k=cfg.select_k), validation_scorer(data, train, k=cfg.select_k)
    curves = {view: [] for view in VIEWS}
    for round_ in range(cfg.epochs + 1):
        if round_:
            trainer.run_round()
        model = trainer.model
        centre = common_space_centre(model, trainer.images) if cfg.eval_centre else None
        embedder = QueryEmbedder.for_round(model, cfg, round_, "cpu", centre)
        scores = score_views(embedder, data, val, (DEFAULT_K,), "cpu")[0]
        curves["common space"].append(float(scores.mean[f"prec@{DEFAULT_K}"]))
        generator = ImageSpaceRetriever(model, image_centre)
        curves["generator in image space"].append(score_val(generator))
        curves["generator in image space, training classes"].append(score_train(generator))
        print(f"seed {cfg.seed} round {round_}: " + ", ".join(f"{v} {c[-1]:.3f}" for v, c in curves.items()), flush=True)
    return {"seed": cfg.seed, "ridge": fit_baseline("ridge", data, train, val, seed=cfg.seed, select_k=cfg.select_k).params["val_prec"], **curves}


def plot(runs: list[dict], path: Path) -> None:
    """Each view's mean curve over the seeds (thin lines: each seed) and ridge's validation figure."""
    rounds = range(len(runs[0][VIEWS[0]]))
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for view, style in zip(VIEWS, ("-o", "-s", ":^")):
        ax.plot(rounds, np.mean([r[view] for r in runs], axis=0), style, label=view)
        for r in runs:
            ax.plot(rounds, r[view], "-", lw=0.5, alpha=0.4, color=ax.lines[-1].get_color())
    ax.axhline(np.mean([r["ridge"] for r in runs]), color="k", ls="--", lw=1, label="ridge, validation classes")
    ax.set(xlabel="EM round (0: before training)", ylabel="Prec@50",
           title="Training from the ridge start (mean of seeds; thin: each seed)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    cfg = parse_config(argv, "scripts/warm_start.py",
                       description=__doc__.splitlines()[0],
                       defaults=dict(report=False, seeds="0,1,2", out_dir="runs/warm_start", epochs=8))[0].resolved()
    prepare_process(cfg)
    data = load_run_data(cfg, ("seen",))[0]
    runs = [one_seed(replace(cfg, seed=seed), data) for seed in parse_seeds(cfg.seeds)]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "warm_start.json", runs)

    mean = {view: np.mean([r[view] for r in runs], axis=0) for view in VIEWS}
    ridge = float(np.mean([r["ridge"] for r in runs]))
    rounds = range(cfg.epochs + 1)
    lines = [f"Prec@50 (validation classes unless named), mean of seeds {cfg.seeds}; round 0 is the model before training; "
             f"ridge on the same classes: {ridge:.3f}.", "",
             "| view | " + " | ".join(str(r) for r in rounds) + " |", "|---|" + "---|" * len(rounds)]
    lines += [f"| {view} | " + " | ".join(f"{v:.3f}" for v in mean[view]) + " |" for view in VIEWS]
    table = "\n".join(lines) + "\n"
    write_atomic(out / "warm_start.md", table.encode())

    plot(runs, out / "warm_start.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
