"""The upstream-format loader: accepted shapes, Python 2 pickles, and every refusal by message."""
import os
import pickle

import numpy as np
import pytest
from helpers import caption_data

from zscrgan.data import dataset as data_module
from zscrgan.data.dataset import ZeroShotData, load_dataset, save_dataset, split_validation
from zscrgan.errors import DataError


def write_set(folder, texts, images, seen, unseen, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in (("txt_embed_dict.pkl", texts), ("image_embed_dict.pkl", images),
                      ("trainids.pkl", seen), ("testids.pkl", unseen)):
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
    return folder


def good_parts():
    rng = np.random.default_rng(0)
    texts = {c: rng.normal(size=(2, 4)) for c in (1, 2, 3)}
    images = {c: rng.random(size=(5, 6)).astype(np.float16) for c in (1, 2, 3)}
    return texts, images, [1, 2], [3]


def test_arrays_and_lists_load_the_same(tmp_path):
    texts, images, seen, unseen = good_parts()
    a = load_dataset(write_set(tmp_path / "a", texts, images, seen, unseen))
    as_lists = {c: [row for row in v] for c, v in images.items()}
    b = load_dataset(write_set(tmp_path / "b", texts, as_lists, seen, unseen))
    for c in (1, 2, 3):
        assert a.images[c].dtype == np.float32 and a.texts[c].dtype == np.float32
        np.testing.assert_array_equal(a.images[c], b.images[c])
        np.testing.assert_array_equal(a.images[c], images[c].astype(np.float32))
    assert (a.text_dim, a.image_dim) == (4, 6)


def test_extra_classes_are_ignored_and_ints_of_any_kind_work(tmp_path):
    texts, images, seen, unseen = good_parts()
    texts[99], images[99] = np.zeros((1, 4)), np.zeros((1, 6))
    data = load_dataset(write_set(tmp_path / "s", texts, images, seen, np.array(unseen)))
    assert sorted(data.images) == [1, 2, 3] and data.unseen == [3]


def py2_array_pickle(arr: np.ndarray) -> bytes:
    """Protocol-2 opcodes as Python 2's cPickle writes a float64 array: its bytes as a str."""
    import struct

    shape = b"".join(b"K" + bytes([n]) for n in arr.shape)
    data = arr.astype("<f8").tobytes()
    return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R("
            b"K\x01(" + shape + b"tcnumpy\ndtype\nU\x02f8K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xff"
            b"J\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<I", len(data)) + data + b"tb.")


