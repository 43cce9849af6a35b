"""Captions tied to their photos, for `zscrgan data build --captions`: reading the public layouts.

What is read (docs/data.md, "Captions tied to their photos"):

* photos: class folders ``DIR/<class>/<photo>`` (CUB's ``images/``), or one flat folder with a
  labels file (Oxford's ``jpg/`` + ``imagelabels.mat``: the n-th label, 1-based, is the class of
  the n-th photo in name order; class L is named ``class_%05d``, as Reed's caption folders are);
* captions: a folder holding one text file per photo, ``<class>/<photo name>.txt``, one caption a
  line (Reed et al.'s ``text_c10``), or a CSV ``path,caption`` (path: the photo's path under
  --images, or its file name);
* the split: class lists, one class name a line (xlsa17's ``trainvalclasses.txt`` / ``testclasses.txt``).

Only reading and checking happens here, so every layout error is one line naming the file before
an encoder loads. Captions come out grouped by photo, in photo order, each file's lines in order
(empty lines dropped): row r of a class's texts is a caption of the photo the manifest names.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from zscrgan.data.convert import read_mat, whole_numbers
from zscrgan.data.featurize import Features, read_text
from zscrgan.data.photos import scan
from zscrgan.errors import DataError

LABEL_CLASS = "class_{:05d}"  # class L of a labels file: Reed's text_c10 folder name (and xlsa17's FLO lists)
CAPTION_SUFFIX = ".txt"


def labelled_photos(folder: Path, labels_file: Path) -> list[tuple[str, str]]:
    """(class, file name) of every photo directly in ``folder``, its class from ``labels_file``."""
    labels = whole_numbers(read_mat(Path(labels_file), ["labels"])["labels"], "labels", labels_file)
    photos = sorted(rel for rel in scan(folder).files if "/" not in rel)
    if len(labels) != len(photos):
        raise DataError(f"{labels_file}: {len(labels)} labels for the {len(photos)} photos in {folder} "
                        f"(label n is the class of the n-th photo in name order)")
    if labels.min() < 1:
        raise DataError(f"{labels_file}: labels must be 1-based class numbers, found {labels.min()}")
    return [(LABEL_CLASS.format(label), rel) for label, rel in zip(labels.tolist(), photos)]


def caption_name(cls: str, rel: str) -> str:
    """The caption file of a photo: ``<class>/<its path within the class folder>.txt``."""
    within = rel[len(cls) + 1:] if rel.startswith(f"{cls}/") else rel
    return f"{cls}/{Path(within).with_suffix(CAPTION_SUFFIX).as_posix()}"


def _caption_lines(path: Path, encoding: str) -> list[str]:
    lines = [" ".join(line.split()) for line in read_text(path, encoding).splitlines()]
    captions = [line for line in lines if line]
    if not captions:
        raise DataError(f"{path}: no captions (every line is empty)")
    return captions


def _and_more(items: list) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def _photo_captions(photos: Iterable[tuple[str, str, list[str]]]) -> Features:
    """Text rows from (class, photo, its captions), in that order, each row naming its photo."""
    classes, captions, named = [], [], []
    for cls, rel, lines in photos:
        classes += [cls] * len(lines)
        captions += lines
        named += [rel] * len(lines)
    return Features("texts", None, classes, captions, "", images=named)


def caption_folder_rows(folder: Path, photos: list[tuple[str, str]], images: Path,
                        encoding: str = "utf-8-sig") -> Features:
    """Each photo's captions from its file under ``folder``, as text rows naming the photo."""
    folder = Path(folder)
    files = set(scan(folder, lambda name: name.endswith(CAPTION_SUFFIX), "caption").files)
    wanted: dict = {}
    for cls, rel in photos:
        other = wanted.setdefault(caption_name(cls, rel), (cls, rel))[1]
        if other != rel:
            raise DataError(f"{images / rel}: shares its caption file name {caption_name(cls, rel)} with {images / other}")
    missing = [name for name in wanted if name not in files]
    if missing:
        cls, rel = wanted[missing[0]]
        elsewhere = [f for f in files if f.rsplit("/", 1)[-1] == missing[0].rsplit("/", 1)[-1]]
        where = (f"; {folder / elsewhere[0]} is in another class folder" if len(elsewhere) == 1 else "")
        raise DataError(f"{folder / missing[0]}: no caption file for the photo {images / rel} of class "
                        f"{cls!r}{_and_more(missing)}{where}")
    extra = sorted(files - set(wanted))
    if extra:
        raise DataError(f"{folder / extra[0]}: a caption file of no photo in {images}{_and_more(extra)}")
    return _photo_captions((cls, rel, _caption_lines(folder / name, encoding)) for name, (cls, rel) in wanted.items())


