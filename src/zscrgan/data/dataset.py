"""Upstream's data format: load, validate, save.

A data set is a folder with four pickles (docs/algorithm.md):

    txt_embed_dict.pkl    {class id: text vectors, a list of 1-d vectors or a 2-d array}
    image_embed_dict.pkl  {class id: image feature vectors, same rule}
    trainids.pkl          [seen class ids]
    testids.pkl           [unseen class ids]

and optionally ``classnames.json`` ({"<class id>": "name"}) and ``caption_photos.npz`` (which
photo each text describes, where `zscrgan data build` knew it: per class id, an int array with the
image row of each text row, -1 for none; upstream's readers ignore it).

Pickles are read through a restricted unpickler that admits only what the format
needs (containers, numbers, numpy arrays), so a hostile pickle is refused, never run.
Every problem is raised as :class:`DataError` with a one-line message naming the file.
"""
from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zscrgan.errors import DataError
from zscrgan.files import read_json_object, write_atomic

TEXT_FILE = "txt_embed_dict.pkl"
IMAGE_FILE = "image_embed_dict.pkl"
SEEN_FILE = "trainids.pkl"
UNSEEN_FILE = "testids.pkl"
CLASSNAMES_FILE = "classnames.json"
TEXT_PHOTOS_FILE = "caption_photos.npz"


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused: it encodes bytes with {encoding!r}")
    return text.encode("latin1")


# (module, name) pairs an upstream-format pickle may reference. numpy moved its core
# module in 2.0, and Python 2 pickles name the old one, so both spellings map here.
def _allowed_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    table = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _reconstruct
        table[(module, "scalar")] = scalar
    table[("_codecs", "encode")] = _latin1_encode  # how protocol 2 stores bytes
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    return table


class _UpstreamUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy constructors upstream's format uses."""

    _allowed = None

    def find_class(self, module, name):
        if _UpstreamUnpickler._allowed is None:
            _UpstreamUnpickler._allowed = _allowed_globals()
        obj = _UpstreamUnpickler._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"refused: it references {module}.{name}, which upstream's format never uses"
            )
        return obj