def test_python2_pickle_needs_latin1_and_loads(tmp_path):
    arr = np.arange(6, dtype=np.float64).reshape(2, 3) + 0.5
    blob = py2_array_pickle(arr)
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(blob)  # Python 3's default ASCII decoding fails, as with the authors' files
    folder = write_set(tmp_path / "p", {7: [[1.0, 2.0]], 8: [[3.0, 4.0]]}, {}, [7], [8])
    # a dict {7: arr, 8: arr} in Python 2 form: EMPTY_DICT, MARK, key, value, ..., SETITEMS
    body = blob[2:-1]
    (folder / "image_embed_dict.pkl").write_bytes(b"\x80\x02}(K\x07" + body + b"K\x08" + body + b"u.")
    data = load_dataset(folder)
    np.testing.assert_array_equal(data.images[8], arr.astype(np.float32))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    texts, images, seen, unseen = good_parts()
    folder = write_set(tmp_path / "m", texts, images, seen, unseen)
    (folder / "txt_embed_dict.pkl").write_bytes(pickle.dumps({1: Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"txt_embed_dict.pkl: refused: it references (posix|os)\.system"):
        load_dataset(folder)
    assert not marker.exists()


def replace_file(folder, name, payload):
    (folder / name).write_bytes(payload)
    return folder


BAD_CASES = {
    "missing folder": (lambda f: f / "nope", r"nope: data set folder not found"),
    "missing file": (lambda f: (f / "testids.pkl").unlink() or f, r"testids.pkl: file not found"),
    "truncated": (lambda f: replace_file(f, "image_embed_dict.pkl", (f / "image_embed_dict.pkl").read_bytes()[:50]),
                  r"image_embed_dict.pkl: truncated or corrupt pickle"),
    "foreign": (lambda f: replace_file(f, "trainids.pkl", b"hello world, not a pickle"),
                r"trainids.pkl: truncated or corrupt pickle"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_files_refused_by_message(tmp_path, case):
    texts, images, seen, unseen = good_parts()
    folder = write_set(tmp_path / "d", texts, images, seen, unseen)
    mangle, message = BAD_CASES[case]
    with pytest.raises(DataError, match=message):
        load_dataset(mangle(folder))


def bad_content(case):
    texts, images, seen, unseen = good_parts()
    if case == "class missing from dict":
        del images[2]
        return texts, images, seen, unseen, r"image_embed_dict.pkl: class 2 .* is missing"
    if case == "overlap":
        return texts, images, [1, 2], [2, 3], r"testids.pkl: classes \[2\] are also in trainids.pkl"
    if case == "empty class":
        texts[3] = []
        return texts, images, seen, unseen, r"txt_embed_dict.pkl: class 3 has no text vectors"
    if case == "ragged vectors":
        images[1] = [np.ones(6), np.ones(5)]
        return texts, images, seen, unseen, r"image_embed_dict.pkl: class 1 has image vectors of different lengths"
    if case == "dims differ between classes":
        images[3] = np.ones((2, 7))
        return texts, images, seen, unseen, r"image_embed_dict.pkl: class 3 has image vectors of length 7, others have 6"
    if case == "nan":
        images[2] = images[2].astype(np.float32)
        images[2][1, 1] = np.nan
        return texts, images, seen, unseen, r"image_embed_dict.pkl: class 2 has NaN or infinite image values"
    if case == "inf":
        texts[1] = texts[1].copy()
        texts[1][0, 0] = np.inf
        return texts, images, seen, unseen, r"txt_embed_dict.pkl: class 1 has NaN or infinite text values"
    if case == "not a dict":
        return [1, 2], images, seen, unseen, r"txt_embed_dict.pkl: expected a dict"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["class missing from dict", "overlap", "empty class", "ragged vectors",
                                  "dims differ between classes", "nan", "inf", "not a dict"])
def test_bad_content_refused_by_message(tmp_path, case):
    *parts, message = bad_content(case)
    with pytest.raises(DataError, match=message):
        load_dataset(write_set(tmp_path / "d", *parts))


def test_seen_only_load_never_checks_unseen_vectors(tmp_path):
    texts, images, seen, unseen = good_parts()
    images[3] = np.full((5, 6), np.nan)
    folder = write_set(tmp_path / "d", texts, images, seen, unseen)
    data = load_dataset(folder, splits=("seen",))
    assert sorted(data.images) == [1, 2]
    with pytest.raises(DataError, match="NaN"):
        load_dataset(folder)


def test_save_then_load_round_trip(tmp_path):
    texts, images, seen, unseen = good_parts()
    data = ZeroShotData({c: v.astype(np.float32) for c, v in texts.items()},
                        {c: v.astype(np.float32) for c, v in images.items()}, seen, unseen, "x", {1: "one"})
    back = load_dataset(save_dataset(data, tmp_path / "x"))
    assert back.classnames == {1: "one"} and back.seen == seen and back.unseen == unseen
    for c in (1, 2, 3):
        np.testing.assert_array_equal(back.images[c], data.images[c])


def test_split_validation_is_seeded_and_disjoint():
    data = ZeroShotData({}, {}, list(range(10)), [10, 11])
    train, val = split_validation(data, 0.2, seed=3)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(10))
    assert split_validation(data, 0.2, seed=3) == (train, val)


def test_flo_loads(flo_dir):
    data = load_dataset(flo_dir)
    assert (len(data.seen), len(data.unseen), data.image_dim, data.text_dim) == (82, 20, 1280, 1024)
    assert sum(len(v) for v in data.images.values()) == 8189
    assert data.classnames[1] == "pink primrose"


def test_texts_that_would_not_fit_in_memory_are_refused_in_one_line(tmp_path, monkeypatch):
    data = caption_data()
    folder = write_set(tmp_path / "big", data.texts, data.images, data.seen, data.unseen)
    need = 4 * sum(t.size for t in data.texts.values())
    monkeypatch.setattr(data_module, "available_memory", lambda: need - 1)
    with pytest.raises(DataError, match=r"txt_embed_dict.pkl: the text vectors need .* GiB as float32, more than"):
        load_dataset(folder)
    monkeypatch.setattr(data_module, "available_memory", lambda: 10 * need)
    assert load_dataset(folder).many_texts


def test_caption_rows_of_different_width_or_with_nan_are_refused(tmp_path):
    data = caption_data()
    texts = dict(data.texts)
    texts[3] = np.zeros((4, 7), np.float32)
    with pytest.raises(DataError, match="txt_embed_dict.pkl: class 3 has text vectors of length 7, others have 6"):
        load_dataset(write_set(tmp_path / "wide", texts, data.images, data.seen, data.unseen))
    texts = dict(data.texts)
    texts[4] = texts[4].copy()
    texts[4][2, 1] = np.nan
    with pytest.raises(DataError, match="txt_embed_dict.pkl: class 4 has NaN or infinite text values"):
        load_dataset(write_set(tmp_path / "nan", texts, data.images, data.seen, data.unseen))
