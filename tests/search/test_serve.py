"""`zscrgan serve`'s HTTP API in process (FastAPI's TestClient): schema, search, photos, bad input."""
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("faiss")
pytest.importorskip("efficientnet_lite_pytorch")
from fastapi.testclient import TestClient  # noqa: E402
from flowerkit import ORCHID, flower_index  # noqa: E402

from zscrgan.search.reader import IndexReader  # noqa: E402
from zscrgan.search.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client():
    app = create_app(IndexReader(flower_index()))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_health_info_page_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "photos": 60}
    info = client.get("/info").json()
    assert info["counts"]["photos"] == 60 and info["kind"] == "exact" and info["gallery"] == 60
    page = client.get("/")
    assert page.status_code == 200 and "<input id=\"q\"" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside the machine
    schema = client.get("/openapi.json").json()
    assert {"/health", "/info", "/search", "/thumb/{photo_id}", "/photo/{photo_id}"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_search_by_text_then_like_then_files(client):
    reply = client.post("/search", json={"text": ORCHID, "k": 5})
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"results", "explanations", "took_ms"} and len(body["results"]) == 5
    top = body["results"][0]
    assert top["class"] == "hard-leaved_pocket_orchid" and top["thumb"] == f"/thumb/{top['id']}"
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert len(body["explanations"]) == 3 and {"class_id", "name", "score"} <= set(body["explanations"][0])
    like = client.post("/search", json={"like_id": top["id"], "k": 4}).json()["results"]
    assert len(like) == 4 and top["id"] not in [r["id"] for r in like]
    thumb = client.get(top["thumb"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    photo = client.get(f"/photo/{top['id']}")
    assert photo.status_code == 200 and len(photo.content) > len(thumb.content) // 2
    few = client.post("/search", json={"text": ORCHID, "k": 60, "min_score": 0.99}).json()["results"]
    assert all(r["score"] >= 0.99 for r in few)
    by_class = client.post("/search", json={"class_id": "daffodil", "k": 3})
    assert by_class.status_code == 200 and len(by_class.json()["results"]) == 3


@pytest.mark.parametrize("body, code", [
    ({"text": "", "k": 5}, 422), ({"text": "   "}, 422), ({"k": 5}, 422),
    ({"text": "red", "k": 0}, 422), ({"text": "red", "k": -3}, 422), ({"text": "red", "k": 1001}, 422),
    ({"text": "x" * 1001}, 422), ({"text": "red", "like_id": 3}, 422), ({"like_id": 99999}, 404),
    ({"class_id": "no such flower"}, 404), ({"text": "red", "min_score": 7}, 422),
])
@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_bad_search_bodies_are_4xx_json(client, body, code):
    reply = client.post("/search", json=body)
    assert reply.status_code == code, reply.text
    assert "detail" in reply.json() and "Traceback" not in reply.text


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_oversized_and_malformed_bodies(client):
    big = client.post("/search", content=b'{"text": "' + b"a" * (1 << 20) + b'"}',
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and "body over" in big.json()["detail"]
    bad = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and "detail" in bad.json()


@pytest.mark.parametrize("url, code", [
    ("/thumb/../../etc/passwd", 404), ("/thumb/..%2F..%2Fetc%2Fpasswd", 404), ("/photo/..%2F..%2Fetc%2Fpasswd", 404),
    ("/thumb/-1", 422), ("/thumb/abc", 422), ("/photo/abc", 422), ("/thumb/99999", 404), ("/photo/-1", 422),
    ("/thumb/1.5", 422),
])
@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_photos_only_by_id(client, url, code):
    reply = client.get(url)
    assert reply.status_code == code, reply.text
    assert reply.headers["content-type"].startswith("application/json") and "root:" not in reply.text
