"""evaluate_classes ranked through GalleryIndex scores the same as its own exact ranking."""
import pytest
import torch

pytest.importorskip("faiss")
from zscrgan.config import Config  # noqa: E402
from zscrgan.core.networks import ZSCRGAN  # noqa: E402
from zscrgan.data.synthetic import make_builtin_dataset  # noqa: E402
from zscrgan.evaluation.metrics import score_retrieval  # noqa: E402
from zscrgan.evaluation.scoring import evaluate_classes  # noqa: E402


def test_exact_index_matches_builtin_ranking():
    data = make_builtin_dataset()
    torch.manual_seed(0)
    model = ZSCRGAN(data.text_dim, data.image_dim, 32, 8, 32, 32)
    cfg = Config().resolved()
    plain, lists = evaluate_classes(model, data, data.unseen, (10, 50), cfg, 1, "cpu")
    faiss_scores, faiss_lists = evaluate_classes(model, data, data.unseen, (10, 50), cfg, 1, "cpu", index_kind="exact")
    for key, value in plain.mean.items():
        assert faiss_scores.mean[key] == pytest.approx(value, abs=1e-6), key


def test_ranking_with_missing_results_counts_them_as_misses():
    q, g = torch.eye(2), torch.eye(2)
    labels = torch.tensor([0, 1])
    ranking = torch.tensor([[0, -1], [-1, -1]])
    scores = score_retrieval(q, labels, g, labels, ks=(1,), ranking=ranking)
    assert scores.mean["prec@1"] == 0.5
