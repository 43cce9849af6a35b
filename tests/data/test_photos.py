"""Reading a photo folder that may hold anything: FIFOs, sockets, symlink loops, huge files, lies."""
import io
import os
import socket
import threading
import tracemalloc

import pytest
from PIL import Image

from zscrgan.data.photos import Photo, open_photo, read_photo, scan


def jpeg(side: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 90)).save(buf, "JPEG")
    return buf.getvalue()


def within(seconds: float, call):
    """call()'s result, or a test failure if it has not returned in ``seconds`` (a hang)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    return result[0]


def test_a_fifo_is_refused_at_once_not_read(tmp_path):
    """The indexer hung for ever on a photo swapped for a FIFO after the scan (issue 28, 8)."""
    fifo = tmp_path / "swapped.jpg"
    os.mkfifo(fifo)
    assert within(10, lambda: read_photo(fifo)) == "a FIFO, not a regular file"
    assert read_photo(tmp_path) == "a folder, not a regular file"


def test_a_huge_non_image_is_never_read_whole(tmp_path):
    """A 300 MB file (sparse, so no disk) is refused after its first bytes: memory stays small."""
    big = tmp_path / "video.jpg"
    with open(big, "wb") as fh:
        fh.truncate(300_000_000)
    tracemalloc.start()
    try:
        assert read_photo(big, max_bytes=10**9).startswith("not an image (no JPEG/PNG/GIF")
        assert read_photo(big) == "300 MB, over --max_file_mb 64"  # the default cap, before any read
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak} bytes allocated reading a refused file"


def test_the_header_decides_the_format_not_the_name(tmp_path):
    gif = io.BytesIO()
    Image.new("P", (4, 4)).save(gif, "GIF")
    evil = tmp_path / "evil.html"  # a GIF with an HTML tail: decoded and served as the GIF it is
    evil.write_bytes(gif.getvalue() + b"<script>alert(1)</script>")
    fh, st, fmt = open_photo(evil)
    fh.close()
    assert fmt == "GIF" and st.st_size == evil.stat().st_size
    png = tmp_path / "named.jpg"
    Image.new("RGB", (40, 30)).save(png, "PNG")
    photo = read_photo(png)
    assert isinstance(photo, Photo) and (photo.width, photo.height) == (40, 30)
    (tmp_path / "notes.jpg").write_text("<html>not a photo</html>")
    assert read_photo(tmp_path / "notes.jpg") == "not an image (no JPEG/PNG/GIF/WebP/BMP/TIFF/... header)"
    (tmp_path / "lies.png").write_bytes(b"\x89PNG\r\n\x1a\n" + jpeg()[8:])  # PNG header, JPEG body
    assert read_photo(tmp_path / "lies.png").startswith("not a readable image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_photo(tmp_path / "empty.jpg") == "empty file"


def test_scan_names_every_entry_it_passes_over(tmp_path):
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.jpg").write_bytes(jpeg())
    (root / "dir.jpg").mkdir()  # a folder named like a photo: walked into, not read
    (root / "dir.jpg" / "inner.jpg").write_bytes(jpeg())
    os.mkfifo(root / "a" / "fifo.jpg")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "a" / "sock.jpg"))
        (root / "loop.jpg").symlink_to(root / "loop.jpg")
        (root / "gone.jpg").symlink_to(root / "nothing.jpg")
        outside = tmp_path / "secret.jpg"
        outside.write_bytes(jpeg())
        (root / "out.jpg").symlink_to(outside)
        (root / "via_link.jpg").symlink_to(root / "a" / "ok.jpg")  # inside the folder: indexed
        (root / "linked_dir").symlink_to(root / "a")
        found = within(10, lambda: scan(root))
    assert sorted(found.files) == ["a/ok.jpg", "dir.jpg/inner.jpg", "via_link.jpg"]
    assert found.passed_over == {
        "a/fifo.jpg": "a FIFO", "a/sock.jpg": "a socket", "loop.jpg": "a symlink loop",
        "gone.jpg": "a broken symlink", "out.jpg": "a symlink out of the photo folder",
        "linked_dir": "a symlink to a folder (not followed)"}
    assert found.summary() == ("6 passed over (1 a FIFO, 1 a broken symlink, 1 a socket, 1 a symlink loop, "
                               "1 a symlink out of the photo folder, 1 a symlink to a folder (not followed))")


@pytest.mark.parametrize("cut", [10, 100, 300])
def test_truncated_images_are_one_line_reasons(tmp_path, cut):
    (tmp_path / "cut.jpg").write_bytes(jpeg(64)[:cut])
    got = read_photo(tmp_path / "cut.jpg")
    assert isinstance(got, str) and got.startswith("not a readable image") and "\n" not in got


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("GIF", ".gif"), ("WEBP", ".webp"),
                                         ("BMP", ".bmp"), ("TIFF", ".tif"), ("PPM", ".ppm"), ("ICO", ".ico"),
                                         ("JPEG2000", ".jp2"), ("QOI", ".qoi"), ("SGI", ".sgi"), ("DDS", ".dds"),
                                         ("ICNS", ".icns"), ("AVIF", ".avif")])
def test_every_format_with_a_signature_is_read_and_typed(tmp_path, fmt, suffix):
    from zscrgan.data.photos import IMAGE_TYPES, is_photo_name

    path = tmp_path / f"photo{suffix}"
    try:
        Image.new("RGB", (16, 16), (90, 30, 200)).save(path, fmt)
    except (KeyError, OSError) as exc:  # a Pillow built without this encoder
        pytest.skip(f"this Pillow cannot write {fmt}: {exc}")
    assert is_photo_name(path.name)
    fh, _, found = open_photo(path)
    fh.close()
    assert found == fmt and fmt in IMAGE_TYPES
    photo = read_photo(path)
    assert isinstance(photo, Photo) and photo.width >= 16, photo  # ICNS holds its largest size too


def test_a_missing_class_folder_root_is_one_line(tmp_path):
    from zscrgan.data.photos import class_files
    from zscrgan.errors import DataError

    with pytest.raises(DataError, match=rf"^{tmp_path / 'nope'}: image folder not found$"):
        class_files(tmp_path / "nope")
