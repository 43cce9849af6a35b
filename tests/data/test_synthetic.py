"""The built-in demo data: deterministic, non-negative, disjoint, and learnable as documented."""
import numpy as np
import torch

from zscrgan.data.synthetic import make_builtin_dataset
from zscrgan.evaluation.metrics import score_retrieval


def test_same_arguments_same_arrays_and_shapes():
    a, b = make_builtin_dataset(), make_builtin_dataset()
    assert a.seen == b.seen and a.unseen == b.unseen
    assert (len(a.seen), len(a.unseen), a.text_dim, a.image_dim) == (48, 12, 64, 128)
    assert not set(a.seen) & set(a.unseen)
    for c in a.seen + a.unseen:
        np.testing.assert_array_equal(a.images[c], b.images[c])
        assert a.images[c].shape == (80, 128) and a.texts[c].shape == (5, 64)
        assert (a.images[c] >= 0).all()
    assert not np.array_equal(make_builtin_dataset(seed=1).images[1], a.images[1])


def test_class_mean_oracle_and_chance_as_documented():
    data = make_builtin_dataset()
    images, labels = data.stacked_images(data.unseen)
    means = np.stack([data.images[c].mean(0) for c in data.unseen])
    oracle = score_retrieval(torch.from_numpy(means), torch.arange(len(means)),
                             torch.from_numpy(images), torch.from_numpy(labels), ks=(50,))
    assert oracle.mean["prec@50"] > 0.99
    rng = np.random.default_rng(0)
    random = score_retrieval(torch.from_numpy(rng.normal(size=(12, 128)).astype(np.float32)), torch.arange(12),
                             torch.from_numpy(images), torch.from_numpy(labels), ks=(50,))
    assert random.mean["prec@50"] < 0.3  # near the 1/12 chance level
