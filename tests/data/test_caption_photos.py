"""caption_photos.npz: which photo each text describes, beside the four pickles."""
import io

import numpy as np
import pytest

from zscrgan.data.command import split_dataset
from zscrgan.data.dataset import TEXT_PHOTOS_FILE, ZeroShotData, load_dataset, save_dataset
from zscrgan.errors import DataError


def tied_set(folder, text_photos=True):
    texts = {1: np.eye(4, dtype=np.float32)[:3], 2: np.eye(4, dtype=np.float32)[1:], 3: np.ones((2, 4), np.float32)}
    images = {c: np.arange(6 * c, dtype=np.float32).reshape(-1, 3) + 1 for c in texts}  # 2, 4, 6 images
    ties = {1: np.array([0, 0, 1]), 2: np.array([3, -1, 2]), 3: np.array([5, 4])} if text_photos else None
    return save_dataset(ZeroShotData(texts, images, [1, 2], [3], "tied", text_photos=ties), folder)


def test_the_ties_round_trip_and_split_keeps_them(tmp_path):
    data = load_dataset(tied_set(tmp_path / "a"))
    assert {c: rows.tolist() for c, rows in data.text_photos.items()} == {1: [0, 0, 1], 2: [3, -1, 2], 3: [5, 4]}
    split_dataset(tmp_path / "a", "1", tmp_path / "b")
    split = load_dataset(tmp_path / "b")
    assert split.unseen == [1] and split.text_photos[2].tolist() == [3, -1, 2]
    assert load_dataset(tmp_path / "a", splits=("seen",)).text_photos.keys() == {1, 2}


def test_a_set_without_ties_has_none_and_a_stale_file_is_removed(tmp_path):
    tied_set(tmp_path / "a")
    tied_set(tmp_path / "a", text_photos=False)
    assert not (tmp_path / "a" / TEXT_PHOTOS_FILE).exists() and load_dataset(tmp_path / "a").text_photos is None


def rewrite(folder, **arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (folder / TEXT_PHOTOS_FILE).write_bytes(buf.getvalue())


@pytest.mark.parametrize("arrays, message", [
    (dict(), "no entry for class 1"),
    ({"1": [0, 0], "2": [0, 0, 0], "3": [0, 0]}, "class 1 needs one whole number per text (3), got shape (2,)"),
    ({"1": [0.0, 0, 1], "2": [0, 0, 0], "3": [0, 0]}, "class 1 needs one whole number per text"),
    ({"1": [0, 0, 1], "2": [0, 0, 4], "3": [0, 0]}, "class 2 names image rows 0..4, outside -1..3"),
    ({"1": [0, -2, 1], "2": [0, 0, 0], "3": [0, 0]}, "class 1 names image rows -2..1, outside -1..1"),
])
def test_bad_ties_are_one_line_naming_the_file(tmp_path, arrays, message):
    folder = tied_set(tmp_path / "a")
    rewrite(folder, **{k: np.array(v) for k, v in arrays.items()})
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert str(err.value).startswith(f"{folder / TEXT_PHOTOS_FILE}: ") and message in str(err.value)


def test_a_pickled_object_array_is_refused_not_loaded(tmp_path):
    folder = tied_set(tmp_path / "a")
    rewrite(folder, **{"1": np.array([object()] * 3)})
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(folder)
