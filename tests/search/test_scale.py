"""Past one machine: shards (local, killed and resumed, Ray), the on-disk ivfpq index, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")
from zscrgan.cli import main as cli  # noqa: E402
from zscrgan.errors import DataError  # noqa: E402
from zscrgan.evaluation.metrics import unit  # noqa: E402
from zscrgan.search import diskindex as di  # noqa: E402
from zscrgan.search import shardfolder as sf  # noqa: E402
from zscrgan.search.gallery import GalleryIndex, recall_at_k  # noqa: E402


def clustered(n, dim, centers, seed):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, dim)).astype(np.float32)
    return unit(means[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, dim), np.float32))


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """3,000 clustered 32-d vectors: trained once, added as 3 shards, merged on disk."""
    root = tmp_path_factory.mktemp("ivfpq")
    x = clustered(3000, 32, 20, 0)
    spec = di.PQSpec.for_size(len(x), 32)
    di.train(x, spec, root / di.TRAINED)
    parts = []
    for i in range(3):
        parts.append(root / f"part{i}.index")
        assert di.add_part(root / di.TRAINED, x[i * 1000:(i + 1) * 1000], i * 1000, parts[-1]) == 1000
    out = root / "index"
    out.mkdir()
    assert di.merge(root / di.TRAINED, parts, out, expected_rows=3000) == 3000
    (out / di.EXACT).write_bytes(x.tobytes())
    return root, out, x, spec


def test_three_shards_merged_and_mmapped_recall_against_flat(merged, capfd):
    root, out, x, _ = merged
    moved = root / "moved"  # the folder can move: the lists file is found beside the index
    shutil.copytree(out, moved)
    capfd.readouterr()
    index = GalleryIndex.open_disk(moved, 32, nprobe=16)
    assert "IO_FLAG" not in str(capfd.readouterr())  # FAISS's note on the moved lists file is not printed
    assert len(index) == 3000 and index.kind == "ivfpq"
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    assert str(moved / di.IVFDATA) in maps  # served memory-mapped, not read into RAM
    q = clustered(200, 32, 20, 0)[:200] + 0.05 * np.random.default_rng(1).standard_normal((200, 32), np.float32)
    flat = GalleryIndex(32, "exact")
    flat.add(x)
    _, exact_ids = flat.search(q, 10)
    scores, ids = index.search(q, 10)
    assert recall_at_k(ids, exact_ids, 10) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # re-ranked: exact scores, best first
    unit_x, unit_q = unit(x), unit(q)
    np.testing.assert_allclose(scores, (unit_x[ids] * unit_q[:, None]).sum(-1), atol=1e-5)  # the exact cosines
    (moved / di.EXACT).unlink()  # without exact vectors: PQ scores only, still a ranking
    _, pq_ids = GalleryIndex.open_disk(moved, 32, nprobe=16).search(q, 10)
    assert (pq_ids >= 0).all()


def test_set_search_sweeps_one_opened_index_as_reopening_would(merged):
    """Every cell probed and every row re-ranked is brute force; other settings match a fresh open."""
    _, out, x, spec = merged
    q = clustered(50, 32, 20, 5)
    flat = GalleryIndex(32, "exact")
    flat.add(x)
    index = GalleryIndex.open_disk(out, 32, nprobe=1, rerank=10)
    index.set_search(nprobe=spec.nlist, rerank=len(x))
    np.testing.assert_array_equal(index.search(q, 10)[1], flat.search(q, 10)[1])
    index.set_search(nprobe=2, rerank=20)
    np.testing.assert_array_equal(index.search(q, 10)[1],
                                  GalleryIndex.open_disk(out, 32, nprobe=2, rerank=20).search(q, 10)[1])


def test_merge_refusals_leave_the_folder_as_it_was(merged, tmp_path):
    root, out, x, spec = merged
    before = snapshot(out)
    di.train(x[::-1].copy(), spec, tmp_path / "other.trained")  # another training, same shape
    di.add_part(tmp_path / "other.trained", x[:500], 0, tmp_path / "foreign.index")
    with pytest.raises(DataError, match="foreign.index: its quantiser differs"):
        di.merge(root / di.TRAINED, [root / "part0.index", tmp_path / "foreign.index"], out)
    cut = tmp_path / "cut.index"
    cut.write_bytes((root / "part1.index").read_bytes()[:3000])
    with pytest.raises(DataError, match="cut.index: not a readable faiss index, truncated"):
        di.merge(root / di.TRAINED, [root / "part0.index", cut], out)
    with pytest.raises(DataError, match="hold 2000 vectors, expected 3000"):
        di.merge(root / di.TRAINED, [root / "part0.index", root / "part1.index"], out, expected_rows=3000)
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / di.EXACT).write_bytes(x[:10].tobytes())
    with pytest.raises(DataError, match="exact.f32: .* truncated or stale"):
        di.open_exact(tmp_path / "short", 32, 3000)
    assert snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_plan_prints_every_kind_and_refuses_beyond_the_disk(tmp_path, capsys):
    assert cli(["index", "--plan", "1000000", "--dim", "256", "--kind", "ivfpq", "--out", str(tmp_path / "i")]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{kind} " in out for kind in ("exact", "ivf", "hnsw", "ivfpq")) and "GB" in out
    assert cli(["index", "--plan", "100000000000", "--dim", "1024", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kind exact needs" in err and "free" in err  # the default kind
    assert not (tmp_path / "i").exists()


def test_ray_address_that_does_not_answer_fails_fast():
    from zscrgan.search.shard import check_address

    start = time.monotonic()
    with pytest.raises(DataError, match="no Ray head answers there within 0.5 s"):
        check_address("127.0.0.1:1", timeout=0.5)  # refused
    with pytest.raises(DataError, match="expected auto or HOST:PORT"):
        check_address("nonsense")
    assert time.monotonic() - start < 5


def test_a_failing_shard_is_retried_then_named():
    from zscrgan.search.shard import _attempts

    calls = []

    def flaky(folder, images, shard, paths, key):
        calls.append(shard)
        if len(calls) < 2:
            raise OSError("disk hiccup")
        return len(paths)

    assert _attempts(flaky, "f", "i", 3, ["a", "b"], "k", retries=2) == (2, "")
    assert calls == [3, 3]
    assert _attempts(lambda *a: 1 / 0, "f", "i", 3, [], "k", retries=1) == (-1, "ZeroDivisionError: division by zero")


def test_a_row_is_stamped_with_the_file_it_read_not_a_second_look_by_path(tmp_path, monkeypatch):
    """Index and shard stat'ed a photo by path, then read it through another descriptor: a photo swapped
    between the two was stored with one file's size and mtime and the other's pixels and hash."""
    import hashlib
    import io

    from PIL import Image

    def jpeg(side):
        buf = io.BytesIO()
        Image.new("RGB", (side, side), (200, 40, 90)).save(buf, "JPEG")
        return buf.getvalue()

    class Run:  # all ShardWorker.read needs of a model: none (the CNN is loaded at the first embed)
        embed_dim = 4

        def encoders(self, image_encoder, photo_batch):
            return None

    old, new = jpeg(16), jpeg(64)
    (tmp_path / "daffodil").mkdir()
    photo = tmp_path / "daffodil" / "a.jpg"
    photo.write_bytes(old)
    real = sf.read_photo

    def swapped_first(path, *args, **kwargs):
        tmp = path.with_name("new.tmp")
        tmp.write_bytes(new)
        os.replace(tmp, path)  # another file under the same name, as a sync tool writes it
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sf, "read_photo", swapped_first)
    worker = sf.ShardWorker(Run(), "efficientnet_lite0", ["daffodil"])
    row, pixels = worker.read(tmp_path, "daffodil/a.jpg")
    st = photo.stat()
    assert (row["size"], row["mtime_ns"], row["sha256"]) == (len(new), st.st_mtime_ns, hashlib.sha256(new).hexdigest())
    assert (row["width"], row["height"], row["class"], row["skipped"]) == (64, 64, "daffodil", None)
    assert pixels.shape == (3, 224, 224)
    monkeypatch.setattr(sf, "read_photo", real)
    photo.write_bytes(b"GIF89a")  # an unreadable file is remembered by the stat it was judged on, too
    row, pixels = worker.read(tmp_path, "daffodil/a.jpg")
    assert pixels is None and row["size"] == 6 and row["skipped"].startswith("not a readable image")


# ---- on real photos: the flower run of tests/flowerkit.py ---------------------------------------
def flowers():
    pytest.importorskip("efficientnet_lite_pytorch")
    from flowerkit import flower_run

    return flower_run()


def shard_argv(run, photos, out, *extra):
    return [sys.executable, "-m", "zscrgan.cli", "shard", "--run", str(run), "--images", str(photos),
            "--out", str(out), "--shard-size", "4", *extra]


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_killed_shard_run_resumes_then_index_and_serve_ivfpq(tmp_path, capsys):
    photos, _, run = flowers()
    out = tmp_path / "shards"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(shard_argv(run, photos, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.glob("*.done.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished, total = len(list(out.glob("*.done.json"))), sf.read_plan(out)["shards"]
    assert 3 <= finished < total, f"{finished} of {total} shards finished before the kill"
    again = subprocess.run(shard_argv(run, photos, out), capture_output=True, text=True, env=env, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"{finished} finished before" in again.stdout and f"{total - finished} shards written" in again.stdout
    assert len(list(out.glob("*.done.json"))) == total
    assert "0 shards written" in subprocess.run(shard_argv(run, photos, out), capture_output=True, text=True,
                                                env=env, timeout=180).stdout

    index = tmp_path / "index"
    capsys.readouterr()
    assert cli(["index", "--run", str(run), "--images", str(photos), "--out", str(index), "--shards", str(out),
                "--kind", "ivfpq"]) == 0
    said = capsys.readouterr().out
    assert f"; 0 embedded, 60 taken from {out}" in said, said  # all 60 photos from the shards (PROVENANCE.md is no photo)
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["kind"] == "ivfpq" and manifest["counts"]["photos"] == 60
    assert (index / di.IVFDATA).is_file() and (index / di.EXACT).stat().st_size == 60 * 128 * 4

    # the same photos embedded the ordinary way give the same vectors
    plain = tmp_path / "plain"
    assert cli(["index", "--run", str(run), "--images", str(photos), "--out", str(plain)]) == 0
    from zscrgan.search import photostore as ps
    a = ps.all_embeddings(ps.connect(index, readonly=True), 128)[1]
    b = ps.all_embeddings(ps.connect(plain, readonly=True), 128)[1]
    assert np.allclose(a, b, atol=1e-5)

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from flowerkit import ORCHID

    from zscrgan.search.reader import IndexReader
    from zscrgan.search.serve import create_app

    with TestClient(create_app(IndexReader(index)), raise_server_exceptions=False) as client:
        assert client.get("/health").json() == {"status": "ok", "photos": 60}
        body = client.post("/search", json={"text": ORCHID, "k": 5}).json()
        assert len(body["results"]) == 5 and body["results"][0]["class"] == "hard-leaved_pocket_orchid"
        like = client.post("/search", json={"like_id": body["results"][0]["id"], "k": 3}).json()["results"]
        assert len(like) == 3
        exact = IndexReader(plain, load_model=False)
        q = exact.embed_class("daffodil")
        assert [h["id"] for h in IndexReader(index, load_model=False).search(q, 10)[0]] == \
            [h["id"] for h in exact.search(q, 10)[0]]


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_bad_shard_files_are_refused_in_one_line(tmp_path):
    photos, _, run = flowers()
    few = tmp_path / "photos"
    shutil.copytree(photos / "daffodil", few / "daffodil")
    out = tmp_path / "shards"
    assert cli(["shard", "--run", str(run), "--images", str(few), "--out", str(out), "--shard-size", "4"]) == 0
    plan = sf.read_plan(out)
    rows, emb = sf.load_shard(out, 0, plan["key"])
    assert len(rows) == 4 and emb.shape == (4, 128)
    npy = out / "shard-00001.npy"
    good = npy.read_bytes()
    npy.write_bytes(good[: len(good) // 2])  # truncated
    index = tmp_path / "index"
    with pytest.raises(DataError, match="shard-00001.npy: truncated or changed"):
        from zscrgan.search.index import build_index
        build_index(run, few, index, shards=out)
    npy.write_bytes(good)
    done = out / "shard-00000.done.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps({**record, "key": "0123456789abcdef"}))  # from another run
    with pytest.raises(DataError, match="shard-00000.done.json: from another run"):
        sf.load_shard(out, 0, plan["key"])
    other = tmp_path / "other"
    shutil.copytree(photos / "sweet_pea", other / "sweet_pea")
    with pytest.raises(DataError, match="shards of another run"):
        from zscrgan.search.shard import build_shards
        build_shards(run, other, out)
    if __import__("importlib").util.find_spec("ray"):  # a silent head: refused before a file is written
        with pytest.raises(DataError, match="no Ray head answers"):
            build_shards(run, few, tmp_path / "never", distributor="ray", ray_address="127.0.0.1:1")
        assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_local_and_ray_write_identical_shards(tmp_path):
    pytest.importorskip("ray")
    photos, _, run = flowers()
    few = tmp_path / "photos"
    for cls in ("daffodil", "hard-leaved_pocket_orchid"):
        shutil.copytree(photos / cls, few / cls)
    from zscrgan.search.shard import build_shards

    local = build_shards(run, few, tmp_path / "local", shard_size=5, workers=2)
    ray = build_shards(run, few, tmp_path / "ray", shard_size=5, distributor="ray", workers=2)
    assert local["shards"] == ray["shards"] == 3 and local["photos"] == ray["photos"] == 12
    for shard in range(3):
        for suffix in (".npy", ".parquet"):
            name = sf.name(shard) + suffix
            assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name


NODES = """import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 60
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
print(json.dumps([[n["NodeID"], n["Alive"], n["Resources"].get("CPU")] for n in ray.nodes()]))
"""


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py) and starts a Ray cluster
def test_a_two_node_ray_cluster_with_token_authentication_writes_the_local_shards(tmp_path, servers):
    """docs/scale.md's cluster commands, head and node on loopback: `zscrgan shard --ray-address`."""
    pytest.importorskip("ray")
    from servers import start_ray_cluster

    photos, _, run = flowers()
    few = tmp_path / "photos"
    for cls in ("daffodil", "hard-leaved_pocket_orchid"):
        shutil.copytree(photos / cls, few / cls)
    address, client = start_ray_cluster(servers)
    nodes = subprocess.run([sys.executable, "-c", NODES, address], env=client, capture_output=True, text=True,
                           timeout=180)
    assert nodes.returncode == 0, nodes.stderr[-2000:]
    nodes = json.loads(nodes.stdout.splitlines()[-1])
    assert len({n[0] for n in nodes}) == 2 and all(alive and cpus == 1 for _, alive, cpus in nodes), nodes

    # token mode without the token: one line, nothing written (it was a traceback)
    (tmp_path / "home").mkdir()
    tokenless = {**client, "HOME": str(tmp_path / "home")}
    del tokenless["RAY_AUTH_TOKEN"]
    refused = subprocess.run(shard_argv(run, few, tmp_path / "never", "--distributor", "ray", "--ray-address", address),
                             env=tokenless, capture_output=True, text=True, timeout=180)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1] == (
        f"zscrgan shard: error: --ray_address {address}: Token authentication is enabled but no authentication "
        "token was found; a cluster with token authentication needs RAY_AUTH_MODE=token and the head's token here "
        "(RAY_AUTH_TOKEN or ~/.ray/auth_token; docs/scale.md)")
    assert not (tmp_path / "never").exists()

    # two actors of one CPU each on two nodes of one CPU each: one actor a node
    sharded = subprocess.run(shard_argv(run, few, tmp_path / "cluster", "--distributor", "ray", "--ray-address",
                                        address, "--workers", "2"),
                             env={**client, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    assert "3 shards written (12 photos" in sharded.stdout and "ray x2" in sharded.stdout, sharded.stdout
    for node in ("head-tmp", "node-tmp"):
        logs = list((servers.folder / node).glob("session_*/logs/worker-*.out"))
        assert any("RayShardActor" in p.read_text(errors="replace") for p in logs), node
    assert cli(["shard", "--run", str(run), "--images", str(few), "--out", str(tmp_path / "local"),
                "--shard-size", "4", "--workers", "2"]) == 0
    for shard in range(3):
        for suffix in (".npy", ".parquet"):
            name = sf.name(shard) + suffix
            assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "cluster" / name).read_bytes(), name
