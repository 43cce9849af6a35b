"""`zscrgan index`: make a folder of photos searchable by description with a trained run.

    zscrgan index --run ckt_logs/flowers_logs --images photos/ --out photos_index [--kind exact|ivf|hnsw|ivfpq]
    zscrgan index ... --shards SHARDS      # take the vectors `zscrgan shard` wrote (zscrgan.search.distribute)
    zscrgan index --plan 10000000 --dim 256 [--out DIR]   # memory and disk of each kind (zscrgan.search.sizing)

Every file under PHOTOS (any depth, hidden ones excepted) is tried as an image, encoded with
the image featurizer the run's data set was built with (its manifest.json says which; a set
without one needs --encoder) and mapped into the common space by the trained CSEM. The
folder layout is in :mod:`zscrgan.search.photostore`.

Incremental: a photo whose size and mtime are unchanged is not read again; a changed one is
re-embedded under the same id; a deleted one is dropped. Photos are committed in batches, so
after a kill -9 the next run redoes only the batch in flight. Unreadable files (corrupt,
truncated, empty, not an image, over --max_megapixels) are skipped with one warning line
each and remembered, so they are retried only when they change.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zscrgan.console import Parser, positive_int
from zscrgan.data.dataset import class_key
from zscrgan.errors import DataError
from zscrgan.files import LOCK_FILE
from zscrgan.search import photostore as ps
from zscrgan.search.gallery import KINDS, GalleryIndex
from zscrgan.search.trained import TrainedRun, class_table, describe_run, open_run

THUMB_SIDE = 256
BATCH = 32


def scan(root: Path) -> dict[str, os.stat_result]:
    """{relative posix path: stat} of every non-hidden regular file under ``root``."""
    if not root.is_dir():
        raise DataError(f"{root}: photo folder not found")
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:
                continue  # vanished or unreadable while walking: not a photo to index
            if path.is_file():
                found[path.relative_to(root).as_posix()] = st
    return found


def read_photo(path: Path, max_pixels: int) -> tuple | str:
    """(CNN input, JPEG thumbnail, width, height, sha256) or a one-line reason to skip the file."""
    from PIL import Image

    from zscrgan.data.featurize import preprocess

    try:
        raw = path.read_bytes()
        if not raw:
            return "empty file"
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > max_pixels:
                return f"{width}x{height} is {width * height / 1e6:.0f} MP, over --max_megapixels {max_pixels / 1e6:g}"
            image.load()
            pixels = preprocess(image)
            thumb = image.convert("RGB")
            thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            thumb.save(buf, "JPEG", quality=80)
    except Exception as exc:  # PIL raises many types on malformed files; all mean "skip it"
        return f"not a readable image ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    return pixels, buf.getvalue(), width, height, hashlib.sha256(raw).hexdigest()


def resolve_encoder(run: TrainedRun, encoder: str | None) -> str:
    """The image featurizer that made the run's image vectors (``--encoder`` may name it, never another)."""
    recorded = run.image_encoder
    if recorded is None and encoder is None:
        raise DataError(f"{run.dataset_dir}: no manifest.json naming its image featurizer (not made by "
                        f"zscrgan data build); pass --encoder NAME if you know which made its image vectors")
    if recorded is not None and encoder is not None and encoder != recorded:
        raise DataError(f"--encoder {encoder} does not match {run.dataset_dir}'s image featurizer {recorded}; "
                        f"the trained CSEM only understands vectors of the latter")
    return encoder or recorded


def check_compatible(run: TrainedRun, out: Path, images: Path, encoder: str | None) -> str:
    """The image encoder to use; refuses a mismatch or an index folder of another run."""
    encoder = resolve_encoder(run, encoder)
    if (out / ps.MANIFEST).is_file():
        old = ps.read_manifest(out)
        if old["run"]["checkpoint_sha256"] != run.checkpoint_sha256:
            raise DataError(f"{out}: built from {old['run']['checkpoint']} (sha256 {old['run']['checkpoint_sha256'][:12]}), "
                            f"not this run's {run.checkpoint} ({run.checkpoint_sha256[:12]}); use a new --out folder")
        if old["images"] != str(images.resolve()):
            raise DataError(f"{out}: indexes {old['images']}, not {images.resolve()}; use a new --out folder")
    elif out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise DataError(f"{out}: exists and is not an index folder; give an empty or new --out folder")
    return encoder


def class_lookup(names) -> dict:
    """{class_key(name): name} of the run's classes, for :func:`known_class`."""
    return {class_key(name): str(name) for name in names}


