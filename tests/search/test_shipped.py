"""Shipping a model in the package: export and load (exact, float16, byte-stable), integrity, refusals.
The flower model that ships is tested in test_flower_model.py."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zscrgan.config import Config
from zscrgan.core.networks import ZSCRGAN
from zscrgan.errors import DataError
from zscrgan.search.shipped import export_model, open_model, open_shipped
from zscrgan.search.trained import TrainedRun

ENCODERS = {"image_encoder": "efficientnet-lite0", "text_encoder": "all-MiniLM-L6-v2"}


def toy_run(tmp_path: Path) -> TrainedRun:
    """A small untrained model with every optional path, a centre and a class table of 3 seen and 1 unseen."""
    torch.manual_seed(0)
    cfg = Config(recipe="tuned", gf_dim=16, df_dim=8, embed_dim=8, z_dim=4).resolved()
    model = ZSCRGAN(12, 20, 8, 4, 16, 8, generator_linear=True, ridge_path=True).eval()
    for p in model.parameters():  # the linear path starts at zero: give it weights to carry
        p.data.normal_(0, 0.3)
    classes = {"ids": np.array(["1", "2", "3", "4"]), "names": np.array(["rose", "tulip", "lily", "daisy"]),
               "seen": np.array([True, True, False, True]), "embeddings": np.arange(32, dtype=np.float32).reshape(4, 8)}
    return TrainedRun({"run": str(tmp_path / "run")}, tmp_path / "best.pt", "0" * 64, cfg, model, None, dict(ENCODERS),
                      torch.linspace(-1, 1, 8), classes)


def test_export_float32_embeds_exactly_as_the_run_and_keeps_only_seen_classes(tmp_path):
    run = toy_run(tmp_path)
    card = export_model(run, "toy", {"summary": "a toy"}, tmp_path / "models", half=False)
    payload = (tmp_path / "models" / "toy.pt").read_bytes()
    assert card["sha256"] == hashlib.sha256(payload).hexdigest() and card["bytes"] == len(payload)
    assert card["encoders"] == ENCODERS
    assert json.loads((tmp_path / "models" / "toy.json").read_text()) == card
    state = torch.load(tmp_path / "models" / "toy.pt", weights_only=True)
    assert not any(k.startswith("critic.") for k in state["weights"])  # inference weights only
    assert state["config"]["dataset"] == "" and state["config"]["name"] == "toy"

    shipped = open_shipped("toy", tmp_path / "models")
    texts, images = torch.randn(5, 12).numpy(), torch.randn(6, 20).numpy()
    np.testing.assert_array_equal(shipped.embed_text_vectors(texts), run.embed_text_vectors(texts))
    np.testing.assert_array_equal(shipped.embed_images(images), run.embed_images(images))
    assert shipped.classes["names"].tolist() == ["rose", "tulip", "daisy"] and shipped.classes["seen"].all()
    np.testing.assert_array_equal(shipped.classes["embeddings"], run.classes["embeddings"][[0, 1, 3]])
    assert shipped.source == {"model": "toy"} and shipped.image_encoder == "efficientnet-lite0"


def test_float16_export_is_half_the_size_close_and_byte_stable(tmp_path):
    run = toy_run(tmp_path)
    half = export_model(run, "toy", {"summary": "a toy"}, tmp_path / "a", half=True)
    again = export_model(run, "toy", {"summary": "a toy"}, tmp_path / "b", half=True)
    full = export_model(run, "toy", {"summary": "a toy"}, tmp_path / "c", half=False)
    assert half["sha256"] == again["sha256"]  # the bytes depend on the weights alone
    weights = lambda folder: torch.load(folder / "toy.pt", weights_only=True)["weights"]  # noqa: E731
    assert all(v.dtype == torch.float16 for v in weights(tmp_path / "a").values())
    n_weights = sum(v.numel() for v in weights(tmp_path / "c").values())
    assert full["bytes"] - half["bytes"] == pytest.approx(2 * n_weights, abs=4096)  # 2 bytes a weight fewer
    texts = torch.randn(5, 12).numpy()
    got, want = open_shipped("toy", tmp_path / "a").embed_text_vectors(texts), run.embed_text_vectors(texts)
    assert np.abs(got - want).max() < 2e-2 * np.abs(want).max()


def test_a_damaged_or_unknown_model_is_refused_in_one_line(tmp_path):
    export_model(toy_run(tmp_path), "toy", {"summary": "a toy"}, tmp_path, half=True)
    with pytest.raises(DataError, match=r"--model roses: no such shipped model \(shipped: toy\)"):
        open_shipped("roses", tmp_path)
    payload = bytearray((tmp_path / "toy.pt").read_bytes())
    payload[-100] ^= 1
    (tmp_path / "toy.pt").write_bytes(bytes(payload))
    with pytest.raises(DataError, match=r"toy.pt: SHA-256 .* is not its card's .*reinstall zscrgan"):
        open_shipped("toy", tmp_path)
    with pytest.raises(DataError, match="give one of --run RUN .* or --model NAME"):
        open_model(None, None)
    with pytest.raises(DataError, match="give one of"):
        open_model(tmp_path, "flowers")


def test_how_a_run_was_started_is_no_part_of_the_bytes(tmp_path):
    """Two runs with the same weights and settings, started with other paths, --overwrite or
    --workers, export the same bytes: what lets a rebuild reproduce the shipped SHA-256."""
    import dataclasses

    run = toy_run(tmp_path)
    other = dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, overwrite=True, workers=2, out_dir="/elsewhere",
                                                            dataset="/data/FLO_cap", report=False))
    first = export_model(run, "toy", {"summary": "a toy"}, tmp_path / "a")
    assert export_model(other, "toy", {"summary": "a toy"}, tmp_path / "b")["sha256"] == first["sha256"]
    changed = dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, z_dim=5))  # a setting of the model: differs
    assert export_model(changed, "toy", {"summary": "a toy"}, tmp_path / "c")["sha256"] != first["sha256"]
