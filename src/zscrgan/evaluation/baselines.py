"""Simple, strong zero-shot retrieval baselines: ridge regression, DeViSE and CCA.

ZSCRGAN's figures mean little without cheap linear baselines fitted on the same data and
split, so these three sit behind the same two-method interface the trained model offers
(:class:`zscrgan.core.embedding.QueryEmbedder`): ``embed_texts`` and ``embed_images``, compared by cosine
similarity and scored by the one function that scores every model, :func:`zscrgan.evaluation.scoring.score_views`. Every baseline here is an
affine map on each side, ``(v - mean) @ W``, so they share :class:`AffineBaseline` and differ
only in how the two ``W`` are fitted:

* ``ridge``  -- closed-form ridge regression from text to (centred) image features;
  images are only centred.
* ``devise`` -- DeViSE-style (Frome et al., 2013): linear maps of images and texts into a
  shared 128-d space (cheaper than mapping 1280-d images into the 1024-d text space, and as
  good on FLO's validation classes), trained with Adam on a hinge ranking loss on cosine
  similarity, negatives being the other classes' texts in the batch.
* ``cca``    -- regularised CCA into a shared space, closed form via eigendecompositions and
  one SVD of the whitened cross-covariance; components are weighted by their canonical
  correlation raised to a chosen power.

Training pairs (``PAIRINGS``; texts and images of a class are only tied by their class):

* ``photo``      -- every image of a train class with ONE text of its class, drawn uniformly
  per image by an rng seeded with ``seed``; with one text per class (FLO) it is simply the
  class text. With ten captions a photo, it uses a tenth of them.
* ``caption``    -- every text with ONE image of its class, drawn per text: all captions used,
  the photos' variation kept.
* ``class_mean`` -- every text with the mean image of its class. For ridge this is the
  closed form of pairing each text with every image of its class (tests/evaluation/test_baselines.py).
* ``own_photo``  -- every text with the photo it describes (caption_photos.npz of a set built
  with ``zscrgan data build --captions``; a text tied to no photo gets one of its class drawn,
  as ``caption``). Only with ``own_photo=True`` (``--photo_pairs``), off by default: the project
  holds no real data with the tie (FLO_cap lost it), so whether it helps is for the validation
  classes of a real set to say (tests/evaluation/test_photo_pairs.py shows it chosen where the
  captions carry photo-level signal).

With one text per class only ``photo`` is fitted (the others say the same thing); with
many texts per class (captions) the pairing is chosen on the validation classes like any
other hyperparameter and recorded in ``params["pairs"]``. Means used for centring come from
the pairs.

Hyperparameters are chosen on the validation classes: their texts query their images and the
grid point with the best mean Prec@K wins (K is the run's ``--select_k``, 50 by default), the
first on ties. Without validation classes the documented defaults below are used. The model
returned is fitted on ``train_classes`` only unless ``refit=True``, which refits the chosen
setting on train + validation classes. Everything is deterministic given ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from zscrgan.config import DEFAULT_K
from zscrgan.data.dataset import ZeroShotData
from zscrgan.errors import DataError
from zscrgan.evaluation.scoring import score_views

BASELINES = ("ridge", "devise", "cca")
PAIRINGS = ("photo", "caption", "class_mean")  # the first is the default without validation classes
OWN_PHOTO = "own_photo"  # each text with its own photo: added to the choice by own_photo=True

# Each grid's first point is the default used when no validation classes are given.
RIDGE_GRID = [{"lam": 0.1}] + [{"lam": 10.0 ** (k / 2)} for k in range(-6, 3) if k != -2]
DEVISE_GRID = [{"margin": 0.5, "lr": lr, "dim": 128} for lr in (1e-3, 3e-4)]
DEVISE_STEPS, DEVISE_CHECK = 300, 30  # the most steps; with validation, checked every 30
DEVISE_BATCH = 256
CCA_GRID = [{"reg": reg, "dim": dim, "power": p}
            for reg in (1.0, 0.1, 10.0, 100.0) for dim in (64, 16, 32, 128) for p in (1.0, 0.0, 4.0)]


class Baseline(Protocol):
    """What retrieval needs from a model: texts and images into one cosine-compared space."""

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor: ...  # [n, text_dim] -> [n, d]

    def embed_images(self, images: torch.Tensor) -> torch.Tensor: ...  # [n, image_dim] -> [n, d]


@dataclass
class AffineBaseline:
    """``(v - mean) @ map`` on each side; a ``None`` map is the identity."""

    name: str
    text_mean: torch.Tensor
    text_map: torch.Tensor | None
    image_mean: torch.Tensor
    image_map: torch.Tensor | None
    params: dict = field(default_factory=dict)  # chosen hyperparameters and val Prec@K (val_prec)

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        return _affine(texts, self.text_mean, self.text_map)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return _affine(images, self.image_mean, self.image_map)


def _affine(x: torch.Tensor, mean: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    x = torch.as_tensor(x).to(mean.device, torch.float32) - mean
    return x if weight is None else x @ weight


@dataclass
class Pairs:
    """Training pairs as float32 tensors: row i of ``texts`` describes row i of ``images``."""

    texts: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor  # class positions 0..C-1, for DeViSE's negatives

    def centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text mean, centred texts, image mean, centred images)."""
        tm, im = self.texts.mean(0), self.images.mean(0)
        return tm, self.texts - tm, im, self.images - im


