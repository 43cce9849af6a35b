"""Many texts per class (captions): the E-step's caption draws, the two query protocols, the
baselines' caption pairings against closed forms, and the refusals that protect such data."""
import pickle

import numpy as np
import pytest
import torch

from zscrgan.core.sampler import BatchSampler
from zscrgan.data import dataset as data_module
from zscrgan.data.dataset import ZeroShotData, load_dataset
from zscrgan.errors import DataError, UserError
from zscrgan.evaluation.baselines import fit_baseline, training_pairs
from zscrgan.evaluation.metrics import score_retrieval
from zscrgan.evaluation.scoring import class_prototypes, score_classes, score_views
from zscrgan.evaluation.selection import check_select_k
from zscrgan.experiments.runfolder import RunFolder


def caption_data(texts_per_class=(7, 3, 5, 9, 4, 6), images_per_class=8, unseen=2, seed=0) -> ZeroShotData:
    """Classes with different caption counts and equal photo counts; captions and photos are
    noisy linear maps of a class latent, so a linear fit has something to find."""
    rng = np.random.default_rng(seed)
    n = len(texts_per_class)
    latent = rng.normal(size=(n, 4))
    to_text, to_image = rng.normal(size=(4, 6)), rng.normal(size=(4, 5))
    texts = {c: (latent[c] @ to_text + 0.5 * rng.normal(size=(k, 6))).astype(np.float32)
             for c, k in enumerate(texts_per_class)}
    images = {c: (latent[c] @ to_image + 0.5 * rng.normal(size=(images_per_class, 5))).astype(np.float32)
              for c in range(n)}
    ids = list(range(n))
    return ZeroShotData(texts, images, ids[unseen:], ids[:unseen], name="captions")


def test_the_e_step_draws_every_caption_of_a_class_about_equally_often():
    counts = [40, 7, 25]  # captions per class
    sampler = BatchSampler([5, 5, 5], batch_size=6, seed=0, texts_per_class=counts)
    drawn = sampler.sample(3000)  # 18,000 rows, 6,000 a class
    rows, classes = drawn["texts"].reshape(-1), drawn["classes"].reshape(-1)
    offsets = np.cumsum([0] + counts)
    for c, k in enumerate(counts):
        mine = rows[classes == c].numpy() - offsets[c]
        assert mine.min() >= 0 and mine.max() < k  # always a caption of the row's own class
        hist = np.bincount(mine, minlength=k)
        assert (hist > 0).all()  # every caption is drawn
        # uniform: chi-square with k-1 degrees of freedom, far below its 0.999 quantile
        expected = len(mine) / k
        chi2 = ((hist - expected) ** 2 / expected).sum()
        assert chi2 < k - 1 + 6 * np.sqrt(2 * (k - 1)), (c, chi2)


def test_original_trains_on_each_class_s_first_caption_only():
    from zscrgan.config import Config
    from zscrgan.experiments.trainer import EMTrainer

    data = caption_data()
    tiny = dict(gf_dim=8, df_dim=8, embed_dim=4, z_dim=2, e_steps=2, m_steps=2, batch_size=4)
    for recipe, first_only in (("original", True), ("improved", False)):
        trainer = EMTrainer(Config(recipe=recipe, **tiny).resolved(), data, data.seen, "cpu")
        rows = trainer.round_batches()["texts"].reshape(-1)
        firsts = set(trainer.sampler.text_offsets.tolist())
        assert set(rows.tolist()) <= firsts if first_only else not set(rows.tolist()) <= firsts


def test_the_two_protocols_agree_with_one_text_per_class_and_differ_with_many():
    many = caption_data()
    one = ZeroShotData({c: t[:1] for c, t in many.texts.items()}, many.images, many.seen, many.unseen)
    assert not one.many_texts and many.many_texts
    model = fit_baseline("ridge", many, many.seen, None)
    per_text = score_classes(model, one, one.seen, (5,), "cpu")[0].mean
    per_class = score_classes(model, one.class_mean_texts(), one.seen, (5,), "cpu")[0].mean
    assert per_text == per_class
    means = many.class_mean_texts()
    for c, t in many.texts.items():
        np.testing.assert_allclose(means.texts[c], t.mean(0, keepdims=True), rtol=1e-6)
    ranked = score_classes(model, means, many.seen, (5,), "cpu")[0].topk
    assert len(ranked) == len(many.seen)  # one query per class
    per_caption = score_classes(model, many, many.seen, (5,), "cpu")[0].topk
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
        score_classes(model, one, one.seen, (5,), "cpu")[0].as_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prototype_figures_on_cuda_are_the_cpu_figures():
    many = caption_data()
    on_gpu = score_prototypes(fit_baseline("ridge", many, many.seen, None, device="cuda"), many, many.seen, (3, 5), "cuda")
    on_cpu = score_prototypes(fit_baseline("ridge", many, many.seen, None), many, many.seen, (3, 5), "cpu")
    assert on_gpu.as_dict() == pytest.approx(on_cpu.as_dict())


