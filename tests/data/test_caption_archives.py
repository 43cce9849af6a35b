"""docs/data.md's caption recipes, end to end through `zscrgan` on small replicas of the archives
(tests/archives.py): `data build --captions` writes a set that `data check`, `train`, `compare` and
`index` accept, with each caption tied to its photo; and FLO_cap rebuilt from its captions.tsv.
Slow: the real encoders run (about 30 s a replica on 2 cores)."""
import json

import numpy as np
import pytest
from archives import caption_lines, cub, flo_cap_differences, flo_cap_replica, flowers
from conftest import shared_path

from zscrgan.cli import main
from zscrgan.data.dataset import load_dataset

TRAIN = ["--epochs", "2", "--gf_dim", "32", "--df_dim", "32", "--embed_dim", "16", "--z_dim", "8", "--e_steps", "3",
         "--m_steps", "3", "--n_critic", "1", "--batch_size", "4", "--eval_k", "2", "--select_k", "2", "--val_fraction", "0.5", "--no-report",
         "--device", "cpu"]


def accepted_everywhere(out, photos, tmp_path):
    """data check, train (own captions on), compare (ridge, photo pairs on) and index take the set."""
    assert main(["data", "check", str(out)]) == 0  # (--strict would fail: noise photos leave CNN features at 0)
    assert main(["train", "--dataset", str(out), "--out_dir", str(tmp_path), "--recipe", "tuned", "--select", "val",
                 "--own_captions", *TRAIN]) == 0
    assert main(["compare", "--dataset", str(out), "--methods", "ridge", "--seeds", "0", "--photo_pairs",
                 "--out_dir", str(tmp_path), *TRAIN]) == 0
    assert (tmp_path / f"compare_{out.name}.csv").read_text().count("ridge,") >= 1
    run = tmp_path / "ckt_logs" / f"{out.name}_logs"
    assert main(["index", "--run", str(run), "--images", str(photos), "--out", str(tmp_path / "index")]) == 0


@pytest.mark.slow
def test_flowers_recipe_on_a_replica(tmp_path, capsys):
    paths = flowers(tmp_path / "archives")
    out = tmp_path / "datasets" / "FLO_captions"
    assert main(["data", "build", "--images", str(paths["images"]), "--labels", str(paths["labels"]),
                 "--captions", str(paths["captions"]), "--seen_classes", str(paths["seen"]),
                 "--unseen_classes", str(paths["unseen"]), "--out", str(out), "--device", "cpu"]) == 0
    assert "150 of 150 texts name their photo" in capsys.readouterr().out
    data = load_dataset(out)
    assert data.classnames == {k: f"class_{k:05d}" for k in range(1, 6)} and data.unseen == [2, 5]
    manifest = json.loads((out / "manifest.json").read_text())
    labels = paths["labels_of_photos"]
    for c in data.seen + data.unseen:  # each photo under its label's class, each caption beside its photo
        photos = [e["path"] for e in manifest["images"] if e["class"] == c]
        assert photos == [f"image_{n:05d}.jpg" for n, label in enumerate(labels, 1) if label == c]
        texts = [e for e in manifest["texts"] if e["class"] == c]
        assert [t["text"] for t in texts] == [line for p in photos for line in caption_lines(c, int(p[6:11]))]
        assert data.text_photos[c].tolist() == [photos.index(t["image"]) for t in texts] == np.repeat(
            np.arange(len(photos)), 10).tolist()
    accepted_everywhere(out, paths["images"], tmp_path)


@pytest.mark.slow
def test_cub_recipe_on_a_replica(tmp_path):
    paths = cub(tmp_path / "archives")
    out = tmp_path / "datasets" / "CUB_captions"
    assert main(["data", "build", "--images", str(paths["images"]), "--captions", str(paths["captions"]),
                 "--seen_classes", str(paths["seen"]), "--unseen_classes", str(paths["unseen"]),
                 "--out", str(out), "--device", "cpu"]) == 0
    data = load_dataset(out)
    assert [data.classnames[c] for c in data.unseen] == ["017.Cardinal", "200.Common_Yellowthroat"]
    assert sum(len(t) for t in data.texts.values()) == 150 and sum(len(i) for i in data.images.values()) == 15
    assert all(rows.tolist() == np.repeat(np.arange(3), 10).tolist() for rows in data.text_photos.values())
    accepted_everywhere(out, paths["images"], tmp_path)


@pytest.mark.slow
def test_flo_cap_rebuilt_from_its_captions(tmp_path):
    """Four classes (two seen, two unseen; 452 photos, 4,519 captions; about 100 s on 2 cores) of
    FLO_cap written back as text_c10 files rebuild its vectors. FLO_cap stores float16, so equality
    is after rounding: measured 0.5% of elements one float16 step apart (encoder runs differ by
    ~1e-7, which crosses a rounding boundary now and then), largest difference 6.1e-5, cosine
    1 - 1e-7. The whole set by hand: docs/data.md, "FLO_cap from its captions"."""
    flo_cap = shared_path("data", "FLO_cap")
    paths = flo_cap_replica(tmp_path, flo_cap, classes=[1, 5, 72, 77])
    assert main(["data", "build", "--images", str(paths["images"]), "--captions", str(paths["captions"]),
                 "--seen_classes", str(paths["seen"]), "--unseen_classes", str(paths["unseen"]),
                 "--out", str(tmp_path / "built"), "--device", "cpu"]) == 0
    diff = flo_cap_differences(tmp_path / "built", flo_cap)
    assert (diff["classes"], diff["rows"], diff["seen"], diff["unseen"]) == (4, 4519, [72, 77], [1, 5])
    assert diff["ties_are_blocks"] and diff["min_cosine"] > 0.99999 and diff["max_abs_diff"] < 1.25e-4
    assert diff["elements_off_in_float16"] < 0.01 * diff["elements"]
