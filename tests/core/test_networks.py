"""The networks: shapes, init, truncated noise, and the critic's split first layer."""
import math

import torch
import torch.nn.functional as F

from zscrgan.core.networks import ZSCRGAN, truncated_normal


def test_init_is_normal_002_with_zero_biases():
    torch.manual_seed(0)
    model = ZSCRGAN(text_dim=64, image_dim=96, embed_dim=32, z_dim=16, gf_dim=128, df_dim=64)
    weights = torch.cat([p.flatten() for n, p in model.named_parameters() if n.endswith("weight")])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if n.endswith("bias"))


def test_critic_equals_one_linear_layer_on_the_concatenation():
    torch.manual_seed(1)
    critic = ZSCRGAN(10, 12, 4, 3, 8, 6).critic
    x, t = torch.randn(5, 12), torch.randn(5, 10)
    w = torch.cat([critic.fc_image.weight, critic.fc_text.weight], dim=1)  # Linear(image+text -> df)
    expected = F.linear(F.leaky_relu(F.linear(torch.cat([x, t], 1), w, critic.fc_image.bias), 0.2),
                        critic.fc2.weight, critic.fc2.bias).squeeze(1)
    torch.testing.assert_close(critic(x, t), expected)
    shared = critic.score_shared_text([x, 2 * x, x.flip(0)], t)
    for got, images in zip(shared, [x, 2 * x, x.flip(0)]):
        torch.testing.assert_close(got, critic(images, t))


def test_truncated_normal_bounds_and_moments():
    g = torch.Generator().manual_seed(0)
    eps = truncated_normal((200_000,), rng=g)
    assert eps.abs().max().item() <= 2.0
    # variance of N(0,1) truncated at +-2: 1 - 2*2*phi(2) / (2*Phi(2) - 1)
    phi = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert abs(eps.var().item() - (1 - 4 * phi / mass)) < 0.01 and abs(eps.mean().item()) < 0.01


def test_generated_features_are_non_negative_and_sized():
    torch.manual_seed(2)
    model = ZSCRGAN(text_dim=10, image_dim=7, embed_dim=4, z_dim=3, gf_dim=8, df_dim=6)
    eps = torch.randn(5, 4)
    x_hat, c, mu, log_sigma = model.generate(torch.randn(5, 10), eps, torch.randn(5, 3))
    assert x_hat.shape == (5, 7) and (x_hat >= 0).all()
    torch.testing.assert_close(c, mu + log_sigma.exp() * eps)
    assert model.csem(x_hat).shape == (5, 4)


def test_the_linear_path_starts_at_zero_and_trains_with_the_generator():
    torch.manual_seed(0)
    model = ZSCRGAN(text_dim=10, image_dim=7, embed_dim=4, z_dim=3, gf_dim=8, df_dim=6, generator_linear=True)
    c, z = torch.randn(5, 4), torch.randn(5, 3)
    g = model.generator
    mlp = g.fc3(F.leaky_relu(g.fc2(F.leaky_relu(g.fc1(torch.cat([c, z], 1)), 0.2)), 0.2))  # before the ReLU
    assert torch.equal(g.skip.weight, torch.zeros(7, 4)) and torch.allclose(g(c, z), torch.relu(mlp))
    assert any(p is g.skip.weight for p in model.generator_params())
    with torch.no_grad():
        g.skip.weight.fill_(1.0)  # W c is then the row sum of c in every output feature
    assert torch.allclose(g(c, z), torch.relu(mlp + c.sum(1, keepdim=True)))
    assert "generator.skip.weight" in model.state_dict()
    assert "generator.skip.weight" not in ZSCRGAN(10, 7, 4, 3, 8, 6).state_dict()