def caption_csv_rows(path: Path, photos: list[tuple[str, str]], images: Path,
                     encoding: str = "utf-8-sig") -> Features:
    """Captions from a ``path,caption`` CSV, grouped by photo in photo order, as text rows naming the photo."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_text(path, encoding), newline=""))
    if not {"path", "caption"} <= set(reader.fieldnames or []):
        raise DataError(f"{path}: expected a CSV header with columns path,caption, got {reader.fieldnames}")
    by_key: dict = {}
    for cls, rel in photos:
        for key in dict.fromkeys((rel, Path(rel).name)):
            by_key.setdefault(key, []).append((cls, rel))
    per_photo: dict = {rel: [] for _, rel in photos}
    for row in reader:
        photo, caption = (row["path"] or "").strip(), " ".join((row["caption"] or "").split())
        if not photo or not caption:
            raise DataError(f"{path}: line {reader.line_num} has an empty path or caption")
        found = by_key.get(photo, [])
        if len(found) != 1:
            what = "no photo" if not found else f"{len(found)} photos ({', '.join(r for _, r in found[:3])})"
            raise DataError(f"{path}: line {reader.line_num} names {photo!r}, and {images} has {what} of that name")
        per_photo[found[0][1]].append(caption)
    bare = [rel for rel, said in per_photo.items() if not said]
    if bare:
        raise DataError(f"{path}: no caption for the photo {images / bare[0]}{_and_more(bare)}")
    return _photo_captions((cls, rel, per_photo[rel]) for cls, rel in photos)


def caption_rows(source: Path, photos: list[tuple[str, str]], images: Path, encoding: str = "utf-8-sig") -> Features:
    """The captions of ``photos`` from a ``text_c10``-style folder or a ``path,caption`` CSV."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return caption_csv_rows(source, photos, images, encoding)
    if source.is_dir():
        return caption_folder_rows(source, photos, images, encoding)
    raise DataError(f"{source}: --captions must be a folder of <class>/<photo name>.txt files or a path,caption "
                    f"CSV" + ("" if source.exists() else " (not found)"))


def photos_named(txt: Features, files: list, texts: Path, images: Path) -> list:
    """Per text, the photo (path under --images) its CSV ``image`` cell names, or None; DataError if absent.

    A cell may give the path under --images (art/x.jpg), the file name (x.jpg) or the name
    without extension (x), looked up in the text's own class. Each text stays a query of its
    class (metrics judge by class); the pairing goes into the manifest and caption_photos.npz.
    """
    class_of = {rel: cls for cls, rel in files}
    by_name: dict = {}
    for cls, rel in files:
        for key in {Path(rel).name, Path(rel).stem}:
            by_name.setdefault((cls, key), []).append(rel)
    photos = []
    for n, (cls, image) in enumerate(zip(txt.classes, txt.images), 1):
        if not image:
            photos.append(None)
        elif image in class_of:
            if class_of[image] != cls:
                raise DataError(f"{texts}: text {n} is of class {cls!r} but names {image}, "
                                f"a photo of {class_of[image]!r}")
            photos.append(image)
        else:
            found = by_name.get((cls, image), [])
            if len(found) != 1:
                what = "no photo" if not found else f"{len(found)} photos ({', '.join(found[:3])})"
                raise DataError(f"{texts}: text {n} ({cls!r}) names {image!r}, and {images} has {what} "
                                f"of that name in class {cls!r}")
            photos.append(found[0])
    return photos


def read_class_list(path: Path) -> list[str]:
    """Class names, one a line (xlsa17's trainvalclasses.txt / testclasses.txt)."""
    names = [line.strip() for line in read_text(Path(path), "utf-8-sig").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}: lists {', '.join(twice[:5])} twice")
    return names


def unseen_from_lists(names: list, unseen_list: Path, seen_list: Path | None = None) -> list:
    """The unseen classes a class list names; with ``seen_list`` every class must be in exactly one."""
    lists = {Path(unseen_list): read_class_list(unseen_list)}
    if seen_list is not None:
        lists[Path(seen_list)] = read_class_list(seen_list)
    known = set(names)
    for path, listed in lists.items():
        unknown = [n for n in listed if n not in known]
        if unknown:
            raise DataError(f"{path}: no photos of the class{'es' if len(unknown) > 1 else ''} "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                            f"(classes with photos: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})")
    unseen = lists[Path(unseen_list)]
    if seen_list is not None:
        seen = lists[Path(seen_list)]
        both = sorted(set(seen) & set(unseen))
        if both:
            raise DataError(f"{seen_list}: {', '.join(both[:5])} also in {unseen_list}; seen and unseen must be disjoint")
        neither = sorted(set(names) - set(seen) - set(unseen))
        if neither:
            raise DataError(f"{seen_list}: classes in neither it nor {unseen_list}: {', '.join(neither[:5])}"
                            f"{' ...' if len(neither) > 5 else ''}")
    if len(unseen) >= len(names):
        raise DataError(f"{unseen_list}: names every class as unseen; need at least one seen class")
    return sorted(unseen)
