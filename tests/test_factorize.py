"""Deep Feature Factorization: NMF against Lee & Seung's updates, concept scores by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from camlens.methods.dff import _device_nmf, nmf
from nets import TrunkHead
from test_invariants import _assert_same, _mixed_mode_net, _snapshot


def ref_nmf(v: np.ndarray, k: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Lee & Seung (2000), Frobenius updates, from the documented random initialisation."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(v.mean() / k)
    w = scale * rng.random((v.shape[0], k))
    h = scale * rng.random((k, v.shape[1]))
    for _ in range(iterations):  # 0 where a denominator is 0 (a dead channel's row of W)
        den = w.T @ w @ h
        h = np.divide(h * (w.T @ v), den, out=np.zeros_like(h), where=den != 0)
        den = w @ h @ h.T
        w = np.divide(w * (v @ h.T), den, out=np.zeros_like(w), where=den != 0)
    return w, h


@pytest.mark.parametrize("columns", [40, 300])  # V H^T from a stored V^T, and directly
def test_nmf_is_lee_and_seungs_updates(columns: int) -> None:
    v = np.random.default_rng(1).random((6, columns))
    w, h = nmf(v, 3, iterations=50, seed=4)
    rw, rh = ref_nmf(v, 3, 50, 4)
    np.testing.assert_allclose(w, rw, rtol=1e-10)
    np.testing.assert_allclose(h, rh, rtol=1e-10)


@pytest.mark.parametrize("solver", ["nmf", "device"])
def test_nmf_of_a_torch_tensor_is_the_same_updates_in_torch(solver: str) -> None:
    # nmf() factorises a CPU tensor in NumPy; the loop for accelerator tensors is run here on a
    # CPU tensor directly: both must be the reference's updates, returned as torch tensors.
    v = np.random.default_rng(3).random((5, 30))
    solve = nmf if solver == "nmf" else _device_nmf
    w, h = solve(torch.from_numpy(v), 2, iterations=40, seed=2)
    assert isinstance(w, torch.Tensor) and isinstance(h, torch.Tensor)
    assert w.dtype == h.dtype == torch.float64
    rw, rh = ref_nmf(v, 2, 40, 2)
    np.testing.assert_allclose(w.numpy(), rw, rtol=1e-10)
    np.testing.assert_allclose(h.numpy(), rh, rtol=1e-10)


@pytest.mark.parametrize("columns", [20, 300])
def test_nmf_keeps_a_dead_channel_at_zero(columns: int) -> None:
    # A channel that is 0 everywhere has W's row 0 after one update: its denominators are then
    # exactly 0 and the factor stays 0 (no NaN), in both solvers, whose other rows are the
    # reference's (NumPy's solver updates them alone after the first update).
    v = np.random.default_rng(4).random((4, columns))
    v[2] = 0.0
    rw, rh = ref_nmf(v, 2, 5, 0)
    w, h = nmf(v, 2, iterations=5, seed=0)
    np.testing.assert_allclose(w, rw, rtol=1e-10)
    np.testing.assert_allclose(h, rh, rtol=1e-10)
    for w, _ in (
        nmf(v, 2, iterations=5, seed=0),
        _device_nmf(torch.from_numpy(v), 2, iterations=5, seed=0),
    ):
        w = np.asarray(w)
        assert np.isfinite(w).all()
        np.testing.assert_array_equal(w[2], 0.0)


def test_nmf_error_never_increases_and_finds_an_exact_factorisation() -> None:
    rng = np.random.default_rng(2)
    v = rng.random((8, 2)) @ rng.random((2, 30))  # rank 2, non-negative
    errors = [
        np.linalg.norm(v - np.matmul(*nmf(v, 2, iterations=i, seed=0))) for i in (1, 2, 5, 20)
    ]
    assert errors == sorted(errors, reverse=True)
    w, h = nmf(v, 2, iterations=3000, seed=0)
    assert np.linalg.norm(v - w @ h) < 1e-3 * np.linalg.norm(v)


def test_factorize_maps_concepts_and_scores() -> None:
    net = TrunkHead(classes=4)
    x = torch.randn(3, 3, 16, 12)
    result = camlens.factorize(net, x, k=3, layer="trunk", iterations=40, seed=1)
    with torch.no_grad():
        a = net.eval().trunk(x).double().numpy()  # (N, K, h, w)
    n, c, h, w = a.shape
    rw, rh = ref_nmf(a.transpose(1, 0, 2, 3).reshape(c, -1), 3, 40, 1)
    np.testing.assert_allclose(result.concepts, rw.T, rtol=2e-3, atol=1e-5 * rw.max())
    raw = rh.reshape(3, n, h, w).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(result.raw, raw, rtol=2e-3, atol=1e-5 * rh.max())
    assert result.maps.shape == (3, 3, 16, 12) and result.maps.max() == pytest.approx(1.0)
    # GAP + linear head: a concept everywhere pools to itself, so its scores are fc(concept).
    fc_w, fc_b = net.fc.weight.detach().double().numpy(), net.fc.bias.detach().double().numpy()
    assert result.scores is not None
    np.testing.assert_allclose(result.scores, result.concepts @ fc_w.T + fc_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.top_classes(2), np.argsort(-result.scores, axis=1)[:, :2])
    assert result.layer == "trunk" and result.framework == "torch"


def test_factorize_refuses_negative_activations() -> None:
    with pytest.raises(camlens.BadInputError, match="non-negative activations"):
        camlens.factorize(TrunkHead(), torch.randn(1, 3, 8, 8), layer="trunk.3")


def test_factorize_leaves_the_model_as_found() -> None:
    net = _mixed_mode_net()
    before = _snapshot(net)
    camlens.factorize(net, torch.randn(2, 3, 16, 16), k=2)
    _assert_same(before, _snapshot(net))


def test_a_factorizer_called_on_several_batches_equals_factorize_on_each() -> None:
    net = TrunkHead(classes=4)
    batches = [torch.randn(2, 3, 16, 12), torch.randn(3, 3, 16, 12)]
    factorizer = camlens.Factorizer(net, k=2, iterations=30, seed=5)
    assert factorizer.layer is None
    found = [factorizer(x) for x in batches]
    assert factorizer.layer == found[0].layer
    before = _snapshot(net)
    for x, result in zip(batches, found, strict=True):
        alone = camlens.factorize(net, x, k=2, iterations=30, seed=5)
        assert result.layer == alone.layer
        for name in ("maps", "raw", "concepts", "scores"):
            np.testing.assert_array_equal(getattr(result, name), getattr(alone, name))
    _assert_same(before, _snapshot(net))


@pytest.mark.parametrize(
    ("options", "message"),
    [({"k": 0}, "k must be"), ({"iterations": -1}, "iterations must be"), ({"seed": 1.5}, "seed")],
)
def test_a_factorizer_refuses_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(camlens.BadInputError, match=message):
        camlens.Factorizer(TrunkHead(), **options)  # type: ignore[arg-type]


def test_a_factorizer_prepares_the_network_after_the_layer_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import camlens.backends.torch as torch_backend

    made: list[str] = []
    make_tail = torch_backend.make_tail

    def counted(model: torch.nn.Module, name: str) -> object:
        made.append(name)
        return make_tail(model, name)

    monkeypatch.setattr(torch_backend, "make_tail", counted)
    factorizer = camlens.Factorizer(TrunkHead(classes=4), "trunk", k=2, iterations=5)
    for _ in range(3):
        factorizer(torch.randn(2, 3, 16, 12))
    assert made == ["trunk"]
