"""Scoring retrieval, for any model (docs/algorithm.md, "Evaluation").

One function, :func:`score_views`, scores every model the project has: anything with
``embed_texts`` and ``embed_images`` (the baselines' protocol, :class:`zscrgan.evaluation.baselines.Baseline`)
-- the baselines themselves, and a trained ZSCRGAN seen through
:class:`zscrgan.core.embedding.QueryEmbedder` (its noise from an rng seeded per (seed, round), so the
same checkpoint scores the same on the same device).
Every text of a class is a query; the gallery is every image of the classes scored; cosine
similarity ranks the gallery. Where a class has many texts, the per-class protocol adds one query
per class in two forms, from the same embeddings: the query of its mean text and the mean of its
texts' queries (:func:`zscrgan.core.embedding.class_prototypes`).
"""
from __future__ import annotations

import torch

from zscrgan.core.embedding import class_prototypes
from zscrgan.evaluation.metrics import RetrievalScores, collapse_stats, score_retrieval

# Each query's retrieval list keeps its top 50 gallery classes: upstream's pickle format (acc*.pkl),
# whatever K the run scores or selects on.
RETRIEVAL_DEPTH = 50


@torch.no_grad()
def score_views(model, data, classes: list, ks, device, details: bool = True,
                per_class: bool = False) -> tuple[RetrievalScores, list, dict[str, RetrievalScores]]:
    """Score retrieval among ``classes`` with any model having ``embed_texts``/``embed_images``,
    every text and every image embedded once for all the views below.

    Returns the per-text scores (every text a query; with ``collapse`` stats,
    :func:`zscrgan.evaluation.metrics.collapse_stats`), their retrieval lists, upstream's output
    format: one {query class id: [class ids of the top :data:`RETRIEVAL_DEPTH` images, best first]}
    per query, in query order, and with ``per_class`` the per-class figures in both forms: "class",
    the query of each class's mean text, and "prototype", the mean of its texts' queries
    (``class_prototypes``); runs ask for them where a class has many texts (with one text a
    class both are the per-text figures). ``details=False`` skips the collapse stats and the lists
    (an empty list comes back): the figures alone, for choosing hyperparameters.
    """
    device = torch.device(device)
    texts, q_labels = data.stacked_texts(classes)
    images, g_labels = data.stacked_images(classes)
    queries = model.embed_texts(torch.from_numpy(texts).to(device))
    gallery = model.embed_images(torch.from_numpy(images).to(device))
    q_labels_t = torch.from_numpy(q_labels).to(device)
    g_labels_t = torch.from_numpy(g_labels).to(device)
    scores = score_retrieval(queries, q_labels_t, gallery, g_labels_t, ks=ks)
    forms = {}
    if per_class:
        one_each = torch.arange(len(classes), device=device)
        mean_texts, _ = data.class_mean_texts().stacked_texts(classes)
        forms["class"] = score_retrieval(model.embed_texts(torch.from_numpy(mean_texts).to(device)), one_each,
                                             gallery, g_labels_t, ks=ks)
        forms["prototype"] = score_retrieval(class_prototypes(queries, [len(data.texts[c]) for c in classes]),
                                                 one_each, gallery, g_labels_t, ks=ks)
    if not details:
        return scores, [], forms
    # top-k overlap needs k well below the gallery: at most 10, at most a class's share of it
    scores.collapse = collapse_stats(queries, q_labels_t, scores.topk, max(1, min(10, len(g_labels) // len(classes))))
    top = g_labels[scores.topk[:, :RETRIEVAL_DEPTH].cpu().numpy()]
    lists = [{_plain(classes[q]): [_plain(classes[i]) for i in row]} for q, row in zip(q_labels, top)]
    return scores, lists, forms


def _plain(class_id):
    """numpy scalars -> Python ints, so pickles need nothing but builtins."""
    return class_id.item() if hasattr(class_id, "item") else class_id
