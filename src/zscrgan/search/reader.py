"""`zscrgan search`: photos of an index folder by description, by example photo or by class.

    zscrgan search INDEX "a tall purple flower with bell-shaped petals" [-k 10] [--json | --paths]
    zscrgan search INDEX --like photos/daisy/1.jpg          # photos like an indexed one
    zscrgan search INDEX --class_id 7                       # a class's stored query: the mean of its texts' queries
    printf 'red petals\\nyellow trumpet\\n' | zscrgan search INDEX -k 5

Free text is encoded with the text featurizer the run's data set was built with, then made a
query embedding as the run's recipe evaluates (noise-free mean, or averaged noise draws).
Each answer also names the 3 seen classes whose descriptions lie nearest the query in the
common space: what the model thinks the description resembles. :class:`IndexReader` is the
one search path shared with `zscrgan serve`.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import unicodedata
from pathlib import Path

import numpy as np

from zscrgan.console import Parser
from zscrgan.data.photos import shown
from zscrgan.errors import DataError
from zscrgan.evaluation.metrics import unit
from zscrgan.search import photostore as ps
from zscrgan.search.gallery import GalleryIndex
from zscrgan.search.shipped import reopen

MAX_K = 1000
MAX_TEXT = 1000  # characters of one description
N_EXPLAIN = 3
IVF_NPROBE = 64  # recall@10 0.966 at 1M vectors, p95 11 ms (docs/performance.md)
IVFPQ_NPROBE = 128  # ivfpq, re-ranked: see docs/performance.md#past-one-machine
_IN_CHUNK = 500  # ids per SQL IN (...): under SQLite's oldest 999-variable limit


def check_texts(texts: list[str]) -> None:
    """One-line refusals of texts that are not descriptions: empty, only invisible characters
    (whitespace, zero-width spaces, NUL and other controls), too long, not valid Unicode."""
    for text in texts:
        if not any(unicodedata.category(c)[0] not in "CZ" for c in text):  # C: controls, format; Z: spaces
            raise DataError("empty query: give a description of what the photo shows")
        if len(text) > MAX_TEXT:
            raise DataError(f"query of {len(text)} characters: at most {MAX_TEXT}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON "\\ud800"): the tokenizer would fail on it
            raise DataError("query is not valid Unicode text (an unpaired surrogate)") from None


class IndexReader:
    """An index folder opened for queries; thread-safe (one SQLite connection per thread)."""

    def __init__(self, folder: str | Path, load_model: bool = True, nprobe: int | None = None,
                 precision: str = "fp32"):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: index folder not found")
        self.manifest = ps.read_manifest(self.folder)
        self.root = Path(self.manifest["images"]).resolve()  # the photo folder, resolved once, not per /photo
        saved = ps.read_npz(self.folder / ps.VECTORS)
        self.kind = str(saved["kind"])
        self.dim = int(self.manifest["run"]["embed_dim"])
        if self.kind == "ivfpq":  # memory-mapped: starts in seconds, RSS far below the vectors
            self.index = GalleryIndex.open_disk(self.folder, self.dim, nprobe=nprobe or IVFPQ_NPROBE)
        else:
            self.index = GalleryIndex.from_bytes(saved["index"], self.dim, self.kind, nprobe=nprobe or IVF_NPROBE)
        self.ids = saved["ids"].astype(np.int64)
        if len(self.ids) != len(self.index):
            raise DataError(f"{self.folder / ps.VECTORS}: {len(self.ids)} photo ids for {len(self.index)} vectors; "
                            f"rerun zscrgan index to the end")
        classes = ps.read_npz(self.folder / ps.CLASSES)
        self.class_ids, self.class_names = classes["ids"].tolist(), classes["names"].tolist()
        self.class_emb = unit(classes["embeddings"])
        self.seen = classes["seen"].astype(bool)
        self._local = threading.local()
        self.precision = precision  # of the sentence encoder: fp32 or bf16 (`zscrgan serve --precision`)
        self.run = self._open_run() if load_model else None

    def _open_run(self):
        """The model whose CSEM made the vectors; refused when its checkpoint is gone or changed."""
        recorded = self.manifest["run"]
        checkpoint = Path(recorded["checkpoint"])
        if "model" not in recorded and not checkpoint.is_file():
            raise DataError(f"{checkpoint}: checkpoint not found; {self.folder} was built from it, "
                            f"so text queries cannot be embedded (restore it or re-index with another run)")
        run = reopen(recorded)
        if run.checkpoint_sha256 != recorded["checkpoint_sha256"]:
            raise DataError(f"{run.checkpoint}: changed since {self.folder} was built (sha256 {run.checkpoint_sha256[:12]}, "
                            f"index made with {recorded['checkpoint_sha256'][:12]}); re-index into a new folder")
        return run

    # ---- metadata ------------------------------------------------------------------------
    def db(self):
        if getattr(self._local, "conn", None) is None:
            self._local.conn = ps.connect(self.folder, readonly=True)
            # the B-tree's inner pages stay in memory: 165 random rows of a 1M-photo table read in
            # 1.3 ms, not 8.6 ms with SQLite's default 2 MB (docs/performance.md, Serving)
            self._local.conn.execute("PRAGMA cache_size=-32768")
        return self._local.conn

    def photo(self, photo_id: int) -> dict | None:
        row = self.db().execute(f"SELECT {', '.join(ps.META_COLUMNS)} FROM photos WHERE id = ?",
                                (int(photo_id),)).fetchone()
        return dict(row) if row else None

    def _by_id(self, columns: str, photo_ids) -> dict[int, tuple]:
        """{id: (columns...)} of the given photos, in one query per 500 ids (not one query per id)."""
        wanted = sorted({int(i) for i in photo_ids})
        found = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start:start + _IN_CHUNK]
            for row in self.db().execute(f"SELECT id, {columns} FROM photos WHERE id IN "
                                         f"({','.join('?' * len(chunk))})", chunk):
                found[row[0]] = tuple(row)[1:]
        return found

    def photos_meta(self, photo_ids) -> dict[int, dict]:
        """{id: {path, class}} of many photos, read together."""
        return {i: {"path": ps.file_path(path), "class": cls} for i, (path, cls) in self._by_id("path, class", photo_ids).items()}

    def thumb(self, photo_id: int) -> bytes | None:
        row = self.db().execute("SELECT thumb FROM photos WHERE id = ?", (int(photo_id),)).fetchone()
        return row[0] if row else None

    def photo_path(self, photo_id: int) -> Path | None:
        """The file of an indexed photo, only if it still lies inside the indexed folder (whether it is
        still a readable image is serve's open_photo to say, on the open descriptor)."""
        meta = self.photo(photo_id)
        if meta is None:
            return None
        path = (self.root / ps.file_path(meta["path"])).resolve()
        return path if path.is_relative_to(self.root) else None

    def id_of_path(self, path: str | Path) -> int:
        path, root = Path(path), self.root
        candidates, resolved = [path.as_posix()], path.resolve()
        if resolved.is_relative_to(root):
            candidates.append(resolved.relative_to(root).as_posix())
        for rel in candidates:
            row = self.db().execute("SELECT id FROM photos WHERE path = ?", (ps.stored_path(rel),)).fetchone()
            if row:
                return int(row[0])
        raise DataError(f"{path}: not a photo of {self.folder} (index it first, or give its path under {root})")

    # ---- query embeddings ----------------------------------------------------------------
    def text_run(self):
        """The run that embeds free text (search.trained.TrainedRun), or a one-line DataError where the
        index was opened without it."""
        if self.run is None:
            raise DataError("this index was opened without its model (--no_text), so text cannot be embedded")
        return self.run

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Free text -> query embeddings (strings in; ``embed_*`` names take vectors)."""
        check_texts(texts)
        return self.text_run().encode_texts(texts, self.precision)

    def has_id(self, photo_id: int) -> bool:
        """Photo ids are stored ascending (SQLite id order): a binary search, no 10M-entry dict."""
        at = int(np.searchsorted(self.ids, photo_id))
        return at < len(self.ids) and int(self.ids[at]) == int(photo_id)

    def embed_like(self, photo_id: int) -> np.ndarray:
        got = self.embeddings_of([photo_id])
        if photo_id not in got:
            raise DataError(f"photo id {photo_id}: not in {self.folder}")
        return got[photo_id][None].copy()

    def embeddings_of(self, photo_ids) -> dict[int, np.ndarray]:
        """{id: stored embedding} of the given photos that are in the index, read together."""
        found = self._by_id("embedding", (i for i in photo_ids if self.has_id(i)))
        return {i: np.frombuffer(blob, np.float32) for i, (blob,) in found.items()}

    def embed_class(self, class_id: str) -> np.ndarray:
        key = str(class_id)
        if key not in self.class_ids:
            key = next((i for i, n in zip(self.class_ids, self.class_names) if n == key), None)
        if key is None:
            raise DataError(f"--class_id {class_id}: no such class (ids {', '.join(self.class_ids[:20])}"
                            f"{' ...' if len(self.class_ids) > 20 else ''})")
        return self.class_emb[self.class_ids.index(key)][None].copy()

    # ---- search --------------------------------------------------------------------------
    def explain(self, queries: np.ndarray, n: int = N_EXPLAIN) -> list[list[dict]]:
        """The ``n`` seen classes nearest each query in the common space."""
        seen = np.flatnonzero(self.seen)
        sims = unit(queries) @ self.class_emb[seen].T
        out = []
        for row in sims:
            best = np.argsort(-row, kind="stable")[:n]
            out.append([{"class_id": self.class_ids[seen[b]], "name": self.class_names[seen[b]],
                         "score": round(float(row[b]), 4)} for b in best])
        return out

    def search(self, queries: np.ndarray, k: int = 10, min_score: float = -1.0,
               exclude: int | None = None) -> list[list[dict]]:
        """Per query: [{id, path, score, class}], best first; ``exclude`` drops one id (the example)."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise DataError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
        want = min(k + (exclude is not None), len(self.index))
        scores, rows = self.index.search(np.asarray(queries, np.float32), want)
        results = self.hits(scores, rows, [k] * len(rows), [min_score] * len(rows), [exclude] * len(rows))
        for hits in results:
            for hit in hits:
                hit["score"] = round(hit["score"], 4)
        return results

    def hits(self, scores: np.ndarray, rows: np.ndarray, ks, min_scores, excludes) -> list[list[dict]]:
        """FAISS rows -> per query [{id, path, score, class}] (scores unrounded), metadata in one query.

        Shared by :meth:`search` and `zscrgan serve`'s batches, so both answer alike."""
        found_rows = np.asarray(rows)
        meta = self.photos_meta(self.ids[found_rows[found_rows >= 0]].tolist())
        results = []
        for score_row, id_row, k, min_score, exclude in zip(scores, rows, ks, min_scores, excludes):
            hits = []
            for score, row in zip(score_row, id_row):
                if row < 0 or score < min_score:
                    continue
                photo_id = int(self.ids[row])
                found = meta.get(photo_id)
                if found is None or photo_id == exclude:  # dropped by an index run since vectors.npz
                    continue
                hits.append({"id": photo_id, "path": found["path"], "score": float(score), "class": found["class"]})
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def info(self) -> dict:
        return {**self.manifest, "gallery": len(self.index)}


def print_results(query: str, hits: list[dict], explanation: list[dict], args) -> None:
    if args.paths:
        sys.stdout.flush()
        for hit in hits:  # the file's own bytes, for the program reading them, whatever its name
            sys.stdout.buffer.write(os.fsencode(Path(args.root_for_paths) / hit["path"]) + b"\n")
        sys.stdout.flush()
        return
    if args.json:
        for rank, hit in enumerate(hits, 1):
            print(json.dumps({"query": query, "rank": rank, **hit, "path": shown(hit["path"])}))
        return
    near = ", ".join(f"{e['name']} ({e['score']:.2f})" for e in explanation)
    print(f"{query}  [nearest training classes: {near}]")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:4d}  {hit['score']:.4f}  {shown(hit['path'])}")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan search", description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="index folder made by zscrgan index")
    parser.add_argument("text", nargs="?", help="a description; none: one description per line on stdin")
    parser.add_argument("-k", type=int, default=10, help=f"results per query (1..{MAX_K})")
    parser.add_argument("--like", help="query by an indexed photo (its path)")
    parser.add_argument("--class_id", "--class-id", dest="class_id",
                        help="query with a class's stored query, the mean of its texts' queries (id or name)")
    parser.add_argument("--min_score", type=float, default=-1.0,
                        help="leave out photos whose cosine similarity to the query is below this (-1..1)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per result")
    out.add_argument("--paths", action="store_true", help="paths only, for piping")
    args = parser.parse_intermixed_args(argv)  # `search INDEX --json "text"`: the text may follow flags
    if not 1 <= args.k <= MAX_K:
        raise DataError(f"-k {args.k}: must be in 1..{MAX_K}")
    if sum(x is not None for x in (args.text, args.like, args.class_id)) > 1:
        raise DataError("give one of a description, --like or --class_id")
    by_text = args.like is None and args.class_id is None
    if by_text:
        labels = [args.text] if args.text is not None else [line.rstrip("\n") for line in sys.stdin if line.strip()]
        check_texts(labels or [""])
    reader = IndexReader(args.index, load_model=by_text)
    args.root_for_paths = reader.manifest["images"]
    exclude = None
    if args.like is not None:
        exclude = reader.id_of_path(args.like)
        labels, queries = [f"like {args.like}"], reader.embed_like(exclude)
    elif args.class_id is not None:
        labels, queries = [f"class {args.class_id}"], reader.embed_class(args.class_id)
    else:
        queries = reader.encode_texts(labels)
    for label, hits, why in zip(labels, reader.search(queries, args.k, args.min_score, exclude),
                                reader.explain(queries)):
        print_results(label, hits, why, args)
    return 0
