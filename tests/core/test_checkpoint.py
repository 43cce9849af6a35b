"""Weights read back as networks: a training checkpoint's, and a shipped model's inference weights
(no critic, optionally float16), which must hold every other tensor."""
import pytest
import torch

from zscrgan.config import Config
from zscrgan.core.checkpoint import inference_weights, model_from_weights
from zscrgan.core.networks import ZSCRGAN

CFG = Config(z_dim=4)


def trained():
    torch.manual_seed(0)
    return ZSCRGAN(12, 20, 8, 4, 16, 16)


def test_inference_weights_drop_the_critic_and_load_back_widened_to_float32():
    model = trained()
    weights = inference_weights(model, half=True)
    assert weights and not any(k.startswith("critic.") for k in weights)
    assert all(v.dtype == torch.float16 for v in weights.values())
    loaded = model_from_weights(weights, CFG)
    for name, value in loaded.state_dict().items():
        if not name.startswith("critic."):
            assert value.dtype == torch.float32
            assert torch.equal(value, model.state_dict()[name].half().float())
    assert loaded.critic.fc_image.out_features == 1  # the placeholder critic


def test_a_training_checkpoint_s_weights_load_exactly():
    model = trained()
    loaded = model_from_weights(model.state_dict(), CFG)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_weights_missing_a_tensor_other_than_the_critic_s_are_refused():
    weights = inference_weights(trained(), half=False)
    del weights["csem.fc.bias"]
    with pytest.raises(KeyError, match=r"missing \['csem.fc.bias'\], unexpected \[\]"):
        model_from_weights(weights, CFG)
    weights = {**trained().state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match=r"missing \[\], unexpected \['extra.weight'\]"):
        model_from_weights(weights, CFG)
