"""`data build --captions`: the archives' layouts read right, and every layout error one line naming
the file, before an encoder loads (the replicas are tests/archives.py's)."""
import numpy as np
import pytest
from archives import CUB_CLASSES, caption_lines, cub, flowers
from scipy.io import savemat

from zscrgan.cli import main
from zscrgan.data import encoders
from zscrgan.data.captions import caption_rows, labelled_photos
from zscrgan.data.photos import class_files


@pytest.fixture
def no_encoders(monkeypatch):
    def no_encoder(*args, **kw):
        raise AssertionError("an encoder was loaded before the checks were done")
    monkeypatch.setattr(encoders, "load_image_encoder", no_encoder)
    monkeypatch.setattr(encoders, "load_text_encoder", no_encoder)


@pytest.fixture
def flo(tmp_path, no_encoders):
    return flowers(tmp_path / "flo")


def build(paths, tmp_path, *extra, split=True, labels=True, captions=None):
    argv = ["data", "build", "--images", str(paths["images"]), "--captions", str(captions or paths["captions"]),
            "--out", str(tmp_path / "out")]
    if labels:
        argv += ["--labels", str(paths["labels"])]
    if split:
        argv += ["--seen_classes", str(paths["seen"]), "--unseen_classes", str(paths["unseen"])]
    return main(argv + list(extra))


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_labels_give_each_photo_its_class_in_name_order(flo):
    photos = labelled_photos(flo["images"], flo["labels"])
    assert photos == [(f"class_{label:05d}", f"image_{n:05d}.jpg") for n, label in enumerate(flo["labels_of_photos"], 1)]


def test_caption_files_are_read_photo_by_photo_each_line_a_caption(flo):
    photos = labelled_photos(flo["images"], flo["labels"])
    rows = caption_rows(flo["captions"], photos, flo["images"])
    expected = [(cls, line, rel) for n, (cls, rel) in enumerate(photos, 1)
                for line in caption_lines(int(cls[6:]), n)]
    assert list(zip(rows.classes, rows.sources, rows.images)) == expected
    assert len(rows.sources) == 10 * len(photos)


def test_cub_folders_pair_photo_and_caption_by_relative_path(tmp_path):
    paths = cub(tmp_path)
    photos = class_files(paths["images"])
    rows = caption_rows(paths["captions"], photos, paths["images"])
    assert sorted(set(rows.classes)) == sorted(CUB_CLASSES) and len(rows.sources) == 10 * 3 * len(CUB_CLASSES)
    first = photos[0][1]  # 001.Black_footed_Albatross/Black_footed_Albatross_0001_796000.jpg
    assert rows.images[:10] == [first] * 10 and rows.sources[:10] == caption_lines(0, 0)


def test_empty_lines_are_not_captions(flo):
    (flo["captions"] / "class_00003" / "image_00001.txt").write_text("\n  a white one \n\n\tpink  petals\n")
    rows = caption_rows(flo["captions"], labelled_photos(flo["images"], flo["labels"]), flo["images"])
    assert rows.sources[:2] == ["a white one", "pink petals"] and rows.images[2] == "image_00002.jpg"


def test_a_caption_csv_names_photos_by_path_or_file_name(tmp_path):
    paths = cub(tmp_path)
    photos = class_files(paths["images"])
    (tmp_path / "c.csv").write_text("path,caption\n" + "".join(
        f"{rel.split('/')[1] if k % 2 else rel},caption {k} of {rel}\n" for k, (_, rel) in reversed(list(enumerate(photos)))))
    rows = caption_rows(tmp_path / "c.csv", photos, paths["images"])
    assert rows.images == [rel for _, rel in photos]  # grouped in photo order, whatever the CSV's order
    assert rows.sources == [f"caption {k} of {rel}" for k, (_, rel) in enumerate(photos)]


def test_a_missing_caption_file_is_named(flo, tmp_path, capsys):
    (flo["captions"] / "class_00001" / "image_00006.txt").unlink()
    assert build(flo, tmp_path) == 1
    line = one_line(capsys)
    assert f"{flo['captions'] / 'class_00001' / 'image_00006.txt'}: no caption file for the photo " \
           f"{flo['images'] / 'image_00006.jpg'} of class 'class_00001'" in line


def test_a_caption_file_in_the_wrong_class_folder_is_named(flo, tmp_path, capsys):
    moved = flo["captions"] / "class_00002" / "image_00006.txt"
    (flo["captions"] / "class_00001" / "image_00006.txt").rename(moved)
    assert build(flo, tmp_path) == 1
    assert f"; {moved} is in another class folder" in one_line(capsys)


