"""Retrieval metrics against a plain-Python reference and a table worked out by hand."""
import math

import numpy as np
import pytest
import torch

from zscrgan.config import parse_ks
from zscrgan.evaluation.metrics import RetrievalScores, score_retrieval


def brute_force(q, ql, g, gl, ks):
    """Loop-by-loop reference: rank by (-cosine, index), then the module's definitions."""
    q = torch.nn.functional.normalize(q.float(), dim=1)
    g = torch.nn.functional.normalize(g.float(), dim=1)
    sims = (q @ g.T).tolist()  # same float32 products as the code under test
    ql, gl = ql.tolist(), gl.tolist()
    n_classes = max(ql + gl) + 1
    rankings = [sorted(range(len(gl)), key=lambda j: (-row[j], j)) for row in sims]
    mean, per_class = {}, {}
    for k in ks:
        k_eff = min(k, len(gl))
        sums = {name: [0.0] * n_classes for name in ("prec", "map", "recall")}
        counts = [0] * n_classes
        for label, ranking in zip(ql, rankings):
            n_rel = gl.count(label)
            rel = [gl[j] == label for j in ranking[:k_eff]]
            hits, ap = 0, 0.0
            for pos, r in enumerate(rel, start=1):
                if r:
                    hits += 1
                    ap += hits / pos
            counts[label] += 1
            sums["prec"][label] += hits / k_eff
            sums["map"][label] += ap / min(k_eff, n_rel) if n_rel else 0.0
            sums["recall"][label] += hits / n_rel if n_rel else math.nan
        for name, per in sums.items():
            values = np.array([per[c] / counts[c] if counts[c] else math.nan for c in range(n_classes)])
            per_class[f"{name}@{k}"] = values
            mean[f"{name}@{k}"] = float(np.nanmean(values))
    return mean, per_class, [r[:min(max(ks), len(gl))] for r in rankings]


def assert_matches(scores: RetrievalScores, reference):
    mean, per_class, rankings = reference
    assert scores.topk.tolist() == rankings
    assert scores.mean.keys() == mean.keys()
    for key in mean:
        np.testing.assert_allclose(scores.per_class[key], per_class[key], rtol=1e-12, equal_nan=True)
        assert scores.mean[key] == pytest.approx(mean[key], rel=1e-12, nan_ok=True)


def sparse_signs(n, dim, gen):
    """Rows with four entries of +-0.5: unit norm and products in steps of 0.25, all exact,
    so every tie is a true tie whatever order the matrix product sums in."""
    rows = torch.zeros(n, dim)
    cols = torch.rand(n, dim, generator=gen).argsort(dim=1)[:, :4]
    signs = torch.randint(0, 2, (n, 4), generator=gen).float() - 0.5
    return rows.scatter_(1, cols, signs)


