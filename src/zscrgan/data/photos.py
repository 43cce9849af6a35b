"""Photos on disk: finding them in a folder, and decoding one into the CNN's input.

The one place that walks a photo folder (:func:`scan`, :func:`class_files`) and opens a photo
(:func:`read_photo`), for `zscrgan featurize` / `data build` (class folders) and `zscrgan index` /
`shard` (any depth) alike. Every non-hidden file named as an image (or with no suffix at all) is
tried; one that will not decode comes back as a one-line reason to skip it, never an exception.
Files whose suffix names something else (README.md, notes.txt, clip.mp4) are not photos: left out
quietly, neither read nor counted.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zscrgan.data.dataset import class_key
from zscrgan.errors import DataError, require

RESIZE, CROP = 256, 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
THUMB_SIDE = 256  # longest side of the JPEG thumbnail an index keeps per photo
# suffixes of the still-image formats Pillow decodes (case ignored); a file with another suffix is not a photo
IMAGE_SUFFIXES = frozenset(".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .dib .tif .tiff .ppm .pgm .pbm .pnm "
                           ".tga .ico .jp2 .j2k .jpx .avif .heic .heif .qoi .sgi .ras .pcx .dds .icns".split())


def is_photo_name(name: str) -> bool:
    """A name a photo may have: an image suffix, or none (cameras and exports sometimes drop it)."""
    suffix = Path(name).suffix.lower()
    return not suffix or suffix in IMAGE_SUFFIXES


def _pil():
    """PIL's Image and ImageOps modules (Pillow comes with the featurize extra)."""
    return require("PIL.Image", "featurize", "reading photos"), require("PIL.ImageOps", "featurize", "reading photos")


def preprocess(image) -> np.ndarray:
    """Shorter side to 256, centre 224 crop, ImageNet mean/std: the recipe the CNNs were trained with."""
    Image, ImageOps = _pil()
    image = ImageOps.exif_transpose(image).convert("RGB")  # camera rotation, grey and RGBA photos
    scale = RESIZE / min(image.size)
    size = tuple(max(CROP, round(side * scale)) for side in image.size)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - CROP) / 2), round((size[1] - CROP) / 2)
    image = image.crop((left, top, left + CROP, top + CROP))
    pixels = np.asarray(image, np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


@dataclass
class Photo:
    """A decoded photo: the CNN's input, and what an index keeps of the file."""

    pixels: np.ndarray  # float32 [3, 224, 224], preprocessed
    width: int
    height: int
    sha256: str | None = None  # of the file's bytes (with ``keep``)
    thumb: bytes | None = None  # a JPEG of at most THUMB_SIDE pixels a side (with ``keep``)


def read_photo(path: Path, max_pixels: int | None = None, keep: bool = False) -> Photo | str:
    """The decoded photo, or a one-line reason to skip the file (empty, too large, not an image).

    ``keep``: also the file's SHA-256 and a JPEG thumbnail, for an index's photo table.
    """
    Image, _ = _pil()
    try:
        raw = Path(path).read_bytes()
        if not raw:
            return "empty file"
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                return f"{width}x{height} is {width * height / 1e6:.0f} MP, over --max_megapixels {max_pixels / 1e6:g}"
            image.load()
            photo = Photo(preprocess(image), width, height)
            if keep:
                thumb = image.convert("RGB")
                thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
                buf = io.BytesIO()
                thumb.save(buf, "JPEG", quality=80)
                photo.thumb, photo.sha256 = buf.getvalue(), hashlib.sha256(raw).hexdigest()
    except Exception as exc:  # PIL raises many types on malformed files; all mean "skip it"
        said = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", " ".join(str(exc).split()))  # PIL names its buffer
        return f"not a readable image ({type(exc).__name__}: {said[:200]})"
    return photo


def scan(root: Path, wanted=is_photo_name, what: str = "photo") -> dict[str, os.stat_result]:
    """{relative posix path: stat} of every non-hidden regular file under ``root``, at any depth,
    named as a photo may be (:func:`is_photo_name`; another test of the name for other files)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder not found")
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not wanted(name):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:
                continue  # vanished or unreadable while walking: not a photo to index
            if stat.S_ISREG(st.st_mode):
                found[path.relative_to(root).as_posix()] = st
    return found


def class_files(root: Path) -> list[tuple[str, str]]:
    """(class name, path relative to root) of every file inside a class folder ``root/<class>/``,
    in path order; files directly in ``root`` belong to no class and are left out."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    rels = sorted((Path(rel) for rel in scan(root) if "/" in rel))  # Path order: folder by folder
    found = [(rel.parts[0], rel.as_posix()) for rel in rels]
    classes = {cls for cls, _ in found}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in classes:
            print(f"zscrgan: warning: {folder}: empty class folder, skipped", file=sys.stderr)
    if not found:
        raise DataError(f"{root}: no files in class folders (expected DIR/<class>/<image>)")
    return found


def class_lookup(names) -> dict:
    """{class_key(name): name} of the run's classes, for :func:`known_class`."""
    return {class_key(name): str(name) for name in names}


def known_class(rel: str, lookup: dict) -> str | None:
    """The run's class a photo's top folder names (any separators or case: the folder
    'english_marigold' is FLO's 'english marigold'), or None."""
    return lookup.get(class_key(rel.split("/", 1)[0])) if "/" in rel else None
