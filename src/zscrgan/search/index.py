"""`zscrgan index`: make a folder of photos searchable by description with a trained run.

    zscrgan index --model flowers --images photos/ --out photos_index     # the shipped flower model
    zscrgan index --run ckt_logs/NAME_logs --images photos/ --out photos_index [--kind exact|ivf|hnsw|ivfpq]
    zscrgan index ... --shards SHARDS      # take the vectors `zscrgan shard` wrote (zscrgan.search.shard)
    zscrgan index --plan 10000000 --dim 256 [--out DIR]   # memory and disk of each kind (zscrgan.search.sizing)

Every file under PHOTOS (any depth, hidden ones excepted) is tried as an image, encoded with
the image featurizer the model was trained on (a shipped model's card, or the run's data set's
manifest.json; a set without one needs --encoder) and mapped into the common space by the
trained CSEM. The
folder layout is in :mod:`zscrgan.search.photostore`.

Incremental: a photo whose size and mtime are unchanged is not read again; a changed one is
re-embedded under the same id; a deleted one is dropped. Photos are committed in batches, so
after a kill -9 the next run redoes only the batch in flight. Unreadable files (corrupt,
truncated, empty, not an image, over --max_megapixels or --max_file_mb) are skipped with one warning line
each and remembered, so they are retried only when they change.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from zscrgan.console import Parser, positive_int, progress, say
from zscrgan.data.encoders import PHOTO_BATCH
from zscrgan.data.photos import MAX_FILE_MB, MAX_MEGAPIXELS, scan
from zscrgan.errors import DataError
from zscrgan.files import LOCK_FILE
from zscrgan.search import diskindex
from zscrgan.search import photostore as ps
from zscrgan.search import shardfolder as sf
from zscrgan.search.gallery import KINDS, GalleryIndex, ivf_cells
from zscrgan.search.sizing import print_plan
from zscrgan.search.shipped import describe_models, open_model
from zscrgan.search.trained import TrainedRun, class_table, describe_run


def resolve_encoder(run: TrainedRun, encoder: str | None) -> str:
    """The image featurizer that made the run's image vectors (``--encoder`` may name it, never another)."""
    recorded = run.image_encoder
    if recorded is None and encoder is None:
        raise DataError(f"{run.dataset_dir or run.name}: no manifest.json naming its image featurizer (not made by "
                        f"zscrgan data build); pass --encoder NAME if you know which made its image vectors")
    if recorded is not None and encoder is not None and encoder != recorded:
        raise DataError(f"--encoder {encoder} does not match {run.dataset_dir or run.name}'s image featurizer {recorded}; "
                        f"the trained CSEM only understands vectors of the latter")
    return encoder or recorded


def check_compatible(run: TrainedRun, out: Path, images: Path, encoder: str | None) -> str:
    """The image encoder to use; refuses a mismatch or an index folder of another run."""
    encoder = resolve_encoder(run, encoder)
    if (out / ps.MANIFEST).is_file():
        old = ps.read_manifest(out)
        if old["run"]["checkpoint_sha256"] != run.checkpoint_sha256:
            raise DataError(f"{out}: built from {old['run'].get('model') or old['run']['checkpoint']} (sha256 "
                            f"{old['run']['checkpoint_sha256'][:12]}), not {run.name}'s {run.checkpoint} "
                            f"({run.checkpoint_sha256[:12]}); use a new --out folder")
        if old["images"] != str(images.resolve()):
            raise DataError(f"{out}: indexes {old['images']}, not {images.resolve()}; use a new --out folder")
    elif out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise DataError(f"{out}: exists and is not an index folder; give an empty or new --out folder")
    return encoder


