"""Does photo search find flowers it never saw? Precision@5 of free-text descriptions (issue 20).

    zscrgan data split ../shared/data/FLO_cap --out datasets/flowers_cap --text_encoder all-MiniLM-L6-v2 \\
        --image_encoder efficientnet-lite0 --unseen "$(ls ../shared/data/flower_photos | grep -v '\\.md' | paste -sd,)"
    zscrgan train --dataset flowers_cap --config examples/flowers_cap.json
    zscrgan index --run ckt_logs/flowers_cap_logs --images ../shared/data/flower_photos --out flowers_index
    python scripts/flower_search.py --photos ../shared/data/flower_photos --descriptions examples/flower_descriptions.csv \\
        --dataset datasets/flowers_cap --index flowers_index [--index OTHER_INDEX ...] --out docs/flower_search.md

Four things, written as one Markdown table (and JSON beside it):
1. the featurizer check: each photo featurized here (`zscrgan featurize`'s CNN path) against the
   rows of its class in the data set's image features (FLO's were made from the full-size photos):
   the best cosine per photo, and the runner-up, so a unique match is visible;
2. for each ``--index`` (a `zscrgan index` folder), precision@K of every description: its class's
   photos among the top K of the index's answer, through the same search path as `zscrgan search`;
3. a baseline (``--baseline``: ridge regression, or DeViSE or CCA) fitted on the data set's seen
   classes (its setting and pairing chosen on validation classes, as `zscrgan compare` does; with
   ``--refit`` fitted again at that setting on the training and validation classes together),
   ranking the same photos by cosine;
4. for every model, precision@K when the query is one of the data set's own captions of the
   descriptions' classes (every one of them, averaged per class, then over classes): how far one
   sentence of the kind the models were trained on gets on these photos, the figure the
   descriptions' precision is to be read against.
Chance is (photos of a class) / (photos), 0.10 for the 60 flower photos. Only the descriptions'
classes are scored; the data set must hold them out as unseen (split above), so neither model saw them.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch

from zscrgan.data.dataset import class_key, load_dataset, split_validation
from zscrgan.data.encoders import Encoders
from zscrgan.data.featurize import encode_texts, featurize_images, read_texts
from zscrgan.data.photos import preprocess
from zscrgan.evaluation.baselines import BASELINES, fit_baseline
from zscrgan.evaluation.metrics import unit
from zscrgan.files import write_atomic, write_json
from zscrgan.search.reader import IndexReader


def described(name: str, model, refit: bool) -> str:
    """'ridge (class_mean, lambda 0.01)': a baseline's row, with the pairing and setting validation chose."""
    chosen = [f"{'lambda' if key == 'lam' else key} {value:.3g}" for key, value in model.params.items()
              if key not in ("pairs", "val_prec")]
    return f"{name} ({', '.join([model.params['pairs'], *chosen])}{', refitted' if refit else ''})"


def precision_at(ranked_classes: list[list[str]], wanted: list[str], k: int) -> tuple[float, dict]:
    """Mean precision@k over queries, and per class."""
    hits = [sum(class_key(c) == class_key(w) for c in row[:k]) / k
            for row, w in zip(ranked_classes, wanted)]
    per_class = {}
    for w, h in zip(wanted, hits):
        per_class.setdefault(w, []).append(h)
    return float(np.mean(hits)), {c: float(np.mean(v)) for c, v in per_class.items()}


def class_ids(data) -> dict:
    """{class_key(name): class id} of the data set: a photo folder's name finds its class."""
    return {class_key(name): c for c, name in data.classnames.items()}


def caption_queries(data, classes: list[str]) -> tuple[np.ndarray, list[str]]:
    """Every caption of the data set's classes named ``classes``, and each one's class name."""
    ids = class_ids(data)
    rows = [(data.texts[ids[class_key(c)]], c) for c in classes]
    return np.concatenate([t for t, _ in rows]), [c for t, c in rows for _ in range(len(t))]


def search_index(reader: IndexReader, queries: np.ndarray, k: int) -> list[list[str]]:
    """The folder (the true class) of each query's top ``k`` photos, through `zscrgan search`'s path."""
    return [[h["path"].split("/")[0] for h in row] for row in reader.search(queries, k=k)]


def jpeg_noise(photos) -> np.ndarray:
    """Cosine between each photo's features and those of the same photo saved once more as a JPEG
    of quality 75: the size of the change that re-encoding alone makes."""
    from PIL import Image

    again = []
    for rel in photos.sources:
        buffer = io.BytesIO()
        Image.open(Path(photos.root) / rel).convert("RGB").save(buffer, "JPEG", quality=75)
        again.append(preprocess(Image.open(buffer)))
    return (unit(Encoders(photos.encoder).encode_pixels(again)) * unit(photos.features)).sum(1)


