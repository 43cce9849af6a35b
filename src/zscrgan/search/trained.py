"""A trained model opened for use: its networks, its featurizers and its class table.

`zscrgan index`, `shard`, `search` and `serve` start from a run folder (``ckt_logs/NAME_logs``
written by `zscrgan train`) or from a model shipped in the package (:mod:`zscrgan.search.shipped`).
This module turns a run folder into what they need: the trained networks (dims read from the
checkpoint itself, so no data set load is needed to build them), the checkpoint's hash (an index
remembers which weights made its vectors), the data set's manifest (which featurizers made its
vectors, so new photos and free text are encoded the same way) and the query embedding the run's
recipe evaluates with.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zscrgan.config import Config
from zscrgan.core.embedding import QueryEmbedder, class_prototypes
from zscrgan.core.networks import ZSCRGAN
from zscrgan.data.convert import MANIFEST_FILE
from zscrgan.data.dataset import load_dataset
from zscrgan.data.encoders import DEFAULT_ENCODER, PHOTO_BATCH, TEXT_ENCODER, Encoders
from zscrgan.errors import DataError
from zscrgan.files import read_json_object
from zscrgan.runfiles import BEST_CHECKPOINT
from zscrgan.runs import SavedRun


@dataclass
class TrainedRun:
    source: dict  # {"run": absolute run folder} or {"model": shipped model name}: what shipped.reopen takes
    checkpoint: Path
    checkpoint_sha256: str
    cfg: Config
    model: ZSCRGAN
    dataset_dir: Path | None  # None for a shipped model, which carries what it needs of its data set
    dataset_manifest: dict  # the featurizers that made the vectors; {} when not made by `zscrgan data build`
    centre: torch.Tensor | None = None  # --eval_centre: the training images' mean embedding, subtracted
    classes: dict | None = None  # a shipped model's class table (class_table computes a run's)

    @property
    def name(self) -> str:
        """How messages name it: the run folder, or "model flowers"."""
        return self.source["run"] if "run" in self.source else f"model {self.source['model']}"

    @property
    def image_encoder(self) -> str | None:
        return self.dataset_manifest.get("image_encoder")

    @property
    def text_encoder(self) -> str | None:
        return self.dataset_manifest.get("text_encoder")

    @property
    def embed_dim(self) -> int:
        return self.model.csem.fc.out_features

    def load_data(self):
        return load_dataset(self.dataset_dir)

    @property
    def embedder(self) -> QueryEmbedder:
        """The run's query embedder as search uses it: noise seeded as the run's round-0 evaluation,
        each row's drawn afresh (``independent_rows``), so a query's embedding does not depend on its batch."""
        return QueryEmbedder.for_round(self.model, self.cfg, 0, "cpu", self.centre, independent_rows=True)

    def embed_images(self, features: np.ndarray) -> np.ndarray:
        """Featurizer vectors -> common-space gallery vectors."""
        return self.embedder.embed_images(torch.from_numpy(np.asarray(features, np.float32))).numpy()

    def embed_text_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Text vectors -> query embeddings, as the run's recipe evaluates them."""
        return self.embedder.embed_texts(torch.from_numpy(np.asarray(vectors, np.float32))).numpy()

    def encoders(self, precision: str = "fp32", image_encoder: str | None = None, photo_batch: int = PHOTO_BATCH) -> Encoders:
        """The encoders that made the run's data set, so new photos and free text are encoded as its
        vectors were (``image_encoder`` names the CNN where the set's manifest does not)."""
        return Encoders(image_encoder or self.image_encoder or DEFAULT_ENCODER, "cpu", precision, photo_batch)

    def sentence_vectors(self, texts: list[str], precision: str = "fp32") -> np.ndarray:
        """Free text -> the data set's text vectors; only where a shipped featurizer made the set's texts.

        Apart from :meth:`encode_texts` so `zscrgan serve` can time the two halves of a batch;
        ``precision="bf16"``: the encoder under bfloat16 autocast (encoders.encoder_precision)."""
        if self.text_encoder != TEXT_ENCODER:
            made = f"by {self.text_encoder!r}" if self.text_encoder else "outside zscrgan (no manifest.json)"
            raise DataError(f"{self.dataset_dir or self.name}: its text vectors were made {made}, not by a featurizer "
                            f"shipped here, so free text cannot be encoded; query with --class_id instead")
        return self.encoders(precision).encode_texts(texts)

    def encode_texts(self, texts: list[str], precision: str = "fp32") -> np.ndarray:
        """Free text -> query embeddings."""
        return self.embed_text_vectors(self.sentence_vectors(texts, precision))


def open_run(run_dir: str | Path) -> TrainedRun:
    """Load a run folder's best checkpoint and find its data set; one-line errors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run folder not found (expected ckt_logs/NAME_logs from zscrgan train)")
    saved = SavedRun.open(run_dir / BEST_CHECKPOINT)
    saved.model.eval()
    folder = saved.dataset_folder()
    if folder is None:
        raise DataError(f"{run_dir}: trained on the built-in demo data, which has no photos to index; to search "
                        f"photos without training, use --model flowers (zscrgan models lists the shipped models)")
    # centred as the run evaluated: on its training classes' images
    centre = saved.centre(load_dataset(folder, splits=("seen",))) if saved.cfg.eval_centre else None
    return TrainedRun({"run": str(run_dir.resolve())}, saved.path.resolve(), saved.sha256, saved.cfg, saved.model,
                      folder, read_json_object(folder / MANIFEST_FILE), centre)


def class_table(run: TrainedRun) -> dict:
    """Per class of the data set: id, name, seen flag and its query embedding, the class's prototype
    (core.embedding.class_prototypes: the mean of its texts' unit queries, as scoring's per-class form).

    Stored in an index so explanations and ``--class_id`` need neither the data set nor a
    text featurizer at query time. A shipped model carries its own (its seen classes only).
    """
    if run.classes is not None:
        return run.classes
    data = run.load_data()
    ids, seen = list(data.seen) + list(data.unseen), set(data.seen)
    texts, _ = data.stacked_texts(ids)
    queries = torch.from_numpy(run.embed_text_vectors(texts))
    embeddings = class_prototypes(queries, [len(data.texts[c]) for c in ids]).numpy()
    return {"ids": np.array([str(c) for c in ids]),
            "names": np.array([str(data.classnames.get(c, c)) for c in ids]),
            "seen": np.array([c in seen for c in ids]),
            "embeddings": embeddings.astype(np.float32)}


def describe_run(run: TrainedRun) -> dict:
    """What an index manifest records about the model it came from (``run`` or ``model``: shipped.reopen)."""
    return {**run.source, "checkpoint": str(run.checkpoint),
            "checkpoint_sha256": run.checkpoint_sha256, "dataset": str(run.dataset_dir or ""),
            "recipe": run.cfg.recipe, "eval_mean": bool(run.cfg.eval_mean),
            "eval_samples": int(run.cfg.eval_samples), "embed_dim": run.embed_dim,
            "image_encoder": run.image_encoder, "text_encoder": run.text_encoder}


__all__ = ["TrainedRun", "open_run", "class_table", "describe_run"]
