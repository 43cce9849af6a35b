"""`zscrgan serve` against hostile files and clients (issue 28): what it serves, refuses and shows.

Over the small synthetic index of tests/servekit.py (no model), with real files put where some of
its rows point, in process (TestClient) or over a loopback socket (servekit.serving).
"""
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import socket
import sqlite3
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("faiss")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from servekit import serving, synthetic_index  # noqa: E402

from zscrgan.search import photostore as ps  # noqa: E402
from zscrgan.search.reader import IndexReader  # noqa: E402
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
                                                                 "(no JPEG/PNG/GIF/WebP/BMP/TIFF/... header)"}


def test_a_fifo_or_a_link_out_of_the_folder_is_never_served(folder, client, tmp_path):
    (folder / "c3").mkdir(exist_ok=True)
    os.mkfifo(folder / "c3" / "3.jpg")
    result = []
    thread = threading.Thread(target=lambda: result.append(client.get("/photo/4")), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "/photo of a FIFO hangs"
    assert result[0].status_code == 404 and result[0].json() == {"detail": "photo 4: its file is now a FIFO, "
                                                                           "not a regular file"}
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


@pytest.mark.parametrize("url", ["/thumb/9223372036854775808", "/photo/9223372036854775808",
                                 "/thumb/-9223372036854775809", "/photo/99999999999999999999999999",
                                 "/thumb/9223372036854775807"])
def test_ids_past_sqlites_integers_are_4xx_not_500(client, url):
    """/thumb/9223372036854775808 answered 500 (OverflowError; issue 28, 7)."""
    reply = client.get(url)
    if url.endswith("807"):  # the largest id there can be: simply not there
        assert reply.status_code == 404 and reply.json()["detail"].startswith("no photo with id")
    else:
        assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["path", "photo_id"]


@pytest.mark.parametrize("body", [{"like_id": 2**63}, {"like_id": 2**64}, {"class_id": 2**63},
                                  {"like_id": 1, "k": True}, {"like_id": 1, "k": "5"}, {"like_id": 1, "k": 5.0},
                                  {"like_id": True}, {"like_id": 1, "min_score": True},
                                  {"text": "\u200b\u200b"}, {"text": "\x00"}, {"text": " \t\n\u2060\u200b "}])
def test_bodies_the_cli_would_refuse_are_422(client, body):
    """k: true was taken as 1, a text of zero-width spaces or a NUL answered (issue 28, 9)."""
    reply = client.post("/search", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"] == "application/json" and "detail" in reply.json()


def test_an_integer_min_score_is_still_a_number(client):
    assert client.post("/search", json={"like_id": 1, "k": 3, "min_score": 0}).status_code == 200


def test_invisible_texts_are_refused_by_the_cli_too():
    from zscrgan.errors import DataError
    from zscrgan.search.reader import check_texts

    for text in ("\u200b", "\x00\x00", "\u200b \u2060\ufeff", "\t\n"):
        with pytest.raises(DataError, match="empty query"):
            check_texts([text])
    check_texts(["a\u200bred rose", "é"])  # a visible character is enough


def absolute_strings(value) -> list:
    if isinstance(value, dict):
        return [s for item in value.values() for s in absolute_strings(item)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def test_info_names_no_absolute_path_unless_asked(folder, client):
    """/info showed the checkpoint's, data set's and photos' absolute paths (issue 28, 6)."""
    info = client.get("/info").json()
    assert info["images"] == folder.name and absolute_strings(info) == []
    with TestClient(create_app(IndexReader(folder, load_model=False), show_paths=True)) as shown:
        assert shown.get("/info").json()["images"] == str(folder)


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("::", True), ("192.168.1.5", True),
                                          ("photos.example", True), ("127.0.0.1", False), ("::1", False),
                                          ("localhost", False)])
def test_a_bind_beyond_this_machine_warns_in_one_line(folder, monkeypatch, capsys, host, warned):
    import uvicorn

    from zscrgan.search import serve

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(options))
    assert serve.main([str(folder), "--no_text", "--host", host, "--port", "1"]) == 0
    assert ran[0]["host"] == host and ran[0]["http"] == "zscrgan.search.connections:GuardedProtocol"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ([f"zscrgan serve: warning: {host} is reachable from other machines and the server has no "
                         "authentication: anyone who reaches it can search and view every indexed photo"]
                        if warned else [])