def known_class(rel: str, lookup: dict) -> str | None:
    """The run's class a photo's top folder names (any separators or case: the folder
    'english_marigold' is FLO's 'english marigold'), or None."""
    return lookup.get(class_key(rel.split("/", 1)[0])) if "/" in rel else None


class Indexer:
    """One `zscrgan index` run over an index folder it holds the lock of."""

    def __init__(self, run: TrainedRun, images: Path, out: Path, encoder: str, max_pixels: int, batch: int = BATCH):
        self.run, self.images, self.out, self.max_pixels, self.batch = run, images, out, max_pixels, batch
        self.encoder_name = encoder
        self._cnn = None
        self.conn = ps.connect(out)
        self.classes = class_table(run)
        self.class_lookup = class_lookup(self.classes["names"].tolist())

    @property
    def cnn(self):
        """Loaded at the first photo to embed: a run fed entirely from shards never needs it."""
        if self._cnn is None:
            from zscrgan.data.featurize import load_image_encoder

            self._cnn = load_image_encoder(self.encoder_name, torch.device("cpu"))
        return self._cnn

    def plan(self) -> tuple[list[str], int, int]:
        """(paths to (re)read, photos dropped, known-unreadable files left alone); drops deletions now."""
        self.files = files = scan(self.images)
        todo, dropped, unchanged_bad = [], 0, 0
        known = {r["path"]: (r["size"], r["mtime_ns"]) for r in self.conn.execute("SELECT path, size, mtime_ns FROM photos")}
        bad = {r["path"]: (r["size"], r["mtime_ns"]) for r in self.conn.execute("SELECT path, size, mtime_ns FROM skipped")}
        with self.conn:
            for table, rows in (("photos", known), ("skipped", bad)):
                gone = [(p,) for p in rows if p not in files]
                self.conn.executemany(f"DELETE FROM {table} WHERE path = ?", gone)
                dropped += len(gone) if table == "photos" else 0
        for rel, st in files.items():
            stamp = (st.st_size, st.st_mtime_ns)
            if known.get(rel) == stamp:
                continue
            if bad.get(rel) == stamp:
                unchanged_bad += 1
                continue
            todo.append(rel)
        return todo, dropped, unchanged_bad

    def process(self, batch: list[tuple[str, os.stat_result, tuple]]) -> None:
        """Featurize, embed and commit one batch (one transaction: all of it or none)."""
        emb = self.run.embed_images(cnn_features(self.cnn, [item[2][0] for item in batch])).astype(np.float32)
        with self.conn:
            for (rel, st, (_, thumb, w, h, digest)), vec in zip(batch, emb):
                self._store(rel, digest, st.st_size, st.st_mtime_ns, w, h, known_class(rel, self.class_lookup), vec, thumb)

    def _store(self, rel, digest, size, mtime_ns, width, height, cls, vec: np.ndarray, thumb) -> None:
        """Insert or update one photo's row (inside the caller's transaction)."""
        self.conn.execute("DELETE FROM skipped WHERE path = ?", (rel,))
        self.conn.execute(
            "INSERT INTO photos (path, sha256, size, mtime_ns, width, height, class, embedding, thumb) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, "
            "size=excluded.size, mtime_ns=excluded.mtime_ns, width=excluded.width, height=excluded.height, "
            "class=excluded.class, embedding=excluded.embedding, thumb=excluded.thumb",
            (rel, digest, size, mtime_ns, width, height, cls, np.asarray(vec, np.float32).tobytes(), thumb))

    def _mark_skipped(self, rel: str, size: int, mtime_ns: int, reason: str) -> None:
        """Record an unreadable photo (inside the caller's transaction), so reruns do not retry it unchanged."""
        self.conn.execute("DELETE FROM photos WHERE path = ?", (rel,))
        self.conn.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", (rel, size, mtime_ns, reason))

    def skip(self, rel: str, st: os.stat_result, reason: str) -> None:
        tqdm.write(f"zscrgan index: warning: skipped {self.images / rel}: {reason}", file=sys.stderr)
        with self.conn:
            self._mark_skipped(rel, st.st_size, st.st_mtime_ns, reason)

    def embed_all(self, todo: list[str]) -> int:
        batch, added = [], 0
        with tqdm(total=len(todo), unit="photo", desc="index", file=sys.stderr, smoothing=0.1) as bar:
            for rel in todo:
                path = self.images / rel
                try:
                    st = path.stat()
                except OSError:
                    bar.update(1)
                    continue  # deleted since the scan; the next run drops it
                got = read_photo(path, self.max_pixels)
                if isinstance(got, str):
                    self.skip(rel, st, got)
                else:
                    batch.append((rel, st, got))
                if len(batch) == self.batch:
                    self.process(batch)
                    added += len(batch)
                    batch = []
                bar.update(1)
            if batch:
                self.process(batch)
                added += len(batch)
        return added

    def ingest_shards(self, folder: Path, todo: list[str]) -> list[str]:
        """Commit the photos of ``todo`` that finished shards hold unchanged; returns the rest."""
        from zscrgan.search import shards as sh

        plan = sh.read_plan(folder)
        if plan.get("checkpoint_sha256") != self.run.checkpoint_sha256 or plan.get("images") != str(self.images.resolve()):
            raise DataError(f"{folder}: shards of {plan.get('images')} with checkpoint {str(plan.get('checkpoint_sha256'))[:12]}, "
                            f"not of {self.images.resolve()} with this run's {self.run.checkpoint_sha256[:12]}")
        if plan.get("image_encoder") != self.encoder_name:
            raise DataError(f"{folder}: embedded with {plan.get('image_encoder')}, not {self.encoder_name}")
        wanted = set(todo)
        if not wanted:
            return []  # nothing new: the shards need not be read
        for rows, emb in sh.finished_rows(folder, plan):
            with self.conn:
                for r in rows:
                    st = self.files.get(r["path"])
                    if r["path"] not in wanted or st is None or (st.st_size, st.st_mtime_ns) != (r["size"], r["mtime_ns"]):
                        continue  # changed since sharded: embedded below like any new photo
                    wanted.discard(r["path"])
                    if r["skipped"] is not None:
                        self._mark_skipped(r["path"], r["size"], r["mtime_ns"], r["skipped"])
                    else:
                        self._store(r["path"], r["sha256"], r["size"], r["mtime_ns"], r["width"], r["height"],
                                    r["class"], emb[r["row"]], r["thumb"])
        return [p for p in todo if p in wanted]

    def write_derived(self, kind: str, manifest: dict, opq: bool = False, keep_vectors: bool = True) -> int:
        """vectors.npz, classes.npz and the finished manifest, each atomically."""
        from zscrgan.search import diskindex

        ids, vectors = ps.all_embeddings(self.conn, self.run.embed_dim)
        if len(ids) == 0:
            raise DataError(f"{self.images}: no readable photo to index")
        if kind == "ivfpq":
            spec = write_ivfpq(self.out, vectors, opq, keep_vectors)
            manifest["ivfpq"] = {"nlist": spec.nlist, "m": spec.m, "nbits": spec.nbits, "opq": spec.opq,
                                 "exact_vectors": keep_vectors}
            blob = np.zeros(0, np.uint8)  # the index lives in ivfpq.index + ivfpq.ivfdata
        else:
            index = GalleryIndex(self.run.embed_dim, kind, nlist=ivf_nlist(len(ids)))
            index.add(vectors)
            blob = index.to_bytes()
        ps.write_npz(self.out / ps.VECTORS, index=blob, ids=ids, kind=np.array(kind))
        if kind != "ivfpq":  # after vectors.npz names the new kind: an earlier ivfpq index's files are stale
            for stale in (diskindex.MERGED, diskindex.IVFDATA, diskindex.EXACT, diskindex.TRAINED):
                (self.out / stale).unlink(missing_ok=True)
        ps.write_npz(self.out / ps.CLASSES, **self.classes)
        skipped = self.conn.execute("SELECT COUNT(*) FROM skipped").fetchone()[0]
        manifest.update(state="ready", kind=kind, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        counts={"photos": int(len(ids)), "skipped": int(skipped),
                                "classes": int(len(self.classes["ids"])),
                                "known_class": self.conn.execute("SELECT COUNT(*) FROM photos WHERE class IS NOT NULL").fetchone()[0]})
        ps.write_manifest(self.out, manifest)
        return len(ids)