def test_class_mean_pairing_is_ridge_on_every_caption_photo_pair_of_a_class():
    """Pairing each caption with its class's mean photo is the closed form of pairing it with
    every photo of its class (equal photo counts): checked against numpy on the explicit pairs."""
    data = caption_data()
    model = fit_baseline("ridge", data, data.seen, None, pairing="class_mean")
    lam = model.params["lam"]
    a = np.concatenate([np.repeat(data.texts[c], len(data.images[c]), 0) for c in data.seen]).astype(np.float64)
    b = np.concatenate([np.tile(data.images[c], (len(data.texts[c]), 1)) for c in data.seen]).astype(np.float64)
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    gram = a_c.T @ a_c / len(a)
    weights = np.linalg.solve(gram + lam * np.trace(gram) / len(gram) * np.eye(len(gram)), a_c.T @ b_c / len(a))
    np.testing.assert_allclose(model.text_map.numpy(), weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.image_mean.numpy(), b.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.text_mean.numpy(), a.mean(0), rtol=1e-5, atol=1e-6)


def test_caption_pairings_use_every_caption_and_the_pairing_is_chosen_on_validation():
    data = caption_data()
    for pairing in ("caption", "class_mean"):
        pairs = training_pairs(data, data.seen, seed=3, pairing=pairing)
        assert len(pairs.texts) == sum(len(data.texts[c]) for c in data.seen)
        for pos, c in enumerate(data.seen):
            got = pairs.images[pairs.labels == pos].numpy()
            if pairing == "class_mean":
                np.testing.assert_allclose(got, np.broadcast_to(data.images[c].mean(0), got.shape), rtol=1e-6)
            else:  # each a photo of its own class
                assert ((got[:, None] == data.images[c][None]).all(-1)).any(1).all()
    model = fit_baseline("ridge", data, data.seen[:2], data.seen[2:])
    assert model.params["pairs"] in ("photo", "caption", "class_mean")
    best = max(fit_baseline("ridge", data, data.seen[:2], data.seen[2:], pairing=p).params["val_prec"]
               for p in ("photo", "caption", "class_mean"))
    assert model.params["val_prec"] == best
    one = ZeroShotData({c: t[:1] for c, t in data.texts.items()}, data.images, data.seen, data.unseen)
    assert fit_baseline("ridge", one, one.seen[:2], one.seen[2:]).params["pairs"] == "photo"


def write_set(folder, texts, images, seen, unseen):
    folder.mkdir()
    for name, obj in (("txt_embed_dict.pkl", texts), ("image_embed_dict.pkl", images),
                      ("trainids.pkl", seen), ("testids.pkl", unseen)):
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    return folder


def test_texts_that_would_not_fit_in_memory_are_refused_in_one_line(tmp_path, monkeypatch):
    data = caption_data()
    folder = write_set(tmp_path / "big", data.texts, data.images, data.seen, data.unseen)
    need = 4 * sum(t.size for t in data.texts.values())
    monkeypatch.setattr(data_module, "available_memory", lambda: need - 1)
    with pytest.raises(DataError, match=r"txt_embed_dict.pkl: the text vectors need .* GiB as float32, more than"):
        load_dataset(folder)
    monkeypatch.setattr(data_module, "available_memory", lambda: 10 * need)
    assert load_dataset(folder).many_texts


def test_caption_rows_of_different_width_or_with_nan_are_refused(tmp_path):
    data = caption_data()
    texts = dict(data.texts)
    texts[3] = np.zeros((4, 7), np.float32)
    with pytest.raises(DataError, match="txt_embed_dict.pkl: class 3 has text vectors of length 7, others have 6"):
        load_dataset(write_set(tmp_path / "wide", texts, data.images, data.seen, data.unseen))
    texts = dict(data.texts)
    texts[4] = texts[4].copy()
    texts[4][2, 1] = np.nan
    with pytest.raises(DataError, match="txt_embed_dict.pkl: class 4 has NaN or infinite text values"):
        load_dataset(write_set(tmp_path / "nan", texts, data.images, data.seen, data.unseen))


def test_one_validation_class_is_refused_and_two_warn():
    with pytest.raises(UserError, match="--select val holds out only 1 validation class: its gallery holds only"):
        check_select_k("val", 5, [40])
    assert any("only 2 validation classes" in w for w in check_select_k("val", 5, [40, 40]))


def test_retrieval_pickle_keeps_every_query_up_to_its_cap(tmp_path, monkeypatch):
    from zscrgan.experiments import runfolder as outputs

    monkeypatch.setattr(outputs, "MAX_RETRIEVAL_LISTS", 10)
    folder = RunFolder(tmp_path / "run", tmp_path / "res")
    lists = [{q % 3: [q]} for q in range(25)]
    path = folder.write_retrieval(50, {"prec@50": 0.5}, lists)
    kept = pickle.loads(path.read_bytes())
    assert len(kept) == 10 and kept[0] == {0: [0]} and kept[-1] == {24 % 3: [24]}
    path = folder.write_retrieval(50, {"prec@50": 0.25}, lists[:10])
    assert pickle.loads(path.read_bytes()) == lists[:10]