def read_pickle(path: Path):
    """Load one upstream-format pickle safely (Python 2 pickles too, via latin1)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as fh:
            return _UpstreamUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if not msg.startswith("refused"):
            msg = f"truncated or corrupt pickle ({msg})"
        raise DataError(f"{path}: {msg}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, UnicodeDecodeError, OverflowError) as exc:
        raise DataError(f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None


def write_pickle(path: Path, obj) -> None:
    write_atomic(path, pickle.dumps(obj, protocol=2))


@dataclass
class ZeroShotData:
    """A validated zero-shot data set: float32 2-d arrays per class, disjoint splits."""

    texts: dict  # class id -> float32 [n_texts, text_dim]
    images: dict  # class id -> float32 [n_images, image_dim]
    seen: list
    unseen: list
    name: str = "data"
    classnames: dict = field(default_factory=dict)  # class id -> readable name
    text_photos: dict | None = None  # class id -> int64 [n_texts]: each text's image row, -1 for none

    @property
    def text_dim(self) -> int:
        return next(iter(self.texts.values())).shape[1]

    @property
    def image_dim(self) -> int:
        return next(iter(self.images.values())).shape[1]

    def stacked_images(self, classes) -> tuple[np.ndarray, np.ndarray]:
        """All images of ``classes`` as one array, with their class positions (in ``classes``) per row."""
        feats = np.concatenate([self.images[c] for c in classes])
        labels = np.concatenate([np.full(len(self.images[c]), i) for i, c in enumerate(classes)])
        return feats, labels

    def stacked_texts(self, classes) -> tuple[np.ndarray, np.ndarray]:
        """All texts of ``classes`` as one array, with class positions per row."""
        feats = np.concatenate([self.texts[c] for c in classes])
        labels = np.concatenate([np.full(len(self.texts[c]), i) for i, c in enumerate(classes)])
        return feats, labels

    @property
    def many_texts(self) -> bool:
        """True when some class has more than one text (captions): evaluation then reports the
        per-class protocol beside the per-text one, and the baselines choose among their pairings."""
        return any(len(t) > 1 for t in self.texts.values())

    def class_mean_texts(self) -> "ZeroShotData":
        """The same data with each class's texts replaced by their mean: the per-class protocol's
        *mean text* form (one query per class; the other form, the mean of the texts' queries, is
        evaluation.scoring.score_views' "prototype"). With one text per class it is the data itself."""
        texts = {c: t if len(t) == 1 else t.mean(0, keepdims=True, dtype=np.float64).astype(np.float32)
                 for c, t in self.texts.items()}
        return ZeroShotData(texts, self.images, self.seen, self.unseen, self.name, self.classnames)

    def summary(self) -> str:
        n_img = sum(len(v) for v in self.images.values())
        n_txt = sum(len(v) for v in self.texts.values())
        texts = (f"{n_txt} texts of dim {self.text_dim} (up to {max(len(v) for v in self.texts.values())} a class)"
                 if self.many_texts else f"texts of dim {self.text_dim}")
        return (f"{self.name}: {len(self.seen)} seen / {len(self.unseen)} unseen classes, "
                f"{n_img} images of dim {self.image_dim}, {texts}")


def _as_matrix(value, path: Path, cls, what: str) -> np.ndarray:
    """One class's vectors as a float32 2-d array, or a DataError saying why not."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype != object:
        value = value[None, :]  # a single vector stored bare
    try:
        if isinstance(value, (list, tuple)):
            if len(value) == 0:
                raise DataError(f"{path}: class {cls!r} has no {what} vectors")
            lengths = {np.asarray(v).reshape(-1).shape[0] for v in value}
            if len(lengths) > 1:
                raise DataError(f"{path}: class {cls!r} has {what} vectors of different lengths {sorted(lengths)}")
            value = np.stack([np.asarray(v).reshape(-1) for v in value])
        arr = np.asarray(value)
    except DataError:
        raise
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: class {cls!r}: {what} vectors are not numeric ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: class {cls!r}: {what} vectors have dtype {arr.dtype}, expected numbers")
    if arr.ndim != 2:
        raise DataError(f"{path}: class {cls!r}: expected a 2-d array or a list of 1-d vectors, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{path}: class {cls!r} has no {what} vectors")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: class {cls!r} has NaN or infinite {what} values")
    return arr


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_fits(path: Path, raw: dict, classes, what: str) -> None:
    """Refuse, before any conversion, vectors whose float32 copy would not fit in memory."""
    need = 4 * sum(raw[c].size for c in classes if isinstance(raw.get(c), np.ndarray))
    free = available_memory()
    if free is not None and need > free:
        raise DataError(f"{path}: the {what} vectors need {need / 2**30:.1f} GiB as float32, more than the "
                        f"{free / 2**30:.1f} GiB of memory available; use fewer {what}s per class")


def _read_dict(path: Path, classes, what: str) -> dict:
    raw = read_pickle(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict of class id -> vectors, got {type(raw).__name__}")
    _check_fits(path, raw, classes, what)
    out, dim = {}, None
    for cls in classes:
        if cls not in raw:
            raise DataError(f"{path}: class {cls!r} (listed in the class id files) is missing")
        arr = _as_matrix(raw[cls], path, cls, what)
        if dim is None:
            dim = arr.shape[1]
        elif arr.shape[1] != dim:
            raise DataError(f"{path}: class {cls!r} has {what} vectors of length {arr.shape[1]}, others have {dim}")
        out[cls] = arr
    return out


def _read_ids(path: Path) -> list:
    raw = read_pickle(path)
    if isinstance(raw, np.ndarray):
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)) or len(raw) == 0:
        raise DataError(f"{path}: expected a non-empty list of class ids")
    ids = [int(c) if isinstance(c, (np.integer,)) else c for c in raw]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: a class id is listed twice")
    return ids


def resolve_dataset_dir(name_or_path: str, data_root: str = "datasets") -> Path:
    """A NAME is looked up as ``<data_root>/<NAME>/``; an existing path is used as is."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    candidate = Path(data_root) / name_or_path
    if candidate.is_dir():
        return candidate
    for given in (path, candidate):
        if given.exists():
            raise DataError(f"{given}: is a file, not a data set folder (a folder holding {TEXT_FILE} and the "
                            "other pickles)")
    raise DataError(f"{candidate}: data set folder not found (nor {path})")


def read_class_ids(folder: Path) -> tuple[list, list]:
    """The seen and unseen class ids of a data set folder, checked disjoint (no vectors read)."""
    seen = _read_ids(folder / SEEN_FILE)
    unseen = _read_ids(folder / UNSEEN_FILE)
    overlap = set(seen) & set(unseen)
    if overlap:
        raise DataError(f"{folder / UNSEEN_FILE}: classes {sorted(overlap)[:5]} are also in {SEEN_FILE}; seen and unseen must be disjoint")
    return seen, unseen


def load_dataset(folder: str | Path, name: str | None = None,
                 splits: tuple[str, ...] = ("seen", "unseen")) -> ZeroShotData:
    """Read and validate an upstream-format data set folder.

    ``splits=("seen",)`` reads both id lists but keeps and checks the vectors of the seen
    classes only: a run that selects on validation classes then cannot look at (or even
    validate) the unseen classes before its selection is done.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a data set folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: data set folder not found")
    seen, unseen = read_class_ids(folder)
    classes = (seen if "seen" in splits else []) + (unseen if "unseen" in splits else [])
    texts = _read_dict(folder / TEXT_FILE, classes, "text")
    images = _read_dict(folder / IMAGE_FILE, classes, "image")
    return ZeroShotData(texts, images, seen, unseen, name or folder.resolve().name,
                        read_classnames(folder), read_text_photos(folder / TEXT_PHOTOS_FILE, texts, images))


def read_text_photos(path: Path, texts: dict, images: dict) -> dict | None:
    """caption_photos.npz for the loaded classes, checked against their texts and images; None if absent."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    out = {}
    for cls, rows in texts.items():
        rows_of = raw.get(str(cls))
        if rows_of is None:
            raise DataError(f"{path}: no entry for class {cls!r}")
        if rows_of.ndim != 1 or rows_of.dtype.kind not in "iu" or len(rows_of) != len(rows):
            raise DataError(f"{path}: class {cls!r} needs one whole number per text ({len(rows)}), "
                            f"got shape {rows_of.shape} of {rows_of.dtype}")
        if len(rows_of) and (rows_of.min() < -1 or rows_of.max() >= len(images[cls])):
            raise DataError(f"{path}: class {cls!r} names image rows {rows_of.min()}..{rows_of.max()}, "
                            f"outside -1..{len(images[cls]) - 1}")
        out[cls] = rows_of.astype(np.int64)
    return out


def class_key(name) -> str:
    """A class name compared whatever its separators and case: the photo folder
    'hard-leaved_pocket_orchid' is the class 'hard-leaved pocket orchid'."""
    return " ".join(str(name).replace("_", " ").lower().split())


def read_classnames(folder: Path) -> dict:
    """classnames.json as {class id: name}; ids that look like integers become ints."""
    raw = read_json_object(Path(folder) / CLASSNAMES_FILE)
    return {int(k) if str(k).lstrip("-").isdigit() else k: str(v) for k, v in raw.items()}


def save_dataset(data: ZeroShotData, folder: str | Path) -> Path:
    """Write ``data`` in upstream's format (protocol-2 pickles, atomic writes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_pickle(folder / TEXT_FILE, {c: np.asarray(v, np.float32) for c, v in data.texts.items()})
    write_pickle(folder / IMAGE_FILE, {c: np.asarray(v, np.float32) for c, v in data.images.items()})
    write_pickle(folder / SEEN_FILE, list(data.seen))
    write_pickle(folder / UNSEEN_FILE, list(data.unseen))
    if data.text_photos is not None:
        buf = io.BytesIO()
        np.savez(buf, **{str(c): np.asarray(rows, np.int64) for c, rows in data.text_photos.items()})
        write_atomic(folder / TEXT_PHOTOS_FILE, buf.getvalue())
    elif (folder / TEXT_PHOTOS_FILE).exists():  # an earlier set's, which would not describe this one
        (folder / TEXT_PHOTOS_FILE).unlink()
    if data.classnames:
        text = json.dumps({str(k): v for k, v in data.classnames.items()}, indent=1, sort_keys=True)
        write_atomic(folder / CLASSNAMES_FILE, text.encode())
    return folder


def draw_classes(classes: list, n: int, seed: int) -> list:
    """``n`` of ``classes`` drawn at random with ``seed``, in their given order."""
    picked = np.random.default_rng(seed).choice(len(classes), size=n, replace=False)
    return [classes[i] for i in sorted(picked)]


def split_validation(data: ZeroShotData, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ``fraction`` of the seen classes (at least one) as validation classes."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.seen))
    n_val = max(1, int(round(fraction * len(data.seen))))
    if n_val >= len(data.seen):
        raise DataError(f"{data.name}: too few seen classes ({len(data.seen)}) to hold out validation classes")
    val = [data.seen[i] for i in sorted(order[:n_val])]
    train = [c for c in data.seen if c not in set(val)]
    return train, val


__all__ = ["ZeroShotData", "load_dataset", "save_dataset", "read_pickle",
           "write_pickle", "resolve_dataset_dir", "split_validation", "draw_classes", "read_class_ids"]
