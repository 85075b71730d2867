"""ghm_c: BCE with a weight per element, its grad_norm export and the GHMWeights helper,
against the GHM-C algorithm written out bin by bin (Li, Liu and Wang, AAAI 2019; the binning
and momentum as mmdetection's GHMC)."""

from __future__ import annotations

import numpy as np
import pytest

import lossgen

BACKENDS = ("numpy", "jax", "torch")


def _norm(x, y):
    """|sigmoid(x) - y| for labels 0 and 1, without the cancellation of 1 - sigmoid(x)."""
    return np.where(y == 1, 1 / (1 + np.exp(x)), 1 / (1 + np.exp(-x)))


def _reference(x, y, valid, bins, momentum, kept):
    """GHM-C's weights and loss, one bin at a time; ``kept`` (the running counts) is updated."""
    edges = np.arange(bins + 1) / bins
    edges[-1] += 1e-6
    g = _norm(x, y)
    total = max(float(valid.sum()), 1.0)
    weights = np.zeros_like(x)
    filled = 0
    for i in range(bins):
        inside = (g >= edges[i]) & (g < edges[i + 1]) & valid
        count = inside.sum()
        if count > 0:
            if momentum > 0:
                kept[i] = momentum * kept[i] + (1 - momentum) * count
                weights[inside] = total / kept[i]
            else:
                weights[inside] = total / count
            filled += 1
    if filled:
        weights /= filled
    bce = np.logaddexp(0, x) - y * x
    return weights, (weights * bce).sum() / total


def _as(backend, a):
    if backend == "torch":
        import torch

        return torch.as_tensor(a)
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a)
    return a


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_ghm_weights_and_loss_match_the_algorithm(backend, momentum):
    module = lossgen.load("ghm_c", backend)
    rng = np.random.default_rng(0)
    ghm = module.GHMWeights(bins=10, momentum=momentum)
    kept = np.zeros(10)
    for _ in range(3):  # the running counts carry over from call to call
        x = rng.normal(size=(6, 50)) * 3
        y = (rng.random((6, 50)) < 0.3).astype(float)
        valid = rng.random((6, 50)) < 0.9
        want_w, want_loss = _reference(x, y, valid, 10, momentum, kept)
        g = module.grad_norm(_as(backend, x), _as(backend, y), 1.0)
        np.testing.assert_allclose(np.asarray(g), _norm(x, y), rtol=1e-14)
        weights = ghm(g, _as(backend, valid))
        np.testing.assert_allclose(np.asarray(weights), want_w, rtol=1e-13)
        loss = module.ghm_c(_as(backend, x), _as(backend, y), weights, reduction="sum")
        np.testing.assert_allclose(float(loss) / max(valid.sum(), 1), want_loss, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(ghm.counts), kept if momentum else np.zeros(10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ghm_weights_edges(backend):
    """A norm of exactly 1 goes in the last bin; norms outside [0, 1] and invalid elements
    get weight 0; with every element invalid the weights are all 0."""
    module = lossgen.load("ghm_c", backend)
    ghm = module.GHMWeights(bins=4)
    g = np.array([0.0, 0.25, 0.5, 1.0, 1.0, 1.5, -0.1])
    got = np.asarray(ghm(_as(backend, g)))
    # bins [0, .25): 1; [.25, .5): 1; [.5, .75): 1; [.75, 1]: 2 -> 4 filled, 7 valid
    np.testing.assert_allclose(got, [7 / 4, 7 / 4, 7 / 4, 7 / 8, 7 / 8, 0, 0], rtol=1e-15)
    none = np.asarray(ghm(_as(backend, g), _as(backend, np.zeros(7, bool))))
    assert np.all(none == 0)
    with pytest.raises(ValueError, match="bins"):
        module.GHMWeights(bins=0)
    with pytest.raises(ValueError, match="momentum"):
        module.GHMWeights(momentum=1.0)


def test_ghm_c_matches_torch_weighted_bce():
    import torch
    import torch.nn.functional as F

    module = lossgen.load("ghm_c", "torch")
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=40) * 4, requires_grad=True)
    y = torch.tensor(rng.random(40))
    w = torch.tensor(rng.random(40) * 2)
    got = module.ghm_c(x, y, w, reduction="sum")
    want = F.binary_cross_entropy_with_logits(x, y, weight=w, reduction="sum")
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    (g1,) = torch.autograd.grad(got, x)
    (g2,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-300)


def test_torch_ghm_weights_is_a_module_with_its_counts():
    import torch

    module = lossgen.load("ghm_c", "torch")
    ghm = module.GHMWeights(bins=5, momentum=0.5)
    assert isinstance(ghm, torch.nn.Module)
    assert repr(ghm) == "GHMWeights(bins=5, momentum=0.5)"
    ghm(torch.tensor([0.1, 0.1, 0.9]))
    state = ghm.state_dict()
    np.testing.assert_allclose(state["counts"].numpy(), [1.0, 0, 0, 0, 0.5])
    weights = ghm(torch.tensor([0.1, 0.9], dtype=torch.float32))
    assert weights.dtype == torch.float32


def test_jax_ghm_weights_apply_is_pure_under_jit():
    import jax
    import jax.numpy as jnp

    module = lossgen.load("ghm_c", "jax")
    ghm = module.GHMWeights(bins=5, momentum=0.5)
    g = jnp.asarray([0.1, 0.1, 0.9])
    weights, counts = jax.jit(ghm.apply)(ghm.counts, g)
    np.testing.assert_allclose(np.asarray(counts), [1.0, 0, 0, 0, 0.5])
    np.testing.assert_allclose(np.asarray(ghm.counts), 0)  # apply changes no state
    np.testing.assert_allclose(np.asarray(weights), np.asarray(ghm(g)))
