"""`zscrgan index` and `zscrgan search` on the shared flower photos: incremental, resumable, bad input."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("efficientnet_lite_pytorch")
from flowerkit import ORCHID, flower_run  # noqa: E402

from zscrgan.cli import main as cli  # noqa: E402
from zscrgan.errors import DataError, UserError  # noqa: E402
from zscrgan.search import photostore as ps  # noqa: E402
from zscrgan.search.index import build_index  # noqa: E402
from zscrgan.search.reader import IndexReader  # noqa: E402

CLASSES = ("hard-leaved_pocket_orchid", "daffodil")


@pytest.fixture(scope="module")
def setup():
    return flower_run()


@pytest.fixture
def photos(setup, tmp_path):
    """A copy of two classes' photos (12), so tests can add, change and delete files."""
    src = setup[0]
    out = tmp_path / "photos"
    for cls in CLASSES:
        shutil.copytree(src / cls, out / cls)
    return out


def table(index_dir):
    with sqlite3.connect(index_dir / ps.DB) as conn:
        return {row[0]: row[1:] for row in conn.execute("SELECT path, id, sha256, class FROM photos")}


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_index_then_search_every_way(setup, photos, tmp_path, capsys):
    _, _, run = setup
    out = tmp_path / "idx"
    assert cli(["index", "--run", str(run), "--images", str(photos), "--out", str(out)]) == 0
    manifest = json.loads((out / ps.MANIFEST).read_text())
    assert manifest["state"] == "ready" and manifest["counts"]["photos"] == 12 and manifest["kind"] == "exact"
    assert manifest["image_encoder"] == "efficientnet-lite0" and len(manifest["run"]["checkpoint_sha256"]) == 64
    rows = table(out)
    assert {r[2] for r in rows.values()} == set(CLASSES)
    capsys.readouterr()

    assert cli(["search", str(out), "-k", "3", "--json", ORCHID]) == 0  # flags before the text, as users type
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["class"] == "hard-leaved_pocket_orchid"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    assert cli(["search", str(out), ORCHID, "-k", "2", "--paths"]) == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 2 and all(Path(p).is_file() for p in paths)

    like = sorted(rows)[0]
    assert cli(["search", str(out), "--like", str(photos / like), "-k", "4", "--paths"]) == 0
    found = capsys.readouterr().out.split()
    assert len(found) == 4 and str(photos / like) not in found

    lines = "red petals\nA slipper orchid with a pink pouch\n"
    proc = subprocess.run([sys.executable, "-m", "zscrgan.cli", "search", str(out), "-k", "2"], input=lines,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("nearest training classes:") == 2  # one block per line of stdin, each with explanations
    assert "Loading weights" not in proc.stderr  # the sentence encoder loads without a library progress bar

    reader = IndexReader(out, load_model=False)
    why = reader.explain(reader.embed_class("hard-leaved_pocket_orchid"))[0]
    assert len(why) == 3 and why[0]["name"] == "hard-leaved_pocket_orchid"  # a seen class is nearest itself
    assert all(reader.seen[reader.class_ids.index(e["class_id"])] for e in why)


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_incremental_rerun_embeds_only_changes(setup, photos, tmp_path, capsys):
    _, _, run = setup
    out = tmp_path / "idx"
    build_index(run, photos, out)
    before = table(out)
    daffodils = sorted((photos / "daffodil").iterdir())
    daffodils[0].unlink()  # deleted
    changed = photos / "hard-leaved_pocket_orchid" / sorted(os.listdir(photos / "hard-leaved_pocket_orchid"))[0]
    from PIL import Image
    with Image.open(changed) as im:
        im.rotate(90, expand=True).save(changed, "JPEG")  # changed content, same path
    new = photos / "daffodil" / "copy.jpg"
    shutil.copy(daffodils[1], new)  # added
    capsys.readouterr()
    manifest = build_index(run, photos, out, kind="ivf")
    line = capsys.readouterr().out
    assert "2 embedded" in line and "1 dropped" in line, line
    after = table(out)
    rel = lambda p: p.relative_to(photos).as_posix()  # noqa: E731
    assert rel(daffodils[0]) not in after and rel(new) in after
    assert after[rel(changed)][0] == before[rel(changed)][0]  # same id
    assert after[rel(changed)][1] != before[rel(changed)][1]  # new hash
    assert manifest["counts"]["photos"] == 12 and manifest["kind"] == "ivf"
    reader = IndexReader(out, load_model=False)
    assert reader.kind == "ivf" and len(reader.index) == 12
    capsys.readouterr()
    build_index(run, photos, out, kind="ivf")  # nothing changed: nothing embedded
    assert "0 embedded" in capsys.readouterr().out


def write_bad_files(folder: Path) -> dict:
    from PIL import Image

    good = sorted((folder / "daffodil").iterdir())[0].read_bytes()
    bad = folder / "junk"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    (bad / "notes").write_text("not a photo\n")  # no suffix: tried as a photo, refused
    (bad / "notes.txt").write_text("not a photo\n")  # named as a document: not a photo, left out quietly
    Image.new("L", (8000, 6250)).save(bad / "huge.png", optimize=False)  # 50 MP, a small file
    return {f"junk/{n}" for n in ("empty.jpg", "truncated.jpg", "corrupt.jpg", "notes", "huge.png")}


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_bad_photos_are_skipped_with_one_warning_each(setup, photos, tmp_path, capsys):
    _, _, run = setup
    bad = write_bad_files(photos)
    out = tmp_path / "idx"
    manifest = build_index(run, photos, out)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning: skipped" in line]
    assert len(warnings) == 5 and "empty file" in err and "50 MP" in err
    assert manifest["counts"] == {"photos": 12, "skipped": 5, "classes": 10, "known_class": 12}
    with sqlite3.connect(out / ps.DB) as conn:
        assert {r[0] for r in conn.execute("SELECT path FROM skipped")} == bad
    build_index(run, photos, out)  # unchanged bad files are not retried or warned about again
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_refusals_are_one_line(setup, photos, tmp_path):
    photos_dir, dataset, run = setup
    out = tmp_path / "idx"
    build_index(run, photos, out)
    other = tmp_path / "other_logs"  # a different run: same data set, other weights
    shutil.copytree(run, other)
    import torch
    state = torch.load(other / "best.pt", weights_only=True)
    state["trainer"]["model"]["csem.fc.bias"] += 1.0
    torch.save(state, other / "best.pt")
    with pytest.raises(DataError, match=r"built from .* not .*other_logs's .*best.pt .*use a new --out folder"):
        build_index(other, photos, out)
    with pytest.raises(DataError, match="indexes .* use a new --out"):
        build_index(run, photos_dir, out)
    with pytest.raises(DataError, match="does not match .* image featurizer efficientnet-lite0"):
        build_index(run, photos, tmp_path / "x", encoder="torchvision:resnet101")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not an index folder"):
        build_index(run, photos, tmp_path / "stuff")
    (tmp_path / "nothing_logs").mkdir()
    with pytest.raises(DataError, match="checkpoint not found"):
        build_index(tmp_path / "nothing_logs", photos, tmp_path / "y")
    # a deleted checkpoint: search by text refuses, naming it
    (other / "best.pt").unlink()
    manifest = json.loads((out / ps.MANIFEST).read_text())
    manifest["run"].update(checkpoint=str(other / "best.pt"), run=str(other))
    (out / ps.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="best.pt: checkpoint not found"):
        IndexReader(out)
    for argv, pattern in (([str(out), "   "], "empty query"), ([str(out), "x", "-k", "0"], "1..1000"),
                          ([str(out), "x", "-k", "1001"], "1..1000"), ([str(tmp_path), "x"], "not an index folder")):
        with pytest.raises(DataError, match=pattern):
            from zscrgan.search.reader import main as search_main
            search_main(argv)


def test_flo_has_no_free_text_but_takes_class_ids(flo_dir, tmp_path):
    """A set whose texts no shipped featurizer made: free text is refused with the reason."""
    from zscrgan.search.trained import TrainedRun

    run = TrainedRun.__new__(TrainedRun)
    run.dataset_dir, run.dataset_manifest = flo_dir, {}
    with pytest.raises(DataError, match="not by a featurizer shipped here.*--class_id"):
        run.encode_texts(["a red rose"])


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_second_index_run_refuses_naming_the_holder(setup, photos, tmp_path):
    _, _, run = setup
    out = tmp_path / "idx"
    with ps.folder_lock(out, "zscrgan index"):
        with pytest.raises(UserError, match=rf"another zscrgan index \(PID {os.getpid()}\)"):
            build_index(run, photos, out)


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_resumes_after_kill_9(setup, photos, tmp_path):
    """kill -9 mid-run, then rerun: committed photos are not redone, the folder stays readable."""
    _, _, run = setup
    out = tmp_path / "idx"
    argv = [sys.executable, "-m", "zscrgan.cli", "index", "--run", str(run), "--images", str(photos),
            "--out", str(out), "--batch_size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline, done = time.monotonic() + 120, 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / ps.DB).is_file():
            try:
                with sqlite3.connect(f"file:{out / ps.DB}?mode=ro", uri=True) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 4:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 4 <= done < 12, f"{done} photos committed before the kill"
    assert json.loads((out / ps.MANIFEST).read_text())["state"] == "indexing"
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)
    assert again.returncode == 0, again.stderr
    embedded = int(again.stdout.split(" embedded")[0].rsplit(" ", 1)[1])
    assert embedded <= 12 - 4, again.stdout
    reader = IndexReader(out, load_model=False)
    assert len(reader.index) == 12 and reader.manifest["state"] == "ready"
    assert np.isfinite(reader.class_emb).all()


def test_a_photo_folder_names_its_class_whatever_the_separators():
    from zscrgan.data.photos import class_lookup, known_class

    lookup = class_lookup(["english marigold", "hard-leaved pocket orchid", "daffodil"])
    assert known_class("english_marigold/a.jpg", lookup) == "english marigold"
    assert known_class("Hard-Leaved_Pocket_Orchid/b/c.jpg", lookup) == "hard-leaved pocket orchid"
    assert known_class("daffodil/x.jpg", lookup) == "daffodil"
    assert known_class("tulip/x.jpg", lookup) is None and known_class("daffodil.jpg", lookup) is None


def test_the_photo_table_carries_its_schema_version(tmp_path):
    from zscrgan.search import photostore as ps

    ps.connect(tmp_path).close()
    db = tmp_path / ps.DB
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == ps.SCHEMA_VERSION
    old = tmp_path / "old"  # a table written before versions were kept: read, and stamped by the next writer
    old.mkdir()
    conn = sqlite3.connect(old / ps.DB)
    conn.executescript(ps.SCHEMA)
    conn.close()
    ps.connect(old, readonly=True).close()
    ps.connect(old).close()
    assert sqlite3.connect(old / ps.DB).execute("PRAGMA user_version").fetchone()[0] == ps.SCHEMA_VERSION
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {ps.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    for readonly in (True, False):
        with pytest.raises(DataError, match=rf"photos.sqlite: photo table of schema version {ps.SCHEMA_VERSION + 1}, "
                                            "newer than this zscrgan reads"):
            ps.connect(tmp_path, readonly=readonly)


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_a_name_that_is_not_utf8_is_indexed_kept_and_shown_safely(setup, photos, tmp_path, capsys):
    """One photo named b'bad\\xffname.jpg' made every index run fail (UnicodeEncodeError; issue 28, 1)."""
    _, _, run = setup
    odd = os.fsencode(photos / "daffodil") + b"/bad\xffname.jpg"
    os.rename(sorted((photos / "daffodil").iterdir())[0], odd)
    out = tmp_path / "idx"
    assert cli(["index", "--run", str(run), "--images", str(photos), "--out", str(out)]) == 0
    assert "12 photos indexed" in capsys.readouterr().out
    with sqlite3.connect(out / ps.DB) as conn:  # the name's own bytes, not a lossy replacement
        assert b"daffodil/bad\xffname.jpg" in [r[0] for r in conn.execute("SELECT path FROM photos")]
    reader = IndexReader(out, load_model=False)
    odd_id = reader.id_of_path(os.fsdecode(odd))
    assert reader.photo_path(odd_id) == Path(os.fsdecode(odd)).resolve()
    other = reader.id_of_path(next(p for p in (photos / "daffodil").iterdir() if p.name.isascii()))
    capsys.readouterr()
    exclude = reader.photo(other)["path"]
    assert cli(["search", str(out), "--like", str(photos / exclude), "-k", "11", "--json"]) == 0
    shown = [json.loads(line)["path"] for line in capsys.readouterr().out.splitlines()]
    assert "daffodil/bad\\xffname.jpg" in shown
    paths = subprocess.run([sys.executable, "-m", "zscrgan.cli", "search", str(out), "--like", str(photos / exclude),
                            "-k", "11", "--paths"], capture_output=True, timeout=120)
    assert paths.returncode == 0 and odd in paths.stdout.split(b"\n")  # the file's own bytes, for xargs
    build_index(run, photos, out)  # unchanged: found again under its stored name, nothing re-embedded
    assert "0 embedded" in capsys.readouterr().out


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_a_full_disk_is_one_line_naming_the_table_and_the_rerun_continues(setup, photos, tmp_path, capsys,
                                                                           monkeypatch):
    """SQLite's 'database or disk is full' printed a traceback (issue 28, 2)."""
    from zscrgan.search.index import Indexer

    _, _, run = setup
    out = tmp_path / "idx"
    real = Indexer.process
    calls = []

    def fills_the_disk(self, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, batch)

    monkeypatch.setattr(Indexer, "process", fills_the_disk)
    argv = ["index", "--run", str(run), "--images", str(photos), "--out", str(out), "--batch_size", "4"]
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert err == (f"zscrgan index: error: {out / ps.DB}: database or disk is full; the photos committed before "
                   f"it are kept: fix that, then rerun the same command to continue\n")
    monkeypatch.setattr(Indexer, "process", real)
    assert cli(argv) == 0  # the lock was released; the first batch is not embedded again
    assert "8 embedded" in capsys.readouterr().out


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_a_fifo_swapped_in_after_the_scan_and_odd_entries_are_named_not_hung(setup, photos, tmp_path, capsys,
                                                                             monkeypatch):
    """The indexer hung for ever (holding the folder lock) on a photo swapped for a FIFO after the scan;
    FIFOs and symlink loops found while scanning were skipped silently, a symlink out of the folder
    was indexed (issue 28, 8 and 9)."""
    import threading

    from zscrgan.search import index as index_module

    _, _, run = setup
    victim = sorted((photos / "daffodil").iterdir())[0]
    real_scan = index_module.scan

    def scan_then_swap(root):
        found = real_scan(root)
        victim.unlink()
        os.mkfifo(victim)
        return found

    monkeypatch.setattr(index_module, "scan", scan_then_swap)
    os.mkfifo(photos / "daffodil" / "pipe.jpg")
    (photos / "loop.jpg").symlink_to(photos / "loop.jpg")
    secret = tmp_path / "secret.jpg"
    shutil.copy(sorted((photos / "daffodil").iterdir())[2], secret)
    (photos / "daffodil" / "elsewhere.jpg").symlink_to(secret)
    out, done = tmp_path / "idx", []
    thread = threading.Thread(target=lambda: done.append(build_index(run, photos, out)), daemon=True)
    thread.start()
    thread.join(300)
    assert not thread.is_alive(), "zscrgan index hangs"
    assert done[0]["counts"]["photos"] == 11 and done[0]["counts"]["skipped"] == 1
    captured = capsys.readouterr()
    assert captured.out.rstrip().endswith("1 unreadable skipped, 3 passed over (1 a FIFO, 1 a symlink loop, "
                                          "1 a symlink out of the photo folder)")
    assert f"skipped {victim}: a FIFO, not a regular file" in captured.err
    for name in ("daffodil/pipe.jpg: a FIFO", "loop.jpg: a symlink loop",
                 "daffodil/elsewhere.jpg: a symlink out of the photo folder"):
        assert f"warning: passed over {photos / name}" in captured.err
    assert "daffodil/elsewhere.jpg" not in table(out)
    with ps.folder_lock(out, "zscrgan index"):  # released: the run finished
        pass
