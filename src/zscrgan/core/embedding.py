"""A trained ZSCRGAN's embeddings in the common space: the one query embedder (docs/algorithm.md,
"Evaluation").

Query path: text -> encoder sample c -> G(c, z) -> CSEM; gallery path: image -> CSEM. Training's
evaluation, ``zscrgan evaluate``, blend and the search commands (``index``, ``shard``, ``search``,
``serve``) all embed through :class:`QueryEmbedder`, so a run is searched exactly as it was scored:
the same ``--eval_centre`` vector, the same noise draws (``--eval_samples``, ``--eval_mean``), the
same rng seeding (:func:`eval_rng`).

Where the noise starts: every call starts the rng at the same state, so a scoring pass does not
depend on the passes before it. Scoring draws one stream for the whole batch (row i's noise depends
on the rows before it); search needs a query's embedding not to depend on the batch it came in
with, so it asks for ``independent_rows``: each row gets the noise it would draw alone. Every row
alone starts the same stream, so that is one row's draws shared by the batch (``shared_noise``),
computed as one batched pass: a row's embedding is the same in any batch up to float rounding of
the batched matrix products (2.6e-8 measured by benchmarks/query_embed_speed.py; tests allow 1e-6),
and an index of a noisy run's 81,877 captions takes one pass instead of 81,877.
"""
from __future__ import annotations

import contextlib

import torch

from zscrgan.core.networks import ZSCRGAN, truncated_normal


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
                  rng: torch.Generator | None = None, chunk: int = 4096, shared_noise: bool = False) -> torch.Tensor:
    """Common-space query embeddings; the mean over ``samples`` noise draws (``use_mean``: mu and z = 0).

    ``shared_noise``: every row gets the draws one row would get alone, from the rng's current state
    (every chunk the same draws).
    """
    start = rng.get_state() if shared_noise and rng is not None else None
    out = []
    for t in texts.split(chunk):
        if start is not None:
            rng.set_state(start)
        mu, log_sigma = model.encoder.stats(t)
        if use_mean:
            z = torch.zeros(len(t), model.z_dim, device=t.device)
            out.append(model.csem(model.generator(mu, z, t)))
            continue
        rows = 1 if shared_noise else len(t)
        acc = 0
        for _ in range(samples):
            eps = truncated_normal((rows, mu.shape[1]), rng=rng, device=t.device).expand_as(mu)
            z = torch.randn(rows, model.z_dim, generator=rng, device=t.device).expand(len(t), -1)
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


def class_prototypes(queries: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Per class, the mean of its texts' unit-length query embeddings: its *prototype*, one query
    per class in the common space.

    ``queries`` holds each class's texts as one block, in class order (``stacked_texts``), ``counts``
    the block sizes. Block means, not a scatter-add: the same sums in the same order on every device.
    """
    if min(counts, default=1) < 1:
        raise ValueError(f"class position {counts.index(0)} has no texts: a prototype needs at least one")
    unit_queries = torch.nn.functional.normalize(queries.float(), dim=1)
    return torch.stack([block.mean(0) for block in unit_queries.split(list(counts))])


class QueryEmbedder:
    """A ZSCRGAN model as a retrieval model: ``embed_texts`` / ``embed_images``, as the baselines.

    Holds the evaluation settings: noise draws averaged per query (``samples``), the noise-free
    mean (``use_mean``), the rng the noise comes from (restarted at its first state by every
    ``embed_texts`` call), the ``--eval_centre`` vector subtracted from both sides, and
    ``independent_rows`` (the module's docstring): each row's noise restarted, so a row's embedding
    does not depend on its batch. The model is in eval mode only while it embeds.
    """

    def __init__(self, model: ZSCRGAN, samples: int = 1, use_mean: bool = False,
                 rng: torch.Generator | None = None, centre: torch.Tensor | None = None,
                 independent_rows: bool = False):
        self.model, self.samples, self.use_mean, self.rng, self.centre = model, samples, use_mean, rng, centre
        self.independent_rows = independent_rows
        self._rng_start = rng.get_state() if rng is not None else None

    @classmethod
    def for_round(cls, model: ZSCRGAN, cfg, round_: int, device, centre: torch.Tensor | None = None,
                  independent_rows: bool = False) -> "QueryEmbedder":
        """The run's settings (``cfg.eval_samples``, ``cfg.eval_mean``, ``cfg.seed``) and round ``round_``'s rng."""
        return cls(model, cfg.eval_samples, cfg.eval_mean, eval_rng(cfg.seed, round_, torch.device(device)), centre,
                   independent_rows)

    def _centred(self, emb: torch.Tensor) -> torch.Tensor:
        return emb if self.centre is None else emb - self.centre

    def _restarted_rng(self) -> torch.Generator | None:
        if self.rng is not None:
            self.rng.set_state(self._rng_start)
        return self.rng

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        with evaluating(self.model):
            if not len(texts):
                return texts.new_zeros((0, self.model.csem.fc.out_features))
            return self._centred(embed_queries(self.model, texts, self.samples, self.use_mean, self._restarted_rng(),
                                               shared_noise=self.independent_rows))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        with evaluating(self.model):
            return self._centred(embed_gallery(self.model, images))


__all__ = ["QueryEmbedder", "embed_queries", "embed_gallery", "eval_rng", "common_space_centre",
           "training_centre", "class_prototypes", "evaluating"]
