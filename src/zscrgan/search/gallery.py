"""Cosine top-K over galleries too large for one ``[queries, gallery]`` similarity matrix.

:func:`zscrgan.evaluation.metrics.score_retrieval` materialises one similarity block per query chunk,
which is right for the benchmark galleries (thousands of images) but not for millions:
there the gallery is embedded once, indexed, and queried many times. :class:`GalleryIndex`
does that with FAISS (the optional extra ``zscrgan[search]``), on the CPU, in four kinds:

* ``"exact"``: ``IndexFlatIP``, a brute-force inner product, so the same top-K as
  ``score_retrieval`` up to the order of exactly tied scores. Without faiss it falls back to
  a chunked torch matmul + top-K (:func:`running_topk`) that also breaks ties by lower
  gallery id, like the metrics;
* ``"ivf"``: ``IndexIVFFlat``, k-means cells, ``nprobe`` of them searched per query;
* ``"hnsw"``: ``IndexHNSWFlat`` with the inner-product metric, no training;
* ``"ivfpq"``: IVF cells holding product-quantised codes (``m`` bytes a vector, not 4 dim),
  built on disk only: trained once, added part by part and merged by
  :mod:`zscrgan.search.diskindex`; :meth:`GalleryIndex.open_disk` serves it memory-mapped,
  re-ranking the top ``rerank`` candidates with the exact vectors when kept (PQ distances alone
  find about half of the true top 10; re-ranked, over 0.9).

Vectors are L2-normalised on the way in, so inner product is cosine similarity.

IVF training design: k-means needs a sample of the *whole* gallery; training on the first
chunk added would bias the cells when the gallery arrives sorted by class (the usual case).
So ``add()`` buffers the chunks until :meth:`GalleryIndex.build` (called by the first
``search()`` if not before) trains on a random sample of everything added, at most
``256 * nlist`` vectors (what faiss' k-means would subsample to anyway), then moves the
buffered chunks into the index one at a time. Adds after that go straight in. The buffer
holds the same float32 vectors the index will, so it costs no extra memory at rest.
"""
from __future__ import annotations

import numpy as np
import torch

from zscrgan.errors import UserError, require
from zscrgan.evaluation.metrics import ranked_topk, unit_rows
from zscrgan.search import diskindex
from zscrgan.search.diskindex import cell_count

try:  # optional (pip install 'zscrgan[search]'): without it, the torch path below
    faiss = require("faiss", "search", "FAISS indexes")
except UserError:  # pragma: no cover - depends on the environment
    faiss = None

KINDS = ("exact", "ivf", "hnsw", "ivfpq")
IN_MEMORY = ("exact", "ivf", "hnsw")  # built here; ivfpq is built on disk (diskindex) and opened with open_disk
IVF_MAX_CELLS = 4096  # ivf: at most this many k-means cells (cell_count), enough up to about 1M vectors
RERANK = 1000  # ivfpq: candidates re-scored exactly (docs/performance.md: 300 -> 0.94, 1000 -> 0.99 of the top 10)
_TRAIN_PER_CELL = 256  # faiss' own k-means sample cap per centroid
_QUERY_CHUNK = 1024  # torch path: queries scored at once
_GALLERY_BLOCK = 16384  # torch path: gallery rows per similarity block (64 MiB at 1024 queries)


