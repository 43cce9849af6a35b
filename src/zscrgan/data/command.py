"""`zscrgan data build|split|check|convert`: make upstream-format data sets and check them.

    zscrgan data build --images DIR|images.npz (--texts FILE|texts.npz | --captions DIR|FILE.csv)
                       [--labels imagelabels.mat] --out datasets/NAME
                       (--unseen a,b,c | --unseen_fraction F [--seed S] | --unseen_classes FILE [--seen_classes FILE])
    zscrgan data split SOURCE --unseen NAMES|IDS [--seen NAMES|IDS] --out datasets/NAME
                       [--text_encoder E --image_encoder E]
    zscrgan data check datasets/NAME [--strict]
    zscrgan data convert --xlsa17 DIR --out datasets/NAME [--text_key att]
    zscrgan data convert --gazsl DIR --bird CUB|NAB --split easy|hard --out datasets/NAME
                         [--classnames FILE] [--text_pca D]

build featurizes photos and descriptions (or takes the .npz files of `zscrgan featurize`),
numbers the classes 1..C in sorted name order and writes the four pickles, classnames.json
and manifest.json (which photo each image row came from, and each text's photo when the
descriptions name one), and then caption_photos.npz (each text's image row). --captions reads
one caption file per photo or a path,caption CSV; --labels, Oxford's imagelabels.mat;
--unseen_classes / --seen_classes, xlsa17's class lists (zscrgan.data.captions). split re-draws the seen/unseen line of an existing set: the named
classes become unseen, every other class seen (how the flower search model holds out the
classes of the photos it is shown). convert (zscrgan.data.convert) reads published benchmark files. check
loads a set as training would, estimates the memory a run needs and reports what looks
wrong; load errors exit 1, problems (duplicate photos are common in real sets) only with --strict.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zscrgan.config import Config
from zscrgan.console import Parser, comma_list, positive_int
from zscrgan.core.networks import ZSCRGAN
from zscrgan.data.captions import caption_rows, labelled_photos, photos_named, unseen_from_lists
from zscrgan.data.convert import MANIFEST_FILE, convert_gazsl, convert_xlsa17
from zscrgan.data.dataset import CLASSNAMES_FILE, ZeroShotData, class_key, draw_classes, load_dataset, save_dataset
from zscrgan.data.encoders import DEFAULT_ENCODER, IMAGE_ENCODERS, PHOTO_BATCH, TEXT_ENCODER
from zscrgan.data.featurize import Features, describe, encode_texts, featurize_images, read_texts
from zscrgan.data.photos import class_files
from zscrgan.device import add_device_flag
from zscrgan.errors import DataError
from zscrgan.files import check_writable, read_json_object, write_json

__all__ = ["build_dataset", "check_dataset", "choose_unseen", "split_dataset", "main"]


# ---------------------------------------------------------------- build

def _text_rows(source: Path, encoding: str) -> Features:
    """The descriptions' classes and named photos: a texts .npz, or a CSV/JSON read without encoding anything."""
    if source.suffix == ".npz":
        return Features.load(source, "texts")
    return read_texts(source, encoding)


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
        chosen = comma_list(unseen) if isinstance(unseen, str) else list(unseen)
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise DataError(f"--unseen: no class named {', '.join(unknown)} (classes: {', '.join(names)})")
    else:
        if not 0.0 < fraction < 1.0:
            raise DataError(f"--unseen_fraction must be in (0, 1), got {fraction}")
        n_unseen = max(1, int(round(fraction * len(names))))
        chosen = draw_classes(names, min(n_unseen, len(names)), seed)
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
        rows += [{"class": cid, "row": r, "source": feats.sources[i], "index": i} for r, i in enumerate(picked)]
    return arrays, rows


def _photo_list(images: Path, labels) -> tuple[list, Features | None]:
    """(class, path) of every photo, and the images .npz's features when ``images`` is one."""
    if images.is_dir():  # from the folder and file names alone
        return (labelled_photos(images, Path(labels)) if labels else class_files(images)), None
    if not (images.is_file() and images.suffix == ".npz"):
        raise DataError(f"{images}: --images must be a folder of class folders (or of photos, with --labels) "
                        f"or a .npz from 'zscrgan featurize images'")
    if labels:
        raise DataError(f"{labels}: --labels goes with a folder of photos; {images} already gives each photo's class")
    img = Features.load(images, "images")
    return list(zip(img.classes, img.sources)), img