def training_pairs(data: ZeroShotData, classes: list, seed: int, device="cpu", pairing: str = "photo") -> Pairs:
    """Training pairs of ``classes`` as ``pairing`` says (module docstring), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    if pairing == "photo":
        images, labels = data.stacked_images(classes)
        texts = np.concatenate([data.texts[c][rng.integers(0, len(data.texts[c]), len(data.images[c]))]
                                for c in classes])
    elif pairing in ("caption", "class_mean", OWN_PHOTO):
        if pairing == OWN_PHOTO and data.text_photos is None:
            raise DataError(f"{data.name}: no caption_photos.npz, so no text's own photo is known (--photo_pairs)")
        texts, labels = data.stacked_texts(classes)
        if pairing == "class_mean":
            means = np.stack([data.images[c].mean(0, dtype=np.float64) for c in classes]).astype(np.float32)
            images = means[labels]
        else:
            rows = []
            for c in classes:
                drawn = rng.integers(0, len(data.images[c]), len(data.texts[c]))  # a photo of the text's class
                if pairing == OWN_PHOTO:  # the photo the text describes, where known
                    drawn = np.where(data.text_photos[c] >= 0, data.text_photos[c], drawn)
                rows.append(data.images[c][drawn])
            images = np.concatenate(rows)
    else:
        raise ValueError(f"unknown pairing {pairing!r}; choose from {', '.join(PAIRINGS + (OWN_PHOTO,))}")
    return Pairs(torch.from_numpy(texts).to(device), torch.from_numpy(np.ascontiguousarray(images)).to(device),
                 torch.from_numpy(labels).to(device))


def validation_scorer(data: ZeroShotData, val_classes: list, device="cpu", k: int = DEFAULT_K) -> Callable:
    """A function model -> mean Prec@``k`` of val texts querying val images (:func:`zscrgan.evaluation.scoring.score_views`)."""
    def score(model: Baseline) -> float:
        scores = score_views(model, data, val_classes, (k,), device, details=False)[0]
        return float(scores.mean[f"prec@{k}"])

    return score


def _eigh(sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition of a (float64-accumulated) covariance, done in float32.

    float32 eigh is several times faster on the CPU (docs/performance.md, "Small measurements
    behind code choices"), and its error (~1e-7 of the top eigenvalue) is far below the
    regularisers the grids use, so the solves built on it keep their accuracy.
    Negative round-off eigenvalues are clamped to 0.
    """
    evals, evecs = torch.linalg.eigh(sym.float())
    return evals.clamp_min(0), evecs


# ---------------------------------------------------------------- ridge

def ridge_solutions(inputs: torch.Tensor, targets: torch.Tensor, lams) -> list[torch.Tensor]:
    """Ridge weights ``W`` minimising mean_i |inputs_i W - targets_i|^2 + lam * s |W|^2, per lam.

    ``s`` is the mean eigenvalue of ``G = A^T A / n`` (its trace over the dimension), which
    makes ``lam`` scale-free: ``(G + lam s I) W = A^T B / n``. One eigendecomposition of ``G``
    serves every lam, so a whole grid costs about one solve (float64, on a float32 eigh).
    """
    a, b = inputs.double(), targets.double()
    evals, evecs = (v.double() for v in _eigh(a.T @ a / len(a)))
    rhs = evecs.T @ (a.T @ b / len(a))
    return [(evecs @ (rhs / (evals + lam * evals.mean())[:, None])).float() for lam in lams]


