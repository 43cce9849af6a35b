"""A trained run opened for search embeds exactly as the run evaluated, centring included."""
import numpy as np
import pytest
import torch
from helpers import TINY, small_set

from zscrgan.cli import main
from zscrgan.data.dataset import load_dataset
from zscrgan.core.embedding import common_space_centre, embed_gallery, embed_queries
from zscrgan.search.trained import class_table, open_run


@pytest.mark.parametrize("recipe", [["--recipe", "improved", "--eval_centre"],
                                    ["--recipe", "tuned"]])  # tuned: centred, text path started at ridge
def test_a_centred_run_is_searched_centred_as_it_was_evaluated(tmp_path, recipe):
    data = small_set(tmp_path / "TOY")
    assert main(["train", "--dataset", str(data), *recipe, "--epochs", "1",
                 "--out_dir", str(tmp_path), *TINY]) == 0
    run = open_run(tmp_path / "ckt_logs" / "TOY_logs")
    assert (run.model.generator.text_path is not None) == ("tuned" in recipe)
    state = torch.load(run.checkpoint, weights_only=True)
    loaded = load_dataset(data)
    train_images, _ = loaded.stacked_images(state["classes"]["train"])
    centre = common_space_centre(run.model, torch.from_numpy(train_images))
    x, _ = loaded.stacked_images(loaded.unseen[:1])
    t, _ = loaded.stacked_texts(loaded.unseen[:1])
    expected_x = embed_gallery(run.model, torch.from_numpy(x)) - centre
    expected_t = embed_queries(run.model, torch.from_numpy(t), use_mean=True) - centre
    np.testing.assert_allclose(run.embed_images(x), expected_x.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.embed_text_vectors(t), expected_t.numpy(), rtol=1e-5, atol=1e-6)
    assert float(centre.abs().sum()) > 0


def test_the_class_table_holds_each_class_prototype_computed_row_by_row(tmp_path):
    """An index's class vectors: per class, the mean of its texts' unit queries, each text embedded
    alone (a noisy run's draws as a query alone draws them), the same as scoring's prototype form."""
    data = small_set(tmp_path / "TOY")  # two texts a class
    assert main(["train", "--dataset", str(data), "--recipe", "original", "--eval_samples", "2", "--epochs", "1",
                 "--out_dir", str(tmp_path), *TINY]) == 0
    run = open_run(tmp_path / "ckt_logs" / "TOY_logs")
    assert not run.cfg.eval_mean  # noise drawn: the case where batching could change a row
    table, loaded = class_table(run), load_dataset(data)
    assert list(table["ids"]) == [str(c) for c in list(loaded.seen) + list(loaded.unseen)]
    assert table["seen"].tolist() == [True] * len(loaded.seen) + [False] * len(loaded.unseen)
    for c, got in zip(list(loaded.seen) + list(loaded.unseen), table["embeddings"]):
        rows = np.concatenate([run.embed_text_vectors(v[None]) for v in loaded.texts[c]])
        expected = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).mean(axis=0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
