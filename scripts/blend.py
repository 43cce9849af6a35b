"""ZSCRGAN's scores blended with a baseline's, the weight chosen on validation classes, over a
``zscrgan compare --splits`` folder (docs/results.md, "Over several class splits").

    python scripts/blend.py runs/compare_FLO_splits --method tuned --baseline ridge

For every finished (split, ``--method``, seed) cell of the compare, the run's selected model
(its best.pt) and the baseline refitted on the run's own training and validation classes are
scored as one model: w * cos(ZSCRGAN) + (1 - w) * cos(baseline), as the cosine of each side's unit
embeddings scaled by sqrt(w) and sqrt(1 - w) and put side by side. w in 0, 0.1, ..., 1 is chosen
by validation Prec@K, every text a query (the selection figure of every method; the lower w on a
tie), then the blend is scored once on the unseen classes. Its cells go beside the compare's
(``blend_cells.jsonl``, the chosen w in each), and the compare's tables with the blend as one more
method, paired against the best baseline, as ``<compare folder>_blend.md/.csv/.png``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from zscrgan.config import DEFAULT_K
from zscrgan.evaluation.baselines import BASELINES, fit_baseline
from zscrgan.evaluation.scoring import score_views
from zscrgan.experiments.compare import split_cell_run_dir, write_split_tables
from zscrgan.experiments.runfolder import view_figures
from zscrgan.experiments.splits import CELLS_FILE, by_split, read_cells, write_cells
from zscrgan.runfiles import BEST_CHECKPOINT
from zscrgan.runs import SavedRun

WEIGHTS = [i / 10 for i in range(11)]


class Blend:
    """Two retrieval models as one: the cosine of its embeddings is w * one's + (1 - w) * the other's."""

    def __init__(self, first, second, weight: float):
        self.first, self.second, self.weight = first, second, weight

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        unit = torch.nn.functional.normalize
        return torch.cat([math.sqrt(self.weight) * unit(a, dim=1), math.sqrt(1 - self.weight) * unit(b, dim=1)], 1)

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        return self._join(self.first.embed_texts(texts), self.second.embed_texts(texts))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._join(self.first.embed_images(images), self.second.embed_images(images))


class Embedded:
    """A model's embeddings of one class set's texts and images, made once: what score_views asks of a
    model for those classes (every text a query), answered from them, so eleven weights embed once."""

    def __init__(self, model, data, classes: list, device: torch.device):
        texts, _ = data.stacked_texts(classes)
        images, _ = data.stacked_images(classes)
        self.texts = model.embed_texts(torch.from_numpy(texts).to(device))
        self.images = model.embed_images(torch.from_numpy(images).to(device))

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        return self.texts

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.images


def blend_cell(run_dir: Path, baseline: str, device: torch.device) -> tuple[dict, float]:
    """The blended model's figures (the compare's cell form) and its chosen weight."""
    saved = SavedRun.open(run_dir / BEST_CHECKPOINT)
    cfg, data = saved.cfg, saved.load_data()
    train, val = saved.state["classes"]["train"], saved.state["classes"]["val"]
    saved.model.to(device)
    zscrgan = saved.embedder(saved.centre(data, device), device)
    other = fit_baseline(baseline, data, train, val, seed=cfg.seed, device=device, select_k=cfg.select_k,
                         own_photo=cfg.photo_pairs)  # the baseline as compare fitted it
    ks, key = cfg.scored_ks(), f"prec@{cfg.select_k}"
    on_val_sides = Embedded(zscrgan, data, val, device), Embedded(other, data, val, device)
    on_val = {w: score_views(Blend(*on_val_sides, w), data, val, ks, device, details=False)[0].as_dict()[key]
              for w in WEIGHTS}
    weight = max(WEIGHTS, key=lambda w: (on_val[w], -w))
    test, _, per_class = score_views(Blend(zscrgan, other, weight), data, data.unseen, ks, device, details=False,
                                     per_class=data.many_texts)
    return view_figures("test", test, per_class), weight


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare", type=Path, help="a compare --splits folder, e.g. runs/compare_FLO_splits")
    parser.add_argument("--method", default="tuned", help="the ZSCRGAN method of the compare to blend")
    parser.add_argument("--baseline", default="ridge", choices=list(BASELINES))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    folder, device = args.compare, torch.device(args.device)
    done = read_cells(folder / CELLS_FILE)
    name = f"{args.method}+{args.baseline}"
    blends = folder / "blend_cells.jsonl"
    kept = read_cells(blends) if blends.exists() else {}
    for (k, method, seed) in sorted(c for c in done if c[1] == args.method and (c[0], name, c[2]) not in kept):
        figures, weight = blend_cell(split_cell_run_dir(folder, k, method, seed), args.baseline, device)
        kept[(k, name, seed)] = (figures | {"weight": weight}, done[(k, method, seed)][1])
        write_cells(blends, kept)
        print(f"split {k} seed {seed}: w {weight:.1f}, unseen Prec@{DEFAULT_K} "
              f"{figures['test'][f'prec@{DEFAULT_K}']:.4f} ({method} alone "
              f"{done[(k, method, seed)][0]['test'][f'prec@{DEFAULT_K}']:.4f})", flush=True)
    cells = done | kept
    splits = sorted({k for k, _, _ in cells})
    seeds = sorted({s for _, _, s in cells})
    methods = list(dict.fromkeys(m for _, m, _ in cells))
    md = write_split_tables(folder.with_name(folder.name + "_blend"), by_split(cells, splits, methods, seeds), seeds,
                            DEFAULT_K)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