SHARD_ROWS = 1_000_000  # vectors per index shard added before the on-disk merge


def write_ivfpq(out: Path, vectors: np.ndarray, opq: bool, keep_vectors: bool):
    """Train on a sample, add the gallery as shards of SHARD_ROWS, merge on disk into ``out``."""
    from zscrgan.search import diskindex as di

    n, dim = vectors.shape
    spec = di.PQSpec.for_size(n, dim, opq)
    stage = out / f".ivfpq-build-{os.getpid()}"
    stage.mkdir(exist_ok=True)
    try:
        picks = np.sort(np.random.default_rng(0).choice(n, spec.train_size(n), replace=False))
        di.train(vectors[picks], spec, stage / di.TRAINED)
        parts = []
        for first in range(0, n, SHARD_ROWS):
            parts.append(stage / f"part-{first // SHARD_ROWS:05d}.index")
            di.add_shard(stage / di.TRAINED, vectors[first:first + SHARD_ROWS], first, parts[-1])
        if keep_vectors:
            ps.write_atomic(out / di.EXACT, di.unit(vectors))  # written from the array's buffer: no bytes copy
        else:
            (out / di.EXACT).unlink(missing_ok=True)
        di.merge(stage / di.TRAINED, parts, out, expected_rows=n)
        os.replace(stage / di.TRAINED, out / di.TRAINED)  # kept: later shards can be added from it
    finally:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
    return spec


