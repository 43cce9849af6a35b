"""Small replicas of the public caption archives' layouts (docs/data.md, "Captions tied to their photos").

Each writes, under a folder, what the archives hold once unpacked, at a few classes and photos:
real JPEG bytes (Pillow), .mat files (scipy.io.savemat) and caption files of ten lines. Nothing
here is downloaded; the names follow the real archives so the documented commands run as written.
"""
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

CAPTIONS_PER_PHOTO = 10
COLOURS = ["red", "yellow", "white", "purple", "orange", "pink", "blue"]


def write_jpeg(path: Path, seed: int, size: int = 48) -> None:
    """A small noisy JPEG whose mean colour depends on ``seed``'s class."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=85)


def caption_lines(label: int, photo: int) -> list[str]:
    colour = COLOURS[label % len(COLOURS)]
    return [f"this flower number {photo} has {colour} petals, caption {k}" for k in range(CAPTIONS_PER_PHOTO)]


def write_class_lists(folder: Path, seen: list[str], unseen: list[str]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainvalclasses.txt").write_text("".join(f"{c}\n" for c in seen))
    (folder / "testclasses.txt").write_text("".join(f"{c}\n" for c in unseen))
    return folder / "trainvalclasses.txt", folder / "testclasses.txt"


def flowers(root: Path, labels=(3, 1, 2, 5, 4, 1, 3, 2, 5, 4, 2, 1, 4, 3, 5), unseen=(2, 5)) -> dict:
    """Oxford-102 (``jpg/image_NNNNN.jpg``, ``imagelabels.mat``, ``setid.mat``), Reed's
    ``cvpr2016_flowers/text_c10/class_LLLLL/image_NNNNN.txt`` and xlsa17's FLO class lists.

    ``labels``: the 1-based class of photo n (n = 1, 2, ...), interleaved as Oxford's are, so
    name order is not class order. Returns the paths the documented command takes."""
    root = Path(root)
    for n, label in enumerate(labels, start=1):
        write_jpeg(root / "jpg" / f"image_{n:05d}.jpg", seed=1000 * label + n)
        text = root / "cvpr2016_flowers" / "text_c10" / f"class_{label:05d}" / f"image_{n:05d}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("\n".join(caption_lines(label, n)) + "\n")
    savemat(root / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    n = len(labels)
    savemat(root / "setid.mat", {"trnid": np.arange(1, n + 1, 3)[None], "valid": np.arange(2, n + 1, 3)[None],
                                 "tstid": np.arange(3, n + 1, 3)[None]})
    names = sorted(f"class_{label:05d}" for label in set(labels))
    seen_list, unseen_list = write_class_lists(root / "xlsa17" / "data" / "FLO",
                                               [c for c in names if int(c[6:]) not in unseen],
                                               [f"class_{u:05d}" for u in unseen])
    return {"images": root / "jpg", "labels": root / "imagelabels.mat",
            "captions": root / "cvpr2016_flowers" / "text_c10", "seen": seen_list, "unseen": unseen_list,
            "labels_of_photos": list(labels)}


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "017.Cardinal", "036.Northern_Flicker",
               "200.Common_Yellowthroat"]


def cub(root: Path, per_class: int = 3, unseen=("017.Cardinal", "200.Common_Yellowthroat")) -> dict:
    """CUB-200-2011 (``CUB_200_2011/images/<class>/<Bird>_NNNN_ID.jpg``), Reed's
    ``cvpr2016_cub/text_c10/<class>/<same name>.txt`` and xlsa17's CUB class lists."""
    root = Path(root)
    for k, cls in enumerate(CUB_CLASSES):
        bird = cls.split(".", 1)[1]
        for j in range(per_class):
            stem = f"{bird}_{j + 1:04d}_{796000 + 10 * k + j}"
            write_jpeg(root / "CUB_200_2011" / "images" / cls / f"{stem}.jpg", seed=100 * k + j)
            text = root / "cvpr2016_cub" / "text_c10" / cls / f"{stem}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("\n".join(caption_lines(k, j)) + "\n")
    seen_list, unseen_list = write_class_lists(root / "xlsa17" / "data" / "CUB",
                                               [c for c in CUB_CLASSES if c not in unseen], list(unseen))
    return {"images": root / "CUB_200_2011" / "images", "captions": root / "cvpr2016_cub" / "text_c10",
            "seen": seen_list, "unseen": unseen_list}


