"""Retrieval with a trained model (docs/algorithm.md, "Evaluation").

Query path: text -> encoder sample c -> G(c, z) -> CSEM; gallery path: image -> CSEM;
cosine similarity, top K. Every text of a class is a query; the gallery is every image of
the classes evaluated. Noise comes from a generator seeded per (seed, round), so the same
checkpoint scores the same on the same device.
"""
from __future__ import annotations

import torch

from .metrics import RetrievalScores, collapse_stats, score_retrieval
from .networks import ZSCRGAN, truncated_normal


def eval_generator(seed: int, round_: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + round_)


@torch.no_grad()
def embed_queries(model: ZSCRGAN, texts: torch.Tensor, samples: int = 1, use_mean: bool = False,
                  generator: torch.Generator | None = None, chunk: int = 4096) -> torch.Tensor:
    """Common-space query embeddings; the mean over ``samples`` noise draws."""
    out = []
    for t in texts.split(chunk):
        mu, log_sigma = model.encoder.stats(t)
        if use_mean:
            z = torch.zeros(len(t), model.z_dim, device=t.device)
            out.append(model.csem(model.generator(mu, z)))
            continue
        acc = 0
        for _ in range(samples):
            eps = truncated_normal(mu.shape, generator=generator, device=t.device)
            z = torch.randn(len(t), model.z_dim, generator=generator, device=t.device)
            acc = acc + model.csem(model.generator(model.encoder.sample(mu, log_sigma, eps), z))
        out.append(acc / samples)
    return torch.cat(out)


@torch.no_grad()
def embed_gallery(model: ZSCRGAN, images: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    return torch.cat([model.csem(x) for x in images.split(chunk)])


@torch.no_grad()
def common_space_centre(model: ZSCRGAN, train_images: torch.Tensor) -> torch.Tensor:
    """Mean common-space embedding of the training images (``--eval_centre``).

    The CSEM's LeakyReLU outputs share a large common component, so raw cosines between any
    query and any photo are high and close together; subtracting the training images' mean
    (seen classes only, never the gallery) leaves the directions that tell classes apart,
    as the baselines' centring does.
    """
    model.eval()
    centre = embed_gallery(model, train_images).mean(0)
    model.train()
    return centre


def gallery_ranking(queries: torch.Tensor, gallery: torch.Tensor, k: int, kind: str) -> torch.Tensor:
    """Top-k gallery rows per query via GalleryIndex, the search path `zscrgan serve` uses."""
    from .search import GalleryIndex

    index = GalleryIndex(gallery.shape[1], kind, nlist=max(1, min(1024, round(4 * len(gallery) ** 0.5))))
    index.add(gallery.cpu())
    return torch.from_numpy(index.search(queries.cpu(), k)[1])


def evaluate_classes(model: ZSCRGAN, data, classes: list, ks, cfg, round_: int,
                     device, centre: torch.Tensor | None = None,
                     index_kind: str | None = None) -> tuple[RetrievalScores, list]:
    """Score retrieval among ``classes``; returns the scores (with ``collapse`` stats) and the retrieval lists.

    ``centre`` (from :func:`common_space_centre`) is subtracted from both sides first.
    ``index_kind`` ("exact", "ivf", "hnsw") ranks with a FAISS GalleryIndex instead of
    ``score_retrieval``'s own exact ranking.

    The retrieval lists are the seed's output: one {query class id: [class ids of the
    top-50 images, best first]} per query, in query order.
    """
    device = torch.device(device)
    texts, q_labels = data.stacked_texts(classes)
    images, g_labels = data.stacked_images(classes)
    gen = eval_generator(cfg.seed, round_, device)
    model.eval()
    queries = embed_queries(model, torch.from_numpy(texts).to(device), cfg.eval_samples,
                            cfg.eval_mean, gen)
    gallery = embed_gallery(model, torch.from_numpy(images).to(device))
    model.train()
    if centre is not None:
        queries, gallery = queries - centre, gallery - centre
    q_labels_t = torch.from_numpy(q_labels).to(device)
    g_labels_t = torch.from_numpy(g_labels).to(device)
    ranking = gallery_ranking(queries, gallery, min(max(ks), len(gallery)), index_kind) if index_kind else None
    scores = score_retrieval(queries, q_labels_t, gallery, g_labels_t, ks=ks, ranking=ranking)
    # top-k overlap needs k well below the gallery: at most 10, at most a class's share of it
    scores.collapse = collapse_stats(queries, q_labels_t, scores.topk, max(1, min(10, len(g_labels) // len(classes))))
    top50 = g_labels[scores.topk[:, :50].cpu().numpy()]
    lists = [{_plain(classes[q]): [_plain(classes[i]) for i in row]} for q, row in zip(q_labels, top50)]
    return scores, lists


def _plain(class_id):
    """numpy scalars -> Python ints, so pickles need nothing but builtins."""
    return class_id.item() if hasattr(class_id, "item") else class_id