def _unseen_names(names: list, unseen, unseen_fraction, seed: int, unseen_list, seen_list) -> list:
    if unseen_list is None:
        if seen_list is not None:
            raise DataError("--seen_classes FILE goes with --unseen_classes FILE")
        return choose_unseen(names, unseen, unseen_fraction, seed)
    if unseen is not None or unseen_fraction is not None:
        raise DataError("give --unseen_classes FILE or --unseen / --unseen_fraction, not both")
    return unseen_from_lists(names, Path(unseen_list), None if seen_list is None else Path(seen_list))


def build_dataset(images, texts, out, unseen=None, unseen_fraction: float | None = None, seed: int = 0,
                  encoder: str = DEFAULT_ENCODER, batch_size: int = PHOTO_BATCH, device: str = "auto",
                  encoding: str = "utf-8-sig", captions=None, labels=None, unseen_list=None,
                  seen_list=None) -> ZeroShotData:
    """Featurize (or load) photos and descriptions and write an upstream-format set to ``out``.

    ``images``: DIR/<class>/<photo>, a flat DIR with ``labels`` (imagelabels.mat), or an images
    .npz; the texts: ``texts`` (CSV/JSON or a texts .npz) or ``captions`` (one caption file per
    photo, or a path,caption CSV: :mod:`zscrgan.data.captions`); the unseen classes: ``unseen``
    (list or comma string), ``unseen_fraction`` with ``seed``, or the class lists ``unseen_list``
    (and ``seen_list``). Where texts name their photos, caption_photos.npz records each one's.
    Every check (files, encoding, classes, the unseen choice, --out writable) runs before the
    encoders load: a mistake costs a second, not the minutes of encoding every photo.
    """
    if (texts is None) == (captions is None):
        raise DataError("give exactly one of --texts FILE or --captions DIR|CSV")
    images, out = Path(images), Path(out)
    files, img = _photo_list(images, labels)
    skipped = 0
    if captions is not None:
        text_source = Path(captions)
        txt = caption_rows(text_source, files, images, encoding)
        photos = txt.images
    else:
        text_source = Path(texts)
        txt = _text_rows(text_source, encoding)
        photos = photos_named(txt, files, text_source, images) if txt.images is not None else None
    _same_classes({c for c, _ in files}, set(txt.classes), images, text_source)
    names = sorted({c for c, _ in files})
    ids = {name: i + 1 for i, name in enumerate(names)}
    unseen_names = _unseen_names(names, unseen, unseen_fraction, seed, unseen_list, seen_list)
    check_writable(out, "--out", create=False)
    if txt.features is None:  # the slow part, now that all is known good
        txt = encode_texts(txt, batch_size, device)
    if img is None:
        img, failed = featurize_images(images, encoder, batch_size, device, files)
        skipped = len(failed)
        _same_classes(set(img.classes), set(txt.classes), images, text_source)  # a class whose photos all failed
    image_arrays, image_rows = _rows_by_class(img, ids)
    text_arrays, text_rows = _rows_by_class(txt, ids)
    text_entries = [{"class": r["class"], "row": r["row"], "text": r["source"]} for r in text_rows]
    named, text_photos = "", None
    if photos is not None:
        image_row = {r["source"]: r["row"] for r in image_rows}  # photos skipped as unreadable have none
        text_photos = {cid: [] for cid in text_arrays}
        for entry, r in zip(text_entries, text_rows):
            photo = photos[r["index"]]
            entry.update(image=photo, image_row=image_row.get(photo))
            text_photos[r["class"]].append(-1 if entry["image_row"] is None else entry["image_row"])
        text_photos = {cid: np.array(rows, np.int64) for cid, rows in text_photos.items()}
        named = f"; {sum(p is not None for p in photos)} of {len(photos)} texts name their photo"
    data = ZeroShotData(text_arrays, image_arrays,
                        seen=[ids[n] for n in names if n not in unseen_names],
                        unseen=[ids[n] for n in unseen_names],
                        name=out.name, classnames={cid: name for name, cid in ids.items()}, text_photos=text_photos)
    save_dataset(data, out)
    sources = {"labels_from": labels, "unseen_classes_from": unseen_list, "seen_classes_from": seen_list}
    manifest = {
        "image_root": img.root, "image_encoder": img.encoder, "text_encoder": txt.encoder,
        "images_from": str(images), "texts_from": str(text_source), "unreadable_skipped": skipped,
        **{key: str(path) for key, path in sources.items() if path is not None},
        "seen": data.seen, "unseen": data.unseen,
        "classes": {str(cid): name for name, cid in ids.items()},
        "images": [{"class": r["class"], "row": r["row"], "path": r["source"]} for r in image_rows],
        "texts": text_entries,
    }
    write_json(out / MANIFEST_FILE, manifest)
    print(f"{out}: {data.summary()} ({describe(img, skipped)}; {describe(txt)}{named})")
    return data


