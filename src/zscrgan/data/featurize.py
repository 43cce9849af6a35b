"""`zscrgan featurize`: photos and class descriptions to the vectors ZSCRGAN trains on.

    zscrgan featurize images DIR --out images.npz [--encoder efficientnet-lite0]
    zscrgan featurize texts FILE --out texts.npz

The encoders are :mod:`zscrgan.data.encoders` (pretrained, shipped in pip packages: nothing is
downloaded); finding and decoding photos is :mod:`zscrgan.data.photos`.

DIR holds one folder per class; every file under a class folder is tried as an image,
and one that will not decode is skipped with a warning line, never a crash. FILE is a
CSV with a ``class,text`` header or JSON ``{class: [texts]}`` / ``{class: text}``; a CSV
may add an ``image`` column naming the photo each text describes (one article per image, as
in the Wikipedia data set), which `data build` checks and records.
The .npz holds ``features`` (float32 [N, D]), ``classes`` (class name per row) and
``paths`` (image path relative to DIR) or ``texts`` (the sentence) per row, and for texts
with an image column ``images`` (the photo named per row, "" where none).
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zscrgan.console import Parser, is_terminal, positive_int, progress, say
from zscrgan.data.encoders import (
    DEFAULT_ENCODER,
    IMAGE_ENCODERS,
    PHOTO_BATCH,
    PRECISIONS,
    TEXT_BATCH,
    TEXT_ENCODER,
    Encoders,
)
from zscrgan.data.photos import class_files
from zscrgan.device import add_device_flag, pick_device
from zscrgan.errors import DataError
from zscrgan.files import check_writable, write_atomic

SOURCE_KEY = {"images": "paths", "texts": "texts"}  # what the per-row source is called in the .npz


@dataclass
class Features:
    """Vectors plus, per row, the class name and where the row came from (a path or a sentence)."""

    kind: str  # "images" or "texts"
    features: np.ndarray  # float32 [N, D]
    classes: list
    sources: list
    encoder: str
    root: str = ""  # the image folder the paths are relative to
    images: list | None = None  # texts only: the photo each text describes ("" for none), from a CSV image column

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()  # plain unicode arrays, so loading never needs pickle
        np.savez(buf, features=self.features.astype(np.float32), classes=np.array(self.classes, dtype=str),
                 **{SOURCE_KEY[self.kind]: np.array(self.sources, dtype=str)},
                 encoder=np.array(self.encoder), root=np.array(self.root),
                 **({"images": np.array(self.images, dtype=str)} if self.images is not None else {}))
        write_atomic(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, kind: str) -> "Features":
        """Read a .npz written by ``zscrgan featurize KIND``."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                raw = {key: npz[key] for key in npz.files}
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npz ({exc})") from None
        needed = ("features", "classes", SOURCE_KEY[kind], "encoder")
        missing = [key for key in needed if key not in raw]
        if missing:
            raise DataError(f"{path}: not made by 'zscrgan featurize {kind}' (missing {', '.join(missing)})")
        feats, classes, sources = raw["features"], raw["classes"], raw[SOURCE_KEY[kind]]
        if feats.ndim != 2 or len(feats) == 0 or not len(classes) == len(sources) == len(feats):
            raise DataError(f"{path}: features {feats.shape} do not match {len(classes)} class names per row")
        images = raw["images"].tolist() if "images" in raw else None
        if images is not None and len(images) != len(feats):
            raise DataError(f"{path}: {len(images)} image names for {len(feats)} texts")
        return cls(kind, feats.astype(np.float32), classes.tolist(), sources.tolist(),
                   str(raw["encoder"]), str(raw.get("root", "")), images)


# ---------------------------------------------------------------- images

def featurize_images(root: str | Path, encoder: str = DEFAULT_ENCODER, batch_size: int = PHOTO_BATCH,
                     device: str = "auto", files: list[tuple[str, str]] | None = None
                     ) -> tuple[Features, list[tuple[str, str]]]:
    """Encode every image under ``root``; returns the features and the (path, reason) skipped.
    ``files``: :func:`~zscrgan.data.photos.class_files` of ``root`` where the caller has walked it already."""
    root = Path(root)
    files = class_files(root) if files is None else files
    all_cores()
    encoders = Encoders(encoder, pick_device(device), photo_batch=batch_size)
    start = time.perf_counter()
    vectors, classes, paths, skipped = [], [], [], []
    with progress(len(files), f"featurize {encoder}", "images", every=100) as bar:
        for first in range(0, len(files), batch_size):
            chunk = files[first:first + batch_size]
            feats, got = encoders.encode_photos([root / rel for _, rel in chunk])
            if len(feats):  # a chunk of unreadable files has none
                vectors.append(feats)
            for (cls, rel), photo in zip(chunk, got):
                if isinstance(photo, str):
                    skipped.append((rel, photo))
                    say(f"zscrgan featurize: warning: skipped {rel}: {photo}", file=sys.stderr)
                else:
                    classes.append(cls)
                    paths.append(rel)
            bar.update(len(chunk))
    if not paths:
        raise DataError(f"{root}: none of the {len(files)} files is a readable image")
    report_rate(len(paths), "photos", time.perf_counter() - start)
    features = np.concatenate(vectors)
    return Features("images", features, classes, paths, encoder, str(root.resolve())), skipped


