"""Scoring retrieval, for any model (docs/algorithm.md, "Evaluation").

One function, :func:`score_views`, scores every model the project has: anything with
``embed_texts`` and ``embed_images`` (the baselines' protocol, :class:`zscrgan.evaluation.baselines.Baseline`)
-- the baselines themselves, and a trained ZSCRGAN seen through :class:`Retriever`.
Every text of a class is a query; the gallery is every image of the classes scored; cosine
similarity ranks the gallery. Where a class has many texts, the per-class protocol adds one query
per class in two forms, from the same embeddings: the query of its mean text and the mean of its
texts' queries (:func:`class_prototypes`). :func:`score_classes` is the per-text part alone.

ZSCRGAN's query path: text -> encoder sample c -> G(c, z) -> CSEM; gallery path: image -> CSEM.
Its noise comes from an rng seeded per (seed, round), so the same checkpoint scores the same
on the same device.
"""
from __future__ import annotations

import contextlib

import torch

from zscrgan.core.networks import ZSCRGAN, truncated_normal
from zscrgan.evaluation.metrics import RetrievalScores, collapse_stats, score_retrieval

# Each query's retrieval list keeps its top 50 gallery classes: upstream's pickle format (acc*.pkl),
# whatever K the run scores or selects on.
RETRIEVAL_DEPTH = 50


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """The model in eval mode for the block, then back in the mode it was in."""
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


def eval_rng(seed: int, round_: int, device) -> torch.Generator:
    """The random generator of round ``round_``'s query noise."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + round_)


@torch.no_grad()
def embed_queries(model: ZSCRGAN, texts: torch.Tensor, samples: int = 1, use_mean: bool = False,
                  rng: torch.Generator | None = None, chunk: int = 4096) -> torch.Tensor:
    """Common-space query embeddings; the mean over ``samples`` noise draws (``use_mean``: mu and z = 0)."""
    out = []
    for t in texts.split(chunk):
        mu, log_sigma = model.encoder.stats(t)
        if use_mean:
            z = torch.zeros(len(t), model.z_dim, device=t.device)
            out.append(model.csem(model.generator(mu, z, t)))
            continue
        acc = 0
        for _ in range(samples):
            eps = truncated_normal(mu.shape, rng=rng, device=t.device)
            z = torch.randn(len(t), model.z_dim, generator=rng, device=t.device)
            acc = acc + model.csem(model.generator(model.encoder.sample(mu, log_sigma, eps), z, t))
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
    with evaluating(model):
        return embed_gallery(model, train_images).mean(0)


def training_centre(model: ZSCRGAN, data, train_classes: list, device="cpu") -> torch.Tensor:
    """:func:`common_space_centre` of a run's training classes, read from its data set (the
    checkpoint records them), for scoring or searching a saved run as it was evaluated."""
    images, _ = data.stacked_images(train_classes)
    return common_space_centre(model, torch.from_numpy(images).to(device))


class Retriever:
    """A ZSCRGAN model as a retrieval model: ``embed_texts`` / ``embed_images``, as the baselines.

    Holds the evaluation settings: noise draws averaged per query (``samples``), the
    noise-free mean (``use_mean``), the rng the noise comes from, and the ``--eval_centre``
    vector subtracted from both sides. Every ``embed_texts`` call starts the rng where it stood
    when the retriever was made, so a pass's noise does not depend on the passes before it (the
    per-class forms score the same retriever again). The model is in eval mode only while it embeds.
    """

    def __init__(self, model: ZSCRGAN, samples: int = 1, use_mean: bool = False,
                 rng: torch.Generator | None = None, centre: torch.Tensor | None = None):
        self.model, self.samples, self.use_mean, self.rng, self.centre = model, samples, use_mean, rng, centre
        self._rng_start = rng.get_state() if rng is not None else None

    @classmethod
    def for_round(cls, model: ZSCRGAN, cfg, round_: int, device, centre: torch.Tensor | None = None) -> "Retriever":
        """The run's settings (``cfg.eval_samples``, ``cfg.eval_mean``) and round ``round_``'s rng."""
        return cls(model, cfg.eval_samples, cfg.eval_mean, eval_rng(cfg.seed, round_, torch.device(device)), centre)

    def _centred(self, emb: torch.Tensor) -> torch.Tensor:
        return emb if self.centre is None else emb - self.centre

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        if self.rng is not None:
            self.rng.set_state(self._rng_start)
        with evaluating(self.model):
            return self._centred(embed_queries(self.model, texts, self.samples, self.use_mean, self.rng))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        with evaluating(self.model):
            return self._centred(embed_gallery(self.model, images))


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
    (:func:`class_prototypes`); runs ask for them where a class has many texts (with one text a
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


def score_classes(model, data, classes: list, ks, device, details: bool = True) -> tuple[RetrievalScores, list]:
    """:func:`score_views`' per-text scores and retrieval lists alone (every text a query): what
    choosing a baseline's hyperparameters scores, many times over."""
    scores, lists, _ = score_views(model, data, classes, ks, device, details)
    return scores, lists


def class_prototypes(queries: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Per class, the mean of its texts' unit-length query embeddings: its *prototype*, one query
    per class in the common space (what ``zscrgan search --class_id`` queries with).

    ``queries`` holds each class's texts as one block, in class order (``stacked_texts``), ``counts``
    the block sizes. Block means, not a scatter-add: the same sums in the same order on every device.
    """
    if min(counts, default=1) < 1:
        raise ValueError(f"class position {counts.index(0)} has no texts: a prototype needs at least one")
    unit_queries = torch.nn.functional.normalize(queries.float(), dim=1)
    return torch.stack([block.mean(0) for block in unit_queries.split(list(counts))])


def evaluate_views(model: ZSCRGAN, data, classes: list, ks, cfg, round_: int, device,
                   centre: torch.Tensor | None = None) -> tuple[RetrievalScores, list, dict[str, RetrievalScores]]:
    """A ZSCRGAN model's :func:`score_views` among ``classes`` at round ``round_``, through a
    :class:`Retriever` with the run's evaluation settings; the per-class forms where a class has many texts."""
    return score_views(Retriever.for_round(model, cfg, round_, device, centre), data, classes, ks, device,
                       per_class=data.many_texts)


def evaluate_classes(model: ZSCRGAN, data, classes: list, ks, cfg, round_: int,
                     device, centre: torch.Tensor | None = None) -> tuple[RetrievalScores, list]:
    """:func:`evaluate_views`' per-text scores and retrieval lists alone."""
    return score_classes(Retriever.for_round(model, cfg, round_, device, centre), data, classes, ks, device)


def _plain(class_id):
    """numpy scalars -> Python ints, so pickles need nothing but builtins."""
    return class_id.item() if hasattr(class_id, "item") else class_id