# ---------------------------------------------------------------- split

def _named_classes(data: ZeroShotData, names: str, flag: str) -> set:
    """The class ids a comma list of names (classnames.json, any separators) or ids stands for."""
    classes = list(data.seen) + list(data.unseen)
    by_key = {class_key(name): c for c, name in data.classnames.items()} | {str(c): c for c in classes}
    asked = comma_list(names)
    unknown = [u for u in asked if class_key(u) not in by_key]
    if unknown:
        raise DataError(f"{flag}: {data.name} has no class {', '.join(unknown)} (give names from classnames.json or ids)")
    return {by_key[class_key(u)] for u in asked}


def split_dataset(source, unseen: str, out, text_encoder: str | None = None,
                  image_encoder: str | None = None, seen: str | None = None) -> ZeroShotData:
    """``source`` with the classes named (or numbered) in ``unseen`` as its unseen classes and every
    other class seen (only those in ``seen`` when given: a smaller set), written to ``out`` with
    its class names and a manifest naming the encoders."""
    data = load_dataset(source)
    classes = list(data.seen) + list(data.unseen)
    held = _named_classes(data, unseen, "--unseen")
    kept = _named_classes(data, seen, "--seen") - held if seen else set(classes) - held
    if not held or not kept:
        raise DataError(f"--unseen: need at least one seen and one unseen class; {len(held)} of {len(classes)} named")
    check_writable(Path(out), "--out", create=False)
    split = ZeroShotData({c: data.texts[c] for c in kept | held}, {c: data.images[c] for c in kept | held},
                         sorted(kept), sorted(held), Path(out).name,
                         {c: n for c, n in data.classnames.items() if c in kept | held},
                         None if data.text_photos is None else {c: data.text_photos[c] for c in kept | held})
    save_dataset(split, out)
    manifest = read_json_object(Path(source) / MANIFEST_FILE)
    manifest.update({k: v for k, v in (("text_encoder", text_encoder), ("image_encoder", image_encoder)) if v})
    manifest.update(split_from=str(Path(source).resolve()), seen=split.seen, unseen=split.unseen)
    write_json(Path(out) / MANIFEST_FILE, manifest)
    names = ", ".join(data.classnames.get(c, str(c)) for c in split.unseen)
    print(f"{out}: {split.summary()}; unseen: {names}")
    return split


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


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def run_memory(data: ZeroShotData) -> str:
    """About how much memory a run at the default widths holds, as one line; text dims can dominate it.

    The estimate: the vectors twice (the loaded set, and the trainer's stacked copy or the
    evaluation's stacks on the device), plus 16 bytes per model parameter (weights, gradients,
    up to two optimiser slots). The model is built on torch's meta device, so counting is free.
    """
    cfg = Config()

    def n_params(text_dim: int) -> int:
        with torch.device("meta"):
            model = ZSCRGAN(text_dim, data.image_dim, cfg.embed_dim, cfg.z_dim, cfg.gf_dim, cfg.df_dim)
        return sum(p.numel() for p in model.parameters())

    params = n_params(data.text_dim)
    vectors = sum(v.nbytes for part in (data.texts, data.images) for v in part.values())
    line = (f"memory: about {_size(2 * vectors + 16 * params)} for a run at the default widths "
            f"(vectors {_size(vectors)}, held twice; {params / 1e6:.1f} M model parameters with gradients "
            f"and optimiser state {_size(16 * params)})")
    if data.text_dim > 1024:
        share = (params - n_params(1)) * data.text_dim / (data.text_dim - 1) / params
        line += (f"; the {data.text_dim}-d texts take {share:.0%} of the parameters "
                 f"(convert with --text_pca D, or train with smaller --embed_dim / --df_dim)")
    return line


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
        run_memory(data),
    ]
    return lines, find_problems(data)


# ---------------------------------------------------------------- command