def test_a_caption_file_without_a_photo_is_named(flo, tmp_path, capsys):
    (flo["images"] / "image_00015.jpg").unlink()
    savemat(flo["labels"], {"labels": np.array([flo["labels_of_photos"][:-1]])})
    assert build(flo, tmp_path) == 1
    assert f"{flo['captions'] / 'class_00005' / 'image_00015.txt'}: a caption file of no photo" in one_line(capsys)


def test_a_photo_without_captions_is_named(flo, tmp_path, capsys):
    (flo["captions"] / "class_00004" / "image_00005.txt").write_text("\n \n")
    assert build(flo, tmp_path) == 1
    assert f"{flo['captions'] / 'class_00004' / 'image_00005.txt'}: no captions (every line is empty)" in one_line(capsys)


def test_a_caption_file_not_in_the_encoding_names_the_flag(flo, tmp_path, capsys):
    (flo["captions"] / "class_00004" / "image_00005.txt").write_bytes("p\xe9tales\n".encode("cp1252"))
    assert build(flo, tmp_path) == 1
    line = one_line(capsys)
    assert "image_00005.txt: not UTF-8 text (byte 0xe9" in line and "--encoding cp1252" in line


def test_a_labels_count_mismatch_is_named(flo, tmp_path, capsys):
    savemat(flo["labels"], {"labels": np.array([flo["labels_of_photos"][:-1]])})
    assert build(flo, tmp_path) == 1
    assert one_line(capsys).endswith(f": {flo['labels']}: 14 labels for the 15 photos in {flo['images']} "
                                f"(label n is the class of the n-th photo in name order)")


@pytest.mark.parametrize("seen, unseen, message", [
    ("class_00001\nclass_00003\nclass_00004\n", "class_00002\nclass_00099\n",
     "testclasses.txt: no photos of the class class_00099"),
    ("class_00001\nclass_00003\nclass_00004\nclass_00002\n", "class_00002\nclass_00005\n",
     "trainvalclasses.txt: class_00002 also in"),
    ("class_00001\nclass_00003\n", "class_00002\nclass_00005\n",
     "trainvalclasses.txt: classes in neither it nor"),
    ("class_00001\nclass_00001\n", "class_00002\n", "trainvalclasses.txt: lists class_00001 twice"),
])
def test_class_lists_are_checked(flo, tmp_path, capsys, seen, unseen, message):
    flo["seen"].write_text(seen)
    flo["unseen"].write_text(unseen)
    assert build(flo, tmp_path) == 1
    assert message in one_line(capsys)


@pytest.mark.parametrize("extra, message", [
    (["--unseen", "class_00002"], "give --unseen_classes FILE or --unseen / --unseen_fraction, not both"),
    (["--texts", "t.csv"], "give exactly one of --texts FILE or --captions DIR|CSV"),
])
def test_conflicting_flags_are_refused(flo, tmp_path, capsys, extra, message):
    assert build(flo, tmp_path, *extra) == 1
    assert message in one_line(capsys)


def test_seen_classes_alone_and_labels_with_an_npz_are_refused(flo, tmp_path, capsys):
    assert build(flo, tmp_path, "--seen_classes", str(flo["seen"]), split=False) == 1
    assert "--seen_classes FILE goes with --unseen_classes FILE" in one_line(capsys)
    flo["images"] = tmp_path / "images.npz"
    flo["images"].write_bytes(b"")
    assert build(flo, tmp_path) == 1
    assert f"{flo['labels']}: --labels goes with a folder of photos" in one_line(capsys)


def test_a_missing_labels_file_or_caption_folder_is_named(flo, tmp_path, capsys):
    assert build(flo, tmp_path, captions=tmp_path / "nowhere") == 1
    assert f"{tmp_path / 'nowhere'}: --captions must be a folder" in one_line(capsys)
    flo["labels"].unlink()
    assert build(flo, tmp_path) == 1
    assert one_line(capsys).endswith(f": {flo['labels']}: file not found")
    assert build(flo, tmp_path, labels=False) == 1  # a flat folder without labels has no classes
    assert f"{flo['images']}: no files in class folders" in one_line(capsys)


@pytest.mark.parametrize("csv_text, message", [
    ("file,caption\nx,y\n", "expected a CSV header with columns path,caption"),
    ("path,caption\nno_such.jpg,a bird\n", "line 2 names 'no_such.jpg', and"),
    ("path,caption\n{first},\n", "line 2 has an empty path or caption"),
    ("path,caption\n{first},a bird\n", "no caption for the photo"),
])
def test_caption_csv_errors_name_the_file(tmp_path, no_encoders, capsys, csv_text, message):
    paths = cub(tmp_path)
    first = class_files(paths["images"])[0][1]
    (tmp_path / "c.csv").write_text(csv_text.format(first=first))
    assert build(paths, tmp_path, labels=False, captions=tmp_path / "c.csv") == 1
    line = one_line(capsys)
    assert f": {tmp_path / 'c.csv'}: " in line and message in line
