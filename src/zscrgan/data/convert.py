"""`zscrgan data convert`: published benchmark files to upstream's format.

    --xlsa17 DIR   res101.mat + att_splits.mat of Xian et al.'s "Zero-Shot Learning - the Good,
                   the Bad and the Ugly" (AWA1, AWA2, CUB, ...): one attribute vector per class.
    --gazsl DIR    the CUB2011 / NABird folders read by the GAZSL code (Zhu et al., CVPR 2018):
                   Wikipedia TF-IDF per class, SCS (easy) / SCE (hard) class splits.

Every file is read and checked before anything is written, so bad input leaves no half set;
each problem is one DataError line naming the file. A manifest.json records the source files
with their sha256, so a converted set can be traced back to exactly what it was made from.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from zscrgan.data.dataset import ZeroShotData, read_pickle, save_dataset
from zscrgan.errors import DataError
from zscrgan.files import read_json_object, sha256_file, write_json

MANIFEST_FILE = "manifest.json"

# GAZSL's file names per (bird, split), as its loaders (train_CUB.py, train_NAB.py) spell them.
GAZSL_FILES = {
    ("CUB", "easy"): ("CUB_Porter_7551D_TFIDF_new.mat", "train_test_split_easy.mat",
                      "pfc_feat_train.mat", "pfc_feat_test.mat", "labels_train.pkl", "labels_test.pkl"),
    ("CUB", "hard"): ("CUB_Porter_7551D_TFIDF_new.mat", "train_test_split_hard.mat",
                      "pfc_feat_train_hard.mat", "pfc_feat_test_hard.mat", "labels_train_hard.pkl",
                      "labels_test_hard.pkl"),
    ("NAB", "easy"): ("NAB_Porter_13217D_TFIDF_new.mat", "train_test_split_NABird_easy.mat",
                      "pfc_feat_train_easy.mat", "pfc_feat_test_easy.mat", "labels_train.pkl", "labels_test.pkl"),
    ("NAB", "hard"): ("NAB_Porter_13217D_TFIDF_new.mat", "train_test_split_NABird_hard.mat",
                      "pfc_feat_train_hard.mat", "pfc_feat_test_hard.mat", "labels_train_hard.pkl",
                      "labels_test_hard.pkl"),
}
RELEASE_COUNTS = {("CUB", "easy"): (150, 50), ("CUB", "hard"): (160, 40),
                  ("NAB", "easy"): (323, 81), ("NAB", "hard"): (323, 81)}
SPLIT_NAMES = {"easy": "SCS", "hard": "SCE"}  # super-category shared / exclusive


# ---------------------------------------------------------------- shared helpers

def read_mat(path: Path, keys: list[str]) -> dict:
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


def whole_numbers(values, key: str, path: Path) -> np.ndarray:
    """Any MATLAB shape ([N,1], [1,N], doubles) as a flat int64 vector, or a DataError."""
    values = np.asarray(values).ravel()
    if values.size and (values.dtype.kind not in "iuf" or np.any(values != np.round(values))):
        raise DataError(f"{path}: {key} must hold whole numbers")
    return values.astype(np.int64)


def _one_based(mat: dict, key: str, path: Path, upper: int, of: str = "") -> np.ndarray:
    """A 1-based index vector as 0-based ints, checked to lie in 1..upper."""
    values = whole_numbers(mat[key], key, path)
    if values.size and (values.min() < 1 or values.max() > upper):
        raise DataError(f"{path}: {key} must lie in 1..{upper} (1-based{of}), found {values.min()}..{values.max()}")
    return values - 1


def _matrix(value, key: str, path: Path) -> np.ndarray:
    """A dense float32 2-d matrix; loadmat returns MATLAB sparse matrices as scipy.sparse."""
    if hasattr(value, "toarray"):
        value = value.toarray()
    try:
        matrix = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key} is not a numeric matrix") from None
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise DataError(f"{path}: {key} must be a non-empty 2-d matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DataError(f"{path}: {key} has NaN or infinite values")
    return matrix


def _write_manifest(out: Path, sources: list[Path], data: ZeroShotData, **extra) -> None:
    manifest = {**extra, "files": {p.name: {"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size}
                                   for p in sources},
                "seen": data.seen, "unseen": data.unseen,
                "images_per_class": {str(c): len(data.images[c]) for c in data.seen + data.unseen}}
    write_json(out / MANIFEST_FILE, manifest)


def text_pca(texts: dict, seen: list, dim: int) -> tuple[dict, float]:
    """Project every class's text onto the top ``dim`` principal axes of the SEEN classes' texts.

    Fitting on seen classes only keeps the unseen classes out of training, as a zero-shot
    split requires. Returns the projected texts and the share of seen variance kept.
    """
    fit = np.concatenate([texts[c] for c in seen]).astype(np.float64)
    if not 1 <= dim < len(fit):
        raise DataError(f"--text_pca {dim}: must be 1..{len(fit) - 1} (fit on the {len(fit)} seen-class texts)")
    mean = fit.mean(axis=0)
    _, singular, axes = np.linalg.svd(fit - mean, full_matrices=False)
    kept = float((singular[:dim] ** 2).sum() / max((singular ** 2).sum(), 1e-30))
    return {c: ((t - mean) @ axes[:dim].T).astype(np.float32) for c, t in texts.items()}, kept


def read_classnames_file(path: Path) -> dict:
    """{class id: name} from JSON {"id": "name"}, lines "ID NAME" (CUB's classes.txt) or lines "NAME" (line n = id n).

    GAZSL ships no names, so they come from wherever the user has them; all three forms are common.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".json":
        raw = read_json_object(path)
        if not all(str(k).strip().isdigit() for k in raw):
            raise DataError(f"{path}: keys must be class ids (whole numbers)")
        return {int(k): str(v) for k, v in raw.items()}
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    split = [line.split(None, 1) for line in lines]
    if lines and all(len(parts) == 2 and parts[0].isdigit() for parts in split):
        return {int(cid): name.strip() for cid, name in split}
    return {i + 1: line for i, line in enumerate(lines)}


def _names_for(classes: list, names_file) -> dict:
    if names_file is None:
        return {}
    names = read_classnames_file(names_file)
    unnamed = [c for c in classes if c not in names]
    if unnamed:
        raise DataError(f"{names_file}: no name for class ids {unnamed[:10]}{' ...' if len(unnamed) > 10 else ''}")
    return {c: names[c] for c in classes}


# ---------------------------------------------------------------- xlsa17

def _class_names(raw) -> list[str]:
    """allclasses_names comes back from loadmat as a [C, 1] cell array of 1-element string arrays."""
    cells = [np.asarray(item).ravel() for item in np.asarray(raw).ravel()]
    return [str(cell[0]).strip() if cell.size else "" for cell in cells]


def convert_xlsa17(folder, out, text_key: str = "att") -> ZeroShotData:
    """Seen = classes of trainval_loc (with their test_seen_loc images), unseen = classes of test_unseen_loc."""
    folder, out = Path(folder), Path(out)
    res_path, split_path = folder / "res101.mat", folder / "att_splits.mat"
    res = read_mat(res_path, ["features", "labels"])
    splits = read_mat(split_path, [text_key, "trainval_loc", "test_seen_loc", "test_unseen_loc"])
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
    _write_manifest(out, [res_path, split_path], data, source="xlsa17", text_key=text_key)
    print(f"{out}: {data.summary()} (text vectors from {text_key})")
    return data


# ---------------------------------------------------------------- GAZSL

def _class_ids(split: dict, key: str, split_path: Path, n_rows: int, text_path: Path) -> list[int]:
    ids = _one_based(split, key, split_path, n_rows, of=f", the {n_rows} PredicateMatrix rows of {text_path.name}") + 1
    if ids.size == 0:
        raise DataError(f"{split_path}: {key} is empty")
    if len(set(ids.tolist())) != ids.size:
        raise DataError(f"{split_path}: a class id is listed twice in {key}")
    return ids.tolist()


def _images_by_class(feat_path: Path, labels_path: Path, cids: list[int], key: str, split_path: Path) -> dict:
    """{class id: its pfc_feat rows}, from one feature file and its label pickle (positions into ``cids``)."""
    features = _matrix(read_mat(feat_path, ["pfc_feat"])["pfc_feat"], "pfc_feat", feat_path)
    raw = read_pickle(labels_path)
    try:
        labels = whole_numbers(raw, "labels", labels_path)
    except (TypeError, ValueError):
        raise DataError(f"{labels_path}: expected a vector of whole numbers, got {type(raw).__name__}") from None
    if labels.size and (labels.min() < 0 or labels.max() >= len(cids)):
        raise DataError(f"{labels_path}: labels must lie in 0..{len(cids) - 1} (0-based positions into the "
                        f"{len(cids)} {key} of {split_path.name}), found {labels.min()}..{labels.max()}")
    if features.shape[0] != len(labels):
        if features.shape[1] != len(labels):
            raise DataError(f"{feat_path}: {features.shape[0]} pfc_feat rows but {len(labels)} labels "
                            f"in {labels_path.name}")
        features = features.T  # saved as [dim, N]: one column per image
    empty = [cids[k] for k in range(len(cids)) if not np.any(labels == k)]
    if empty:
        raise DataError(f"{labels_path}: no images for class ids {empty[:10]} of {key}")
    return {cid: features[labels == k] for k, cid in enumerate(cids)}


def convert_gazsl(folder, out, bird: str, split: str, classnames=None, pca: int | None = None) -> ZeroShotData:
    """CUB or NAB with Wikipedia TF-IDF texts; seen = train_cid, unseen = test_cid, ids as published."""
    folder, out = Path(folder), Path(out)
    if (bird, split) not in GAZSL_FILES:
        raise DataError(f"--bird {bird} --split {split}: choose --bird CUB|NAB and --split easy|hard")
    paths = [folder / name for name in GAZSL_FILES[bird, split]]
    text_path, split_path, feat_train, feat_test, labels_train, labels_test = paths
    text_matrix = _matrix(read_mat(text_path, ["PredicateMatrix"])["PredicateMatrix"], "PredicateMatrix", text_path)
    split_mat = read_mat(split_path, ["train_cid", "test_cid"])
    seen = _class_ids(split_mat, "train_cid", split_path, len(text_matrix), text_path)
    unseen = _class_ids(split_mat, "test_cid", split_path, len(text_matrix), text_path)
    both = sorted(set(seen) & set(unseen))
    if both:
        raise DataError(f"{split_path}: class ids {both[:5]} are in both train_cid and test_cid")
    images = {**_images_by_class(feat_train, labels_train, seen, "train_cid", split_path),
              **_images_by_class(feat_test, labels_test, unseen, "test_cid", split_path)}
    dims = {images[seen[0]].shape[1], images[unseen[0]].shape[1]}
    if len(dims) > 1:
        raise DataError(f"{feat_test}: pfc_feat has {images[unseen[0]].shape[1]} columns, "
                        f"{feat_train.name} has {images[seen[0]].shape[1]}")
    texts = {c: text_matrix[c - 1][None, :] for c in seen + unseen}
    kept = None
    if pca:
        texts, kept = text_pca(texts, seen, pca)
    data = ZeroShotData(texts, images, seen, unseen, out.name, _names_for(seen + unseen, classnames))
    save_dataset(data, out)
    sources = paths + ([Path(classnames)] if classnames else [])
    _write_manifest(out, sources, data, source="gazsl", bird=bird, split=split, split_name=SPLIT_NAMES[split],
                    text_dim_published=int(text_matrix.shape[1]), text_pca=pca, text_pca_variance_kept=kept)
    expected = RELEASE_COUNTS[bird, split]
    if (len(seen), len(unseen)) != expected:
        print(f"zscrgan data convert: note: {len(seen)}/{len(unseen)} seen/unseen classes; GAZSL's {bird} {split} "
              f"release has {expected[0]}/{expected[1]}", file=sys.stderr)
    pca_note = f", PCA to {pca} keeping {kept:.1%} of the seen variance" if pca else ""
    print(f"{out}: {data.summary()} ({bird} {SPLIT_NAMES[split]}; "
          f"{text_matrix.shape[1]}-d TF-IDF texts{pca_note})")
    return data