def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="photos + descriptions to an upstream-format data set")
    build.add_argument("--images", type=Path, required=True,
                       help="DIR/<class>/<photo>, a flat DIR of photos with --labels, or an images .npz")
    build.add_argument("--texts", type=Path,
                       help="class,text[,image] CSV, JSON or a texts .npz; image = the photo a text describes")
    build.add_argument("--captions", type=Path,
                       help="instead of --texts: a folder of <class>/<photo name>.txt, one caption a line "
                            "(Reed's text_c10), or a path,caption CSV; each caption tied to its photo")
    build.add_argument("--labels", type=Path,
                       help="imagelabels.mat: the 1-based class of each photo of a flat --images folder, "
                            "in name order (classes named class_00001 ...)")
    build.add_argument("--out", type=Path, required=True, help="data set folder, e.g. datasets/NAME")
    build.add_argument("--unseen", help="comma-separated unseen class names")
    build.add_argument("--unseen_fraction", type=float, help="fraction of classes drawn as unseen")
    build.add_argument("--unseen_classes", type=Path, help="the unseen classes, one name a line (xlsa17's testclasses.txt)")
    build.add_argument("--seen_classes", type=Path,
                       help="with --unseen_classes: the seen classes (trainvalclasses.txt); every class in one of the two")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--encoding", default="utf-8-sig",
                       help="text encoding of the CSV or caption files (e.g. cp1252, latin-1)")
    build.add_argument("--encoder", default=DEFAULT_ENCODER, choices=list(IMAGE_ENCODERS))
    build.add_argument("--batch_size", type=positive_int, default=PHOTO_BATCH)
    add_device_flag(build)
    split = sub.add_parser("split", help="an existing data set with other classes held out as unseen")
    split.add_argument("source", type=Path, help="a data set folder")
    split.add_argument("--unseen", required=True, help="comma list of class names (classnames.json) or ids")
    split.add_argument("--seen", help="comma list of the classes kept as seen (default: every class not unseen)")
    split.add_argument("--out", type=Path, required=True, help="the new data set folder, e.g. datasets/NAME")
    split.add_argument("--text_encoder", choices=[TEXT_ENCODER],
                       help="the featurizer that made the source's text vectors, where it has no manifest.json "
                            "saying so (lets zscrgan search encode free text for a run trained on it)")
    split.add_argument("--image_encoder", choices=list(IMAGE_ENCODERS),
                       help="the featurizer that made the source's image vectors, likewise (lets zscrgan index "
                            "featurize new photos)")
    check = sub.add_parser("check", help="validate a data set and summarise it")
    check.add_argument("dir", type=Path)
    check.add_argument("--strict", action="store_true", help="exit 1 when problems are found, not only on load errors")
    convert = sub.add_parser("convert", help="published benchmark files (xlsa17 or GAZSL layout) to upstream's format")
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument("--xlsa17", type=Path, help="folder with res101.mat and att_splits.mat")
    source.add_argument("--gazsl", type=Path, help="GAZSL's data/CUB2011 or data/NABird folder")
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--text_key", default="att",
                         help="xlsa17: att_splits.mat matrix used as class text (att, original_att, ...)")
    convert.add_argument("--bird", choices=["CUB", "NAB"], help="GAZSL: which bird set DIR holds")
    convert.add_argument("--split", choices=["easy", "hard"], help="GAZSL: easy = SCS, hard = SCE")
    convert.add_argument("--classnames", type=Path,
                         help="GAZSL: class names, lines 'ID NAME' (CUB classes.txt), lines 'NAME' or JSON")
    convert.add_argument("--text_pca", type=positive_int,
                         help="GAZSL: project texts to D dims, fit on the seen classes only (default: off)")
    args = parser.parse_args(argv)
    if args.action == "split":
        split_dataset(args.source, args.unseen, args.out, args.text_encoder, args.image_encoder, args.seen)
    elif args.action == "build":
        build_dataset(args.images, args.texts, args.out, args.unseen, args.unseen_fraction, args.seed,
                      args.encoder, args.batch_size, args.device, args.encoding, args.captions, args.labels,
                      args.unseen_classes, args.seen_classes)
    elif args.action == "convert" and args.xlsa17:
        if args.bird or args.split or args.classnames or args.text_pca:
            parser.error("--bird, --split, --classnames and --text_pca go with --gazsl, not --xlsa17")
        convert_xlsa17(args.xlsa17, args.out, args.text_key)
    elif args.action == "convert":
        if not (args.bird and args.split):
            parser.error("--gazsl needs --bird CUB|NAB and --split easy|hard")
        convert_gazsl(args.gazsl, args.out, args.bird, args.split, args.classnames, args.text_pca)
    else:
        lines, problems = check_dataset(args.dir)
        print("\n".join(lines))
        print("problems: " + ("none" if not problems else f"{len(problems)}"))
        for problem in problems:
            print(f"  - {problem}")
        return 1 if problems and args.strict else 0
    return 0
