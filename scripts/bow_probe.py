"""Is the sentence encoder what holds one caption back? Ridge on a bag of words against MiniLM (issue 20).

    python scripts/bow_probe.py --dataset ../shared/data/FLO_cap --seed 0 --out runs/bow_probe.json

MiniLM was not trained on flowers or with photos; a bag of words fitted on the training classes'
captions is the simplest text representation that is. On the seed's validation split (as
``--select val``; the unseen classes are never read) three ridge maps (lambda chosen on the
validation classes, ``class_mean`` pairing) are scored per caption, Prec@``--k`` with every
validation caption a query: on the data set's MiniLM vectors, on TF-IDF vectors of the raw
captions (``captions.tsv``; the vocabulary and idf from the training classes' captions only,
words in at least ``--min_df`` of them, sublinear tf, unit rows), and on the two side by side.
A large gain would say the encoder is the limit; a small one, that one caption carries little
of its class whatever encodes it.
"""
from __future__ import annotations

import argparse
import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np

from zscrgan.data.dataset import ZeroShotData, load_dataset, split_validation
from zscrgan.evaluation.baselines import fit_baseline
from zscrgan.files import write_json

WORD = re.compile(r"[a-z]{2,}")


def read_captions(path: Path) -> dict:
    """captions.tsv (class_id, block, caption index, caption) as {class id: [caption, ...]}, in file order."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t")
        out: dict = {}
        for row in rows:
            out.setdefault(int(row["class_id"]), []).append(row["caption"])
    return out


class TfIdf:
    """Words of at least two letters, lower-cased; idf = log((1 + n) / (1 + df)) + 1; tf = 1 + log(count)."""

    def __init__(self, documents: list[str], min_df: int):
        df = Counter(w for d in documents for w in set(WORD.findall(d.lower())))
        self.vocab = {w: i for i, w in enumerate(sorted(w for w, n in df.items() if n >= min_df))}
        self.idf = np.array([np.log((1 + len(documents)) / (1 + df[w])) + 1 for w in self.vocab], np.float32)

    def __call__(self, documents: list[str]) -> np.ndarray:
        out = np.zeros((len(documents), len(self.vocab)), np.float32)
        for row, d in enumerate(documents):
            for w, n in Counter(WORD.findall(d.lower())).items():
                if w in self.vocab:
                    out[row, self.vocab[w]] = 1 + np.log(n)
        out *= self.idf
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a caption data set holding captions.tsv")
    parser.add_argument("--seed", type=int, default=0, help="the validation split, as zscrgan train --seed")
    parser.add_argument("--min_df", type=int, default=3)
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    data = load_dataset(args.dataset, splits=("seen",))
    captions = read_captions(args.dataset / "captions.tsv")
    wrong = [c for c in data.seen if len(captions.get(c, [])) != len(data.texts[c])]
    if wrong:
        raise SystemExit(f"{args.dataset / 'captions.tsv'}: class {wrong[0]} has {len(captions.get(wrong[0], []))} "
                         f"captions, {len(data.texts[wrong[0]])} text vectors")
    train, val = split_validation(data, 0.2, args.seed)
    bag = TfIdf([t for c in train for t in captions[c]], args.min_df)
    words = {c: bag(captions[c]) for c in data.seen}
    inputs = {"MiniLM": data.texts, "TF-IDF": words,
              "TF-IDF + MiniLM": {c: np.concatenate([words[c], data.texts[c]], 1) for c in data.seen}}
    result = {"seed": args.seed, "vocabulary": len(bag.vocab), "k": args.k, "val_prec": {}}
    for name, texts in inputs.items():
        subset = ZeroShotData(texts, data.images, data.seen, [], data.name)
        model = fit_baseline("ridge", subset, train, val, seed=args.seed, pairing="class_mean", select_k=args.k)
        result["val_prec"][name] = {"prec": model.params["val_prec"], "lam": model.params["lam"]}
        print(f"ridge on {name}: validation Prec@{args.k} {model.params['val_prec']:.4f} "
              f"(lambda {model.params['lam']:.3g})", flush=True)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