def read_all(sock, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (fails if it has not in ``seconds``)."""
    sock.settimeout(seconds)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture(params=["httptools", "h11"])
def guarded_server(folder, request):
    """A loopback server with serve's connection limits (1 s for headers, 20 connections), over each parser."""
    from zscrgan.search import connections

    module = pytest.importorskip(f"uvicorn.protocols.http.{request.param}_impl")
    base = module.HttpToolsProtocol if request.param == "httptools" else module.H11Protocol
    connections.configure(header_timeout=1.0, max_connections=20)
    try:
        with serving(create_app(IndexReader(folder, load_model=False)), http=connections.guarded(base)) as address:
            yield address
    finally:
        connections.configure()


def test_slowloris_connections_are_closed_and_health_still_answers(guarded_server):
    """Connections that never finished their headers were never closed: past the open-files limit every
    new request failed (issue 28, 5). Here 20 of them (the cap), 5 trickling a header line every 0.2 s,
    then 10 more connections, refused at once."""
    host, port = guarded_server
    started = time.monotonic()
    slow = [socket.create_connection((host, port)) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        for _ in range(10):
            with socket.create_connection((host, port)) as extra:
                refused = read_all(extra, 5)
            assert refused.startswith(b"HTTP/1.1 503") and b"application/json" in refused
            assert b'{"detail": "over 20 open connections; try again shortly"}' in refused
        while time.monotonic() - started < 0.8:  # bytes that arrive do not restart the clock
            for sock in slow[:5]:
                sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.2)
        replies = [read_all(sock, 5) for sock in slow]
        closed_after = time.monotonic() - started
    finally:
        for sock in slow:
            sock.close()
    assert all(r.startswith(b"HTTP/1.1 408") for r in replies) and closed_after < 1.7
    assert replies[0].endswith(b'{"detail": "request headers not received within 1 s"}')
    assert httpx.get(f"http://{host}:{port}/health", timeout=5).json()["status"] == "ok"


def test_the_servers_own_400s_are_json(guarded_server, request):
    host, port = guarded_server
    for raw in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(raw)
            reply = read_all(sock, 5)
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head
        assert "detail" in json.loads(body)
    with socket.create_connection((host, port)) as sock:  # headers that never end, sent fast
        with contextlib.suppress(OSError):
            sock.sendall(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n")
        reply = read_all(sock, 5)
    # httptools has no cap of its own: MAX_HEADER_BYTES answers (not the header clock's 408 a second
    # later); h11 refuses past its own 16 KiB first
    parser = request.node.callspec.params["guarded_server"]
    expected = b"HTTP/1.1 431" if parser == "httptools" else b"HTTP/1.1 400"
    assert reply.startswith(expected) and b"application/json" in reply, reply[:200]


def read_response(sock) -> bytes:
    """One whole response of a kept-alive connection (headers, then content-length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_keep_alive_connection_serves_requests_then_is_closed_when_idle(guarded_server):
    """The header clock restarts after each response: requests 0.6 s apart outlast the 1 s deadline
    on one connection, and once idle the connection gets its 408 a deadline after the last response
    (not never, as when the clock is not restarted, nor at uvicorn's own 5 s keep-alive close)."""
    host, port = guarded_server
    with socket.create_connection((host, port)) as sock:
        sock.settimeout(5)
        for request in range(3):
            if request:
                time.sleep(0.6)  # under the deadline each time, past it in all (1.2 s)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        idle = read_all(sock, 3)
        closed_after = time.monotonic() - answered
    assert idle.startswith(b"HTTP/1.1 408") and idle.endswith(b'{"detail": "request headers not received within 1 s"}')
    assert 0.9 < closed_after < 1.7
