"""`zscrgan serve` against hostile files and clients (issue 28): what it serves, refuses and shows.

Over the small synthetic index of tests/servekit.py (no model), with real files put where some of
its rows point, in process (TestClient) or over a loopback socket (servekit.serving).
"""
import base64
import hashlib
import io
import os
import re
import sqlite3
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("faiss")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from servekit import synthetic_index  # noqa: E402

from zscrgan.search import photostore as ps  # noqa: E402
from zscrgan.search.query import IndexReader  # noqa: E402
from zscrgan.search.serve import create_app  # noqa: E402


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 9), (10, 120, 200)).save(buf, fmt)
    return buf.getvalue()


def set_path(folder, photo_id: int, rel: str) -> None:
    with sqlite3.connect(folder / ps.DB) as conn:
        conn.execute("UPDATE photos SET path = ? WHERE id = ?", (rel, photo_id))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return synthetic_index(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def client(folder):
    with TestClient(create_app(IndexReader(folder, load_model=False)), raise_server_exceptions=False) as c:
        yield c


def test_a_photo_is_typed_by_its_own_header_never_its_name(folder, client):
    """A GIF with an HTML tail named evil.html was served as text/html: stored XSS (issue 28, 3)."""
    evil = image_bytes("GIF") + b"<html><script>alert(document.cookie)</script></html>"
    (folder / "evil.html").write_bytes(evil)
    set_path(folder, 1, "evil.html")
    reply = client.get("/photo/1")
    assert reply.status_code == 200 and reply.content == evil
    assert reply.headers["content-type"] == "image/gif" and reply.headers["x-content-type-options"] == "nosniff"
    (folder / "c1").mkdir(exist_ok=True)
    (folder / "c1" / "1.jpg").write_bytes(image_bytes("PNG"))  # a PNG named .jpg is a PNG
    assert client.get("/photo/2").headers["content-type"] == "image/png"
    (folder / "c2").mkdir(exist_ok=True)
    (folder / "c2" / "2.jpg").write_text("<html>replaced since indexed</html>")
    gone = client.get("/photo/3")
    assert gone.status_code == 404 and gone.json() == {"detail": "photo 3: its file is now not an image "
                                                                 "(no JPEG/PNG/GIF/WEBP/BMP/TIFF header)"}


def test_a_fifo_or_a_link_out_of_the_folder_is_never_served(folder, client, tmp_path):
    (folder / "c3").mkdir(exist_ok=True)
    os.mkfifo(folder / "c3" / "3.jpg")
    result = []
    thread = threading.Thread(target=lambda: result.append(client.get("/photo/4")), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "/photo of a FIFO hangs"
    assert result[0].status_code == 404
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(image_bytes("JPEG"))
    (folder / "c4").mkdir(exist_ok=True)
    (folder / "c4" / "4.jpg").symlink_to(secret)
    assert client.get("/photo/5").status_code == 404


def test_every_response_says_nosniff(client):
    replies = [client.get("/"), client.get("/health"), client.get("/info"), client.get("/thumb/1"),
               client.get("/thumb/99999"), client.get("/nowhere"), client.post("/search", json={"like_id": 1}),
               client.post("/search", json={"k": 5}), client.post("/search", content=b"x" * 100_000)]
    assert [r.status_code for r in replies] == [200, 200, 200, 200, 404, 404, 200, 422, 413]
    assert all(r.headers.get("x-content-type-options") == "nosniff" for r in replies)


def test_the_page_allows_only_its_own_inline_script_and_style(client):
    page = client.get("/")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    script = re.search(r"<script>(.*?)</script>", page.text, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", page.text, re.S).group(1)

    def digest(text):
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == digest(script) and policy["style-src"] == digest(style)
    assert policy["img-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert "unsafe" not in page.headers["content-security-policy"]
