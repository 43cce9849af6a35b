"""A trained run opened for search embeds exactly as the run evaluated, centring included."""
import numpy as np
import pytest
import torch
from helpers import TINY, small_set

from zscrgan.cli import main
from zscrgan.data.dataset import load_dataset
from zscrgan.core.embedding import common_space_centre, embed_gallery, embed_queries
from zscrgan.search.trained import open_run


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
