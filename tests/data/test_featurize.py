"""featurize: preprocessing, skipping unreadable files, the .npz format, sentence vectors."""

import numpy as np
import pytest
import torch
from helpers import small_tree
from PIL import Image

from zscrgan import cli
from zscrgan.data.featurize import Features, featurize_images, featurize_texts, read_description_rows
from zscrgan.data.photos import IMAGENET_MEAN, IMAGENET_STD, preprocess
from zscrgan.errors import DataError, UserError


def test_preprocess_resizes_crops_and_normalises():
    colour = (124, 116, 104)
    out = preprocess(Image.new("RGB", (500, 300), colour))  # landscape: shorter side is the height
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    expected = (np.array(colour, np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out[:, 112, 112], expected, atol=1e-5)
    # centre crop: a stripe on the far left of a wide photo is cut away, one in the middle is kept
    wide = Image.new("RGB", (1000, 256), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 100, 256))
    wide.paste((255, 255, 255), (495, 0, 505, 256))
    grey = preprocess(wide)[0]
    assert grey[:, :50].max() < 0 and grey[:, 112].min() > 2
    assert preprocess(Image.new("L", (300, 300), 128)).shape == (3, 224, 224)  # grey photos become RGB
    assert preprocess(Image.new("RGBA", (256, 400))).shape == (3, 224, 224)


def test_corrupt_and_non_image_files_are_skipped_with_one_warning_each(flower_photos_dir, tmp_path, capsys):
    root = small_tree(flower_photos_dir, tmp_path / "photos")
    good = next((root / "daffodil").glob("*.jpg")).read_bytes()
    (root / "daffodil" / "broken.jpg").write_bytes(good[: len(good) // 3])  # a truncated JPEG
    (root / "poinsettia" / "notes").write_text("picked in the botanic garden\n")  # no suffix: tried, refused
    (root / "poinsettia" / "notes.txt").write_text("named as a document: not a photo, not warned about\n")
    (root / "README.md").write_text("not in a class folder: ignored, not warned about\n")
    out = tmp_path / "images.npz"

    assert cli.main(["featurize", "images", str(root), "--out", str(out), "--batch_size", "3"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert "daffodil/broken.jpg" in warnings[0] and "truncated" in warnings[0]
    assert "poinsettia/notes:" in warnings[1] and "not an image (no JPEG" in warnings[1]
    assert "4 images of 2 classes, 1280-d efficientnet-lite0 vectors; 2 unreadable files skipped" in captured.out

    feats = Features.load(out, "images")
    assert feats.features.shape == (4, 1280) and feats.features.dtype == np.float32
    assert feats.classes == ["daffodil"] * 2 + ["poinsettia"] * 2
    assert all((root / p).is_file() and p.split("/")[0] == c for p, c in zip(feats.sources, feats.classes))
    assert np.isfinite(feats.features).all() and (feats.features.std(axis=0) > 0).any()

    # eval-mode network: a photo's vector does not depend on the batch it was in (3 + 1 vs 4)
    together, _ = featurize_images(root, batch_size=4)
    np.testing.assert_allclose(together.features, feats.features, rtol=1e-3, atol=1e-4)


def test_no_readable_image_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError, match="none of the 1 files is a readable image"):
        featurize_images(tmp_path)
    with pytest.raises(DataError, match="no files in class folders"):
        featurize_images(tmp_path / "a")


def test_resnet_without_torchvision_says_how_to_install(tmp_path, capsys):
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision is installed here")
    except ImportError:
        pass
    (tmp_path / "a").mkdir()
    Image.new("RGB", (256, 256)).save(tmp_path / "a" / "x.png")
    code = cli.main(["featurize", "images", str(tmp_path), "--out", str(tmp_path / "o.npz"),
                     "--encoder", "torchvision:resnet101"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "pip install torchvision" in err and "torch hub cache" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_request_without_cuda_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no CUDA device"):
        featurize_texts(tmp_path / "missing.csv", device="cuda")


def test_descriptions_from_csv_and_json(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('class,text\ndaffodil,"Yellow, trumpet-shaped"\npoinsettia,red bracts\ndaffodil,spring bulb\n')
    assert read_description_rows(csv_file) == ([("daffodil", "Yellow, trumpet-shaped", ""),
                                                ("poinsettia", "red bracts", ""), ("daffodil", "spring bulb", "")], False)
    json_file = tmp_path / "d.json"
    json_file.write_text('{"daffodil": ["yellow", "spring bulb"], "poinsettia": "red bracts"}')
    assert read_description_rows(json_file) == ([("daffodil", "yellow", ""), ("daffodil", "spring bulb", ""),
                                                 ("poinsettia", "red bracts", "")], False)
    bad = {"h.csv": ("name,description\na,b\n", "class,text"), "e.csv": ("class,text\na,\n", "line 2"),
           "l.json": ('["a"]', "expected an object"), "v.json": ('{"a": []}', "class 'a'"),
           "d.txt": ("a b", ".csv")}
    for name, (content, message) in bad.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(DataError, match=message):
            read_description_rows(tmp_path / name)


def test_text_vectors_are_normalised_rows_that_keep_every_sentence(tmp_path):
    texts = tmp_path / "d.csv"
    texts.write_text("class,text\n"
                     "daffodil,A yellow daffodil with a trumpet-shaped corona.\n"
                     "daffodil,Daffodils have yellow petals around a trumpet.\n"
                     "poinsettia,A poinsettia plant with large bright red leaves.\n")
    out = tmp_path / "texts.npz"
    assert cli.main(["featurize", "texts", str(texts), "--out", str(out)]) == 0
    feats = Features.load(out, "texts")
    assert feats.features.shape == (3, 384) and feats.classes == ["daffodil", "daffodil", "poinsettia"]
    assert feats.sources[2].startswith("A poinsettia")
    np.testing.assert_allclose(np.linalg.norm(feats.features, axis=1), 1.0, atol=1e-5)
    sim = feats.features @ feats.features.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]  # same flower, closer sentences


def test_csv_image_column_is_optional(tmp_path):
    (tmp_path / "with.csv").write_text('class,text,image\nart,"an article",a1\nbio,"no photo",\n')
    (tmp_path / "without.csv").write_text('class,text\nart,"an article"\n')
    rows = [("art", "an article", "a1"), ("bio", "no photo", "")]
    assert read_description_rows(tmp_path / "with.csv") == (rows, True)
    assert read_description_rows(tmp_path / "without.csv") == ([("art", "an article", "")], False)
