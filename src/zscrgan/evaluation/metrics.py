"""Retrieval metrics: Prec@K, mAP@K and Recall@K of text queries against an image gallery.

Everything runs on the tensors' own device with no Python loop over queries × gallery;
queries are processed in chunks so the [chunk, gallery] similarity block bounds memory.

Definitions (all per query, then averaged per class, then over the classes that have
queries, so a class with many descriptions weighs as much as one with few):

* similarity is cosine: both sides L2-normalised, then a float32 matrix product
  (bf16/half inputs are upcast first, so ties and ranks do not depend on input precision);
* ranking: by similarity descending, ties broken by gallery index, lower index first.
  This is exact, not "whatever topk returns": see :func:`ranked_topk`;
* Prec@K as the ZSCRGAN seed defines it: per class, (relevant images in the top K of
  all its queries) / (K × its number of queries);
* Recall@K: relevant in the top K / number of gallery images of the query's class.
  Undefined (NaN for that class, left out of the mean) when the class has no gallery image;
* mAP@K: AP@K = sum_{k<=K} P@k · rel_k / min(K, n_relevant), where n_relevant is the
  number of gallery images of the query's class (0 when there are none). Two other
  denominators are in common use, and give different numbers: the number of relevant items
  *retrieved* in the top K (ignores misses entirely), and n_relevant alone (punishes K
  smaller than the class). min(K, n_relevant) makes a perfect ranking score 1.0 for any K.

If K exceeds the gallery size it is clamped to the gallery size (so Prec@K divides by the
gallery size); the keys still name the K asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from zscrgan.config import DEFAULT_K, positive_ks

METRIC_NAMES = ("prec", "map", "recall")


@dataclass
class RetrievalScores:
    """Scores of one retrieval run; keys are "prec@K", "map@K", "recall@K" for each K."""

    ks: tuple[int, ...]
    mean: dict[str, float]  # mean over classes that have queries (and, for recall, gallery images)
    per_class: dict[str, np.ndarray]  # float64 [n_classes], index = label; NaN where undefined
    topk: torch.Tensor  # LongTensor [Q, min(max(ks), gallery size)], best first
    collapse: dict = field(default_factory=dict)  # collapse_stats(), where the caller computed them

    def as_dict(self) -> dict:
        """The means only, as plain floats (NaN becomes None so the result is valid JSON)."""
        return {key: (None if np.isnan(val) else float(val)) for key, val in self.mean.items()}


def ranked_topk(sims: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the top ``k`` of each row, ordered by (-similarity, index), exactly.

    ``torch.topk`` leaves two things open when values tie: the order within the returned
    list, and *which* of the items tied at the K-th value make the cut. The first is fixed
    by a stable sort of the K returned items (by index, then by value). The second can only
    happen where the (K+1)-th value equals the K-th, which one ``topk(K + 1)`` shows for
    free; on those rows alone, the tied items are counted in index order (a cumulative sum
    over the row) and the ones past the cut are masked to -inf before a second topk.
    """
    n_cols = sims.shape[1]
    vals, idx = torch.topk(sims, min(k + 1, n_cols), dim=1)
    boundary = (vals[:, k] == vals[:, k - 1]) if k < n_cols else vals.new_zeros(len(vals), dtype=torch.bool)
    vals, idx = vals[:, :k], idx[:, :k]
    rows = boundary.nonzero().squeeze(1)
    if rows.numel():
        sub, kth = sims[rows], vals[rows, k - 1:]
        n_kept = (vals[rows] == kth).sum(dim=1, keepdim=True)  # tied items that fit in the top k
        tied = sub == kth
        dropped = tied & (tied.cumsum(dim=1, dtype=torch.int32) > n_kept)
        vals[rows], idx[rows] = torch.topk(sub.masked_fill(dropped, float("-inf")), k, dim=1)
    by_index = idx.argsort(dim=1)
    idx, vals = idx.gather(1, by_index), vals.gather(1, by_index)
    by_value = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return idx.gather(1, by_value)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to length 1, float32; a zero row stays zero. The numpy side of
    :func:`unit_rows`, for vectors on their way into a FAISS index or out to a client."""
    x = np.ascontiguousarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def unit_rows(emb: torch.Tensor, name: str) -> torch.Tensor:
    """Rows scaled to unit length in float32; the row norms double as a cheap NaN/inf check."""
    emb = emb.float()
    norms = torch.linalg.vector_norm(emb, dim=1, keepdim=True)
    if not torch.isfinite(norms).all():
        raise ValueError(f"{name} contains NaN or infinite values (or a row whose norm overflows float32)")
    return emb / norms.clamp_min(1e-12)


def _check_inputs(query_emb, query_labels, gallery_emb, gallery_labels) -> None:
    for name, emb in (("query_emb", query_emb), ("gallery_emb", gallery_emb)):
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty 2-d tensor, got shape {tuple(emb.shape)}")
        if not emb.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {emb.dtype}")
    if query_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(f"query dim {query_emb.shape[1]} != gallery dim {gallery_emb.shape[1]}")
    for name, labels, emb in (("query_labels", query_labels, query_emb),
                              ("gallery_labels", gallery_labels, gallery_emb)):
        if labels.ndim != 1 or labels.shape[0] != emb.shape[0]:
            raise ValueError(f"{name} must be 1-d with one label per row, got shape {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"{name} must be an integer tensor, got {labels.dtype}")
        if labels.min() < 0:
            raise ValueError(f"{name} must be class positions 0..C-1, found {int(labels.min())}")


def score_retrieval(query_emb: torch.Tensor, query_labels: torch.Tensor,
                    gallery_emb: torch.Tensor, gallery_labels: torch.Tensor,
                    ks: Sequence[int] = (DEFAULT_K,), chunk_size: int = 1024) -> RetrievalScores:
    """Rank the gallery for every query and score it at each K (see the module doc).

    Computes exactly the ``ks`` given (sorted, unique); use :func:`zscrgan.config.parse_ks` to get
    the usual set with 50 in it. Work happens on ``gallery_emb``'s device; queries are moved
    there. ``chunk_size`` queries are scored at a time.
    """
    _check_inputs(query_emb, query_labels, gallery_emb, gallery_labels)
    ks = tuple(sorted(set(positive_ks(ks))))
    if not ks:
        raise ValueError("ks is empty: give at least one K")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device = gallery_emb.device
    gallery = unit_rows(gallery_emb, "gallery_emb")
    g_labels = gallery_labels.to(device=device, dtype=torch.long)
    q_labels = query_labels.to(device=device, dtype=torch.long)
    n_gallery = gallery.shape[0]
    k_max = min(ks[-1], n_gallery)

    topk = torch.cat([
        ranked_topk(unit_rows(chunk.to(device), "query_emb") @ gallery.T, k_max)
        for chunk in query_emb.split(chunk_size)
    ])

    n_classes = int(max(q_labels.max(), g_labels.max())) + 1
    n_queries = torch.bincount(q_labels, minlength=n_classes).double()
    n_relevant = torch.bincount(g_labels, minlength=n_classes).double()[q_labels]  # per query
    rel = (g_labels[topk] == q_labels[:, None]).double()  # [Q, k_max]
    hits = rel.cumsum(dim=1)
    ranks = torch.arange(1, k_max + 1, device=device, dtype=torch.float64)
    ap_sums = (hits / ranks * rel).cumsum(dim=1)

    mean, per_class = {}, {}
    for k in ks:
        k_eff = min(k, n_gallery)
        per_query = {
            "prec": hits[:, k_eff - 1] / k_eff,
            "map": torch.where(n_relevant > 0, ap_sums[:, k_eff - 1] / n_relevant.clamp(max=k_eff).clamp(min=1), 0.0),
            "recall": hits[:, k_eff - 1] / n_relevant,  # NaN (0/0) when the class has no gallery image
        }
        for name in METRIC_NAMES:
            sums = torch.zeros(n_classes, dtype=torch.float64, device=device)
            sums.index_add_(0, q_labels, per_query[name])
            values = (sums / n_queries).cpu().numpy()  # NaN where a class has no query
            per_class[f"{name}@{k}"] = values
            mean[f"{name}@{k}"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return RetrievalScores(ks=ks, mean=mean, per_class=per_class, topk=topk)


COLLAPSE_OVERLAP = 0.9  # top-K lists of queries of different classes share 90% of their items
COLLAPSE_SPREAD = 1e-4  # query embeddings all within a cosine distance of 1e-4 of each other


def collapse_stats(query_emb: torch.Tensor, query_labels: torch.Tensor, topk: torch.Tensor,
                   k: int) -> dict[str, float | None]:
    """How alike the queries are: a model that ranks the gallery the same for every query has collapsed.

    * ``ranking_overlap``: mean over pairs of queries of *different* classes of the share of
      their top-``k`` items they have in common (1: identical rankings; about k/gallery by
      chance). With c_g the number of queries holding gallery item g in their top k, and c_gy
      those of class y, the different-class pairs share sum_g (c_g^2 - sum_y c_gy^2) items, in
      O(Q k) rather than O(Q^2). None with fewer than two query classes.
    * ``query_spread``: mean cosine distance between pairs of query embeddings (0: all equal);
      None with one query.
    ``k`` should be well below the gallery size, or every list holds the whole gallery.
    """
    q = len(query_labels)
    labels = query_labels.to(topk.device, torch.long)
    top = topk[:, :k]
    k = top.shape[1]
    n_items = int(top.max()) + 1
    counts = torch.bincount(top.reshape(-1), minlength=n_items).double()
    n_classes = int(labels.max()) + 1
    per_class = torch.zeros(n_classes * n_items, dtype=torch.float64, device=top.device)
    per_class.index_add_(0, (labels[:, None] * n_items + top).reshape(-1),
                         torch.ones(top.numel(), dtype=torch.float64, device=top.device))
    class_sizes = torch.bincount(labels, minlength=n_classes).double()
    pairs = q * q - float((class_sizes ** 2).sum())
    shared = float((counts ** 2).sum() - (per_class ** 2).sum())
    overlap = shared / (pairs * k) if pairs > 0 else None
    spread = None
    if q > 1:
        unit = unit_rows(query_emb, "query_emb").double()
        spread = max(0.0, 1.0 - (float(unit.sum(0).pow(2).sum()) - q) / (q * (q - 1)))
    return {"ranking_overlap": overlap, "query_spread": spread}


def is_collapsed(stats: dict) -> bool:
    """True when the queries rank the gallery (nearly) alike or their embeddings (nearly) coincide."""
    overlap, spread = stats.get("ranking_overlap"), stats.get("query_spread")
    return (overlap is not None and overlap >= COLLAPSE_OVERLAP) or (spread is not None and spread < COLLAPSE_SPREAD)


__all__ = ["RetrievalScores", "score_retrieval", "collapse_stats", "is_collapsed", "ranked_topk", "unit",
           "unit_rows"]
