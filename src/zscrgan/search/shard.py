"""`zscrgan shard`: featurize + embed a photo folder into shard files, here or on a Ray cluster.

    zscrgan shard --run RUN --images PHOTOS --out SHARDS [--shard_size 1000] [--retries 2]
                  [--distributor local [--workers N] | ray [--workers N] [--ray_address auto|HOST:PORT]]
    zscrgan index --run RUN --images PHOTOS --out INDEX --shards SHARDS [--kind ivfpq]

The distributors only schedule :class:`zscrgan.search.shardfolder.ShardWorker` (the pure worker), so they
write identical shards: ``local`` runs it in this process, or in ``--workers`` spawned processes
of one thread each; ``ray`` runs it as a Ray Data ``map_batches`` actor (model loaded once per
actor). ``--ray_address auto`` joins the cluster this machine belongs to; none starts a local
Ray with ``--workers`` CPUs. Ray (``pip install 'zscrgan[ray]'``) is imported only when chosen.
A shard that raises is retried ``--retries`` times; one that still fails is named at the end,
and rerunning the same command redoes only unfinished shards.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from zscrgan.console import Parser, positive_int, progress
from zscrgan.data.photos import MAX_FILE_MB, MAX_MEGAPIXELS, scan
from zscrgan.device import spawn_pool
from zscrgan.errors import DataError, require
from zscrgan.search import photostore as ps
from zscrgan.search import shardfolder as sf
from zscrgan.search.index import resolve_encoder
from zscrgan.search.shipped import open_model
from zscrgan.search.trained import class_table

ADDRESS_TIMEOUT = 5.0  # seconds to wait for a Ray head before calling it silent
# Ray 2.52+ clusters may demand a token, and Ray 2.61 makes that its default
TOKEN_HINT = ("a cluster with token authentication needs RAY_AUTH_MODE=token and the head's token here "
              "(RAY_AUTH_TOKEN or ~/.ray/auth_token; docs/scale.md)")


def _ray():
    """Ray (the ray extra), or a one-line UserError saying how to install it."""
    return require("ray", "ray", "--distributor ray")


def _attempts(worker, folder, images, shard, paths, key, retries) -> tuple[int, str]:
    """(photos embedded, '') or (-1, last error) after 1 + retries tries."""
    error = ""
    for _ in range(retries + 1):
        try:
            return worker(str(folder), str(images), shard, paths, key), ""
        except Exception as exc:  # any failure of one shard: retry it, never lose the others
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return -1, error


# ---- local: this process, or a pool of spawned processes -------------------------------------
_WORKER = None


def _init_pool(worker_args: tuple) -> None:
    global _WORKER
    _WORKER = sf.ShardWorker.load(*worker_args, threads=1)


def _pool_task(folder, images, shard, paths, key, retries) -> tuple[int, int, str]:
    return (shard, *_attempts(_WORKER, folder, images, shard, paths, key, retries))


def run_local(tasks, folder, images, key, worker_args, workers, retries):
    if workers == 1:
        worker = sf.ShardWorker.load(*worker_args, threads=1)
        for shard, paths in tasks:
            yield (shard, *_attempts(worker, folder, images, shard, paths, key, retries))
        return
    with spawn_pool(workers, _init_pool, (worker_args,)) as pool:  # one thread each (_init_pool)
        futures = {pool.submit(_pool_task, str(folder), str(images), s, p, key, retries): s for s, p in tasks}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool as exc:  # a worker process died (killed, out of memory)
                yield futures[future], -1, f"worker process died ({exc})"


# ---- ray ---------------------------------------------------------------------------------------
class RayShardActor:
    """Ray Data actor: loads the model once, then writes one shard per batch row."""

    def __init__(self, worker_args, folder, images, key, retries):
        self.worker = sf.ShardWorker.load(*worker_args, threads=1)
        self.folder, self.images, self.key, self.retries = folder, images, key, retries

    def __call__(self, batch: dict) -> dict:
        done, rows, errors = [], [], []
        for shard, paths in zip(batch["shard"], batch["paths"]):
            n, error = _attempts(self.worker, self.folder, self.images, int(shard), [str(p) for p in paths],
                                 self.key, self.retries)
            done.append(int(shard))
            rows.append(n)
            errors.append(error)
        return {"shard": np.array(done), "rows": np.array(rows), "error": np.array(errors, dtype=object)}


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT) -> None:
    """A HOST:PORT that does not answer fails here in seconds, not after Ray's long retries."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DataError(f"--ray_address {address}: expected auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DataError(f"--ray_address {address}: no Ray head answers there within {timeout:g} s "
                        f"({exc.strerror or exc}); start one with `ray start --head` or fix the address") from None


def connect_ray(address: str | None, workers: int) -> bool:
    """Join the cluster at ``address`` (or start a local Ray of ``workers`` CPUs) before any
    file is written; True when this call started Ray (and so must stop it)."""
    ray = _ray()
    if address:
        check_address(address)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or None, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:  # a wrong token is a ConnectionError
        reason = " ".join(str(exc).split()).split(". ")[0][:200]
        raise DataError(f"--ray_address {address}: {reason}; {TOKEN_HINT}") from None
    return True


