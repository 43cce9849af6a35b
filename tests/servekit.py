"""A small synthetic index (no model, no photo files) and a real uvicorn server in a thread, shared by
the serving tests (tests/search/test_serve_batch.py, test_serve_hostile.py)."""
import contextlib
import threading
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import uvicorn

from zscrgan.search import photostore as ps
from zscrgan.search.gallery import GalleryIndex

N, DIM, CLASSES = 300, 16, 5


def synthetic_index(folder: Path) -> Path:
    """N photos in CLASSES clusters, an exact index, one shared tiny thumbnail; no model."""
    from PIL import Image

    rng = np.random.default_rng(0)
    means = rng.standard_normal((CLASSES, DIM)).astype(np.float32)
    vectors = means[np.arange(N) % CLASSES] + 0.7 * rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    buf = BytesIO()
    Image.new("RGB", (8, 8), (120, 160, 90)).save(buf, "JPEG")
    conn = ps.connect(folder)
    with conn:
        conn.executemany("INSERT INTO photos (id, path, sha256, size, mtime_ns, width, height, class, embedding, "
                         "thumb) VALUES (?, ?, '', 0, 0, 8, 8, ?, ?, ?)",
                         ((i + 1, f"c{i % CLASSES}/{i}.jpg", f"c{i % CLASSES}", vectors[i].tobytes(), buf.getvalue())
                          for i in range(N)))
    conn.close()
    index = GalleryIndex(DIM, "exact")
    index.add(vectors)
    ps.write_npz(folder / ps.VECTORS, index=index.to_bytes(), ids=np.arange(1, N + 1), kind=np.array("exact"))
    ps.write_npz(folder / ps.CLASSES, ids=np.array([str(c) for c in range(CLASSES)]),
                 names=np.array([f"c{c}" for c in range(CLASSES)]), seen=np.ones(CLASSES, bool), embeddings=means)
    ps.write_manifest(folder, {"format": ps.FORMAT, "images": str(folder), "kind": "exact", "state": "ready",
                               "counts": {"photos": N},
                               "run": {"embed_dim": DIM, "checkpoint": "", "run": "", "checkpoint_sha256": ""}})
    return folder


@contextlib.contextmanager
def serving(app, **config):
    """A real uvicorn server on a free loopback port, in a thread; ``config``: more uvicorn.Config options."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                           **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)
