"""A training run's folder read back, one way for every command: its data set, its checkpoint
opened as networks and a query embedder.

``zscrgan train`` writes ``OUT/ckt_logs/NAME_logs/`` (the files named in zscrgan.runfiles) and
``OUT/retrieved_res/NAME_res/`` (experiments.runfolder writes both, under a lock). ``zscrgan
evaluate``, ``compare``, the search commands (search.trained) and the scripts read them through
this module, which sits below evaluation, experiments and search (tests/test_layers.py) so that
none of them writes a lookup order again (the file names: zscrgan.runfiles, below config).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from zscrgan.config import Config
from zscrgan.core.checkpoint import checkpoint_config, load_checkpoint, model_from_weights
from zscrgan.core.embedding import QueryEmbedder, training_centre
from zscrgan.core.networks import ZSCRGAN
from zscrgan.data.dataset import TEXT_PHOTOS_FILE, load_dataset, resolve_dataset_dir
from zscrgan.data.synthetic import make_builtin_dataset
from zscrgan.errors import DataError
from zscrgan.files import read_json_object
from zscrgan.runfiles import SUMMARY_FILE


def load_run_data(cfg: Config, splits=("seen", "unseen")):
    """The run's data set (``cfg.dataset``: a NAME under ``cfg.data_root``, or a folder; "" for the
    built-in demo data) and its folder (None for the built-in data)."""
    folder = resolve_dataset_dir(cfg.dataset, cfg.data_root) if cfg.dataset else None
    data = load_dataset(folder, splits=splits) if folder else make_builtin_dataset()
    if data.text_photos is None and (cfg.photo_pairs or cfg.own_captions):
        missing = f"{folder / TEXT_PHOTOS_FILE}: not found" if folder else "the built-in data ties no text to a photo"
        raise DataError(f"{missing}; --{'photo_pairs' if cfg.photo_pairs else 'own_captions'} needs which photo "
                        f"each caption describes (a set built with zscrgan data build --captions)")
    return data, folder


def dataset_folder(run_dir: Path, cfg: Config) -> Path | None:
    """Where the run in ``run_dir`` found its data set, looked up in this order:

    1. summary.json's ``data_dir``: the absolute folder the run read, written when it ended;
    2. the checkpoint's ``dataset`` (``cfg``): a folder (absolute since runs save it so, relative
       to where an older run was started) or a NAME under ``data_root`` -- a run still training,
       or one whose folder moved.

    None: the run trained on the built-in demo data. A one-line DataError when neither is found."""
    data_dir = read_json_object(run_dir / SUMMARY_FILE).get("data_dir")
    if isinstance(data_dir, str) and Path(data_dir).is_dir():
        return Path(data_dir)
    if not cfg.dataset:
        return None
    try:
        return resolve_dataset_dir(cfg.dataset, cfg.data_root).resolve()
    except DataError:
        raise DataError(f"{run_dir}: its data set {cfg.dataset!r} is not found (neither {SUMMARY_FILE}'s data_dir "
                        f"nor {cfg.data_root}/{cfg.dataset}); run from the folder it was trained in") from None


@dataclass
class SavedRun:
    """A checkpoint (best.pt or last.pt) opened on the CPU: its settings, networks and the hash of
    its bytes (an index remembers which weights made its vectors)."""

    path: Path
    state: dict
    cfg: Config
    model: ZSCRGAN
    sha256: str

    @classmethod
    def open(cls, path: str | Path, **overrides) -> "SavedRun":
        """``overrides``: settings replacing the checkpoint's (``zscrgan evaluate --eval_samples 4``)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: checkpoint not found (was the run deleted, or not trained to the end?)")
        payload = path.read_bytes()
        state = load_checkpoint(path, payload)
        cfg = replace(checkpoint_config(state["config"]), **overrides)
        model = model_from_weights(state["trainer"]["model"], cfg)
        return cls(path, state, cfg, model, hashlib.sha256(payload).hexdigest())

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def dataset_folder(self) -> Path | None:
        """:func:`dataset_folder` of the run this checkpoint belongs to."""
        return dataset_folder(self.run_dir, self.cfg)

    def load_data(self, splits=("seen", "unseen")):
        """The run's data set, where :func:`dataset_folder` finds it (the built-in demo data for a run without one)."""
        folder = self.dataset_folder()
        return load_run_data(replace(self.cfg, dataset=str(folder or "")), splits)[0]

    def centre(self, data, device="cpu") -> torch.Tensor | None:
        """The ``--eval_centre`` vector as the run evaluated: its training classes' mean image; None without."""
        if not self.cfg.eval_centre:
            return None
        return training_centre(self.model, data, self.state["classes"]["train"], device)

    def embedder(self, centre: torch.Tensor | None, device="cpu", round_: int | None = None,
                 independent_rows: bool = False) -> QueryEmbedder:
        """The run's query embedder (core.embedding), its noise seeded as round ``round_`` (default:
        the checkpoint's own round, as training scored it)."""
        return QueryEmbedder.for_round(self.model, self.cfg, self.state["round"] if round_ is None else round_,
                                       device, centre, independent_rows)


__all__ = ["load_run_data", "dataset_folder", "SavedRun"]
