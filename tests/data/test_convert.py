"""data convert --gazsl: files in exactly GAZSL's layout, converted value by value, trained, refused when bad.
(data build with texts per image, the WIKI route: tests/data/test_command.py.)"""
import hashlib
import json
import pickle
import struct

import numpy as np
import pytest
import scipy.io as sio
import scipy.sparse as sparse
from helpers import TINY

from zscrgan import cli
from zscrgan.data.convert import GAZSL_FILES, convert_gazsl, text_pca
from zscrgan.data.dataset import load_dataset, read_pickle
from zscrgan.errors import DataError

TEXT_ROWS, TEXT_DIM, IMAGE_DIM = 6, 9, 4
TRAIN_CID, TEST_CID = [5, 1, 3], [6, 2]  # class 4 has a text row but is in neither split
LABELS_TRAIN = [0, 1, 2, 0, 2, 1, 0]  # positions into TRAIN_CID
LABELS_TEST = [1, 0, 1, 1, 0]  # positions into TEST_CID


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for a numpy array: py2 str opcodes, numpy.core module."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        short = len(raw) < 256
        head = pickle.SHORT_BINSTRING + bytes([len(raw)]) if short else pickle.BINSTRING + struct.pack("<i", len(raw))
        self.write(head + raw)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = _save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", "").startswith("numpy._core"):
            self.write(pickle.GLOBAL + f"numpy.core.multiarray\n{name or obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[type] = save_global


def py2_pickle(path, array):
    with open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(array)


def write_gazsl(folder, bird="CUB", split="easy", rng=None, sparse_text=True, py2=True):
    """A GAZSL folder for (bird, split): 6 text rows, seen 5,1,3, unseen 6,2; returns the arrays written."""
    rng = rng or np.random.default_rng(0)
    text_name, split_name, feat_train, feat_test, labels_train, labels_test = GAZSL_FILES[bird, split]
    folder.mkdir(parents=True, exist_ok=True)
    text = rng.random((TEXT_ROWS, TEXT_DIM)) * (rng.random((TEXT_ROWS, TEXT_DIM)) < 0.5)  # sparse TF-IDF
    sio.savemat(folder / text_name, {"PredicateMatrix": sparse.csc_matrix(text) if sparse_text else text})
    # MATLAB shapes: a uint8 row vector and a double column vector
    sio.savemat(folder / split_name, {"train_cid": np.array([TRAIN_CID], np.uint8),
                                      "test_cid": np.array(TEST_CID, float)[:, None]})
    arrays = {"text": text}
    for feat, labels_file, labels in ((feat_train, labels_train, LABELS_TRAIN), (feat_test, labels_test, LABELS_TEST)):
        arrays[feat] = rng.normal(size=(len(labels), IMAGE_DIM))
        sio.savemat(folder / feat, {"pfc_feat": arrays[feat]})
        if py2:
            py2_pickle(folder / labels_file, np.array(labels, np.int64))
        else:
            (folder / labels_file).write_bytes(pickle.dumps(np.array(labels), protocol=2))
    return arrays


def test_py2_label_pickles_load_through_the_restricted_unpickler(tmp_path):
    py2_pickle(tmp_path / "l.pkl", np.array([3, 1, 2], np.int64))
    raw = (tmp_path / "l.pkl").read_bytes()
    assert b"numpy.core.multiarray" in raw and b"_codecs" not in raw  # what Python 2 wrote
    np.testing.assert_array_equal(read_pickle(tmp_path / "l.pkl"), [3, 1, 2])


def test_convert_gazsl_value_by_value_and_train(tmp_path, capsys):
    arrays = write_gazsl(tmp_path / "CUB2011")
    (tmp_path / "classes.txt").write_text("".join(f"{i} {i:03d}.Bird_{i}\n" for i in range(1, 7)))
    out = tmp_path / "datasets" / "CUB_SCS"
    assert cli.main(["data", "convert", "--gazsl", str(tmp_path / "CUB2011"), "--bird", "CUB", "--split", "easy",
                     "--out", str(out), "--classnames", str(tmp_path / "classes.txt")]) == 0
    data = load_dataset(out)
    assert data.seen == TRAIN_CID and data.unseen == TEST_CID
    assert data.classnames == {c: f"{c:03d}.Bird_{c}" for c in TRAIN_CID + TEST_CID}
    for cids, feat, labels in ((TRAIN_CID, "pfc_feat_train.mat", LABELS_TRAIN),
                               (TEST_CID, "pfc_feat_test.mat", LABELS_TEST)):
        for k, cid in enumerate(cids):
            rows = [i for i, label in enumerate(labels) if label == k]
            np.testing.assert_array_equal(data.images[cid], arrays[feat][rows].astype(np.float32))
            np.testing.assert_array_equal(data.texts[cid], arrays["text"][[cid - 1]].astype(np.float32))
    assert data.texts[1].dtype == np.float32 and 4 not in data.texts
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_name"] == "SCS" and manifest["text_pca"] is None
    assert set(manifest["files"]) == set(GAZSL_FILES["CUB", "easy"]) | {"classes.txt"}
    for name, entry in manifest["files"].items():
        source = (tmp_path / name) if name == "classes.txt" else tmp_path / "CUB2011" / name
        assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert "GAZSL's CUB easy release has 150/50" in capsys.readouterr().err

    assert cli.main(["data", "check", str(out)]) == 0
    assert "memory: about" in capsys.readouterr().out
    assert cli.main(["train", "--dataset", str(out), "--out_dir", str(tmp_path / "run"), *TINY,
                     "--eval_k", "2", "--epochs", "1"]) == 0
    summary = json.loads((tmp_path / "run" / "ckt_logs" / "CUB_SCS_logs" / "summary.json").read_text())
    assert summary["rounds"] == 1 and 0 <= summary["selected"]["test"]["prec@2"] <= 1


@pytest.mark.parametrize("bird,split", sorted(GAZSL_FILES))
def test_every_bird_and_split_reads_its_own_files(tmp_path, bird, split):
    write_gazsl(tmp_path / bird, bird, split, sparse_text=False, py2=False)
    data = convert_gazsl(tmp_path / bird, tmp_path / "out", bird, split)
    assert data.seen == TRAIN_CID and data.text_dim == TEXT_DIM
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["split_name"] == {"easy": "SCS", "hard": "SCE"}[split]


def test_text_pca_is_fit_on_seen_classes_only(tmp_path):
    write_gazsl(tmp_path / "a", rng=np.random.default_rng(5))
    one = convert_gazsl(tmp_path / "a", tmp_path / "o1", "CUB", "easy", pca=2)
    assert one.text_dim == 2 and json.loads((tmp_path / "o1" / "manifest.json").read_text())["text_pca"] == 2
    text = sio.loadmat(tmp_path / "a" / "CUB_Porter_7551D_TFIDF_new.mat")["PredicateMatrix"].toarray()
    seen = text[np.array(TRAIN_CID) - 1]
    _, _, axes = np.linalg.svd(seen - seen.mean(axis=0), full_matrices=False)
    for c in TRAIN_CID + TEST_CID:  # equal up to the sign of each axis
        expected = (text[c - 1] - seen.mean(axis=0)) @ axes[:2].T
        np.testing.assert_allclose(np.abs(one.texts[c][0]), np.abs(expected), atol=1e-5)
    # changing an unseen class's text changes nothing about the seen classes' projection
    text[TEST_CID[0] - 1] += 5.0
    sio.savemat(tmp_path / "a" / "CUB_Porter_7551D_TFIDF_new.mat", {"PredicateMatrix": text})
    two = convert_gazsl(tmp_path / "a", tmp_path / "o2", "CUB", "easy", pca=2)
    for c in TRAIN_CID:
        np.testing.assert_allclose(two.texts[c], one.texts[c], atol=1e-5)
    with pytest.raises(DataError, match=r"--text_pca 3: must be 1\.\.2"):
        text_pca(one.texts, TRAIN_CID, 3)


class _RunsCode:
    def __reduce__(self):
        import os
        return os.system, ("touch PWNED",)


def _break(folder, what):
    """Spoil one file of a good CUB easy folder; returns the file name the error must name."""
    if what == "missing key":
        sio.savemat(folder / "CUB_Porter_7551D_TFIDF_new.mat", {"Predicates": np.ones((6, 9))})
        return "CUB_Porter_7551D_TFIDF_new.mat: no PredicateMatrix (it has Predicates)"
    if what == "ids past the text matrix":
        sio.savemat(folder / "train_test_split_easy.mat", {"train_cid": np.array([[5, 1, 7]]), "test_cid": TEST_CID})
        return ("train_test_split_easy.mat: train_cid must lie in 1..6 (1-based, the 6 PredicateMatrix rows "
                "of CUB_Porter_7551D_TFIDF_new.mat), found 1..7")
    if what == "labels out of range":
        py2_pickle(folder / "labels_test.pkl", np.array([1, 0, 2, 1, 0]))
        return ("labels_test.pkl: labels must lie in 0..1 (0-based positions into the 2 test_cid "
                "of train_test_split_easy.mat), found 0..2")
    if what == "feature rows":
        sio.savemat(folder / "pfc_feat_train.mat", {"pfc_feat": np.ones((6, 4))})
        return "pfc_feat_train.mat: 6 pfc_feat rows but 7 labels in labels_train.pkl"
    if what == "pickle runs code":
        (folder / "labels_train.pkl").write_bytes(pickle.dumps(_RunsCode(), protocol=2))
        return "labels_train.pkl: refused: it references posix.system, which upstream's format never uses"
    if what == "overlap":
        sio.savemat(folder / "train_test_split_easy.mat", {"train_cid": TRAIN_CID, "test_cid": [6, 1]})
        return "train_test_split_easy.mat: class ids [1] are in both train_cid and test_cid"
    if what == "class without images":
        py2_pickle(folder / "labels_train.pkl", np.array([0, 1, 0, 0, 1, 1, 0]))
        return "labels_train.pkl: no images for class ids [3] of train_cid"
    if what == "missing file":
        (folder / "pfc_feat_test.mat").unlink()
        return "pfc_feat_test.mat: file not found"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["missing key", "ids past the text matrix", "labels out of range", "feature rows",
                                  "pickle runs code", "overlap", "class without images", "missing file"])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, monkeypatch, what):
    monkeypatch.chdir(tmp_path)
    write_gazsl(tmp_path / "g")
    message = _break(tmp_path / "g", what)
    out = tmp_path / "datasets" / "X"
    assert cli.main(["data", "convert", "--gazsl", str(tmp_path / "g"), "--bird", "CUB", "--split", "easy",
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(message), err
    assert not out.exists() and not (tmp_path / "PWNED").exists()


def test_classnames_must_cover_every_class(tmp_path):
    write_gazsl(tmp_path / "g")
    (tmp_path / "names.json").write_text(json.dumps({str(c): f"bird {c}" for c in (1, 2, 3, 5)}))
    with pytest.raises(DataError, match=r"names\.json: no name for class ids \[6\]"):
        convert_gazsl(tmp_path / "g", tmp_path / "o", "CUB", "easy", classnames=tmp_path / "names.json")
    (tmp_path / "names.txt").write_text("\n".join(f"Bird {c}" for c in range(1, 7)))  # line n = class n
    data = convert_gazsl(tmp_path / "g", tmp_path / "o", "CUB", "easy", classnames=tmp_path / "names.txt")
    assert data.classnames[6] == "Bird 6" and not (tmp_path / "o" / "classnames.json").read_text().count("Bird 4")


def test_convert_flags_belong_to_their_source(tmp_path, capsys):
    for args, message in [(["--gazsl", "g", "--bird", "CUB"], "--gazsl needs --bird CUB|NAB and --split easy|hard"),
                          (["--xlsa17", "x", "--text_pca", "8"], "go with --gazsl, not --xlsa17"),
                          (["--xlsa17", "x", "--gazsl", "g"], "not allowed with argument")]:
        with pytest.raises(SystemExit):
            cli.main(["data", "convert", *args, "--out", str(tmp_path / "o")])
        assert message in capsys.readouterr().err
