"""Models shipped inside the package, so `zscrgan index --model flowers` needs no training and no data set.

A shipped model is two files in ``zscrgan/search/models/``:

    NAME.pt     torch.save of a plain dict: "format", "config" (the run's settings), "weights" (the
                inference networks only: text encoder, generator, CSEM, float16), "centre" (the
                --eval_centre vector, or None) and "classes" (the class table of its seen classes:
                names and query prototypes, what "nearest training classes" names); read with weights_only=True
    NAME.json   its card: what it was trained on and held out, the featurizers it expects, its
                held-out figures beside ridge's, how it was chosen and rebuilt, and NAME.pt's
                SHA-256, checked at every load

``scripts/build_flower_model.py`` trains, chooses and exports ``flowers`` (:func:`export_model`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from zscrgan.console import Parser
from zscrgan.core.checkpoint import checkpoint_config, inference_weights, model_from_weights
from zscrgan.errors import DataError
from zscrgan.files import read_json_object, write_atomic, write_json
from zscrgan.search.trained import TrainedRun, class_table, open_run

MODELS_DIR = Path(__file__).parent / "models"
FORMAT = "zscrgan-model/1"
RUN_CONTROL = dict(dataset="", config="", data_root="datasets", out_dir=".", seeds="", workers=1, device="auto",
                   resume=False, overwrite=False, report=True, retain_memory=True)


def shipped_models(folder: Path = MODELS_DIR) -> dict[str, dict]:
    """{name: card} of every model in ``folder``."""
    return {card.stem: read_json_object(card) for card in sorted(folder.glob("*.json"))}


def describe_models(folder: Path = MODELS_DIR) -> str:
    """One paragraph per shipped model: what `zscrgan models` prints and `index --help` ends with."""
    lines = []
    for name, card in shipped_models(folder).items():
        lines.append(f"{name}: {card['summary']}")
        lines += [f"    {line}" for line in card.get("details", [])]
    return "\n".join(lines) if lines else "(no shipped model)"


def open_shipped(name: str, folder: Path = MODELS_DIR) -> TrainedRun:
    """A shipped model ready to embed; its file's SHA-256 must match its card's."""
    models = shipped_models(folder)
    if name not in models:
        raise DataError(f"--model {name}: no such shipped model (shipped: {', '.join(models) or 'none'})")
    card, path = models[name], folder / f"{name}.pt"
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the shipped model ({exc.strerror}); reinstall zscrgan") from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != card["sha256"]:
        raise DataError(f"{path}: SHA-256 {digest[:12]} is not its card's {card['sha256'][:12]} (damaged or "
                        f"replaced); reinstall zscrgan")
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    cfg = checkpoint_config(state["config"])
    model = model_from_weights(state["weights"], cfg).eval()
    centre = state["centre"].float() if state["centre"] is not None else None
    saved = state["classes"]
    classes = {"ids": np.array(saved["ids"]), "names": np.array(saved["names"]),
               "seen": saved["seen"].numpy().astype(bool), "embeddings": saved["embeddings"].float().numpy()}
    return TrainedRun({"model": name}, path, digest, cfg, model, None, dict(card["encoders"]), centre, classes)


def reopen(source: dict) -> TrainedRun:
    """The model an index or a shard plan recorded (describe_run's ``run`` or ``model``)."""
    return open_shipped(source["model"]) if "model" in source else open_run(source["run"])


def open_model(run_dir: str | Path | None, model: str | None) -> TrainedRun:
    """``--run RUN`` (a run folder of yours) or ``--model NAME`` (shipped): exactly one of them."""
    if (run_dir is None) == (model is None):
        raise DataError("give one of --run RUN (a run folder from zscrgan train) or --model NAME "
                        f"(a shipped model: {', '.join(shipped_models()) or 'none'})")
    return open_shipped(model) if model is not None else open_run(run_dir)


def export_model(run: TrainedRun, name: str, card: dict, folder: Path = MODELS_DIR, half: bool = True) -> dict:
    """Write a run as shipped model ``name``: NAME.pt (inference weights, its seen classes' table) and
    NAME.json (``card`` plus the encoders and the SHA-256). The bytes depend only on the weights."""
    table = class_table(run)
    seen = table["seen"]  # the held-out classes' names and prototypes are left out
    # the settings that shape the model and its queries; where and how the run was started (paths,
    # --overwrite, --workers, ...) is no part of the model, so a rebuild writes the same bytes
    config = dataclasses.replace(run.cfg, **RUN_CONTROL, name=name)
    state = {"format": FORMAT, "config": dataclasses.asdict(config),
             "weights": inference_weights(run.model, half),
             "centre": run.centre.to(torch.float32) if run.centre is not None else None,
             "classes": {"ids": table["ids"][seen].tolist(), "names": table["names"][seen].tolist(),
                         "seen": torch.from_numpy(seen[seen]),
                         "embeddings": torch.from_numpy(table["embeddings"][seen].astype(np.float32))}}
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{name}.pt", payload)
    card = {**card, "encoders": {"image_encoder": run.image_encoder, "text_encoder": run.text_encoder},
            "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    write_json(folder / f"{name}.json", card)
    return card


def main(argv: list[str] | None = None) -> int:
    """`zscrgan models`: what ships, what it was trained on, its held-out figures."""
    Parser(prog="zscrgan models", description="List the models shipped with zscrgan (zscrgan index --model NAME).").parse_args(argv)
    print(describe_models())
    return 0


__all__ = ["MODELS_DIR", "shipped_models", "describe_models", "open_shipped", "reopen", "open_model", "export_model"]