def run_ray(tasks, folder, images, key, worker_args, workers, retries):
    ray = _ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"shard": s, "paths": p} for s, p in tasks]
    if not items:
        return
    out = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        RayShardActor, fn_constructor_kwargs={"worker_args": worker_args, "folder": str(folder),
                                              "images": str(images), "key": key, "retries": retries},
        batch_size=1, concurrency=workers, num_cpus=1, batch_format="numpy")
    for row in out.iter_rows():
        yield int(row["shard"]), int(row["rows"]), str(row["error"])


# ---- the command -------------------------------------------------------------------------------
def build_shards(run_dir, images, out, shard_size: int = 1000, distributor: str = "local", workers: int = 1,
                 ray_address: str | None = None, retries: int = 2, encoder: str | None = None,
                 max_megapixels: float = MAX_MEGAPIXELS, model: str | None = None,
                 max_file_mb: float = MAX_FILE_MB) -> dict:
    """Write every unfinished shard of ``out`` with a run folder's model or a shipped ``model``
    (``run_dir`` None); returns counts. Refuses before any work."""
    images, out = Path(images), Path(out)
    if distributor not in ("local", "ray"):
        raise DataError(f"--distributor {distributor}: choose local or ray")
    files = sorted(rel for rel in scan(images).files if isinstance(ps.stored_path(rel), str))
    # a name that is not UTF-8 cannot be a Parquet string: zscrgan index --shards embeds it itself
    run = open_model(run_dir, model)
    encoder = resolve_encoder(run, encoder)
    key = sf.run_key(run.checkpoint_sha256, encoder, images)
    about = {"checkpoint_sha256": run.checkpoint_sha256, "run": run.name, "image_encoder": encoder,
             "images": str(images.resolve()), "embed_dim": run.embed_dim}
    started = connect_ray(ray_address, workers) if distributor == "ray" else False
    try:
        return _write_shards(out, images, files, key, about, shard_size, run, encoder, max_megapixels,
                             distributor, workers, retries, max_file_mb)
    finally:
        if started:
            _ray().shutdown()


def _write_shards(out, images, files, key, about, shard_size, run, encoder, max_megapixels,
                  distributor, workers, retries, max_file_mb) -> dict:
    with ps.folder_lock(out, "zscrgan shard"):
        plan, groups = sf.make_plan(out, files, key, about, shard_size)
        todo = [(s, groups[s]) for s in range(plan["shards"]) if not sf.is_finished(out, s, key)]
        names = class_table(run)["names"].tolist() if todo else []
        worker_args = (run.source, encoder, names, max_megapixels, max_file_mb)
        runner = (run_ray(todo, out, images, key, worker_args, workers, retries) if distributor == "ray"
                  else run_local(todo, out, images, key, worker_args, workers, retries))
        start, photos, failed = time.perf_counter(), 0, []
        with progress(len(todo), "shard", "shard", every=1) as bar:
            for shard, rows, error in runner:
                if rows < 0:
                    failed.append((shard, error))
                else:
                    photos += rows
                bar.update(1)
        seconds = time.perf_counter() - start
    done = len(todo) - len(failed)
    rate = f", {done / seconds:.2f} shards/s, {photos / seconds:.1f} photos/s" if done and seconds > 0 else ""
    print(f"{out}: {done} shards written ({photos} photos{rate}, {distributor} x{workers}); "
          f"{plan['shards'] - len(todo)} finished before; {len(failed)} failed")
    if failed:
        shard, error = sorted(failed)[0]
        raise DataError(f"{out}: {len(failed)} shard(s) failed after {retries} retries (first: {sf.name(shard)}: "
                        f"{error}); rerun the same command to redo only those")
    return {"shards": plan["shards"], "written": done, "photos": photos, "seconds": seconds, "skipped": plan["shards"] - len(todo)}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan shard", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model shipped with zscrgan (zscrgan models lists them)")
    source.add_argument("--run", help="a run folder of yours: ckt_logs/NAME_logs written by zscrgan train")
    parser.add_argument("--images", required=True, type=Path, help="folder of photos (any depth)")
    parser.add_argument("--out", required=True, type=Path, help="the shard folder to create or complete")
    parser.add_argument("--shard_size", "--shard-size", dest="shard_size", type=positive_int, default=1000, help="photos per shard")
    parser.add_argument("--distributor", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=positive_int, default=1, help="processes (local) or actors (ray)")
    parser.add_argument("--ray_address", "--ray-address", dest="ray_address", help="auto: join this machine's cluster; HOST:PORT: that head")
    parser.add_argument("--retries", type=int, default=2, help="tries after the first for a failing shard")
    parser.add_argument("--encoder", help="image featurizer, for data sets without a manifest.json")
    parser.add_argument("--max_megapixels", type=float, default=MAX_MEGAPIXELS, help="skip larger photos")
    parser.add_argument("--max_file_mb", type=float, default=MAX_FILE_MB, help="skip larger files unread")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    build_shards(args.run, args.images, args.out, args.shard_size, args.distributor, args.workers,
                 args.ray_address, max(0, args.retries), args.encoder, args.max_megapixels, args.model,
                 args.max_file_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
