"""TF1 optimiser semantics against hand computations."""
import copy
import math
import shutil

import pytest
import torch

from zscrgan.core.optim import Adam, RMSProp


def test_tf1_rmsprop_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSProp([p], lr=0.1, decay=0.9, eps=1e-10)
    expected = [1.0, -2.0]
    ms = [1.0, 1.0]  # TF1 starts the accumulator at ones
    for g in ([0.5, -3.0], [2.0, 1.0]):
        p.grad = torch.tensor(g)
        opt.step()
        for i in range(2):
            ms[i] = 0.9 * ms[i] + 0.1 * g[i] ** 2
            expected[i] -= 0.1 * g[i] / math.sqrt(ms[i] + 1e-10)
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-6)


def test_tf1_rmsprop_first_step_is_small_unlike_pytorch():
    p1 = torch.nn.Parameter(torch.zeros(1))
    p2 = torch.nn.Parameter(torch.zeros(1))
    tf1, pt = RMSProp([p1], lr=0.01), torch.optim.RMSprop([p2], lr=0.01, alpha=0.9)
    p1.grad, p2.grad = torch.tensor([1e-3]), torch.tensor([1e-3])
    tf1.step(), pt.step()
    assert abs(p1.item()) == pytest.approx(0.01 * 1e-3 / math.sqrt(0.9 + 0.1e-6), rel=1e-5)
    assert abs(p2.item()) > 100 * abs(p1.item())


def test_tf1_adam_three_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([0.3]))
    opt = Adam([p], lr=0.002, betas=(0.5, 0.999), eps=1e-8)
    m = v = 0.0
    x = 0.3
    for t, g in enumerate([1.0, -0.5, 0.25], start=1):
        p.grad = torch.tensor([g])
        opt.step()
        m = 0.5 * m + 0.5 * g
        v = 0.999 * v + 0.001 * g * g
        lr_t = 0.002 * math.sqrt(1 - 0.999**t) / (1 - 0.5**t)
        x -= lr_t * m / (math.sqrt(v) + 1e-8)
    assert p.item() == pytest.approx(x, rel=1e-6)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4))
    opt = RMSProp([a], lr=0.05)
    a.grad = torch.randn(4)
    opt.step()
    b = torch.nn.Parameter(a.detach().clone())
    opt_b = RMSProp([b], lr=0.05)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if read from a file
    g = torch.randn(4)
    a.grad, b.grad = g, g.clone()
    opt.step(), opt_b.step()
    assert torch.equal(a, b)


@pytest.mark.parametrize("make_ours, make_torch", [
    (lambda ps: RMSProp(ps, lr=0.01, tf1=False), lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9)),
    (lambda ps: Adam(ps, lr=0.002, betas=(0.5, 0.999), tf1=False),
     lambda ps: torch.optim.Adam(ps, lr=0.002, betas=(0.5, 0.999))),
])
def test_torch_semantics_equal_torch_optim_bit_for_bit(make_ours, make_torch):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    starts = [p.detach().clone() for p in ours]
    opt_ours, opt_theirs = make_ours(ours), make_torch(theirs)
    for _ in range(6):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g, g.clone()
        opt_ours.step(), opt_theirs.step()
    for p, q, start in zip(ours, theirs, starts):
        assert torch.equal(p, q)  # same operations in the same order: published figures reproduce
        assert not torch.equal(p, start)  # they moved


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="torch.compile needs a C++ compiler")
def test_compiled_updates_equal_eager_updates():
    torch.manual_seed(1)
    start = [torch.randn(64, 32), torch.randn(32)]
    results = []
    for compile in (False, True):
        ps = [torch.nn.Parameter(t.clone()) for t in start]
        opts = [RMSProp(ps[:1], lr=0.01, compile=compile), Adam(ps[1:], lr=0.01, tf1=False, compile=compile)]
        gen = torch.Generator().manual_seed(2)
        for _ in range(4):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            for opt in opts:
                opt.step()
        results.append([p.detach() for p in ps])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-8)


def test_rmsprop_clips_weights_after_the_update():
    p = torch.nn.Parameter(torch.tensor([0.0, 0.005, -0.5]))
    opt = RMSProp([p], lr=1.0, clip=0.01)
    p.grad = torch.tensor([-1.0, 0.0, 0.0])  # the first weight jumps far past the clip
    opt.step()
    assert p.detach().tolist() == pytest.approx([0.01, 0.005, -0.01])
