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
    """The networks a checkpoint's weights fit, their sizes and optional paths read from the weights.

    Inference weights (a shipped model: no critic, which only training uses) give a model whose
    critic is a one-unit placeholder; every other tensor must be there. Half-precision weights are
    widened to float32 by loading (load_state_dict copies into the float32 parameters)."""
    text_dim = weights["encoder.fc.weight"].shape[1]
    embed_dim, image_dim = weights["csem.fc.weight"].shape
    has_critic = "critic.fc_image.weight" in weights
    model = ZSCRGAN(text_dim, image_dim, embed_dim, cfg.z_dim, weights["generator.fc1.weight"].shape[0],
                    weights["critic.fc_image.weight"].shape[0] if has_critic else 1,
                    "generator.skip.weight" in weights, "generator.text_path.weight" in weights)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if has_critic or not k.startswith("critic.")]
    if missing or unexpected:
        raise KeyError(f"weights do not fit the networks: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def inference_weights(model: ZSCRGAN, half: bool = True) -> dict:
    """What query and photo embedding need (text encoder, generator, CSEM), optionally as float16."""
    dtype = torch.float16 if half else torch.float32
    return {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items() if not k.startswith("critic.")}


__all__ = ["load_checkpoint", "checkpoint_config", "model_from_weights", "inference_weights"]
