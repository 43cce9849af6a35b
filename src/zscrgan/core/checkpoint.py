"""A checkpoint read back: ``zscrgan train`` writes best.pt and last.pt (plain dicts, weights_only-loadable);
``--resume``, ``zscrgan evaluate`` and the search commands (search.trained) read them here, one way.

A checkpoint holds "config" (the run's flags), "trainer" (its "model" weights and optimiser states),
"round", "rng", "history", "selector", "per_class" and "classes" (experiments.run.Run.checkpoint).
"""
from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path

import torch

from zscrgan.config import Config
from zscrgan.core.networks import ZSCRGAN
from zscrgan.errors import DataError


def load_checkpoint(path: Path, payload: bytes | None = None) -> dict:
    """The checkpoint at ``path`` (or its bytes, ``payload``, already read from there) on the CPU,
    or a one-line DataError: not found, or not a readable zscrgan checkpoint (a damaged file, or one
    without the run's config and model weights)."""
    try:
        state = torch.load(io.BytesIO(payload) if payload is not None else path, map_location="cpu",
                           weights_only=True)
        checkpoint_config(state["config"])  # what every reader needs: the run's settings ...
        state["trainer"]["model"]  # ... and its weights
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch raises many kinds for a bad file
        raise DataError(f"{path}: not a readable zscrgan checkpoint ({type(exc).__name__})") from None
    return state


def checkpoint_config(raw: dict) -> Config:
    """A Config from a checkpoint's dict, ignoring keys a newer or older version added."""
    known = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in raw.items() if k in known}).resolved()


def model_from_weights(weights: dict, cfg: Config) -> ZSCRGAN:
    """The networks a checkpoint's weights fit, their sizes and optional paths read from the weights."""
    text_dim = weights["encoder.fc.weight"].shape[1]
    embed_dim, image_dim = weights["csem.fc.weight"].shape
    model = ZSCRGAN(text_dim, image_dim, embed_dim, cfg.z_dim, weights["generator.fc1.weight"].shape[0],
                    weights["critic.fc_image.weight"].shape[0],
                    "generator.skip.weight" in weights, "generator.text_path.weight" in weights)
    model.load_state_dict(weights)
    return model


__all__ = ["load_checkpoint", "checkpoint_config", "model_from_weights"]
