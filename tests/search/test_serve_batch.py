"""`zscrgan serve` under concurrency: batched answers equal one-at-a-time ones, faults, workers.

The fast tests run a real uvicorn server in a thread over a small synthetic index opened without
a model (like and class queries); the text tests use the tiny flower run (slow tier).
"""
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("faiss")
from servekit import CLASSES, DIM, N, serving, synthetic_index  # noqa: E402

from zscrgan.search.batcher import Batcher, Query, Refusal  # noqa: E402
from zscrgan.search.reader import IndexReader  # noqa: E402
from zscrgan.search.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    return IndexReader(synthetic_index(tmp_path_factory.mktemp("synthetic")), load_model=False)


@pytest.fixture(scope="module")
def server(reader):
    app = create_app(reader, wait_ms=5, body_timeout=1.0)
    with serving(app) as address:
        yield address, app


def same_answers(batched: list, alone: list, tol: float = 1e-5) -> None:
    assert len(batched) == len(alone)
    for got, want in zip(batched, alone):
        if isinstance(want, Refusal):
            assert got == want
            continue
        assert [h["id"] for h in got["results"]] == [h["id"] for h in want["results"]]
        assert np.allclose([h["score"] for h in got["results"]], [h["score"] for h in want["results"]], atol=tol)
        assert [e["class_id"] for e in got["explanations"]] == [e["class_id"] for e in want["explanations"]]
        assert np.allclose([e["score"] for e in got["explanations"]], [e["score"] for e in want["explanations"]],
                           atol=1e-4)  # rounded to 4 places by IndexReader.explain


def test_like_and_class_batch_equals_one_at_a_time(reader):
    batcher = Batcher(reader)
    try:
        rng = np.random.default_rng(3)
        queries = [Query(like_id=int(rng.integers(1, N + 1)), k=int(rng.integers(1, 40))) for _ in range(25)]
        queries += [Query(class_id=str(c), k=7, min_score=0.3) for c in range(CLASSES)]
        queries += [Query(like_id=N + 50), Query(class_id="nope"), Query(text="red petals")]  # refused, each alone
        batched = batcher.answer(queries)
        same_answers(batched, [batcher.answer([q])[0] for q in queries])
        assert [a.status for a in batched[-3:]] == [404, 404, 400]
        for q, got in zip(queries[:25], batched):  # and as `zscrgan search` answers
            legacy = reader.search(reader.embed_like(q.like_id), q.k, exclude=q.like_id)[0]
            assert [h["id"] for h in got["results"]] == [h["id"] for h in legacy] and len(legacy) == q.k
    finally:
        batcher.close()


def test_concurrent_http_queries_are_batched_and_each_gets_its_own_answer(server, reader):
    (host, port), app = server
    ids = list(range(1, 65))

    async def ask_all():
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30,
                                     limits=httpx.Limits(max_connections=64)) as http:
            return await asyncio.gather(*(http.post("/search", json={"like_id": i, "k": 5}) for i in ids),
                                        http.post("/search", json={"like_id": 99999}))

    before = app.state.batcher.batches
    replies = asyncio.run(ask_all())
    assert replies[-1].status_code == 404 and "not in" in replies[-1].json()["detail"]
    for i, reply in zip(ids, replies):
        assert reply.status_code == 200, reply.text
        want = reader.search(reader.embed_like(i), 5, exclude=i)[0]
        assert [h["id"] for h in reply.json()["results"]] == [h["id"] for h in want]
        timing = reply.headers["server-timing"]
        assert all(f"{stage};dur=" in timing for stage in ("queue", "encode", "embed", "search", "fetch", "total"))
    assert app.state.batcher.batches - before < len(replies)  # some shared a batch


def test_cheap_paths_and_refusals_over_a_socket(server):
    (host, port), _ = server
    with httpx.Client(base_url=f"http://{host}:{port}") as http:
        assert http.get("/health").json() == {"status": "ok", "photos": N}
        info = http.get("/info").json()
        assert info["pid"] == os.getpid() and info["gallery"] == N
        assert http.get("/thumb/1").content[:2] == b"\xff\xd8"
        assert http.get("/thumb/0").status_code == 404 and http.get("/thumb/x").status_code == 422
        big = http.post("/search", content=b"x" * (65 * 1024), headers={"content-type": "application/json"})
        assert big.status_code == 413
        assert http.post("/search", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
        assert http.post("/search", json={"text": "", "k": 5}).status_code == 422
        assert http.post("/search", json={"like_id": 1, "k": 0}).status_code == 422
        assert http.post("/search", json={"text": "red"}).status_code == 400  # opened without its model
        assert http.post("/search", json={"class_id": "c2", "k": 3}).status_code == 200


def test_two_hundred_dropped_connections_leave_the_server_healthy(server):
    (host, port), _ = server
    socks = []
    for n in range(200):
        s = socket.create_connection((host, port), timeout=5)
        if n % 3 == 1:
            s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"li")
        elif n % 3 == 2:
            s.sendall(b"GET /hea")
        socks.append(s)
    for s in socks:  # reset, not a polite close
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
        assert http.get("/health").status_code == 200
        assert http.post("/search", json={"like_id": 3, "k": 2}).status_code == 200


