"""The flower model shipped in the package, searched end to end from photos the test makes itself: no
training, no data set, no ../shared; with ../shared, its card's held-out figure reproduced."""
import hashlib
import json
from pathlib import Path

import pytest

from zscrgan.cli import main as cli
from zscrgan.search.shipped import MODELS_DIR, open_shipped, shipped_models

ENCODERS = {"image_encoder": "efficientnet-lite0", "text_encoder": "all-MiniLM-L6-v2"}


def test_the_flower_model_ships_with_its_card():
    card = shipped_models()["flowers"]
    payload = (MODELS_DIR / "flowers.pt").read_bytes()
    assert hashlib.sha256(payload).hexdigest() == card["sha256"] and len(payload) < 10_000_000
    assert card["encoders"] == ENCODERS and len(card["held_out"]) == 10
    model = open_shipped("flowers")
    # trained classes only: none of the held-out ones, which the demo photos show
    names = {n.replace(" ", "_") for n in model.classes["names"].tolist()}
    assert len(names) == 92 and not names & set(card["held_out"])


def made_photos(folder: Path) -> Path:
    """Six photos drawn here: yellow, red and white discs on green, two of each, plus a README."""
    from PIL import Image, ImageDraw

    for colour in ("yellow", "red", "white"):
        (folder / colour).mkdir(parents=True)
        for i in range(2):
            image = Image.new("RGB", (320, 240), (40, 110 + 20 * i, 40))
            ImageDraw.Draw(image).ellipse((90 - 10 * i, 50, 230 + 10 * i, 190), fill=colour, outline="orange")
            image.save(folder / colour / f"{i}.jpg", quality=90)
    (folder / "README.md").write_text("made by the test: not a photo\n")
    return folder


@pytest.mark.slow  # loads the two encoders (about 10 s)
def test_search_with_the_shipped_model_needs_no_training_and_no_data(tmp_path, capsys):
    pytest.importorskip("faiss")
    pytest.importorskip("efficientnet_lite_pytorch")
    photos, out = made_photos(tmp_path / "photos"), tmp_path / "index"
    assert cli(["models"]) == 0
    assert "flowers:" in capsys.readouterr().out
    assert cli(["index", "--model", "flowers", "--images", str(photos), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "6 photos indexed" in captured.out and "0 unreadable skipped" in captured.out
    assert captured.err.count("warning") == 0  # README.md is not a photo: not read, not counted
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["model"] == "flowers" and manifest["counts"]["photos"] == 6
    assert cli(["search", str(out), "-k", "6", "--json", "a yellow trumpet flower"]) == 0  # text after flags
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(h["path"] for h in hits) == sorted(f"{c}/{i}.jpg" for c in ("yellow", "red", "white") for i in (0, 1))
    assert all(-1 <= h["score"] <= 1 for h in hits) and hits == sorted(hits, key=lambda h: -h["score"])

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from zscrgan.search.reader import IndexReader
    from zscrgan.search.serve import create_app

    with TestClient(create_app(IndexReader(out))) as client:
        reply = client.post("/search", json={"text": "a red flower", "k": 3}).json()
        assert len(reply["results"]) == 3 and len(reply["explanations"]) == 3
        assert client.get(reply["results"][0]["thumb"]).headers["content-type"] == "image/jpeg"


@pytest.mark.slow  # featurizes the 60 shared photos
def test_the_cards_held_out_figure_reproduces_through_index_and_search(tmp_path):
    """Precision@5 of the 30 example descriptions of the 10 held-out classes, over the 60 shared photos,
    through `zscrgan index --model flowers` and the search path: the card's figure, well above chance."""
    pytest.importorskip("faiss")
    pytest.importorskip("efficientnet_lite_pytorch")
    from conftest import shared_path

    from zscrgan.data.featurize import read_texts
    from zscrgan.search.reader import IndexReader

    photos, out = shared_path("data", "flower_photos"), tmp_path / "index"
    assert cli(["index", "--model", "flowers", "--images", str(photos), "--out", str(out)]) == 0
    texts = read_texts(Path(__file__).resolve().parents[2] / "examples" / "flower_descriptions.csv")
    reader = IndexReader(out)
    hits = reader.search(reader.encode_texts(texts.sources), k=5)
    precision = sum(h["path"].split("/")[0] == c for row, c in zip(hits, texts.classes) for h in row) / (5 * len(hits))
    figures = shipped_models()["flowers"]["held_out_figures"]
    assert len(hits) == 30 and precision == pytest.approx(figures["flowers"]["descriptions_p5"], abs=1e-4)
    assert precision > 2 * figures["chance"]
