"""Per-term gradient norms read off one backward, against torch.autograd.grad on each term alone."""

import math

import pytest
import torch

from evcmae.pretrain.term_gradients import TermGradients


def _graph(seed: int = 0):
    """Two outputs of a small network, as the backbone's outputs would be (non-leaf tensors)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 3, generator=g, requires_grad=True)
    x = torch.randn(6, 4, generator=g)
    a = x @ w
    b = torch.tanh(a).sum(0, keepdim=True) * 3
    return w, a, b


def _losses(a, b):
    return {
        "square": (a**2).sum(),  # reads a only
        "mixed": torch.sin(a).sum() + (b**3).sum(),  # reads both
        "plain": b.mean(),  # reads b only
    }


def _reference_norms():
    """‖∂Lᵢ/∂(a, b)‖ by autograd.grad on each term, the definition the meter must reproduce. The
    gradient is taken at views made after both outputs exist, so, as at the backbone's outputs,
    each is the term's direct dependence on that output (b's own dependence on a is not counted
    at a)."""
    _, a, b = _graph()
    a, b = a.view_as(a), b.view_as(b)
    losses = _losses(a, b)
    out = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, [a, b], retain_graph=True, allow_unused=True)
        out[name] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
    return out


@pytest.mark.parametrize("scale", [1.0, 0.125, 65536.0])  # plain, accumulation's 1/k, an AMP loss scale
def test_norms_from_one_backward_match_each_term_alone(scale):
    weights = {"square": 0.7, "mixed": 3.0, "plain": 0.05}
    _, a, b = _graph()
    meter = TermGradients(weights)
    losses = {}
    for name in weights:
        losses[name] = _losses(meter.tap(name, a), meter.tap(name, b))[name]
        meter.watch(name, losses[name])
    total = sum(weights[n] * losses[n] for n in weights)
    (total * scale).backward()
    measured = dict(zip(meter.names, meter.norms().tolist()))
    reference = _reference_norms()
    assert measured == pytest.approx(reference, rel=1e-5)


def test_taps_leave_the_backward_unchanged():
    weights = {"square": 0.7, "mixed": 3.0, "plain": 0.05}
    w_plain, a, b = _graph()
    sum(weights[n] * loss for n, loss in _losses(a, b).items()).backward()
    w_tapped, a, b = _graph()
    meter = TermGradients(weights)
    losses = {n: _losses(meter.tap(n, a), meter.tap(n, b))[n] for n in weights}
    for n, loss in losses.items():
        meter.watch(n, loss)
    sum(weights[n] * losses[n] for n in weights).backward()
    assert torch.allclose(w_tapped.grad, w_plain.grad, rtol=1e-6, atol=0)


def test_a_term_without_gradient_or_taps_has_norm_zero():
    _, a, b = _graph()
    meter = TermGradients(["used", "constant", "untapped"])
    used = meter.tap("used", a).sum()
    meter.watch("used", used)
    meter.watch("constant", torch.tensor(2.0))  # no graph: nothing to watch
    untapped = b.sum()  # reads the output directly, not through a tap
    meter.watch("untapped", untapped)
    (used + untapped).backward()
    norms = meter.norms()
    assert norms[0] == pytest.approx(math.sqrt(a.numel()))  # ∂(Σa)/∂a = 1 everywhere
    assert norms[1] == 0 and norms[2] == 0


def test_reset_forgets_the_last_backward_and_zero_seed_is_not_finite():
    _, a, _ = _graph()
    meter = TermGradients(["t"])
    loss = meter.tap("t", a).pow(2).sum()
    meter.watch("t", loss)
    (0.0 * loss).backward()  # the loss's gradient seed is 0: its norm cannot be recovered
    assert not bool(torch.isfinite(meter.norms()).all())
    meter.reset()
    assert meter.norms().tolist() == [0.0]


def test_watching_an_unknown_term_is_an_error():
    with pytest.raises(KeyError, match="unknown term 'nope'"):
        TermGradients(["a"]).watch("nope", torch.ones((), requires_grad=True))
