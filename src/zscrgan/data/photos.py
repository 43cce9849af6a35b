"""Photos on disk: finding them in a folder, and decoding one into the CNN's input.

The one place that walks a photo folder (:func:`scan`, :func:`class_files`) and opens a photo
(:func:`read_photo`), for `zscrgan featurize` / `data build` (class folders) and `zscrgan index` /
`shard` (any depth) alike. Every non-hidden file named as an image (or with no suffix at all) is
tried; one that will not decode comes back as a one-line reason to skip it, never an exception.
Files whose suffix names something else (README.md, notes.txt, clip.mp4) are not photos: left out
quietly, neither read nor counted.

A photo folder is untrusted: a file is opened without blocking and checked on the open descriptor
(a regular file, under the size cap, with the header of an image format Pillow decodes here)
before any more of it is read, so a FIFO swapped in after the scan cannot hang the reader and a
2 GB video is never read whole (:func:`open_photo`, which `zscrgan serve` also uses for /photo).
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from zscrgan.data.dataset import class_key
from zscrgan.errors import DataError, require

RESIZE, CROP = 256, 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
THUMB_SIDE = 256  # longest side of the JPEG thumbnail an index keeps per photo
MAX_FILE_MB = 64.0  # default size cap (--max_file_mb): larger files are skipped unread
MAX_MEGAPIXELS = 40.0  # default pixel cap (--max_megapixels) of `zscrgan index` and `shard`
# The formats read here, by their first bytes (Pillow's names) and the MIME type they are served as.
# The suffixes below with no reliable signature (.tga, .pcx) or no decoder here (.heic) are refused.
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
               "BMP": "image/bmp", "TIFF": "image/tiff", "PPM": "image/x-portable-anymap", "ICO": "image/x-icon",
               "JPEG2000": "image/jp2", "AVIF": "image/avif", "QOI": "image/qoi", "ICNS": "image/icns",
               "SGI": "image/sgi", "DDS": "image/vnd-ms.dds"}
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
          *((b"P%d" % n, "PPM") for n in range(1, 7)), (b"\x00\x00\x01\x00", "ICO"),
          (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"), (b"\xffO\xffQ", "JPEG2000"), (b"qoif", "QOI"),
          (b"icns", "ICNS"), (b"\x01\xda", "SGI"), (b"DDS ", "DDS"))
HEAD_BYTES = 16  # enough for every signature above, WebP's RIFF....WEBP and AVIF's ....ftypavif
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
    stat: os.stat_result | None = None  # of the descriptor the bytes were read from


class Skipped(str):
    """Why a file is not read, in one line (a str: printed and compared as one), and the stat of the
    descriptor it was judged on (None when it would not open): what an index remembers it by, so it
    is retried only when it changes."""

    stat: os.stat_result | None = None

    @classmethod
    def because(cls, reason: str, st: os.stat_result | None = None) -> "Skipped":
        skipped = cls(reason)
        skipped.stat = st
        return skipped


def image_format(head: bytes) -> str | None:
    """The image format (a key of IMAGE_TYPES) a file's first bytes announce, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


