"""Attack suite: two threads sharing one explainer get the single-threaded results.

A call hooks the model's layers and switches its modules to eval mode (torch) or fills its
compiled-probe table (Keras), so calls on one model take turns (one lock per model); each
thread's results must equal what the same call gives alone. camlens's hooks act only in the
thread that explains, so the user's own forward passes in another thread are left alone.
The metrics' scoring and the layer listing take the same turns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import camlens
from nets import TrunkHead


def _race(
    explain: Callable[[Any], camlens.Explanation], batches: list[Any], rounds: int
) -> dict[int, list[camlens.Explanation]]:
    """Run ``explain(batch)`` for every batch ``rounds`` times in two threads at once."""
    out: dict[int, list[camlens.Explanation]] = {i: [] for i in range(len(batches))}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(indices: list[int]) -> None:
        start.wait()
        try:
            for _ in range(rounds):
                for i in indices:
                    out[i].append(explain(batches[i]))
        except BaseException as exc:  # reported below, with the failing thread's traceback
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=([0, 1],)),
        threading.Thread(target=work, args=([2, 3],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    return out


def _assert_same(
    raced: dict[int, list[camlens.Explanation]], alone: list[camlens.Explanation], rounds: int
) -> None:
    """Every raced result equals the single-threaded one: maps, units and scores."""
    for i, results in raced.items():
        assert len(results) == rounds
        for got in results:
            np.testing.assert_allclose(got.maps, alone[i].maps, atol=1e-6, err_msg=f"batch {i}")
            np.testing.assert_array_equal(got.units, alone[i].units)
            np.testing.assert_allclose(got.scores, alone[i].scores, rtol=1e-6, atol=1e-6)
            assert got.layers == alone[i].layers


def _torch_batches(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 12, 12, generator=generator) for _ in range(4)]


def test_two_threads_sharing_a_torch_explainer_get_the_single_threaded_maps() -> None:
    model = TrunkHead().eval()
    batches = _torch_batches()
    for method in ("gradcam", "scorecam"):
        cam = camlens.Explainer(model, "trunk.3", method=method, relu=False)
        alone = [cam(b) for b in batches]
        _assert_same(_race(cam, batches, rounds=15), alone, rounds=15)
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())


def test_one_line_calls_on_a_training_mode_model_from_two_threads() -> None:
    """``camlens.explain`` in two threads (a web server's pattern), automatic layer pick, on a
    model left in training mode: each call switches the modules to eval and back, so without
    turns one thread's restore ran the other's forward in training mode (other maps) and the
    layer pick saw the other's hooks (another layer)."""
    model = TrunkHead().train()
    batches = _torch_batches(seed=1)
    alone = [camlens.explain(model, b) for b in batches]
    raced = _race(lambda b: camlens.explain(model, b), batches, rounds=10)
    _assert_same(raced, alone, rounds=10)
    assert all(m.training for m in model.modules())


def test_a_metric_and_explanations_in_two_threads_on_one_training_mode_model() -> None:
    """The metrics' scoring and the layer listing switch the modules to eval mode too: they take
    the same per-model turns as the explainers (without them 38 of 40 deletion curves and 198 of
    200 maps came out of a forward in training mode)."""
    from camlens.metrics import deletion

    model = TrunkHead().train()
    batches = _torch_batches(seed=3)
    alone = [camlens.explain(model, b, layer="trunk.3") for b in batches]
    curves = [deletion(model, b, e, steps=8).curves for b, e in zip(batches, alone, strict=True)]
    listing = camlens.layers(model, input_size=(12, 12))
    index = {id(b): i for i, b in enumerate(batches)}

    def either(b: torch.Tensor) -> camlens.Explanation:
        """Explain on batches 0 and 1; score a deletion curve and list the layers on 2 and 3."""
        i = index[id(b)]
        if i < 2:
            return camlens.explain(model, b, layer="trunk.3")
        np.testing.assert_allclose(deletion(model, b, alone[i], steps=8).curves, curves[i])
        assert camlens.layers(model, input_size=(12, 12)) == listing
        return alone[i]

    _assert_same(_race(either, batches, rounds=10), alone, rounds=10)
    assert all(m.training for m in model.modules())


def test_a_forward_in_another_thread_meanwhile_is_left_alone() -> None:
    """The user's own inference thread runs the model while camlens explains it: its outputs
    are the usual ones, record no graph, its grad mode stays as it set it, and it never meets
    camlens's errors; the explanations stay right. (Without hooks kept to their thread, both
    sides failed with 'layer called more than once' and the other thread's grad mode was left
    switched on.)"""
    model = TrunkHead().eval()
    x = _torch_batches(seed=2)[0]
    cam = camlens.GradCAM(model, "trunk.3", relu=False)
    alone = cam(x)
    with torch.no_grad():
        expected = model(x)
    done = threading.Event()
    seen: dict[str, Any] = {"runs": 0, "wrong": 0, "grad_mode": None}
    errors: list[BaseException] = []

    def infer() -> None:
        torch.set_grad_enabled(False)  # this thread's own (thread-local) setting
        try:
            while not done.is_set():
                out = model(x)
                seen["runs"] += 1
                if out.requires_grad or not torch.allclose(out, expected, atol=1e-6):
                    seen["wrong"] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        seen["grad_mode"] = torch.is_grad_enabled()

    thread = threading.Thread(target=infer)
    thread.start()
    try:
        results = [cam(x) for _ in range(100)]
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert seen["runs"] > 0 and seen["wrong"] == 0, seen
    assert seen["grad_mode"] is False
    for got in results:
        np.testing.assert_allclose(got.maps, alone.maps, atol=1e-6)
    assert not any(m._forward_hooks for m in model.modules())


def _keras_functional() -> Any:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="feat")(inp)
    return keras.Model(inp, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(h)))


