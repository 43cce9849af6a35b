"""Property-based (Hypothesis): a photo folder of odd names and odd file types is scanned, read and
stored without a hang or an exception, and every entry named as a photo may be (photos.is_photo_name)
is either read or named as passed over.

Names: raw bytes (not UTF-8), up to 255 bytes, Unicode in all four normalisation forms. Types: JPEG,
PNG, truncated, empty, text, a 2 GB sparse file with a JPEG header, FIFO, socket, symlink loop,
broken symlink, symlink out of the folder, symlink inside it, a folder named *.jpg.
"""
import io
import os
import shutil
import socket
import tempfile
import threading
import unicodedata
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from zscrgan.data.photos import Photo, is_photo_name, read_photo, scan  # noqa: E402

KINDS = ("jpeg", "png", "truncated", "empty", "text", "sparse", "fifo", "socket", "loop", "broken", "out",
         "inside", "folder")
PASSED_OVER = {"fifo": "a FIFO", "socket": "a socket", "loop": "a symlink loop", "broken": "a broken symlink",
               "out": "a symlink out of the photo folder"}


def picture(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 14), (30, 160, 60)).save(buf, fmt)
    return buf.getvalue()


JPEG, PNG = picture("JPEG"), picture("PNG")


def unicode_name(text: str, form: str) -> bytes:
    return os.fsencode(unicodedata.normalize(form, text))


stems = st.one_of(
    st.binary(min_size=1, max_size=60),  # mostly not UTF-8
    st.builds(unicode_name, st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30),
              st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"])),
    st.integers(200, 240).map(lambda n: b"\xc3\xa9" * (n // 2)),  # long: up to the 255-byte limit
)
names = st.builds(  # one non-hidden path part, with or without a photo's suffix, or a document's
    lambda stem, suffix: b"p" + stem.replace(b"/", b"_").replace(b"\x00", b"_")[:240] + suffix,
    stems, st.sampled_from([b"", b".jpg", b".PNG", b".Jpeg", b".txt"]))

entries = st.lists(st.tuples(names, st.sampled_from(KINDS)), min_size=1, max_size=12, unique_by=lambda e: e[0])


def make(root: bytes, name: bytes, kind: str, outside: bytes, held: list) -> str:
    """Make entry ``name`` of ``kind`` in ``root``; returns the kind made (a socket whose path is too
    long for AF_UNIX, 107 bytes, is made a FIFO)."""
    path = os.path.join(root, name)
    if kind in ("jpeg", "png", "truncated", "empty", "text"):
        data = {"jpeg": JPEG, "png": PNG, "truncated": JPEG[:len(JPEG) // 2], "empty": b"", "text": b"<p>hi</p>"}
        with open(path, "wb") as fh:
            fh.write(data[kind])
    elif kind == "sparse":
        with open(path, "wb") as fh:
            fh.write(JPEG[:100])
            fh.truncate(2 * 10**9)
    elif kind == "fifo" or (kind == "socket" and len(path) > 100):
        os.mkfifo(path)
        return "fifo"
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        held.append(sock)
    elif kind == "loop":
        os.symlink(name, path)
    elif kind == "broken":
        os.symlink(b"no such file", path)
    elif kind == "out":
        os.symlink(outside, path)
    elif kind == "inside":
        os.symlink(b"real.jpg", path)
    else:  # a folder named like a photo, holding one
        os.mkdir(path)
        with open(os.path.join(path, b"inner.jpg"), "wb") as fh:
            fh.write(JPEG)
    return kind


def within(seconds: float, call):
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hangs"
    return result[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries)
def test_every_entry_is_read_or_named_and_nothing_hangs(entries):
    from zscrgan.search import photostore as ps

    work = Path(tempfile.mkdtemp(prefix="zscrgan-fuzz-"))
    held = []
    try:
        root, outside = os.fsencode(work / "photos"), os.fsencode(work / "outside.jpg")
        os.mkdir(root)
        Path(os.fsdecode(outside)).write_bytes(JPEG)
        Path(os.fsdecode(root), "real.jpg").write_bytes(JPEG)
        made = {name: make(root, name, kind, outside, held) for name, kind in entries}
        found = within(20, lambda: scan(Path(os.fsdecode(root))))

        want_files, want_passed = {"real.jpg": "jpeg"}, {}
        for name, kind in made.items():
            rel = os.fsdecode(name)
            if kind == "folder":
                want_files[f"{rel}/inner.jpg"] = "jpeg"
            elif not is_photo_name(rel):  # named as something else (notes.txt): left out quietly
                continue
            elif kind in PASSED_OVER:
                want_passed[rel] = PASSED_OVER[kind]
            else:
                want_files[rel] = kind
        assert found.passed_over == want_passed
        assert set(found.files) == set(want_files)

        for rel, kind in want_files.items():
            got = within(20, lambda: read_photo(Path(os.fsdecode(root)) / rel, keep=True))
            if kind in ("jpeg", "png", "inside"):
                assert isinstance(got, Photo) and (got.width, got.height) == (20, 14)
            else:
                assert isinstance(got, str) and "\n" not in got
                assert got.startswith({"truncated": "not a readable image", "empty": "empty file",
                                       "text": "not an image", "sparse": "2000 MB, over --max_file_mb"}[kind])

        conn = ps.connect(work)  # every name is stored and read back exactly (photos.sqlite's path column)
        with conn:
            conn.executemany("INSERT INTO skipped VALUES (?, 0, 0, 'x')", [(ps.stored_path(r),) for r in found.files])
        assert {ps.file_path(r[0]) for r in conn.execute("SELECT path FROM skipped")} == set(found.files)
        conn.close()
    finally:
        for sock in held:
            sock.close()
        shutil.rmtree(work, ignore_errors=True)