def open_photo(path: Path, max_bytes: int | None = None) -> tuple[BinaryIO, os.stat_result, str] | Skipped:
    """(the file open for reading at offset 0, its stat, its image format), or a one-line reason not
    to read it (:class:`Skipped`): not a regular file, empty, over ``max_bytes``, no image header.

    Opened with O_NONBLOCK and checked with fstat on the descriptor, so the file checked is the
    file read and a FIFO or device never blocks; at most HEAD_BYTES are read before the answer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return Skipped.because(f"cannot open ({exc.strerror})")
    st = None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            reason = f"{file_kind(st.st_mode)}, not a regular file"
        elif st.st_size == 0:
            reason = "empty file"
        elif max_bytes is not None and st.st_size > max_bytes:
            reason = f"{st.st_size / 1e6:.4g} MB, over --max_file_mb {max_bytes / 1e6:g}"
        else:
            fmt = image_format(os.pread(fd, HEAD_BYTES, 0))
            if fmt is not None:
                return os.fdopen(fd, "rb"), st, fmt
            reason = "not an image (no JPEG/PNG/GIF/WebP/BMP/TIFF/... header)"
    except OSError as exc:
        reason = f"cannot read ({exc.strerror})"
    os.close(fd)
    return Skipped.because(reason, st)


def file_kind(mode: int) -> str:
    """'a FIFO', 'a socket', ... : what a file that is not a regular one is, for a one-line reason."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def read_photo(path: Path, max_pixels: int | None = None, keep: bool = False,
               max_bytes: int | None = int(MAX_FILE_MB * 1e6)) -> Photo | Skipped:
    """The decoded photo, or a one-line reason to skip the file (see :func:`open_photo`; too many
    pixels; not decodable as the format its header announces). Either carries the stat of the
    descriptor read (where it opened), never a second stat by path that could be of another file.

    ``keep``: also the file's SHA-256 and a JPEG thumbnail, for an index's photo table.
    """
    Image, _ = _pil()
    opened = open_photo(path, max_bytes)
    if isinstance(opened, str):
        return opened
    fh, st, fmt = opened
    try:
        with fh:
            raw = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        if max_bytes is not None and len(raw) > max_bytes:
            return Skipped.because(f"grew past --max_file_mb {max_bytes / 1e6:g} while being read", st)
        with Image.open(io.BytesIO(raw), formats=[fmt]) as image:  # decoded as the header says, nothing else
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                return Skipped.because(f"{width}x{height} is {width * height / 1e6:.0f} MP, over --max_megapixels "
                                       f"{max_pixels / 1e6:g}", st)
            image.load()
            photo = Photo(preprocess(image), width, height, stat=st)
            if keep:
                thumb = image.convert("RGB")
                thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
                buf = io.BytesIO()
                thumb.save(buf, "JPEG", quality=80)
                photo.thumb, photo.sha256 = buf.getvalue(), hashlib.sha256(raw).hexdigest()
    except Exception as exc:  # PIL raises many types on malformed files; all mean "skip it"
        said = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", " ".join(str(exc).split()))  # PIL names its buffer
        return Skipped.because(f"not a readable image ({type(exc).__name__}: {said[:200]})", st)
    return photo


@dataclass
class Scan:
    """What :func:`scan` found: the files to read, and the entries passed over with the reason."""

    files: dict[str, os.stat_result]  # relative posix path -> stat (through a symlink: its target's)
    passed_over: dict[str, str]  # relative posix path -> why it is not read ('a FIFO', 'a symlink loop', ...)

    def summary(self) -> str:
        """'2 passed over (1 a FIFO, 1 a symlink loop)', or '' when none was."""
        if not self.passed_over:
            return ""
        counts = Counter(self.passed_over.values())
        return f"{len(self.passed_over)} passed over ({', '.join(f'{n} {why}' for why, n in sorted(counts.items()))})"


def scan(root: Path, wanted=is_photo_name, what: str = "photo") -> Scan:
    """Every non-hidden regular file under ``root``, at any depth, named as a photo may be
    (:func:`is_photo_name`, or ``wanted`` for other files; other names are left out quietly), and
    what else was found.

    A symlink is followed only to a regular file inside ``root``; FIFOs, sockets, devices, symlink
    loops, broken symlinks, symlinks out of the folder and symlinks to folders are passed over and
    named, never read (reading a FIFO blocks, a link out of the folder would index and serve a file
    the user did not put there)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder not found")
    inside = os.path.realpath(root)
    found, passed = {}, {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            if not name.startswith(".") and os.path.islink(os.path.join(folder, name)):
                passed[Path(folder, name).relative_to(root).as_posix()] = "a symlink to a folder (not followed)"
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not wanted(name):
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            why = _examine(path, inside)
            if isinstance(why, str):
                passed[rel] = why
            elif why is not None:
                found[rel] = why
    return Scan(found, passed)


def _examine(path: Path, inside: str) -> os.stat_result | str | None:
    """The file's stat if it is to be read; else why not; None if it vanished while walking."""
    try:
        st = os.lstat(path)
        link = stat.S_ISLNK(st.st_mode)
        if link:  # followed only here: a plain file is stat'ed once
            st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        return "a broken symlink" if exc.errno == errno.ENOENT and path.is_symlink() else None
    if link and os.path.commonpath([inside, os.path.realpath(path)]) != inside:
        return "a symlink out of the photo folder"
    return st if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)


def shown(rel: str) -> str:
    """A file name safe to print or send as JSON: bytes that are not UTF-8 (os.walk hands them over
    as lone surrogates, which a strict encoder refuses) written as ``\\xff`` escapes."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def class_files(root: Path) -> list[tuple[str, str]]:
    """(class name, path relative to root) of every file inside a class folder ``root/<class>/``,
    in path order; files directly in ``root`` belong to no class and are left out."""
    root = Path(root)
    rels = sorted((Path(rel) for rel in scan(root, what="image").files if "/" in rel))  # Path order: folder by folder
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
