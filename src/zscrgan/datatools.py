"""`zscrgan data build|check|convert`: make seed-format data sets and check them.

    zscrgan data build --images DIR|images.npz --texts FILE|texts.npz --out datasets/NAME
                       (--unseen a,b,c | --unseen_fraction F [--seed S])
    zscrgan data check datasets/NAME [--strict]
    zscrgan data convert --xlsa17 DIR --out datasets/NAME [--text_key att]

build featurizes photos and descriptions (or takes the .npz files of `zscrgan featurize`),
numbers the classes 1..C in sorted name order and writes the four pickles, classnames.json
and manifest.json (which photo each image row came from). convert reads the res101.mat /
att_splits.mat pair of Xian et al.'s "Zero-Shot Learning - the Good, the Bad and the Ugly"
benchmark (xlsa17). check loads a set as training would and reports what looks wrong;
load errors exit 1, problems (duplicate photos are common in real sets) only with --strict.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .data import CLASSNAMES_FILE, DataError, ZeroShotData, load_dataset, save_dataset, write_atomic
from .featurize import (DEFAULT_ENCODER, IMAGE_ENCODERS, Features, describe, featurize_images,
                        featurize_texts, list_class_files, positive_int)

MANIFEST_FILE = "manifest.json"


# ---------------------------------------------------------------- build

def _image_features(source: Path, encoder: str, batch_size: int, device: str) -> tuple[Features, int]:
    if source.is_dir():
        feats, skipped = featurize_images(source, encoder, batch_size, device)
        return feats, len(skipped)
    return Features.load(source, "images"), 0


def _text_features(source: Path, batch_size: int, device: str) -> Features:
    if source.suffix == ".npz":
        return Features.load(source, "texts")
    return featurize_texts(source, batch_size, device)


def _same_classes(img_names: set, txt_names: set, images: Path, texts: Path) -> None:
    only_images, only_texts = sorted(img_names - txt_names), sorted(txt_names - img_names)
    problems = []
    if only_images:
        problems.append(f"classes with images in {images} but no text in {texts}: {', '.join(only_images)}")
    if only_texts:
        problems.append(f"classes with text in {texts} but no images in {images}: {', '.join(only_texts)}")
    if problems:
        raise DataError("; ".join(problems))


def choose_unseen(names: list, unseen=None, fraction: float | None = None, seed: int = 0) -> list:
    """The unseen class names: named explicitly, or a seeded random fraction of the classes."""
    if (unseen is None) == (fraction is None):
        raise DataError("give exactly one of --unseen CLASSES or --unseen_fraction F")
    if unseen is not None:
        chosen = [c.strip() for c in unseen.split(",") if c.strip()] if isinstance(unseen, str) else list(unseen)
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise DataError(f"--unseen: no class named {', '.join(unknown)} (classes: {', '.join(names)})")
    else:
        if not 0.0 < fraction < 1.0:
            raise DataError(f"--unseen_fraction must be in (0, 1), got {fraction}")
        n_unseen = max(1, int(round(fraction * len(names))))
        picked = np.random.default_rng(seed).choice(len(names), size=min(n_unseen, len(names)), replace=False)
        chosen = [names[i] for i in sorted(picked)]
    if not chosen or len(set(chosen)) >= len(names):
        raise DataError(f"need at least one seen and one unseen class; "
                        f"{len(set(chosen))} of {len(names)} chosen as unseen")
    return sorted(set(chosen))


def _rows_by_class(feats: Features, ids: dict) -> tuple[dict, list]:
    """Per class id the stacked vectors, and (class id, row in that class, source) of each."""
    arrays, rows, labels = {}, [], np.asarray(feats.classes)
    for name, cid in ids.items():
        picked = np.flatnonzero(labels == name)
        arrays[cid] = feats.features[picked]
        rows += [{"class": cid, "row": r, "source": feats.sources[i]} for r, i in enumerate(picked)]
    return arrays, rows


def build_dataset(images, texts, out, unseen=None, unseen_fraction: float | None = None, seed: int = 0,
                  encoder: str = DEFAULT_ENCODER, batch_size: int = 32, device: str = "auto") -> ZeroShotData:
    """Featurize (or load) photos and descriptions and write a seed-format set to ``out``.

    ``images``: DIR/<class>/<photo> or an images .npz; ``texts``: CSV/JSON or a texts .npz;
    ``unseen``: class names (list or comma string), or ``unseen_fraction`` with ``seed``.
    """
    images, texts, out = Path(images), Path(texts), Path(out)
    if not images.is_dir() and not (images.is_file() and images.suffix == ".npz"):
        raise DataError(f"{images}: --images must be a folder of class folders "
                        f"or a .npz from 'zscrgan featurize images'")
    txt = _text_features(texts, batch_size, device)  # first, so a bad file fails before photos are encoded
    if images.is_dir():  # before the slow part, from the folder names alone
        _same_classes({c for c, _ in list_class_files(images)}, set(txt.classes), images, texts)
    img, skipped = _image_features(images, encoder, batch_size, device)
    _same_classes(set(img.classes), set(txt.classes), images, texts)
    names = sorted(set(img.classes))
    ids = {name: i + 1 for i, name in enumerate(names)}
    unseen_names = choose_unseen(names, unseen, unseen_fraction, seed)
    image_arrays, image_rows = _rows_by_class(img, ids)
    text_arrays, text_rows = _rows_by_class(txt, ids)
    data = ZeroShotData(text_arrays, image_arrays,
                        seen=[ids[n] for n in names if n not in unseen_names],
                        unseen=[ids[n] for n in unseen_names],
                        name=out.name, classnames={cid: name for name, cid in ids.items()})
    save_dataset(data, out)
    manifest = {
        "image_root": img.root, "image_encoder": img.encoder, "text_encoder": txt.encoder,
        "images_from": str(images), "texts_from": str(texts), "unreadable_skipped": skipped,
        "seen": data.seen, "unseen": data.unseen,
        "classes": {str(cid): name for name, cid in ids.items()},
        "images": [{"class": r["class"], "row": r["row"], "path": r["source"]} for r in image_rows],
        "texts": [{"class": r["class"], "row": r["row"], "text": r["source"]} for r in text_rows],
    }
    write_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
    print(f"{out}: {data.summary()} ({describe(img, skipped)}; {describe(txt)})")
    return data


# ---------------------------------------------------------------- check

def _spread(counts: list) -> str:
    return f"min {min(counts)} / median {float(np.median(counts)):g} / max {max(counts)}"


def find_problems(data: ZeroShotData) -> list[str]:
    """Things that load fine but would quietly spoil training or evaluation."""
    classes = data.seen + data.unseen
    problems = []
    feats, owner = data.stacked_images(classes)
    _, inverse, counts = np.unique(feats, axis=0, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        dup_classes = sorted({classes[k] for k in owner[counts[inverse.ravel()] > 1]})
        problems.append(f"{int((counts - 1).sum())} image vectors duplicate another one (classes {dup_classes[:10]})")
    text_means = np.stack([data.texts[c].mean(axis=0) for c in classes])
    _, inverse = np.unique(text_means, axis=0, return_inverse=True)
    clashes = [[c for c, k in zip(classes, inverse.ravel()) if k == group]
               for group in np.flatnonzero(np.bincount(inverse.ravel()) > 1)]
    for group in clashes:
        problems.append(f"classes {group} have identical text vectors, so no text can tell them apart")
    for what, matrix in (("image", feats), ("text", data.stacked_texts(classes)[0])):
        if len(matrix) > 1:
            constant = int((matrix.max(axis=0) == matrix.min(axis=0)).sum())
            if constant:
                problems.append(f"{constant} of {matrix.shape[1]} {what} features are constant over all {what}s")
    if data.classnames:
        unnamed = [c for c in classes if c not in data.classnames]
        if unnamed:
            problems.append(f"{CLASSNAMES_FILE} names no class for ids {unnamed[:10]}")
    return problems


def check_dataset(folder) -> tuple[list[str], list[str]]:
    """Summary lines and problems of the set in ``folder``; load errors raise DataError."""
    data = load_dataset(folder)
    classes = data.seen + data.unseen
    feats, _ = data.stacked_images(classes)
    texts, _ = data.stacked_texts(classes)
    lines = [
        data.summary(),
        f"classes: {len(data.seen)} seen {data.seen[:8]}{' ...' if len(data.seen) > 8 else ''}, "
        f"{len(data.unseen)} unseen {data.unseen[:8]}{' ...' if len(data.unseen) > 8 else ''}",
        f"images per class: {_spread([len(data.images[c]) for c in classes])}",
        f"texts per class: {_spread([len(data.texts[c]) for c in classes])}",
        f"image vectors: dim {data.image_dim}, values {feats.min():.4g} .. {feats.max():.4g}, mean {feats.mean():.4g}",
        f"text vectors: dim {data.text_dim}, values {texts.min():.4g} .. {texts.max():.4g}, mean {texts.mean():.4g}",
    ]
    return lines, find_problems(data)


# ---------------------------------------------------------------- convert

def _loadmat(path: Path, keys: list[str]) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises assorted types on a damaged .mat
        raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no {', '.join(missing)} (it has {', '.join(found)})")
    return mat


def _one_based(mat: dict, key: str, path: Path, upper: int) -> np.ndarray:
    """A 1-based index vector as 0-based ints, checked to lie in 1..upper."""
    values = np.asarray(mat[key]).ravel()
    if values.size and (values.dtype.kind not in "iuf" or np.any(values != np.round(values))):
        raise DataError(f"{path}: {key} must hold whole numbers")
    values = values.astype(np.int64)
    if values.size and (values.min() < 1 or values.max() > upper):
        raise DataError(f"{path}: {key} must lie in 1..{upper} (1-based), found {values.min()}..{values.max()}")
    return values - 1


def _class_names(raw) -> list[str]:
    """allclasses_names comes back from loadmat as a [C, 1] cell array of 1-element string arrays."""
    cells = [np.asarray(item).ravel() for item in np.asarray(raw).ravel()]
    return [str(cell[0]).strip() if cell.size else "" for cell in cells]


def convert_xlsa17(folder, out, text_key: str = "att") -> ZeroShotData:
    """Seen = classes of trainval_loc (with their test_seen_loc images), unseen = classes of test_unseen_loc."""
    folder, out = Path(folder), Path(out)
    res_path, split_path = folder / "res101.mat", folder / "att_splits.mat"
    res = _loadmat(res_path, ["features", "labels"])
    splits = _loadmat(split_path, [text_key, "trainval_loc", "test_seen_loc", "test_unseen_loc"])
    features = np.asarray(res["features"], dtype=np.float32)
    if features.ndim != 2:
        raise DataError(f"{res_path}: features must be a [D, N] matrix, got shape {features.shape}")
    n_images = features.shape[1]
    names = _class_names(splits["allclasses_names"]) if "allclasses_names" in splits else []
    try:
        matrix = np.asarray(splits[text_key], dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{split_path}: {text_key} is not a numeric matrix") from None
    n_classes = len(names) or (matrix.shape[-1] if matrix.ndim else 0)
    if matrix.ndim != 2 or n_classes not in matrix.shape:
        raise DataError(f"{split_path}: {text_key} has shape {matrix.shape}, expected [dim, {n_classes} classes]")
    class_vectors = matrix.T if matrix.shape[1] == n_classes else matrix  # -> [C, dim]
    labels = _one_based(res, "labels", res_path, n_classes) + 1  # class ids stay 1-based
    if len(labels) != n_images:
        raise DataError(f"{res_path}: {len(labels)} labels for {n_images} feature columns")
    trainval, test_seen, test_unseen = (_one_based(splits, k, split_path, n_images)
                                        for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc"))
    seen = sorted({int(c) for c in labels[trainval]})
    unseen = sorted({int(c) for c in labels[test_unseen]})
    if not seen or not unseen:
        raise DataError(f"{split_path}: trainval_loc and test_unseen_loc must both be non-empty")
    if set(seen) & set(unseen):
        both = sorted(set(seen) & set(unseen))[:5]
        raise DataError(f"{split_path}: classes {both} are in both trainval_loc and test_unseen_loc")
    seen_rows = np.concatenate([trainval, test_seen[np.isin(labels[test_seen], seen)]])
    images = {}
    for classes, rows in ((seen, seen_rows), (unseen, test_unseen)):
        for c in classes:
            images[c] = features[:, rows[labels[rows] == c]].T
    texts = {c: class_vectors[c - 1][None, :] for c in seen + unseen}
    classnames = {c: names[c - 1] for c in seen + unseen} if names else {}
    data = ZeroShotData(texts, images, seen, unseen, out.name, classnames)
    save_dataset(data, out)
    print(f"{out}: {data.summary()} (text vectors from {text_key})")
    return data


# ---------------------------------------------------------------- command

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zscrgan data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="photos + descriptions to a seed-format data set")
    build.add_argument("--images", type=Path, required=True, help="DIR/<class>/<photo> or an images .npz")
    build.add_argument("--texts", type=Path, required=True, help="class,text CSV, JSON or a texts .npz")
    build.add_argument("--out", type=Path, required=True, help="data set folder, e.g. datasets/NAME")
    build.add_argument("--unseen", help="comma-separated unseen class names")
    build.add_argument("--unseen_fraction", type=float, help="fraction of classes drawn as unseen")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--encoder", default=DEFAULT_ENCODER, choices=list(IMAGE_ENCODERS))
    build.add_argument("--batch_size", type=positive_int, default=32)
    build.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    check = sub.add_parser("check", help="validate a data set and summarise it")
    check.add_argument("dir", type=Path)
    check.add_argument("--strict", action="store_true", help="exit 1 when problems are found, not only on load errors")
    convert = sub.add_parser("convert", help="xlsa17 res101.mat + att_splits.mat to the seed format")
    convert.add_argument("--xlsa17", type=Path, required=True, help="folder with res101.mat and att_splits.mat")
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--text_key", default="att",
                         help="att_splits.mat matrix used as class text (att, original_att, ...)")
    args = parser.parse_args(argv)
    if args.action == "build":
        build_dataset(args.images, args.texts, args.out, args.unseen, args.unseen_fraction, args.seed,
                      args.encoder, args.batch_size, args.device)
    elif args.action == "convert":
        convert_xlsa17(args.xlsa17, args.out, args.text_key)
    else:
        lines, problems = check_dataset(args.dir)
        print("\n".join(lines))
        print("problems: " + ("none" if not problems else f"{len(problems)}"))
        for problem in problems:
            print(f"  - {problem}")
        return 1 if problems and args.strict else 0
    return 0