def random_case(seed, n_classes, n_gallery, n_queries, dim, quantise):
    gen = torch.Generator().manual_seed(seed)
    gl = torch.randint(0, n_classes, (n_gallery,), generator=gen)
    ql = torch.randint(0, n_classes, (n_queries,), generator=gen)
    if not quantise:
        return torch.randn(n_queries, dim, generator=gen), ql, torch.randn(n_gallery, dim, generator=gen), gl
    g = sparse_signs(n_gallery, dim, gen)
    g[torch.randint(0, n_gallery, (n_gallery // 3,), generator=gen)] = g[:n_gallery // 3].clone()  # duplicates
    q = 2.0 * sparse_signs(n_queries, dim, gen)  # scaled: normalisation must undo it exactly
    return q, ql, g, gl


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("quantise", [False, True])
def test_matches_brute_force(seed, quantise):
    n_gallery = 20 + 7 * seed
    case = random_case(seed, n_classes=3 + seed % 5, n_gallery=n_gallery, n_queries=9 + seed,
                       dim=4 + seed % 4, quantise=quantise)
    ks = (1, 3, 5, 10, 50)  # 50 > the gallery for small seeds: exercises the clamp
    scores = score_retrieval(*case, ks=ks, chunk_size=4)
    assert_matches(scores, brute_force(*case, ks))


def test_forced_ties_cut_at_the_boundary_by_index():
    # Eight identical gallery vectors: every query ties them all; the top 3 must be 0, 1, 2.
    g = torch.ones(8, 4)
    gl = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    q = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    scores = score_retrieval(q, torch.tensor([0, 1]), g, gl, ks=(3,))
    assert scores.topk.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert scores.per_class["prec@3"].tolist() == [2 / 3, 1 / 3]


def test_hand_computed_table():
    # Gallery on the unit circle; cosine to the query (1, 0) is the x coordinate.
    # index:  0     1     2     3     4
    # x:     0.9   0.1   0.8  -1.0   0.8   (2 and 4 tie: 2 ranks first)
    # class:  0     1     0     1     1
    ang = torch.tensor([0.9, 0.1, 0.8, -1.0, 0.8]).acos()
    g = torch.stack([ang.cos(), ang.sin()], dim=1).double()
    gl = torch.tensor([0, 1, 0, 1, 1])
    q = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    ql = torch.tensor([0, 1, 1])
    # Rankings: query (1,0): 0, 2, 4, 1, 3.  query (-1,0): 3, 1, 2, 4, 0 (tie again: 2 first).
    s = score_retrieval(q, ql, g, gl, ks=(2, 10))
    assert s.topk.tolist() == [[0, 2, 4, 1, 3], [3, 1, 2, 4, 0], [0, 2, 4, 1, 3]]
    # K=2. class 0 (1 query): hits 2 -> prec 2/2 = 1; AP = (1/1 + 2/2)/min(2,2) = 1; recall 2/2.
    # class 1 query A (-1,0): top [3, 1] both class 1 -> hits 2, AP (1 + 1)/2 = 1, recall 2/3.
    # class 1 query B (1,0):  top [0, 2] none -> hits 0, AP 0, recall 0.
    # class 1: prec (2 + 0)/(2*2) = 0.5, map 0.5, recall (2/3 + 0)/2 = 1/3.
    assert s.per_class["prec@2"].tolist() == pytest.approx([1.0, 0.5])
    assert s.per_class["map@2"].tolist() == pytest.approx([1.0, 0.5])
    assert s.per_class["recall@2"].tolist() == pytest.approx([1.0, 1 / 3])
    assert s.mean["prec@2"] == pytest.approx(0.75)
    # K=10 clamps to 5. class 0: hits 2, prec 2/5, AP (1/1 + 2/2)/2 = 1, recall 1.
    # class 1 query A: rel 1,1,0,1,0 -> prec 3/5, AP (1/1 + 2/2 + 3/4)/3 = 11/12, recall 1.
    # class 1 query B: rel 0,0,1,1,1 -> prec 3/5, AP (1/3 + 2/4 + 3/5)/3 = 43/90, recall 1.
    assert s.per_class["prec@10"].tolist() == pytest.approx([0.4, 0.6])
    assert s.per_class["map@10"].tolist() == pytest.approx([1.0, (11 / 12 + 43 / 90) / 2])
    assert s.per_class["recall@10"].tolist() == pytest.approx([1.0, 1.0])
    assert s.as_dict() == pytest.approx({
        "prec@2": 0.75, "map@2": 0.75, "recall@2": 2 / 3,
        "prec@10": 0.5, "map@10": (1 + (11 / 12 + 43 / 90) / 2) / 2, "recall@10": 1.0})


def test_classes_without_queries_or_gallery_images():
    # class 1 has gallery images but no query; class 2 has a query but no gallery image.
    g = torch.eye(3)
    gl = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = score_retrieval(q, torch.tensor([0, 2]), g, gl, ks=(1,))
    assert np.isnan(s.per_class["prec@1"][1])
    assert s.per_class["prec@1"].tolist()[::2] == [1.0, 0.0]
    assert s.mean["prec@1"] == 0.5  # over classes 0 and 2
    assert np.isnan(s.per_class["recall@1"][2]) and s.mean["recall@1"] == 1.0
    assert s.per_class["map@1"][2] == 0.0


def test_bf16_inputs_and_chunking_give_the_same_ranking():
    q, ql, g, gl = random_case(3, n_classes=4, n_gallery=60, n_queries=25, dim=8, quantise=False)
    q, g = q.bfloat16(), g.bfloat16()
    whole = score_retrieval(q, ql, g, gl, ks=(5, 20), chunk_size=1000)
    chunked = score_retrieval(q, ql, g, gl, ks=(5, 20), chunk_size=3)
    assert torch.equal(whole.topk, chunked.topk) and whole.topk.dtype == torch.long
    assert whole.mean == chunked.mean
    assert_matches(whole, brute_force(q, ql, g, gl, (5, 20)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    case = random_case(5, n_classes=5, n_gallery=300, n_queries=40, dim=16, quantise=True)
    cpu = score_retrieval(*case, ks=(1, 10, 50))
    gpu = score_retrieval(*(t.cuda() for t in case), ks=(1, 10, 50))
    assert torch.equal(cpu.topk, gpu.topk.cpu()) and cpu.mean == pytest.approx(gpu.mean)


def test_bad_inputs_are_refused():
    g, gl = torch.eye(3), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        score_retrieval(torch.full((1, 3), float("nan")), torch.tensor([0]), g, gl)
    with pytest.raises(ValueError, match="query dim 2 != gallery dim 3"):
        score_retrieval(torch.ones(1, 2), torch.tensor([0]), g, gl)
    with pytest.raises(ValueError, match="integer tensor"):
        score_retrieval(torch.ones(1, 3), torch.tensor([0.0]), g, gl)
    with pytest.raises(ValueError, match="invalid K 0"):
        score_retrieval(torch.ones(1, 3), torch.tensor([0]), g, gl, ks=(0, 5))


def test_parse_ks():
    assert parse_ks("10,50,100") == (10, 50, 100)
    assert parse_ks("100, 10") == (10, 50, 100)
    assert parse_ks([5, 5, 50]) == (5, 50)
    assert parse_ks("") == (50,)
    assert parse_ks([np.int64(7)]) == (7, 50)


@pytest.mark.parametrize("bad, message", [
    ("10,abc", "invalid K 'abc' in '10,abc'"),
    ("10,,20", "invalid K '' in '10,,20'"),
    ("2.5", "invalid K '2.5'"),
    ("-3", "invalid K '-3' in '-3': expected positive integers"),
    ("0,10", "invalid K 0 in '0,10': K must be a positive integer"),
    ([10, 0], "invalid K 0: K must be a positive integer"),
    ([1.5], "invalid K 1.5"),
    ([True], "invalid K True"),
])
def test_parse_ks_errors(bad, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        parse_ks(bad)
