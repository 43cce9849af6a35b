"""Captions tied to their photos, used by the baselines: the own_photo pairing (--photo_pairs). Off by
default; the project has no real tied data, so these show the mechanics, and on synthetic captions
that describe their photo (tests/helpers.py), that validation picks the pairing where it helps and
leaves it where it does not. (The E-step's own captions, --own_captions: tests/core/test_sampler.py,
tests/experiments/test_trainer.py and test_run.py.)"""
import numpy as np
import pytest
import torch
from helpers import tied_captions_set

from zscrgan.data.dataset import ZeroShotData, split_validation
from zscrgan.errors import DataError
from zscrgan.evaluation.baselines import OWN_PHOTO, fit_baseline, training_pairs
from zscrgan.evaluation.scoring import score_views


def test_own_photo_pairs_each_text_with_the_photo_it_describes():
    texts = {1: np.arange(8, dtype=np.float32).reshape(4, 2), 2: np.ones((2, 2), np.float32)}
    images = {1: np.array([[10.0], [11.0], [12.0]], np.float32), 2: np.array([[20.0], [21.0]], np.float32)}
    data = ZeroShotData(texts, images, [1, 2], [], text_photos={1: np.array([2, 0, -1, 2]), 2: np.array([1, 1])})
    pairs = training_pairs(data, [1, 2], seed=0, pairing=OWN_PHOTO)
    assert torch.equal(pairs.texts, torch.from_numpy(np.concatenate([texts[1], texts[2]])))
    got = pairs.images[:, 0].tolist()
    assert got[:2] == [12.0, 10.0] and got[3:] == [12.0, 21.0, 21.0]
    # tied to no photo: the photo the caption pairing draws for it, from the same random stream
    assert got[2] == training_pairs(data, [1, 2], seed=0, pairing="caption").images[2, 0].item()
    assert pairs.labels.tolist() == [0, 0, 0, 0, 1, 1]
    data.text_photos = None
    with pytest.raises(DataError, match="no caption_photos.npz"):
        training_pairs(data, [1, 2], seed=0, pairing=OWN_PHOTO)


def unseen_prec(model, data) -> float:
    return float(score_views(model, data, data.unseen, (5,), "cpu", details=False)[0].mean["prec@5"])


@pytest.mark.parametrize("name", ["ridge", "cca"])
def test_validation_chooses_own_photo_where_captions_describe_their_photo(name):
    data = tied_captions_set(tied=True)
    train, val = split_validation(data, 0.2, 0)
    plain = fit_baseline(name, data, train, val, select_k=5)
    tied = fit_baseline(name, data, train, val, select_k=5, own_photo=True)
    assert plain.params["pairs"] != OWN_PHOTO and tied.params["pairs"] == OWN_PHOTO
    assert tied.params["val_prec"] > plain.params["val_prec"] + 0.01
    assert unseen_prec(tied, data) > unseen_prec(plain, data) + 0.05  # measured: ridge 0.91 vs 0.73, cca 0.97 vs 0.91


@pytest.mark.parametrize("name", ["ridge", "cca"])
def test_validation_leaves_own_photo_where_the_ties_carry_nothing(name):
    data = tied_captions_set(tied=False)  # the same captions, tied to a random photo of their class
    train, val = split_validation(data, 0.2, 0)
    plain = fit_baseline(name, data, train, val, select_k=5)
    assert fit_baseline(name, data, train, val, select_k=5, own_photo=True).params == plain.params


def test_without_validation_classes_photo_pairs_means_own_photo():
    data = tied_captions_set(tied=True)
    assert fit_baseline("ridge", data, data.seen, None, own_photo=True).params["pairs"] == OWN_PHOTO
    assert fit_baseline("ridge", data, data.seen, None).params["pairs"] == "photo"