class GalleryIndex:
    """Cosine top-K over a large gallery embedded once; exact by default.

    ``nlist``/``nprobe`` tune ``"ivf"`` (more probes: better recall, slower search);
    ``hnsw_m``/``ef_search``/``ef_construction`` tune ``"hnsw"`` (graph degree, search
    beam width, widened here to at least K since a narrower beam loses much of the top K,
    and build beam width: raising it buys recall with build time).

    An index that exists already (:meth:`from_bytes`, :meth:`open_disk`) comes in as ``built``, a
    faiss index trained and filled; ``exact`` (ivfpq from disk: the kept vectors) re-ranks its top
    ``rerank`` candidates.
    """

    def __init__(self, dim: int, kind: str = "exact", nlist: int = 1024, nprobe: int = 16,
                 hnsw_m: int = 32, ef_search: int = 128, ef_construction: int = 40, *, built=None,
                 exact: diskindex.ExactRows | None = None, rerank: int = RERANK):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS)}")
        if kind not in IN_MEMORY and built is None:
            raise ValueError(f"kind {kind!r} is built on disk (zscrgan.search.diskindex) and opened with "
                             f"GalleryIndex.open_disk")
        for name, value in (("dim", dim), ("nlist", nlist), ("nprobe", nprobe), ("hnsw_m", hnsw_m),
                            ("ef_search", ef_search), ("ef_construction", ef_construction)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dim, self.kind, self.nlist = dim, kind, nlist
        self._pending: list[np.ndarray] = []  # ivf: chunks added before training
        self._blocks: list[torch.Tensor] = []  # torch path: the normalised gallery
        self._ef_search = ef_search
        self._exact, self._rerank = exact, rerank  # ivfpq from disk: the kept exact vectors
        if built is None:
            self._index, self._size = self._make_faiss_index(nprobe, hnsw_m, ef_construction), 0
            return
        if built.d != dim:
            raise ValueError(f"saved index has dim {built.d}, expected {dim}")
        self._index, self._size = built, int(built.ntotal)
        if kind in ("ivf", "ivfpq"):
            self.nlist = faiss.extract_index_ivf(built).nlist
            self.set_search(nprobe=nprobe)

    def _make_faiss_index(self, nprobe: int, hnsw_m: int, ef_construction: int):
        """A new empty faiss index of this kind, or None where the torch path does the work."""
        if faiss is None:
            if self.kind == "exact":
                return None
            raise ImportError(f"kind={self.kind!r} needs faiss: pip install 'zscrgan[search]'")
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            return index
        if self.kind == "exact":
            return faiss.IndexFlatIP(self.dim)
        self._quantizer = faiss.IndexFlatIP(self.dim)  # the IVF index does not own it
        index = faiss.IndexIVFFlat(self._quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(nprobe, self.nlist)
        return index

    def __len__(self) -> int:
        return self._size

    def _unit(self, vectors, name: str) -> torch.Tensor:
        """Validated float32 unit rows, on the CPU."""
        x = torch.as_tensor(vectors)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must be 2-d with {self.dim} columns, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        return unit_rows(x, name).cpu()

    def add(self, vectors: torch.Tensor | np.ndarray) -> None:
        """Append vectors (L2-normalised here); ids continue from the previous call."""
        x = self._unit(vectors, "vectors")
        if len(x) == 0:
            return
        if self._index is None:
            self._blocks.append(x)
        elif self.kind == "ivf" and not self._index.is_trained:
            self._pending.append(x.numpy())
        else:
            self._index.add(x.numpy())
        self._size += len(x)

    def build(self) -> None:
        """Train the IVF cells now rather than at the first search; a no-op otherwise."""
        if not self._pending:
            return
        n = self._size
        if n < self.nlist:
            raise ValueError(f"ivf with nlist={self.nlist} needs at least that many vectors to train, "
                             f"got {n}: add more or lower nlist")
        n_train = min(n, _TRAIN_PER_CELL * self.nlist)
        picks = np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))
        sample, start = [], 0
        for chunk in self._pending:
            here = picks[(picks >= start) & (picks < start + len(chunk))] - start
            sample.append(chunk[here])
            start += len(chunk)
        diskindex.quiet_kmeans(faiss, self._index)
        self._index.train(np.concatenate(sample))
        while self._pending:  # hand chunks over one by one so memory does not double
            self._index.add(self._pending.pop(0))

    def to_bytes(self) -> np.ndarray:
        """The built index as a uint8 array, for saving: faiss' own format, or the raw vectors
        on the torch path. :meth:`from_bytes` reads it back without rebuilding."""
        self.build()
        if self._index is None:
            vectors = torch.cat(self._blocks) if self._blocks else torch.zeros(0, self.dim)
            return np.frombuffer(vectors.numpy().tobytes(), np.uint8).copy()
        return faiss.serialize_index(self._index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, dim: int, kind: str = "exact", **options) -> "GalleryIndex":
        """An index saved by :meth:`to_bytes` with the same dim and kind."""
        data = np.asarray(data, np.uint8)
        if faiss is not None:
            return cls(dim, kind, built=faiss.deserialize_index(data), **options)
        index = cls(dim, kind, **options)  # the torch path: the saved bytes are the unit vectors
        vectors = torch.from_numpy(data.view(np.float32).reshape(-1, dim).copy())
        index._blocks, index._size = [vectors], len(vectors)
        return index

    @classmethod
    def open_disk(cls, folder, dim: int, nprobe: int = 128, rerank: int = RERANK) -> "GalleryIndex":
        """A merged ivfpq index folder (:mod:`zscrgan.search.diskindex`), memory-mapped; with exact.f32
        beside it, the top ``rerank`` candidates of each query are re-scored exactly."""
        built = diskindex.open_merged(folder, nprobe)
        if built.d != dim:
            raise ValueError(f"{folder}: index has dim {built.d}, expected {dim}")
        exact = diskindex.open_exact(folder, dim, int(built.ntotal))
        return cls(dim, "ivfpq", nprobe=nprobe, built=built, exact=exact, rerank=rerank)

    def set_search(self, nprobe: int | None = None, rerank: int | None = None) -> None:
        """How much each search does from now on, for sweeps over one opened index (benchmarks/scale.py):
        ``nprobe`` cells searched (an ivf or ivfpq index; at most nlist), ``rerank`` candidates
        re-scored exactly (an index from :meth:`open_disk`)."""
        if nprobe is not None:
            faiss.extract_index_ivf(self._index).nprobe = min(nprobe, self.nlist)
        if rerank is not None:
            self._rerank = rerank

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k] float32, ids [Q, k] int64), best first; k is clamped to len(self).

        ``"ivf"`` pads a row with id -1 (and a huge negative score) when its ``nprobe``
        cells hold fewer than k vectors; :func:`recall_at_k` counts those as misses.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if self._size == 0:
            raise RuntimeError("the gallery index is empty: call add() before search()")
        q = self._unit(queries, "queries")
        k = min(int(k), self._size)
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self._index is None:
            return self._torch_search(q, k)
        self.build()
        if self._exact is not None:
            return self._rerank_search(q.numpy(), k)
        params = faiss.SearchParametersHNSW(efSearch=max(self._ef_search, k)) if self.kind == "hnsw" else None
        scores, ids = self._index.search(q.numpy(), k, params=params)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def _rerank_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """PQ top ``max(k, rerank)`` candidates, re-scored with the exact vectors, best k kept.

        Rows are read in sorted order (more local reads).
        """
        _, cand = self._index.search(q, min(max(k, self._rerank), self._size))
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(q, cand)):
            found = np.unique(found[found >= 0])
            exact = self._exact[found] @ query
            best = np.argsort(-exact, kind="stable")[:k]
            scores[row, :len(best)], ids[row, :len(best)] = exact[best], found[best]
        return scores, ids

    def _torch_search(self, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k with ties to the lower id, one query chunk at a time over gallery blocks."""
        all_scores, all_ids = [], []
        for chunk in q.split(_QUERY_CHUNK):
            scores, ids = running_topk(chunk, (b for blk in self._blocks for b in blk.split(_GALLERY_BLOCK)), k)
            all_scores.append(scores)
            all_ids.append(ids)
        return torch.cat(all_scores).numpy(), torch.cat(all_ids).numpy()


def running_topk(queries: torch.Tensor, blocks, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, ids) of the k largest inner products of each query over a gallery that comes as
    blocks of rows in id order (so it need never be in memory whole), ties to the lower id.

    Each block's top-k is tie-exact (:func:`ranked_topk`), and the running best (lower ids) is
    placed before the block (higher ids) in a *stable* sort, so ties keep the lower id across
    blocks too.
    """
    best_s = queries.new_empty(len(queries), 0)
    best_i = torch.empty(len(queries), 0, dtype=torch.long)
    offset = 0
    for block in blocks:
        sims = queries @ block.T
        idx = ranked_topk(sims, min(k, len(block)))
        cand_s = torch.cat([best_s, sims.gather(1, idx)], dim=1)
        cand_i = torch.cat([best_i, idx + offset], dim=1)
        order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
        best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
        offset += len(block)
    return best_s, best_i


def ivf_cells(n: int) -> int:
    """The ivf kind's k-means cells for n vectors (:func:`diskindex.cell_count`'s rule)."""
    return cell_count(n, IVF_MAX_CELLS)


def recall_at_k(approx_ids, exact_ids, k: int) -> float:
    """Fraction of the exact top-k ids that the approximate top-k also found.

    Averaged over all queries' exact ids; ids of -1 (faiss' "no result") are not counted.
    """
    approx = np.asarray(approx_ids)[:, :k]
    exact = np.asarray(exact_ids)[:, :k]
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"approx_ids has {approx.shape[0]} rows, exact_ids {exact.shape[0]}")
    valid = exact >= 0
    if not valid.any():
        raise ValueError("exact_ids holds no valid id to recall")
    found = (exact[:, :, None] == approx[:, None, :]).any(axis=2) & valid
    return float(found.sum() / valid.sum())


__all__ = ["GalleryIndex", "KINDS", "IN_MEMORY", "recall_at_k", "ivf_cells", "running_topk"]