def all_cores() -> None:
    """Encoding is one process's whole job: every core this process may use, unless OMP_NUM_THREADS
    says otherwise (on cores other jobs keep busy, one thread can beat two: docs/performance.md)."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))


# ---------------------------------------------------------------- texts

def read_text(path: str | Path, encoding: str = "utf-8-sig") -> str:
    """A text file's contents, newlines untranslated (as csv wants); DataError naming the file and
    the flag when its bytes are not ``encoding`` or it is missing."""
    try:
        with open(path, newline="", encoding=encoding) as fh:
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not {encoding.removesuffix('-sig').upper()} text (byte {exc.object[exc.start]:#04x} "
                        f"at offset {exc.start}); save it as UTF-8, or give its encoding, e.g. --encoding cp1252"
                        ) from None
    except LookupError:
        raise DataError(f"--encoding {encoding}: no such text encoding") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_description_rows(path: str | Path, encoding: str = "utf-8-sig") -> tuple[list[tuple[str, str, str]], bool]:
    """(class, text, image) rows, and whether the file has an ``image`` column (CSV only; "" = no photo named)."""
    path = Path(path)
    has_images = False
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(read_text(path, encoding), newline=""))
        if not {"class", "text"} <= set(reader.fieldnames or []):
            raise DataError(f"{path}: expected a CSV header with columns class,text, got {reader.fieldnames}")
        has_images = "image" in reader.fieldnames
        rows = [((row["class"] or "").strip(), (row["text"] or "").strip(),
                 (row.get("image") or "").strip(), reader.line_num) for row in reader]
        for cls, text, _, line in rows:
            if not cls or not text:
                raise DataError(f"{path}: line {line} has an empty class or text")
        pairs = [(cls, text, image) for cls, text, image, _ in rows]
    elif path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected an object {{class: text or [texts]}}")
        pairs = []
        for cls, texts in raw.items():
            texts = [texts] if isinstance(texts, str) else texts
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise DataError(f"{path}: class {cls!r} needs a non-empty text or list of non-empty texts")
            pairs += [(cls, t.strip(), "") for t in texts]
    else:
        raise DataError(f"{path}: descriptions must be a .csv (class,text) or .json file")
    if not pairs:
        raise DataError(f"{path}: no descriptions")
    return pairs, has_images


def featurize_texts(path: str | Path, batch_size: int = TEXT_BATCH, device: str = "auto",
                    encoding: str = "utf-8-sig", precision: str = "fp32") -> Features:
    """Encode every description (several per class are kept as rows) to an L2-normalised vector."""
    dev = pick_device(device)  # a device that is not there: said before the file is read
    return encode_texts(read_texts(path, encoding), batch_size, dev, precision)


def read_texts(path: str | Path, encoding: str = "utf-8-sig") -> Features:
    """A description file's rows as Features with no vectors yet (classes, texts, named photos)."""
    rows, has_images = read_description_rows(path, encoding)
    return Features("texts", None, [cls for cls, _, _ in rows], [text for _, text, _ in rows], "",
                    images=[image for _, _, image in rows] if has_images else None)


def encode_texts(rows: Features, batch_size: int = TEXT_BATCH, device: str | torch.device = "auto",
                 precision: str = "fp32") -> Features:
    """:func:`read_texts`' rows with their vectors, from the shipped sentence encoder (all cores)."""
    all_cores()
    encoders = Encoders(device=pick_device(device) if isinstance(device, str) else device, precision=precision)
    start = time.perf_counter()
    vecs = encoders.encode_texts(rows.sources, batch_size, progress=is_terminal())
    report_rate(len(vecs), "sentences", time.perf_counter() - start)
    return Features("texts", vecs, rows.classes, rows.sources, TEXT_ENCODER, images=rows.images)


def report_rate(n: int, what: str, seconds: float) -> None:
    print(f"zscrgan featurize: {n} {what} in {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} {what}/s, "
          f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})", file=sys.stderr)


# ---------------------------------------------------------------- command

def describe(feats: Features, skipped: int = 0) -> str:
    """One summary line for a featurize or build run."""
    line = (f"{len(feats.features)} {feats.kind} of {len(set(feats.classes))} classes, "
            f"{feats.features.shape[1]}-d {feats.encoder} vectors")
    if feats.kind == "images":
        line += f"; {skipped} unreadable file{'s' if skipped != 1 else ''} skipped"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan featurize", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    images = sub.add_parser("images", help="photos in DIR/<class>/ to CNN features")
    images.add_argument("dir", type=Path)
    images.add_argument("--encoder", default=DEFAULT_ENCODER, choices=list(IMAGE_ENCODERS))
    texts = sub.add_parser("texts", help="class descriptions (CSV class,text or JSON) to sentence vectors")
    texts.add_argument("file", type=Path)
    texts.add_argument("--encoding", default="utf-8-sig", help="text encoding of a CSV (e.g. cp1252, latin-1)")
    texts.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="bf16: about 3x faster on CPUs with native bfloat16, vectors within 2.5e-5 cosine")
    for p in (images, texts):
        p.add_argument("--out", type=Path, required=True, help="the .npz to write")
        p.add_argument("--batch_size", type=positive_int, default=PHOTO_BATCH,
                       help=f"photos per CNN call; sentences per encoder call (at least {TEXT_BATCH})")
        add_device_flag(p)
    args = parser.parse_args(argv)
    check_writable(args.out.parent, "--out", create=False)  # before any encoding
    if args.kind == "images":
        feats, skipped = featurize_images(args.dir, args.encoder, args.batch_size, args.device)
    else:
        feats, skipped = featurize_texts(args.file, args.batch_size, args.device, args.encoding, args.precision), []
    feats.save(args.out)
    print(f"{args.out}: {describe(feats, len(skipped))}")
    return 0