def _keras_subclassed() -> Any:
    """A subclassed model: no graph, so the tapped layer's ``call`` is wrapped for each pass."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)

    class Sub(keras.Model):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(name="sub")
            self.feat = keras.layers.Conv2D(8, 3, padding="same", name="feat")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.head = keras.layers.Dense(5, name="head")

        def call(self, x: Any, training: Any = None) -> Any:
            return self.head(self.pool(self.feat(x)))

    model = Sub()
    model(np.zeros((1, 12, 12, 3), dtype="float32"))
    return model


def _keras_batches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(2, 12, 12, 3)).astype("float32") for _ in range(4)]


@pytest.mark.parametrize("build", [_keras_functional, _keras_subclassed])
def test_two_threads_sharing_a_keras_explainer_get_the_single_threaded_maps(
    build: Callable[[], Any],
) -> None:
    model = build()
    batches = _keras_batches()
    cam = camlens.GradCAM(model, "feat", relu=False)
    alone = [cam(b) for b in batches]
    _assert_same(_race(cam, batches, rounds=10), alone, rounds=10)
    one_line = _race(lambda b: camlens.explain(model, b, layer="feat", relu=False), batches, 5)
    _assert_same(one_line, alone, rounds=5)


def test_a_keras_forward_in_another_thread_meanwhile_is_left_alone() -> None:
    """A subclassed model's tapped ``call`` is wrapped during each pass (every call on Keras's
    torch backend, which runs eagerly; while tracing on the others): another thread calling the
    model meanwhile gets its usual output and never runs camlens's tap."""
    keras = pytest.importorskip("keras")
    model = _keras_subclassed()
    x = _keras_batches()[0]
    cam = camlens.GradCAM(model, "feat", relu=False)
    alone = cam(x)
    expected = keras.ops.convert_to_numpy(model(x))
    done = threading.Event()
    seen = {"runs": 0, "wrong": 0}
    errors: list[BaseException] = []

    def infer() -> None:
        try:
            while not done.is_set():
                out = keras.ops.convert_to_numpy(model(x))
                seen["runs"] += 1
                seen["wrong"] += not np.allclose(out, expected, atol=1e-6)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=infer)
    thread.start()
    try:
        results = [camlens.explain(model, x, layer="feat", relu=False) for _ in range(50)]
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert seen["runs"] > 0 and seen["wrong"] == 0, seen
    for got in results:
        np.testing.assert_allclose(got.maps, alone.maps, atol=1e-6)
    assert "call" not in vars(model.feat)