def featurizer_check(photos, data) -> dict:
    """Best and runner-up cosine of each photo to its class's rows in the data set, beside the
    change one more JPEG encoding makes to the photo's own features."""
    ids = class_ids(data)
    feats = unit(photos.features)
    best, second = [], []
    for vec, cls in zip(feats, photos.classes):
        rows = unit(data.images[ids[class_key(cls)]])
        sims = np.sort(rows @ vec)[::-1]
        best.append(float(sims[0]))
        second.append(float(sims[1]))
    noise = jpeg_noise(photos)
    return {"photos": len(best), "best_min": min(best), "best_median": float(np.median(best)),
            "runner_up_max": max(second), "clear": sum(b - s > 0.02 for b, s in zip(best, second)),
            "jpeg75_median": float(np.median(noise)), "jpeg75_min": float(noise.min())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="DIR/<class>/<photo>")
    parser.add_argument("--descriptions", type=Path, required=True, help="class,text CSV")
    parser.add_argument("--dataset", type=Path, required=True, help="the data set the models were trained on")
    parser.add_argument("--index", action="append", default=[], help="a zscrgan index folder (repeatable)")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the validation split the baseline chooses its setting on")
    parser.add_argument("--baseline", default="ridge", choices=BASELINES, help="the baseline scored beside the indexes")
    parser.add_argument("--refit", action="store_true",
                        help="fit the baseline again on the training and validation classes at the setting "
                             "validation chose (docs/results.md, 'Over seeds')")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file; JSON written beside it")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    photos, _ = featurize_images(args.photos)
    texts = encode_texts(read_texts(args.descriptions))
    data = load_dataset(args.dataset)
    check = featurizer_check(photos, data)
    unseen = {class_key(data.classnames[c]) for c in data.unseen}
    asked = {class_key(c) for c in texts.classes}
    if not asked <= unseen:
        raise SystemExit(f"{args.dataset}: classes {sorted(asked - unseen)} of the descriptions are not unseen there")
    chance = float(np.mean([photos.classes.count(c) / len(photos.classes) for c in texts.classes]))
    classes = sorted(set(texts.classes))
    captions, caption_classes = caption_queries(data, classes)
    rows, on_captions = {}, {}
    names = [Path(f).name for f in args.index]
    for folder in args.index:
        reader = IndexReader(folder)
        # the folder's name, or its path as given where two folders share a name
        name = f"index {Path(folder).name if names.count(Path(folder).name) == 1 else folder}"
        # the truth is the photo's folder, not the class the index filed it under
        rows[name] = precision_at(search_index(reader, reader.encode_texts(texts.sources), args.k), texts.classes, args.k)
        on_captions[name] = precision_at(search_index(reader, reader.text_run().embed_text_vectors(captions), args.k),
                                         caption_classes, args.k)[1]
    train, val = split_validation(data, 0.2, args.seed)
    baseline = fit_baseline(args.baseline, data, train, val, seed=args.seed, refit=args.refit)
    gallery = unit(baseline.embed_images(torch.from_numpy(photos.features)).numpy())

    def baseline_ranking(vectors: np.ndarray) -> list[list[str]]:
        sims = unit(baseline.embed_texts(torch.from_numpy(vectors)).numpy()) @ gallery.T
        return [[photos.classes[i] for i in row] for row in np.argsort(-sims, axis=1, kind="stable")[:, :args.k]]

    name = described(args.baseline, baseline, args.refit)
    rows[name] = precision_at(baseline_ranking(texts.features), texts.classes, args.k)
    on_captions[name] = precision_at(baseline_ranking(captions), caption_classes, args.k)[1]
    caption_mean = {n: float(np.mean([per[c] for c in classes])) for n, per in on_captions.items()}

    md = [f"Precision@{args.k} of {len(texts.sources)} descriptions ({args.descriptions.name}) of {len(classes)} "
          f"classes none of the models saw, over {len(photos.classes)} photos; chance {chance:.2f}. Last column: "
          f"P@{args.k} of the data set's own {len(captions)} captions of those classes, each one a query "
          f"(per class, then over classes).", "",
          f"| model | P@{args.k} | " + " | ".join(c.replace("_", " ") for c in classes) + f" | P@{args.k}, captions |",
          "|---" * (len(classes) + 3) + "|"]
    md += [f"| {name} | **{mean:.3f}** | " + " | ".join(f"{per[c]:.2f}" for c in classes) + f" | {caption_mean[name]:.3f} |"
           for name, (mean, per) in rows.items()]
    md += ["", f"Featurizer check: {check['photos']} photos featurized here against {args.dataset.name}'s rows of their "
           f"class: the nearest row's cosine median {check['best_median']:.4f}, min {check['best_min']:.4f}; it stands "
           f"clear of the runner-up (by > 0.02) for {check['clear']} photos. Saving a photo once more as a JPEG of "
           f"quality 75 moves its own features by as much: cosine median {check['jpeg75_median']:.4f}, min "
           f"{check['jpeg75_min']:.4f}."]
    write_atomic(args.out, ("\n".join(md) + "\n").encode())
    result = {"k": args.k, "chance": chance, "featurizer_check": check,
              "models": {n: {"precision": m, "per_class": p, "captions_precision": caption_mean[n],
                             "captions_per_class": on_captions[n]} for n, (m, p) in rows.items()}}
    write_json(args.out.with_suffix(".json"), result)
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
