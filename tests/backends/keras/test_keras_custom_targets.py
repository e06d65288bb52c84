"""A user's own Target subclasses on Keras, under every Keras backend."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import camlens  # noqa: E402
from user_targets import LastUnit, Margin  # noqa: E402


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="feat")(x)
    out = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


X = np.random.default_rng(0).normal(size=(3, 12, 12, 3)).astype("float32")


def test_a_score_target_is_linear_in_its_classes() -> None:
    """Grad-CAM's signed map is linear in the score: raw(y1 - y2) = raw(y1) - raw(y2)."""
    cam = camlens.GradCAM(_model(), "feat", relu=False)
    margin = cam(X, target=Margin(1, 2))
    one, two = cam(X, target=1), cam(X, target=2)
    np.testing.assert_allclose(margin.raw, one.raw - two.raw, atol=1e-5)
    np.testing.assert_allclose(margin.scores, one.scores - two.scores, rtol=1e-5, atol=1e-6)
    assert margin.target == "class 1 minus class 2"


def test_a_unit_target_subclass_picks_its_units() -> None:
    model = _model()
    for method in ("gradcam", "scorecam"):
        got = camlens.explain(model, X, method, "feat", target=LastUnit())
        want = camlens.explain(model, X, method, "feat", target=4)
        np.testing.assert_array_equal(got.units, [4, 4, 4])
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-6)


class Counting(camlens.Target):
    """Class 1's score; counts how often its Python code runs (once per trace when compiled)."""

    def __init__(self) -> None:
        self.runs = 0

    def scores(self, output: object) -> object:
        self.runs += 1
        return output[:, 1]  # type: ignore[index]

    def describe(self) -> str:
        return "class 1, counted"


def test_the_one_line_call_reuses_its_compiled_probe_and_keeps_no_model_alive() -> None:
    """``camlens.explain`` builds a backend per call; the compiled probe is kept per model."""
    model = _model()
    target = Counting()
    maps = [camlens.explain(model, X, layer="feat", target=target).maps for _ in range(3)]
    np.testing.assert_array_equal(maps[0], maps[2])
    eager = keras.backend.backend() == "torch"  # Keras on torch runs eagerly: no trace
    assert target.runs == (3 if eager else 1)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, "the per-model cache kept the model alive"


def test_a_new_target_each_call_keeps_a_bounded_number_of_compiled_probes() -> None:
    """A fresh function target per call compiles a probe per call; at most MAX_COMPILED stay."""
    from camlens.backends.keras._probe import MAX_COMPILED

    model = _model()
    for i in range(MAX_COMPILED + 4):
        camlens.explain(model, X[:1], layer="feat", target=lambda out, i=i: out[:, i % 5])
    prober = camlens.GradCAM(model, "feat")._backend._prober
    assert prober.traces == MAX_COMPILED + 4
    assert len(prober._compiled) == MAX_COMPILED


def test_a_label_tensor_of_the_backend_is_one_class_per_image() -> None:
    """``for x, y in dataset: cam(x, target=y)`` with the backend's own label tensors."""
    cam = camlens.GradCAM(_model(), "feat")
    expected = cam(X, target=[4, 0, 2])
    labels = keras.ops.convert_to_tensor(np.array([4, 0, 2], dtype="int32"))
    np.testing.assert_allclose(cam(X, target=labels).maps, expected.maps, atol=1e-6)
    assert cam(X, target=np.array([[4], [0], [2]])).units.tolist() == [4, 0, 2]
    with pytest.raises(camlens.BadTargetError, match="not class indices"):
        cam(X, target=keras.ops.convert_to_tensor(np.array([4.0, 0.0, 2.0], dtype="float32")))