def flo_cap_replica(root: Path, flo_cap: Path, classes: list[int] | None = None) -> dict:
    """FLO_cap (../shared/data/FLO_cap) written back as the archives hold it: each class's
    ten-caption blocks of captions.tsv as ``text_c10/class_LLLLL/image_LLL_BBBB.txt`` (made-up
    photo names, in block order), its image vectors as an images .npz of those photos (so no CNN
    runs), and its split as class lists. ``classes``: a subset of class ids (default: all)."""
    import csv
    import io

    from zscrgan.data.dataset import load_dataset
    from zscrgan.data.featurize import Features

    data = load_dataset(flo_cap)
    classes = sorted(data.seen + data.unseen) if classes is None else sorted(classes)
    blocks: dict = {}
    with open(Path(flo_cap) / "captions.tsv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            cls = int(row["class_id"])
            if cls in classes:
                blocks.setdefault((cls, int(row["block_index_within_class"])), []).append(row["caption"])
    root = Path(root)
    feats, names, paths = [], [], []
    for cls in classes:
        name = f"class_{cls:05d}"
        for block, vector in enumerate(data.images[cls]):
            photo = f"image_{cls:03d}_{block:04d}"
            text = root / "text_c10" / name / f"{photo}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("\n".join(blocks[(cls, block)]) + "\n", encoding="utf-8")
            feats.append(vector)
            names.append(name)
            paths.append(f"{name}/{photo}.jpg")
    Features("images", np.stack(feats), names, paths, "efficientnet-lite0", str(root / "photos")).save(
        root / "images.npz")
    seen_list, unseen_list = write_class_lists(root / "split", [f"class_{c:05d}" for c in classes if c in data.seen],
                                               [f"class_{c:05d}" for c in classes if c in data.unseen])
    return {"images": root / "images.npz", "captions": root / "text_c10", "seen": seen_list, "unseen": unseen_list}


def flo_cap_differences(built: Path, flo_cap: Path) -> dict:
    """How a set built from :func:`flo_cap_replica` differs from FLO_cap, class by class (matched by
    name class_LLLLL = FLO_cap's class id L). FLO_cap stores float16, so the texts are compared
    after rounding ours to float16: elements that differ there, and by how many float16 steps at
    most; also the largest plain difference and the lowest cosine. Image rows must be equal, and
    the caption ties must be the blocks of ten (row r of a class describes photo r // 10 ... as
    the replica wrote them)."""
    from zscrgan.data.dataset import load_dataset

    ours, theirs = load_dataset(built), load_dataset(flo_cap)
    flo_id = {c: int(name.removeprefix("class_")) for c, name in ours.classnames.items()}
    worst, steps, off, n_rows, cosine = 0.0, 0.0, 0, 0, 1.0
    for c, texts in ours.texts.items():
        ref = theirs.texts[flo_id[c]]
        assert texts.shape == ref.shape, (c, texts.shape, ref.shape)
        assert np.array_equal(ours.images[c], theirs.images[flo_id[c]])
        rounded = texts.astype(np.float16).astype(np.float32)
        worst = max(worst, float(np.abs(texts - ref).max()))
        off += int((rounded != ref).sum())
        steps = max(steps, float((np.abs(rounded - ref) / np.spacing(ref.astype(np.float16)).astype(np.float32)).max()))
        cosine = min(cosine, float(((texts * ref).sum(1) / np.linalg.norm(texts, axis=1)
                                    / np.linalg.norm(ref, axis=1)).min()))
        n_rows += len(texts)
    blocks = {c: np.array_equal(rows, np.repeat(np.arange(len(ours.images[c])),
                                                np.bincount(rows, minlength=len(ours.images[c]))))
              for c, rows in ours.text_photos.items()}
    return {"classes": len(ours.texts), "rows": n_rows, "elements": n_rows * ours.text_dim,
            "elements_off_in_float16": off, "most_float16_steps_off": steps, "max_abs_diff": worst,
            "min_cosine": cosine, "ids_equal": all(flo_id[c] == c for c in flo_id),
            "seen": sorted(flo_id[c] for c in ours.seen), "unseen": sorted(flo_id[c] for c in ours.unseen),
            "ties_are_blocks": all(blocks.values())}
