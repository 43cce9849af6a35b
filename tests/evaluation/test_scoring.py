"""Scoring: the metrics against torchmetrics, one scorer for every model."""
import numpy as np
import pytest
import torch
from helpers import caption_data

from zscrgan.core.embedding import class_prototypes
from zscrgan.core.networks import ZSCRGAN
from zscrgan.data.dataset import ZeroShotData
from zscrgan.data.synthetic import make_builtin_dataset
from zscrgan.evaluation.baselines import fit_baseline
from zscrgan.evaluation.metrics import score_retrieval
from zscrgan.evaluation.scoring import score_views


def tiny_model(data, seed=0):
    torch.manual_seed(seed)
    return ZSCRGAN(data.text_dim, data.image_dim, 16, 8, 32, 32)


# ---- the metrics against an independent implementation ------------------------------------------
def test_metrics_agree_with_torchmetrics_where_the_definitions_agree():
    """Prec@K and Recall@K at any K below the gallery; mAP@K at K = gallery size, where every
    relevant image is retrieved, so torchmetrics' denominator (relevant retrieved) equals ours
    (min(K, relevant)). Ours averages per query, then per class, then over classes."""
    tm = pytest.importorskip("torchmetrics.functional.retrieval")
    gen = torch.Generator().manual_seed(3)
    n_classes, gallery_size = 5, 40
    ql = torch.randint(0, n_classes, (23,), generator=gen)
    gl = torch.randint(0, n_classes, (gallery_size,), generator=gen)
    q, g = torch.randn(23, 6, generator=gen, dtype=torch.float64), torch.randn(gallery_size, 6, generator=gen, dtype=torch.float64)
    ks = (1, 5, 10, gallery_size)
    ours = score_retrieval(q, ql, g, gl, ks=ks).mean
    # torchmetrics counts a relevant item scored <= 0 as irrelevant (shift the cosines above 0) and
    # returns float32 (compare to 1e-6)
    sims = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T + 2

    def class_mean(fn, k):
        per_query = torch.stack([fn(sims[i], gl == ql[i], top_k=k) for i in range(len(ql))]).double()
        return float(np.mean([per_query[ql == c].mean().item() for c in ql.unique()]))

    for k in ks:
        assert ours[f"prec@{k}"] == pytest.approx(class_mean(tm.retrieval_precision, k), abs=1e-6), k
        assert ours[f"recall@{k}"] == pytest.approx(class_mean(tm.retrieval_recall, k), abs=1e-6), k
    assert ours[f"map@{gallery_size}"] == pytest.approx(class_mean(tm.retrieval_average_precision, gallery_size), abs=1e-6)


# ---- one scorer for every model -------------------------------------------------------------------
def test_retrieval_lists_are_ordered_best_first():
    data = make_builtin_dataset()
    model = fit_baseline("ridge", data, list(data.seen), None)
    _, lists, _ = score_views(model, data, data.unseen, (50,), "cpu")
    texts, _ = data.stacked_texts(data.unseen)
    images, g_labels = data.stacked_images(data.unseen)
    q = torch.nn.functional.normalize(model.embed_texts(torch.from_numpy(texts)), dim=1)
    g = torch.nn.functional.normalize(model.embed_images(torch.from_numpy(images)), dim=1)
    sims = (q @ g.T).numpy()
    for i, entry in enumerate(lists):
        (query_class, retrieved), = entry.items()
        order = np.argsort(-sims[i], kind="stable")[:50]
        assert retrieved == [data.unseen[j] for j in g_labels[order]]
        assert np.all(np.diff(sims[i][order]) <= 0)  # best first


def test_the_two_protocols_agree_with_one_text_per_class_and_differ_with_many():
    many = caption_data()
    one = ZeroShotData({c: t[:1] for c, t in many.texts.items()}, many.images, many.seen, many.unseen)
    assert not one.many_texts and many.many_texts
    model = fit_baseline("ridge", many, many.seen, None)
    per_text = score_views(model, one, one.seen, (5,), "cpu")[0].mean
    per_class = score_views(model, one.class_mean_texts(), one.seen, (5,), "cpu")[0].mean
    assert per_text == per_class
    means = many.class_mean_texts()
    for c, t in many.texts.items():
        np.testing.assert_allclose(means.texts[c], t.mean(0, keepdims=True), rtol=1e-6)
    ranked = score_views(model, means, many.seen, (5,), "cpu")[0].topk
    assert len(ranked) == len(many.seen)  # one query per class
    per_caption = score_views(model, many, many.seen, (5,), "cpu")[0].topk
    assert len(per_caption) == sum(len(many.texts[c]) for c in many.seen)  # every caption a query


def score_prototypes(model, data, classes, ks, device):
    """The per-class protocol's prototype form alone: the mean of each class's unit-length queries."""
    return score_views(model, data, classes, ks, device, details=False, per_class=True)[2]["prototype"]


def test_prototypes_are_the_mean_unit_query_of_each_class_checked_by_hand():
    queries = torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 7.0], [1.0, 0.0], [5.0, 0.0], [0.0, -1.0]])
    got = class_prototypes(queries, [2, 1, 3])
    expected = torch.tensor([[(0.6 + 0.0) / 2, (0.8 + 1.0) / 2], [0.0, 1.0], [2 / 3, -1 / 3]])
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="class position 1 has no texts"):
        class_prototypes(queries[:3], [3, 0])


def test_prototype_protocol_brute_force_and_agrees_with_per_text_on_one_text_a_class():
    many = caption_data()
    model = fit_baseline("ridge", many, many.seen, None)
    got = score_prototypes(model, many, many.seen, (3, 5), "cpu")
    # brute force: each class's mean unit query, ranked over the gallery by cosine
    rows = [torch.nn.functional.normalize(model.embed_texts(torch.from_numpy(many.texts[c])), dim=1).mean(0)
            for c in many.seen]
    images, g_labels = many.stacked_images(many.seen)
    want = score_retrieval(torch.stack(rows), torch.arange(len(many.seen)), model.embed_images(torch.from_numpy(images)),
                           torch.from_numpy(g_labels), ks=(3, 5))
    assert got.as_dict() == pytest.approx(want.as_dict())
    assert len(got.topk) == len(many.seen)  # one query per class
    one = ZeroShotData({c: t[:1] for c, t in many.texts.items()}, many.images, many.seen, many.unseen)
    assert score_prototypes(model, one, one.seen, (5,), "cpu").as_dict() == pytest.approx(
        score_views(model, one, one.seen, (5,), "cpu")[0].as_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prototype_figures_on_cuda_are_the_cpu_figures():
    many = caption_data()
    on_gpu = score_prototypes(fit_baseline("ridge", many, many.seen, None, device="cuda"), many, many.seen, (3, 5), "cuda")
    on_cpu = score_prototypes(fit_baseline("ridge", many, many.seen, None), many, many.seen, (3, 5), "cpu")
    assert on_gpu.as_dict() == pytest.approx(on_cpu.as_dict())