def _fit_ridge(pairs: Pairs, grid: list[dict], score: Callable | None) -> AffineBaseline:
    tm, t, im, _ = pairs.centred()
    weights = ridge_solutions(t, pairs.images - im, [p["lam"] for p in grid])
    models = (AffineBaseline("ridge", tm, w, im, None, dict(p)) for p, w in zip(grid, weights))
    return _best(models, score)


# ---------------------------------------------------------------- DeViSE

def _hinge_rank_loss(image_emb, text_emb, labels, margin: float) -> torch.Tensor:
    """Mean over images of the summed hinge ``margin - cos(own text) + cos(other class's text)``.

    Negatives are the batch's texts of other classes, as DeViSE does with sampled labels.
    """
    sims = torch.nn.functional.normalize(image_emb, dim=1) @ torch.nn.functional.normalize(text_emb, dim=1).T
    other = labels[:, None] != labels[None, :]
    hinge = (margin - sims.diagonal()[:, None] + sims).clamp_min(0)
    return (hinge * other).sum(1).mean()


def _batches(n: int, rng: torch.Generator, device):
    """Endless minibatch indices: one shuffled pass over the pairs after another."""
    while True:
        yield from torch.randperm(n, generator=rng).to(device).split(DEVISE_BATCH)


def _fit_devise_one(pairs: Pairs, params: dict, seed: int, steps: int,
                    score: Callable | None) -> AffineBaseline:
    """Adam on linear maps of both sides into a shared space.

    Training is counted in steps, not epochs, so small data sets get as many updates as big
    ones. With ``score`` the model is checked every ``DEVISE_CHECK`` steps and the best kept,
    the later on ties: val Prec@K saturates early on easy data while training still helps.
    """
    tm, t, im, x = pairs.centred()
    x_scale, t_scale = x.std(), t.std()  # so the learning rate does not depend on feature scales
    x, t = x / x_scale, t / t_scale
    rng = torch.Generator().manual_seed(seed)
    maps = [(torch.randn(v.shape[1], params["dim"], generator=rng) / v.shape[1] ** 0.5).to(x.device)
            .requires_grad_(True) for v in (x, t)]
    opt = torch.optim.Adam(maps, lr=params["lr"])
    best = None
    for step, idx in enumerate(_batches(len(x), rng, x.device), start=1):
        loss = _hinge_rank_loss(x[idx] @ maps[0], t[idx] @ maps[1], pairs.labels[idx], params["margin"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (score is not None and step % DEVISE_CHECK == 0) or step == steps:
            model = AffineBaseline("devise", tm, maps[1].detach() / t_scale, im, maps[0].detach() / x_scale,
                                   dict(params, steps=step))
            val = score(model) if score is not None else None
            if best is None or val >= best.params["val_prec"]:
                model.params["val_prec"] = val
                best = model
        if step == steps:
            return best


def _fit_devise(pairs: Pairs, grid: list[dict], score: Callable | None, seed: int) -> AffineBaseline:
    steps = [p.pop("steps", DEVISE_STEPS) for p in grid]
    models = (_fit_devise_one(pairs, p, seed, n, score) for p, n in zip(grid, steps))
    return _best(models, score)


# ---------------------------------------------------------------- CCA

class CCASolver:
    """Regularised CCA of paired rows ``x`` [n, dx] and ``y`` [n, dy], both centred here.

    The covariances' eigendecompositions are computed once, so each regulariser of a grid
    costs one SVD. ``reg`` is relative: ``C + reg * mean(eigenvalues(C)) * I`` on each side.
    Covariances are accumulated in float64, the solve runs in float32 (as :func:`_eigh`).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
        n = len(x)
        self.eig_x = _eigh(x.T @ x / n)
        self.eig_y = _eigh(y.T @ y / n)
        self.cross = (x.T @ y / n).float()

    @staticmethod
    def _inv_sqrt(eig, reg: float) -> torch.Tensor:
        evals, evecs = eig
        evals = evals + reg * evals.mean()
        return (evecs * evals.rsqrt()) @ evecs.T

    def solve(self, reg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x directions [dx, k], y directions [dy, k], canonical correlations [k]), best first."""
        wx, wy = self._inv_sqrt(self.eig_x, reg), self._inv_sqrt(self.eig_y, reg)
        u, corr, vt = torch.linalg.svd(wx @ self.cross @ wy, full_matrices=False)
        return wx @ u, wy @ vt.T, corr


def _fit_cca(pairs: Pairs, grid: list[dict], score: Callable | None) -> AffineBaseline:
    tm, _, im, _ = pairs.centred()
    solver = CCASolver(pairs.images, pairs.texts)
    solved = {reg: solver.solve(reg) for reg in dict.fromkeys(p["reg"] for p in grid)}

    def build(p):
        dirs_x, dirs_y, corr = solved[p["reg"]]
        # directions of zero correlation (beyond the texts' rank) carry no shared signal
        k = max(1, min(p["dim"], int((corr > 1e-6 * corr[0]).sum())))
        weight = corr[:k] ** p["power"]
        return AffineBaseline("cca", tm, dirs_y[:, :k] * weight,
                              im, dirs_x[:, :k] * weight, dict(p, dim=k))

    return _best((build(p) for p in grid), score)


# ---------------------------------------------------------------- entry point

def _best(models, score: Callable | None) -> AffineBaseline:
    """The model with the highest validation Prec@K (first on ties); the first without val."""
    best = None
    for model in models:
        if score is None:
            return model
        if "val_prec" not in model.params:
            model.params["val_prec"] = score(model)
        if best is None or model.params["val_prec"] > best.params["val_prec"]:
            best = model
    return best


def _fit(name: str, pairs: Pairs, grid: list[dict], score: Callable | None, seed: int) -> AffineBaseline:
    grid = [dict(p) for p in grid]  # the fitters may edit their copies
    if name == "devise":
        return _fit_devise(pairs, grid, score, seed)
    return {"ridge": _fit_ridge, "cca": _fit_cca}[name](pairs, grid, score)


def fit_baseline(name: str, data: ZeroShotData, train_classes: list, val_classes: list | None,
                 seed: int = 0, device="cpu", refit: bool = False, pairing: str | None = None,
                 select_k: int = DEFAULT_K, own_photo: bool = False) -> AffineBaseline:
    """Fit baseline ``name`` on ``train_classes``, choosing its hyperparameters on ``val_classes``.

    ``model.params`` records the chosen setting -- ridge: lam; devise: margin, lr, dim, steps;
    cca: reg, dim (capped at the number of non-zero correlations), power; every one: pairs,
    the training pairing -- and "val_prec", its validation Prec@``select_k`` (None without val). The
    pairing is ``pairing`` when given, else chosen on val among :data:`PAIRINGS` for data with
    many texts per class, else ``photo``; ``own_photo`` adds ``own_photo`` to that choice (and is
    the pairing without validation classes). With ``refit`` the chosen setting is fitted again on
    train + val classes. Embeddings come back on ``device``.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    grid = {"ridge": RIDGE_GRID, "devise": DEVISE_GRID, "cca": CCA_GRID}[name]
    pairings = [pairing] if pairing else list(PAIRINGS if data.many_texts and val_classes else PAIRINGS[:1])
    if own_photo and not pairing:
        pairings = pairings + [OWN_PHOTO] if val_classes else [OWN_PHOTO]

    def fit(classes, pairs_kind, points, score):
        model = _fit(name, training_pairs(data, classes, seed, device, pairs_kind), points, score, seed)
        model.params["pairs"] = pairs_kind
        return model

    if not val_classes:
        model = fit(train_classes, pairings[0], grid[:1], None)
        model.params["val_prec"] = None
        return model
    score = validation_scorer(data, val_classes, device, select_k)
    model = _best((fit(train_classes, kind, grid, score) for kind in pairings), score)
    if not refit:
        return model
    chosen = {k: v for k, v in model.params.items() if k not in ("val_prec", "pairs")}
    final = fit(list(train_classes) + list(val_classes), model.params["pairs"], [chosen], None)
    final.params["val_prec"] = model.params["val_prec"]
    return final


__all__ = ["BASELINES", "PAIRINGS", "OWN_PHOTO", "Baseline", "AffineBaseline", "CCASolver", "fit_baseline",
           "ridge_solutions", "training_pairs", "validation_scorer"]