def test_a_client_that_leaves_mid_query_leaves_the_server_healthy(server):
    (host, port), _ = server
    for _ in range(20):
        s = socket.create_connection((host, port), timeout=5)
        body = b'{"like_id": 5, "k": 100}'
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        s.close()
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
        assert http.post("/search", json={"like_id": 5, "k": 2}).status_code == 200


def test_slow_client_is_timed_out_without_holding_the_server(server):
    (host, port), _ = server
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n")
    got = b""
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=5) as http:
        for byte in b'{"like_id": 1, "k": 3}':  # 4 bytes a second, never all 30
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            assert http.post("/search", json={"like_id": 2, "k": 1}).status_code == 200  # others still answered
            s.settimeout(0.25)
            try:
                got += s.recv(4096)
            except socket.timeout:
                continue
            if got:
                break
        s.settimeout(5)
        while b"\r\n\r\n" not in got and (more := s.recv(4096)):
            got += more
    assert got.startswith(b"HTTP/1.1 408") and b"not received within" in got + s.recv(4096)
    s.close()


# ---- with the model: text queries (slow tier: the tiny flower run) -------------------------------

@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_text_batch_equals_one_at_a_time_and_a_bad_text_is_refused_alone():
    from flowerkit import ORCHID, flower_index

    reader = IndexReader(flower_index())
    batcher = Batcher(reader)
    try:
        texts = [ORCHID, "a yellow trumpet-shaped flower", "white petals", "red", "pink bell flowers on a stem",
                 "a daisy", "purple", ORCHID.lower(), "sunflower with a dark centre", "spiky blue"]
        queries = [Query(text=t, k=k) for t, k in zip(texts, [5, 10, 60, 3, 8, 12, 1, 20, 9, 4])]
        queries += [Query(text="bad \ud800 text"), Query(like_id=1, k=6), Query(class_id="daffodil", k=4)]
        batched = batcher.answer(queries)
        alone = [batcher.answer([q])[0] for q in queries]
        same_answers(batched, alone)
        assert isinstance(batched[10], Refusal) and batched[10].status == 422
        assert all(isinstance(a, dict) for i, a in enumerate(batched) if i != 10)
        for q, got in zip(queries[:10], batched):  # as `zscrgan search` answers, to its rounding
            legacy = reader.search(reader.encode_texts([q.text]), q.k)[0]
            assert [h["id"] for h in got["results"]] == [h["id"] for h in legacy]
            assert np.allclose([h["score"] for h in got["results"]], [h["score"] for h in legacy], atol=1e-4)
        app = create_app(reader)
        with serving(app) as (host, port):
            async def ask_all():
                async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=60) as http:
                    bodies = [json.dumps({"text": t, "k": 5}) for t in texts] + [
                        '{"text": "x\\ud800"}', '{"text": "  "}']  # JSON's escape for a lone surrogate
                    return await asyncio.gather(*(http.post("/search", content=b.encode(), headers={
                        "content-type": "application/json"}) for b in bodies))

            replies = asyncio.run(ask_all())
        assert [r.status_code for r in replies] == [200] * 10 + [422, 422]
        for q, reply in zip(queries[:10], replies):
            assert [h["id"] for h in reply.json()["results"]] == [h["id"] for h in batcher.answer(
                [Query(text=q.text, k=5)])[0]["results"]]
    finally:
        batcher.close()


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_two_workers_start_and_answer():
    from flowerkit import ORCHID, flower_index

    index = flower_index()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "zscrgan.cli", "serve", str(index), "--port", str(port),
                             "--workers", "2"], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, pids = time.monotonic() + 120, set()
        while time.monotonic() < deadline and len(pids) < 2:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with httpx.Client(timeout=5) as http:  # a new connection each time: either worker may take it
                    pids.add(http.get(base + "/info").json()["pid"])
            except httpx.HTTPError:
                time.sleep(0.5)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(pids) == 2 and pids <= {int(c) for c in children}
        reply = httpx.post(base + "/search", json={"text": ORCHID, "k": 3}, timeout=30)
        assert reply.status_code == 200 and len(reply.json()["results"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