class Indexer:
    """One `zscrgan index` run over an index folder it holds the lock of; photos are turned into rows
    by the shard worker (:meth:`ShardWorker.read`), in batches of ``batch`` readable photos."""

    def __init__(self, run: TrainedRun, images: Path, out: Path, encoder: str, batch: int = PHOTO_BATCH,
                 max_megapixels: float = MAX_MEGAPIXELS, max_file_mb: float = MAX_FILE_MB):
        self.run, self.images, self.out, self.batch = run, images, out, batch
        self.conn = ps.connect(out)
        self.classes = class_table(run)
        self.worker = sf.ShardWorker(run, encoder, self.classes["names"].tolist(), max_megapixels, max_file_mb,
                                     photo_batch=batch)

    def pending(self) -> tuple[list[str], int, int]:
        """(paths to (re)read, photos dropped, known-unreadable files left alone); drops deletions now.
        Entries the scan passed over (FIFOs, symlink loops, ...) get a warning line each."""
        self.scan = scan(self.images)
        self.files = files = self.scan.files
        for rel, why in self.scan.passed_over.items():
            say(f"zscrgan index: warning: passed over {self.images / rel}: {why}", file=sys.stderr)
        todo, dropped, unchanged_bad = [], 0, 0
        known, bad = ({ps.file_path(r["path"]): (r["size"], r["mtime_ns"])
                       for r in self.conn.execute(f"SELECT path, size, mtime_ns FROM {table}")}
                      for table in ("photos", "skipped"))
        with self.conn:
            for table, rows in (("photos", known), ("skipped", bad)):
                gone = [(ps.stored_path(p),) for p in rows if p not in files]
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

    def _store(self, row: dict, vec: np.ndarray | None) -> None:
        """Insert or update one photo's row, or record it as unreadable (``vec`` None), so reruns do not
        retry it unchanged (inside the caller's transaction). A row as :meth:`ShardWorker.read` makes."""
        rel = ps.stored_path(row["path"])
        if vec is None:
            self.conn.execute("DELETE FROM photos WHERE path = ?", (rel,))
            self.conn.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)",
                              (rel, row["size"], row["mtime_ns"], row["skipped"]))
            return
        self.conn.execute("DELETE FROM skipped WHERE path = ?", (rel,))
        self.conn.execute(
            "INSERT INTO photos (path, sha256, size, mtime_ns, width, height, class, embedding, thumb) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, "
            "size=excluded.size, mtime_ns=excluded.mtime_ns, width=excluded.width, height=excluded.height, "
            "class=excluded.class, embedding=excluded.embedding, thumb=excluded.thumb",
            (rel, row["sha256"], row["size"], row["mtime_ns"], row["width"], row["height"], row["class"],
             np.asarray(vec, np.float32).tobytes(), row["thumb"]))

    def process(self, batch: list[tuple[dict, np.ndarray]]) -> None:
        """Embed and commit one batch of (row, CNN input) (one transaction: all of it or none)."""
        emb = self.worker.embed([pixels for _, pixels in batch])
        with self.conn:
            for (row, _), vec in zip(batch, emb):
                self._store(row, vec)

    def embed_all(self, todo: list[str]) -> int:
        batch, added = [], 0
        with progress(len(todo), "index", "photos", every=1000) as bar:
            for rel in todo:
                bar.update(1)
                got = self.worker.read(self.images, rel)
                if got is None:
                    continue  # deleted since the scan; the next run drops it
                row, pixels = got
                if pixels is None:
                    say(f"zscrgan index: warning: skipped {self.images / rel}: {row['skipped']}", file=sys.stderr)
                    with self.conn:
                        self._store(row, None)
                    continue
                batch.append(got)
                if len(batch) == self.batch:
                    self.process(batch)
                    added += len(batch)
                    batch = []
            if batch:
                self.process(batch)
                added += len(batch)
        return added

    def ingest_shards(self, folder: Path, todo: list[str]) -> list[str]:
        """Commit the photos of ``todo`` that finished shards hold unchanged; returns the rest."""
        plan = sf.read_plan(folder)
        if plan.get("checkpoint_sha256") != self.run.checkpoint_sha256 or plan.get("images") != str(self.images.resolve()):
            raise DataError(f"{folder}: shards of {plan.get('images')} with checkpoint {str(plan.get('checkpoint_sha256'))[:12]}, "
                            f"not of {self.images.resolve()} with this run's {self.run.checkpoint_sha256[:12]}")
        encoder = self.worker.encoders.image_encoder
        if plan.get("image_encoder") != encoder:
            raise DataError(f"{folder}: embedded with {plan.get('image_encoder')}, not {encoder}")
        wanted = set(todo)
        if not wanted:
            return []  # nothing new: the shards need not be read
        for rows, emb in sf.finished_rows(folder, plan):
            with self.conn:
                for r in rows:
                    st = self.files.get(r["path"])
                    if r["path"] not in wanted or st is None or (st.st_size, st.st_mtime_ns) != (r["size"], r["mtime_ns"]):
                        continue  # changed since sharded: embedded below like any new photo
                    wanted.discard(r["path"])
                    self._store(r, None if r["skipped"] is not None else emb[r["row"]])
        return [p for p in todo if p in wanted]

    def write_derived(self, kind: str, manifest: dict, opq: bool = False, keep_vectors: bool = True) -> int:
        """vectors.npz, classes.npz and the finished manifest, each atomically."""
        ids, vectors = ps.all_embeddings(self.conn, self.run.embed_dim)
        if len(ids) == 0:
            raise DataError(f"{self.images}: no readable photo to index")
        if kind == "ivfpq":
            spec = diskindex.write_ivfpq(self.out, vectors, opq, keep_vectors)
            manifest["ivfpq"] = {"nlist": spec.nlist, "m": spec.m, "nbits": spec.nbits, "opq": spec.opq,
                                 "exact_vectors": keep_vectors}
            blob = np.zeros(0, np.uint8)  # the index lives in ivfpq.index + ivfpq.ivfdata
        else:
            index = GalleryIndex(self.run.embed_dim, kind, nlist=ivf_cells(len(ids)))
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


