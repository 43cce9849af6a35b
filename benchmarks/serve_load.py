"""`zscrgan serve` under load, measured with a real load generator (wrk), on loopback.

    python benchmarks/serve_load.py --work /tmp/serve_load --photos 1000000 --seconds 3 --write

1. Installs `wrk` (Debian package) where it is missing.
2. The flower index of the 60 shared photos (the tests' tiny flower run, examples/flowers_tiny.json),
   built once into --work; and a synthetic index folder of --photos clustered 256-d vectors (IVF,
   nlist 1024; the SQLite table with one tiny shared thumbnail), also kept in --work.
3. For each index and each --workers count: starts `zscrgan serve`, runs `GET /health`,
   `POST /search {like_id: random, k: 10}` and, with a model, `POST /search {text: one of 40
   descriptions, k: 10}`, each at 1, 16 and 64 connections for --seconds; records requests/s,
   p50 / p99 latency, errors (non-2xx and socket errors), the mean batch size of a lone worker
   and each worker's RSS after the load.
4. Prints a Markdown table; --write puts it, with the command line, into docs/performance.md
   between the serve_load markers.

Everything binds 127.0.0.1. Each cell is bounded by --seconds (plus wrk's 10 s timeout).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from zscrgan.runfiles import run_dirs

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZSCRGAN_SHARED", ROOT.parent / "shared"))
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- serve_load:begin -->", "<!-- serve_load:end -->"


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print("installing wrk (apt-get install -y wrk)", flush=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=False, stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing and could not be installed: apt-get install -y wrk")
    return shutil.which("wrk")


def zscrgan(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "zscrgan.cli", *args], check=True)


def flower_index(work: Path) -> Path:
    """The tests' tiny flower run (examples/flowers_tiny.json, tests/flowerkit.py) and its index of
    the 60 shared photos (once)."""
    out = work / "flower_index"
    if (out / "vectors.npz").is_file():
        return out
    photos = SHARED / "data" / "flower_photos"
    zscrgan("data", "build", "--images", str(photos), "--texts", str(ROOT / "examples" / "flower_descriptions.csv"),
            "--out", str(work / "flowers"), "--unseen", "canterbury_bells,daffodil,pink_primrose,sweet_pea,sword_lily",
            "--device", "cpu")
    zscrgan("train", "--dataset", str(work / "flowers"), "--out_dir", str(work), "--device", "cpu",
            "--config", str(ROOT / "examples" / "flowers_tiny.json"))
    zscrgan("index", "--run", str(run_dirs(work, "flowers")[0]), "--images", str(photos), "--out", str(out))
    return out


def clustered(n: int, dim: int, centers: int, rng, chunk: int = 100_000) -> np.ndarray:
    means = rng.standard_normal((centers, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        out[start:start + m] = means[rng.integers(0, centers, m)] + 0.5 * rng.standard_normal((m, dim), np.float32)
    return out


def synthetic_index(work: Path, n: int, dim: int = 256, centers: int = 1000, nlist: int = 1024) -> Path:
    """A synthetic IVF index folder in the real layout (once): clustered vectors, one shared thumbnail."""
    from io import BytesIO

    from PIL import Image

    from zscrgan.search import photostore as ps
    from zscrgan.search.gallery import GalleryIndex

    folder = work / f"synthetic_{n}"
    if (folder / ps.VECTORS).is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    vectors = clustered(n, dim, centers, np.random.default_rng(0))
    index = GalleryIndex(dim, "ivf", nlist=min(nlist, n))
    index.add(vectors)
    index.build()
    print(f"synthetic {n}: IVF built in {time.perf_counter() - start:.0f} s", flush=True)
    buf = BytesIO()
    Image.new("RGB", (8, 8), (120, 160, 90)).save(buf, "JPEG")
    conn = ps.connect(folder)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.executemany("INSERT INTO photos (id, path, sha256, size, mtime_ns, width, height, class, embedding, "
                         "thumb) VALUES (?, ?, '', 0, 0, 8, 8, NULL, ?, ?)",
                         ((i + 1, f"synthetic/{i:07d}.jpg", vectors[i].tobytes(), buf.getvalue()) for i in range(n)))
    conn.close()
    ps.write_npz(folder / ps.CLASSES, ids=np.array([str(i) for i in range(centers)]),
                 names=np.array([f"class{i}" for i in range(centers)]), seen=np.ones(centers, bool),
                 embeddings=vectors[:centers].copy())
    ps.write_manifest(folder, {"format": ps.FORMAT, "run": {"embed_dim": dim, "checkpoint": "", "run": "",
                                                            "checkpoint_sha256": "", "text_encoder": None},
                               "images": str(folder), "kind": "ivf", "state": "ready", "counts": {"photos": n}})
    ps.write_npz(folder / ps.VECTORS, index=index.to_bytes(), ids=np.arange(1, n + 1), kind=np.array("ivf"))
    print(f"synthetic {n}: folder written in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def lua_scripts(work: Path, n_photos: int, texts: list[str]) -> dict[str, Path]:
    post = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nmath.randomseed(1)\n'
    scripts = {"like": post + f'request = function()\n  return wrk.format(nil, nil, nil, \'{{"like_id": \' .. '
                              f'math.random(1, {n_photos}) .. \', "k": 10}}\')\nend\n',
               "text": post + "texts = {" + ", ".join(json.dumps(json.dumps({"text": t, "k": 10})) for t in texts)
               + "}\nrequest = function()\n  return wrk.format(nil, nil, nil, texts[math.random(1, #texts)])\nend\n"}
    paths = {}
    for name, body in scripts.items():
        paths[name] = work / f"{name}_{n_photos}.lua"
        paths[name].write_text(body)
    return paths


def descriptions(limit: int = 40) -> list[str]:
    with open(ROOT / "examples" / "flower_descriptions.csv", newline="", encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    words = ["white petals", "a yellow centre", "purple bell-shaped flowers", "red and orange", "pink, ruffled"]
    return (texts + [f"a flower with {w}" for w in words])[:limit]


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, connections: int, seconds: float, script: Path | None) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(pct: str) -> float:
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return round(float(found.group(1)) * UNIT[found.group(2)], 2) if found else float("nan")

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise SystemExit(f"{' '.join(cmd)}: no figures in wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return {"rps": float(rate.group(1)), "p50": ms(50), "p99": ms(99), "errors": errors}


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(folder: Path, workers: int, text: bool, extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "zscrgan.cli", "serve", str(folder), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd + extra + ([] if text else ["--no_text"]))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            get(base + "/health")
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}")
            time.sleep(0.5)
    time.sleep(3 if workers > 1 else 0)  # the other workers finish loading
    return proc, base


def worker_pids(proc: subprocess.Popen, workers: int) -> list[int]:
    if workers == 1:
        return [proc.pid]
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]  # not the resource tracker


def measure(name: str, folder: Path, n: int, workers: int, text: bool, scripts: dict, args,
            extra: tuple = (), kinds: tuple = ("health", "like", "text")) -> list[dict]:
    proc, base = serve(folder, workers, text, list(extra))
    rows = []
    try:
        for kind in [k for k in kinds if text or k != "text"]:
            url = base + ("/health" if kind == "health" else "/search")
            wrk(url, 4, 1, scripts.get(kind))  # warm-up
            for conns in args.connections:
                before = get(base + "/info") if workers == 1 else None
                cell = wrk(url, conns, args.seconds, scripts.get(kind))
                if before is not None and kind != "health":
                    after = get(base + "/info")
                    done = after["queries"] - before["queries"]
                    cell["batch"] = round(done / max(1, after["batches"] - before["batches"]), 1)
                rows.append({"index": name, "photos": n, "workers": workers, "options": " ".join(extra),
                             "request": kind, "conns": conns, **cell})
                print(json.dumps(rows[-1]), flush=True)
        rss = [round(rss_mb(p)) for p in worker_pids(proc, workers)]
        for row in rows:
            row["rss_mb"] = "/".join(map(str, rss))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


REQUEST = {"health": "`GET /health`", "like": "`POST /search {like_id, k: 10}`", "text": "`POST /search {text, k: 10}`"}


def table(rows: list[dict]) -> str:
    lines = ["| index | workers | request | conns | req/s | p50 ms | p99 ms | errors | mean batch | RSS MB per worker |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        workers = f"{r['workers']}{' ' + r['options'] if r['options'] else ''}"
        lines.append(f"| {r['index']} | {workers} | {REQUEST[r['request']]} | {r['conns']} | {r['rps']:,.0f} | "
                     f"{r['p50']} | {r['p99']} | {r['errors']} | {r.get('batch', '')} | {r['rss_mb']} |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc:
        raise SystemExit(f"{DOC}: no {BEGIN} marker to write the table at")
    head, rest = doc.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/zscrgan-serve-load"), help="indexes kept here")
    parser.add_argument("--photos", type=int, default=1_000_000, help="synthetic index size (0: none)")
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--workers", default="1,2", help="server processes to try, e.g. 1,2")
    parser.add_argument("--nprobe", default="", help="also like queries at these nprobes on the synthetic index")
    parser.add_argument("--bf16", action="store_true", help="also text queries with --precision bf16")
    parser.add_argument("--write", action="store_true", help="put the table into docs/performance.md")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    ensure_wrk()
    args.work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    flowers = flower_index(args.work)
    texts = descriptions()
    rows = []
    scripts = lua_scripts(args.work, 60, texts)
    for workers in map(int, args.workers.split(",")):
        rows += measure("flowers", flowers, 60, workers, True, scripts, args)
        if args.bf16:
            rows += measure("flowers", flowers, 60, workers, True, scripts, args, ("--precision", "bf16"), ("text",))
    if args.photos:
        synthetic, name = synthetic_index(args.work, args.photos), f"synthetic {args.photos:,} (ivf)"
        scripts = lua_scripts(args.work, args.photos, texts)  # written once, not once a cell
        for workers in map(int, args.workers.split(",")):
            rows += measure(name, synthetic, args.photos, workers, False, scripts, args, kinds=("health", "like"))
            for nprobe in filter(None, args.nprobe.split(",")):
                rows += measure(name, synthetic, args.photos, workers, False, scripts, args, ("--nprobe", nprobe),
                                ("like",))
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    text = (f"```\n{command}\n```\n\n{os.cpu_count()} CPUs; load average before the run "
            f"{load[0]:.1f}, after {os.getloadavg()[0]:.1f}; wrk 1 thread, {args.seconds:g} s a cell.\n\n{table(rows)}")
    print(text)
    (args.work / "serve_load.json").write_text(json.dumps(rows, indent=1))
    if args.write:
        write_doc(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
