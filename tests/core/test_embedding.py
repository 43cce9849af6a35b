"""The one query embedder: the noise draws, their seeding, centring, and the option that makes a
row's embedding independent of its batch, each against the formula written out by hand."""
import torch

from zscrgan.config import Config
from zscrgan.core.embedding import QueryEmbedder, embed_gallery, embed_queries, eval_rng
from zscrgan.core.networks import ZSCRGAN, truncated_normal
from zscrgan.data.synthetic import make_builtin_dataset


def tiny_model(data, seed=0):
    torch.manual_seed(seed)
    return ZSCRGAN(data.text_dim, data.image_dim, 16, 8, 32, 32)


def unseen_texts(data):
    return torch.from_numpy(data.stacked_texts(data.unseen)[0])


def test_embed_queries_with_eval_mean_uses_mu_and_no_noise():
    data = make_builtin_dataset()
    model = tiny_model(data)
    texts = torch.from_numpy(data.stacked_texts(data.unseen)[0])
    got = embed_queries(model, texts, use_mean=True, rng=torch.Generator().manual_seed(1))
    mu, _ = model.encoder.stats(texts)
    expected = model.csem(model.generator(mu, torch.zeros(len(texts), model.z_dim)))
    torch.testing.assert_close(got, expected.detach())
    again = embed_queries(model, texts, use_mean=True, rng=torch.Generator().manual_seed(99))
    assert torch.equal(got, again)  # no noise drawn: the rng is irrelevant


def test_embed_queries_averages_eval_samples_draws_from_the_rng():
    data = make_builtin_dataset()
    model = tiny_model(data)
    texts = torch.from_numpy(data.stacked_texts(data.unseen)[0])
    got = embed_queries(model, texts, samples=3, rng=torch.Generator().manual_seed(7))
    rng = torch.Generator().manual_seed(7)  # the same draws, made by hand: eps then z, per sample
    mu, log_sigma = model.encoder.stats(texts)
    draws = []
    for _ in range(3):
        eps = truncated_normal(mu.shape, rng=rng)
        z = torch.randn(len(texts), model.z_dim, generator=rng)
        draws.append(model.csem(model.generator(model.encoder.sample(mu, log_sigma, eps), z)))
    torch.testing.assert_close(got, (sum(draws) / 3).detach())
    one = embed_queries(model, texts, samples=1, rng=torch.Generator().manual_seed(7))
    assert not torch.allclose(got, one)  # averaging changed something
    assert torch.equal(got, embed_queries(model, texts, samples=3, rng=torch.Generator().manual_seed(7)))


NOISY = Config(seed=4, eval_samples=2, eval_mean=False).resolved()


def test_scoring_draws_one_stream_for_the_batch_restarted_every_call():
    """What training's evaluation and `zscrgan evaluate` score with: the batch's noise from round 3's
    generator (seed * 1_000_003 + round), the centre subtracted from both sides."""
    data = make_builtin_dataset()
    model, texts, centre = tiny_model(data), unseen_texts(data), torch.randn(16)
    embedder = QueryEmbedder.for_round(model, NOISY, 3, "cpu", centre)
    got = embedder.embed_texts(texts)
    by_hand = embed_queries(model.eval(), texts, 2, False, torch.Generator().manual_seed(4 * 1_000_003 + 3)) - centre
    model.train()
    assert torch.equal(got, by_hand)
    assert torch.equal(embedder.embed_texts(texts), got)  # the stream restarts: a second pass is the same
    assert model.training  # in eval mode only while it embedded
    images = torch.from_numpy(data.stacked_images(data.unseen)[0])
    assert torch.equal(embedder.embed_images(images), embed_gallery(model, images) - centre)


def test_independent_rows_give_a_row_the_same_embedding_in_any_batch():
    """What search embeds with: each row's noise drawn afresh from round 0's generator, as if alone."""
    data = make_builtin_dataset()
    model, texts, centre = tiny_model(data), unseen_texts(data), torch.randn(16)
    embedder = QueryEmbedder.for_round(model, NOISY, 0, "cpu", centre, independent_rows=True)
    batch = embedder.embed_texts(texts[:5])
    for i in range(5):
        alone = embedder.embed_texts(texts[i:i + 1])
        with_others = embedder.embed_texts(torch.cat([texts[7:9], texts[i:i + 1]]))[2:]
        by_hand = embed_queries(model, texts[i:i + 1], 2, False, eval_rng(4, 0, "cpu")) - centre
        assert torch.equal(alone, by_hand)  # one row: exactly its own draws
        # in a batch: the same draws in one batched pass, equal up to the products' float rounding
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=0, atol=1e-6)
        torch.testing.assert_close(with_others, alone, rtol=0, atol=1e-6)
    chunked = embed_queries(model, texts[:5], 2, False, eval_rng(4, 0, "cpu"), chunk=2, shared_noise=True) - centre
    torch.testing.assert_close(chunked, batch, rtol=0, atol=1e-6)  # every chunk the same draws
    one_stream = QueryEmbedder.for_round(model, NOISY, 0, "cpu", centre).embed_texts(texts[:5])
    assert not torch.allclose(one_stream, batch)  # one stream for the batch draws other noise: the option matters
    assert embedder.embed_texts(texts[:0]).shape == (0, 16)


def test_eval_mean_draws_no_noise_in_either_mode():
    data = make_builtin_dataset()
    model, texts = tiny_model(data), unseen_texts(data)
    cfg = Config(seed=4, eval_samples=3, eval_mean=True).resolved()
    expected = embed_queries(model, texts, use_mean=True)
    for independent in (False, True):
        got = QueryEmbedder.for_round(model, cfg, 5, "cpu", independent_rows=independent).embed_texts(texts)
        assert torch.equal(got, expected)