def build_index(run_dir, images, out, kind: str = "exact", encoder: str | None = None,
                max_megapixels: float = MAX_MEGAPIXELS, batch_size: int = PHOTO_BATCH, shards=None, opq: bool = False,
                keep_vectors: bool = True, model: str | None = None, max_file_mb: float = MAX_FILE_MB) -> dict:
    """Create or update the index folder ``out`` with a run folder's model or a shipped ``model``
    (``run_dir`` None); returns its manifest."""
    images, out = Path(images), Path(out)
    if kind not in KINDS:
        raise DataError(f"--kind {kind}: choose one of {', '.join(KINDS)}")
    if not images.is_dir():
        raise DataError(f"{images}: photo folder not found")
    run = open_model(run_dir, model)
    encoder = check_compatible(run, out, images, encoder)
    out.mkdir(parents=True, exist_ok=True)
    with ps.folder_lock(out, "zscrgan index"), ps.sqlite_errors(out):
        manifest = {"format": ps.FORMAT, "run": describe_run(run), "image_encoder": encoder,
                    "text_encoder": run.text_encoder, "images": str(images.resolve()), "kind": kind,
                    "state": "indexing"}
        if (out / ps.MANIFEST).is_file():
            manifest = {**ps.read_manifest(out), **manifest}
        ps.write_manifest(out, manifest)
        indexer = Indexer(run, images, out, encoder, batch_size, max_megapixels, max_file_mb)
        todo, dropped, bad = indexer.pending()
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
    passed = f", {indexer.scan.summary()}" if indexer.scan.passed_over else ""
    print(f"{out}: {total} photos indexed ({kind}); {added} embedded{rate}{taken}, {dropped} dropped, "
          f"{manifest['counts']['skipped']} unreadable skipped{f' ({bad} unchanged since last run)' if bad else ''}"
          f"{passed}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan index", description=__doc__.split("\n\n")[0],
                    epilog="shipped models (--model NAME; zscrgan models says more):\n" + describe_models(),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a model shipped with zscrgan (listed below): no training needed")
    source.add_argument("--run", help="a run folder of yours: ckt_logs/NAME_logs written by zscrgan train")
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
    parser.add_argument("--max_megapixels", type=float, default=MAX_MEGAPIXELS, help="skip larger photos")
    parser.add_argument("--max_file_mb", type=float, default=MAX_FILE_MB, help="skip larger files unread")
    parser.add_argument("--batch_size", type=positive_int, default=PHOTO_BATCH, help="photos per committed batch")
    args = parser.parse_args(argv)
    if args.plan is not None:
        return print_plan(args.plan, args.kind, args.out, args.dim, args.run, args.model)
    missing = [f"--{name}" for name in ("images", "out") if getattr(args, name) is None]
    if args.run is None and args.model is None:
        missing.insert(0, "--model or --run")
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    build_index(args.run, args.images, args.out, args.kind, args.encoder, args.max_megapixels, args.batch_size,
                args.shards, args.opq, args.keep_vectors, args.model, args.max_file_mb)
    return 0
