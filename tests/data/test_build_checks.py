"""`data build` checks everything before the encoders load: each mistake is one line within a second."""
import pytest

from zscrgan.cli import main
from zscrgan.data import encoders


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """Three class folders of files never decoded: loading an encoder fails the test."""
    def no_encoder(*args, **kw):
        raise AssertionError("an encoder was loaded before the checks were done")
    monkeypatch.setattr(encoders, "load_image_encoder", no_encoder)
    monkeypatch.setattr(encoders, "load_text_encoder", no_encoder)
    for name in ("daisy", "rose", "tulip"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        (tmp_path / "photos" / name / "a.jpg").write_bytes(b"not decoded")
    (tmp_path / "texts.csv").write_text("class,text\ndaisy,white petals\nrose,red petals\ntulip,a cup\n")
    return tmp_path


def build(tmp, *extra):
    return main(["data", "build", "--images", str(tmp / "photos"), "--texts", str(tmp / "texts.csv"),
                 "--out", str(tmp / "out"), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("extra, message", [
    (["--unseen", "orchid"], "--unseen: no class named orchid"),
    ([], "give exactly one of --unseen CLASSES or --unseen_fraction F"),
    (["--unseen", "daisy,rose,tulip"], "need at least one seen and one unseen class"),
])
def test_unseen_choice_is_checked_before_encoding(photos, capsys, extra, message):
    assert build(photos, *extra) == 1
    assert message in one_line(capsys)


def test_a_one_class_folder_is_refused_before_encoding(photos, capsys):
    for name in ("rose", "tulip"):
        (photos / "photos" / name / "a.jpg").unlink()
    (photos / "texts.csv").write_text("class,text\ndaisy,white petals\n")
    assert build(photos, "--unseen_fraction", "0.5") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[:2] == [f"zscrgan: warning: {photos / 'photos' / n}: empty class folder, skipped" for n in ("rose", "tulip")]
    assert "need at least one seen and one unseen class" in err[-1] and len(err) == 3


def test_a_non_utf8_csv_names_the_encoding_flag_and_encoding_reads_it(photos, capsys):
    (photos / "texts.csv").write_bytes("class,text\ndaisy,p\xe9tales blancs\nrose,r\nt,t\n".encode("cp1252"))
    assert build(photos, "--unseen", "rose") == 1
    line = one_line(capsys)
    assert "texts.csv: not UTF-8 text (byte 0xe9" in line and "--encoding cp1252" in line
    assert build(photos, "--unseen", "rose", "--encoding", "cp1252") == 1  # read now; its class t has no photos
    assert "classes with text in" in one_line(capsys)


def test_an_unwritable_out_is_refused_before_encoding(photos, capsys):
    assert main(["data", "build", "--images", str(photos / "photos"), "--texts", str(photos / "texts.csv"),
                 "--out", "/proc/zscrgan_set", "--unseen", "rose"]) == 1
    assert "/proc: cannot write here" in one_line(capsys)
