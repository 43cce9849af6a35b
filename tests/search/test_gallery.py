"""GalleryIndex against brute-force numpy cosine top-k, on tiny data (runs in seconds)."""
import numpy as np
import pytest
import torch

from zscrgan.search import gallery as search
from zscrgan.search.gallery import IN_MEMORY, GalleryIndex, recall_at_k

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)


def brute_topk(queries, gallery, k):
    """Reference: numpy cosine similarity, full sort (no ties in random float data)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ g.T.astype(np.float64)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def clustered(n, dim, centers, seed):
    """Points around a few random centres, the shape real embeddings have."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, dim)).astype(np.float32)
    return means[rng.integers(0, centers, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((20, 16)).astype(np.float32), rng.standard_normal((500, 16)).astype(np.float32)


def test_exact_matches_brute_force(data):
    queries, gallery = data
    index = GalleryIndex(16)
    index.add(gallery)
    scores, ids = index.search(queries, 10)
    want_scores, want_ids = brute_topk(queries, gallery, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (20, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert len(index) == 500


def test_chunked_add_equals_single_add(data):
    queries, gallery = data
    whole, chunked = GalleryIndex(16), GalleryIndex(16)
    whole.add(gallery)
    for part in np.array_split(gallery, [7, 200, 201]):
        chunked.add(torch.from_numpy(part))
    np.testing.assert_array_equal(whole.search(queries, 10)[1], chunked.search(queries, 10)[1])


def test_torch_fallback_equals_faiss(data, monkeypatch):
    queries, gallery = data
    with_faiss = GalleryIndex(16)
    with_faiss.add(gallery)
    monkeypatch.setattr(search, "faiss", None)
    monkeypatch.setattr(search, "_GALLERY_BLOCK", 64)  # several blocks to merge
    fallback = GalleryIndex(16)
    for part in np.array_split(gallery, 3):
        fallback.add(part)
    got_scores, got_ids = fallback.search(torch.from_numpy(queries), 10)
    want_scores, want_ids = with_faiss.search(queries, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    with pytest.raises(ImportError, match="zscrgan\\[search\\]"):
        GalleryIndex(16, kind="ivf")


def test_torch_fallback_breaks_ties_by_lower_id(monkeypatch):
    monkeypatch.setattr(search, "faiss", None)
    monkeypatch.setattr(search, "_GALLERY_BLOCK", 3)  # ties span blocks
    gallery = np.array([[0, 1], [1, 0], [2, 0], [0, 1], [1, 0], [3, 0], [1, 0]], np.float32)
    index = GalleryIndex(2)
    index.add(gallery)
    assert index.search(np.array([[1, 0]], np.float32), 4)[1].tolist() == [[1, 2, 4, 5]]


@pytest.mark.parametrize("kind, options", [
    ("ivf", {"nlist": 16, "nprobe": 4}),
    ("hnsw", {"hnsw_m": 16, "ef_construction": 200}),
])
def test_approximate_kinds_recall(kind, options):
    gallery, queries = clustered(3000, 32, 20, seed=1), clustered(50, 32, 20, seed=2)
    exact, approx = GalleryIndex(32), GalleryIndex(32, kind=kind, **options)
    exact.add(gallery)
    for part in np.array_split(gallery, 4):  # ivf: buffered, trained at the first search
        approx.add(part)
    recall = recall_at_k(approx.search(queries, 20)[1], exact.search(queries, 20)[1], 20)
    assert recall > 0.9


def test_ivf_adds_after_training_are_searchable():
    gallery = clustered(1000, 8, 5, seed=3)
    index = GalleryIndex(8, kind="ivf", nlist=8, nprobe=8)
    index.add(gallery)
    index.build()
    index.add(gallery[:1] * 2)  # same direction as id 0, so cosine 1
    assert len(index) == 1001 and set(index.search(gallery[:1], 2)[1][0]) == {0, 1000}


def test_ivf_too_few_vectors_to_train():
    index = GalleryIndex(8, kind="ivf", nlist=64)
    index.add(np.ones((10, 8), np.float32))
    with pytest.raises(ValueError, match="nlist=64"):
        index.search(np.ones((1, 8), np.float32), 1)


def test_unknown_kind_names_choices():
    with pytest.raises(ValueError, match="unknown index kind 'pq'.*exact, ivf, hnsw"):
        GalleryIndex(8, kind="pq")


def test_search_before_add_and_bad_inputs():
    index = GalleryIndex(4)
    with pytest.raises(RuntimeError, match="call add\\(\\) before search\\(\\)"):
        index.search(np.ones((1, 4), np.float32), 1)
    with pytest.raises(ValueError, match="4 columns"):
        index.add(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 4), np.nan, np.float32))
    index.add(np.eye(4, dtype=np.float32))
    assert index.search(np.eye(4, dtype=np.float32), 10)[1].shape == (4, 4)  # k clamped
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.eye(4, dtype=np.float32), 0)


def test_saved_indexes_come_back_through_the_constructor():
    gallery, queries = clustered(1000, 8, 5, seed=3), clustered(20, 8, 5, seed=4)
    for kind in IN_MEMORY:
        index = GalleryIndex(8, kind, nlist=8, nprobe=8)
        index.add(gallery)
        again = GalleryIndex.from_bytes(index.to_bytes(), 8, kind, nprobe=8)
        assert len(again) == 1000 and again.kind == kind and (kind != "ivf" or again.nlist == 8)
        np.testing.assert_array_equal(again.search(queries, 5)[1], index.search(queries, 5)[1])
    with pytest.raises(ValueError, match="saved index has dim 8, expected 16"):
        GalleryIndex.from_bytes(index.to_bytes(), 16, "hnsw")


def test_ivfpq_is_built_on_disk_not_in_memory():
    with pytest.raises(ValueError, match="kind 'ivfpq' is built on disk .* GalleryIndex.open_disk"):
        GalleryIndex(8, kind="ivfpq")


def test_recall_at_k():
    exact = np.array([[0, 1, 2, 3], [4, 5, -1, -1]])
    approx = np.array([[3, 9, 1, 8], [5, 7, 8, 9]])
    assert recall_at_k(approx, exact, 4) == pytest.approx(3 / 6)
    assert recall_at_k(approx, exact, 2) == pytest.approx(1 / 4)


def test_one_cell_count_rule_for_ivf_and_ivfpq():
    """About 4 sqrt(N) cells, capped per kind; ivfpq also keeps 39 training vectors a cell."""
    from zscrgan.search.diskindex import PQSpec, cell_count
    from zscrgan.search.gallery import ivf_cells

    assert [ivf_cells(n) for n in (0, 1, 60, 10**6, 10**8)] == [1, 1, 31, 4000, 4096]
    assert [PQSpec.for_size(n, 32).nlist for n in (60, 10**6, 10**8, 10**10)] == [1, 4000, 40000, 65536]
    assert cell_count(10_000, 100, 1) == 100 and cell_count(10_000, 10**6, 200) == 50
