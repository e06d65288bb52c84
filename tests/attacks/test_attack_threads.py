"""Attack suite: two threads sharing one explainer get the single-threaded results.

A call hooks the model's layers (torch) or fills its compiled-probe table (Keras), so calls on
one model take turns (one lock per model); each thread's results must equal what the same call
gives alone.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import camlens
from nets import TrunkHead


def _race(explain: object, batches: list[object], rounds: int) -> dict[int, list[np.ndarray]]:
    """Run ``explain(batch)`` for every batch ``rounds`` times in two threads at once."""
    out: dict[int, list[np.ndarray]] = {i: [] for i in range(len(batches))}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(indices: list[int]) -> None:
        start.wait()
        try:
            for _ in range(rounds):
                for i in indices:
                    out[i].append(explain(batches[i]).maps)  # type: ignore[operator]
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


def test_two_threads_sharing_a_torch_explainer_get_the_single_threaded_maps() -> None:
    model = TrunkHead().eval()
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 3, 12, 12, generator=generator) for _ in range(4)]
    for method in ("gradcam", "scorecam"):
        cam = camlens.Explainer(model, "trunk.3", method=method, relu=False)
        alone = [cam(b).maps for b in batches]
        raced = _race(cam, batches, rounds=15)
        for i, maps in raced.items():
            assert len(maps) == 15
            for got in maps:
                np.testing.assert_allclose(got, alone[i], atol=1e-6, err_msg=f"{method} batch {i}")
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())


def test_two_threads_sharing_a_keras_explainer_get_the_single_threaded_maps() -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="feat")(inp)
    model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(2, 12, 12, 3)).astype("float32") for _ in range(4)]
    cam = camlens.GradCAM(model, "feat", relu=False)
    alone = [cam(b).maps for b in batches]
    for i, maps in _race(cam, batches, rounds=10).items():
        for got in maps:
            np.testing.assert_allclose(got, alone[i], atol=1e-6, err_msg=f"batch {i}")
