"""Keras models from files and camlens.layers on Keras (run under every Keras backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import camlens  # noqa: E402
from camlens.io import load_model  # noqa: E402


def _nested() -> keras.Model:
    """A conv base nested in an outer model, like a fine-tuned Xception."""
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inp)
    x = keras.layers.ReLU(name="base_act")(x)
    base = keras.Model(inp, x, name="base")
    outer_in = keras.Input((12, 12, 3))
    y = base(outer_in)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    y = keras.layers.Dense(3, name="head")(y)
    keras.utils.set_random_seed(0)
    return keras.Model(outer_in, y, name="outer")


X = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file_explains_like_the_original(tmp_path: Path, suffix: str) -> None:
    model = _nested()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = load_model(path)
    assert (loaded.framework, loaded.layout) == ("keras", "NHWC")
    assert (loaded.input_size, loaded.channels, loaded.classes) == ((12, 12), 3, None)
    assert loaded.source.endswith(f"model{suffix}")
    for method in ("gradcam", "scorecam"):
        want = camlens.explain(model, X, method, "base/base_act", relu=False)
        got = camlens.explain(loaded.model, X, method, "base/base_act", relu=False)
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    assert camlens.explain(loaded.model, X).layers == camlens.explain(model, X).layers


def test_keras_errors(tmp_path: Path) -> None:
    model = _nested()
    model.save(tmp_path / "model.keras")
    with pytest.raises(camlens.ModelLoadError, match=r"moves PyTorch models only; 'model\.keras'"):
        load_model(tmp_path / "model.keras", device="cpu")
    with pytest.raises(camlens.ModelLoadError, match="only; 'mobilenet_v2_keras' is a Keras"):
        load_model("mobilenet_v2_keras", device="cpu")
    with pytest.raises(camlens.ModelLoadError, match="drop the factory"):
        load_model(tmp_path / "model.keras", factory="x:y")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(camlens.ModelLoadError, match=r"Keras cannot load 'bad\.h5'"):
        load_model(tmp_path / "bad.h5")


def test_layers_names_nested_paths_and_auto_pick() -> None:
    model = _nested()
    weights = [w.copy() for w in model.get_weights()]
    rows = camlens.layers(model)
    assert [r.name for r in rows] == ["base", "base/conv_a", "base/base_act", "gap", "head"]
    by_name = {r.name: r for r in rows}
    assert by_name["base/conv_a"].output_shape == (None, 12, 12, 4)
    assert by_name["base/conv_a"].type == "Conv2D" and by_name["base/conv_a"].candidate
    assert by_name["gap"].output_shape == (None, 4) and not by_name["gap"].candidate
    assert [r.name for r in rows if r.auto] == list(camlens.explain(model, X).layers)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


def test_layers_of_a_model_with_free_input_size() -> None:
    inp = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(2, 3, strides=2, name="conv")(inp)
    y = keras.layers.Dense(2, name="head")(keras.layers.GlobalMaxPooling2D(name="gmp")(x))
    model = keras.Model(inp, y)
    rows = {r.name: r for r in camlens.layers(model, input_size=(33, 17))}
    assert rows["conv"].output_shape == (None, 16, 8, 2) and rows["conv"].auto
    assert camlens.layers(model)[0].output_shape == (None, 111, 111, 2)  # 224 x 224, 1 channel