def cnn_features(cnn, pixels: list[np.ndarray]) -> np.ndarray:
    """Pooled CNN features of a batch of preprocessed photos ([3, H, W] arrays)."""
    with torch.inference_mode():
        return cnn(torch.from_numpy(np.stack(pixels))).mean(dim=(2, 3)).float().numpy()


def ivf_nlist(n: int) -> int:
    """About 4 sqrt(N) cells (faiss' guidance), at most 4096, at least 1."""
    return int(max(1, min(4096, round(4 * n ** 0.5), n)))


def build_index(run_dir, images, out, kind: str = "exact", encoder: str | None = None,
                max_megapixels: float = 40.0, batch_size: int = BATCH, shards=None, opq: bool = False,
                keep_vectors: bool = True) -> dict:
    """Create or update the index folder ``out``; returns its manifest."""
    images, out = Path(images), Path(out)
    if kind not in KINDS:
        raise DataError(f"--kind {kind}: choose one of {', '.join(KINDS)}")
    if not images.is_dir():
        raise DataError(f"{images}: photo folder not found")
    run = open_run(run_dir)
    encoder = check_compatible(run, out, images, encoder)
    out.mkdir(parents=True, exist_ok=True)
    with ps.folder_lock(out):
        manifest = {"format": ps.FORMAT, "run": describe_run(run), "image_encoder": encoder,
                    "text_encoder": run.text_encoder, "images": str(images.resolve()), "kind": kind,
                    "state": "indexing"}
        if (out / ps.MANIFEST).is_file():
            manifest = {**ps.read_manifest(out), **manifest}
        ps.write_manifest(out, manifest)
        indexer = Indexer(run, images, out, encoder, int(max_megapixels * 1e6), batch_size)
        todo, dropped, bad = indexer.plan()
        from_shards = 0
        if shards is not None:
            rest = indexer.ingest_shards(Path(shards), todo)
            from_shards, todo = len(todo) - len(rest), rest
        start = time.perf_counter()
        added = indexer.embed_all(todo)
        seconds = time.perf_counter() - start
        total = indexer.write_derived(kind, manifest, opq, keep_vectors)
        indexer.conn.close()
    rate = f" ({added / seconds:.1f} photos/s)" if added and seconds > 0 else ""
    taken = f", {from_shards} taken from {shards}" if shards is not None else ""
    print(f"{out}: {total} photos indexed ({kind}); {added} embedded{rate}{taken}, {dropped} dropped, "
          f"{manifest['counts']['skipped']} unreadable skipped{f' ({bad} unchanged since last run)' if bad else ''}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="run folder: ckt_logs/NAME_logs written by zscrgan train")
    parser.add_argument("--images", type=Path, help="folder of photos (any depth)")
    parser.add_argument("--out", type=Path, help="the index folder to create or update")
    parser.add_argument("--kind", default="exact", choices=KINDS, help="FAISS index kind")
    parser.add_argument("--shards", type=Path, help="a folder written by zscrgan shard: its vectors are used as is")
    parser.add_argument("--opq", action="store_true", help="ivfpq: learn an OPQ rotation before the PQ")
    parser.add_argument("--no-exact-vectors", dest="keep_vectors", action="store_false",
                        help="ivfpq: do not keep exact.f32 for re-ranking (smaller disk, lower recall)")
    parser.add_argument("--plan", type=positive_int, metavar="N", help="print memory and disk for N photos, then exit")
    parser.add_argument("--dim", type=positive_int, help="--plan: embed dim (default: the --run's)")
    parser.add_argument("--encoder", help="image featurizer, for data sets without a manifest.json")
    parser.add_argument("--max_megapixels", type=float, default=40.0, help="skip larger photos")
    parser.add_argument("--batch_size", type=positive_int, default=BATCH, help="photos per committed batch")
    args = parser.parse_args(argv)
    if args.plan is not None:
        from zscrgan.search.sizing import plan_main

        return plan_main(args)
    missing = [f"--{name}" for name in ("run", "images", "out") if getattr(args, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    build_index(args.run, args.images, args.out, args.kind, args.encoder, args.max_megapixels, args.batch_size,
                args.shards, args.opq, args.keep_vectors)
    return 0
