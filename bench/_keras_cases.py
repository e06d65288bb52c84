"""Keras (TensorFlow backend) cases of ``bench/run.py``: camlens, the keras.io recipe, tf-keras-vis.

Networks from ``keras_speed.py``, at 299x299 with seeded random weights: ``seed``, the seed's
age regressor (a nested Xception base, explained at ``block14_sepconv2_act`` for
``Output(0)``), and ``xception``, the flat ``keras.applications.Xception`` (top-1 pre-softmax
logit). The in-process forward reference is a compiled forward (``tf.function``), the stricter
of the two forwards (the eager ``model(x)`` is a case of its own).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import keras_speed
from _harness import Built

LAYER = keras_speed.LAYER

Call = Callable[[], Any]


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for TensorFlow's kernels (0: its default)."""
    import tensorflow as tf

    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _split(model: Any, network: str) -> tuple[Any, Callable[[Any], Any]]:
    """Return a model up to the layer and the head after it (GAP, [Dropout], Dense)."""
    import keras

    if network == "seed":
        base = model.get_layer("xception")
        trunk = keras.Model(base.input, base.get_layer(LAYER).output)
        names = ("global_average_pooling2d_12", "dropout_12", "dense_12")
    else:
        trunk = keras.Model(model.inputs, model.get_layer(LAYER).output)
        names = ("avg_pool", "predictions")
    head = [model.get_layer(n) for n in names]

    def run_head(feats: Any) -> Any:
        for layer in head:
            feats = layer(feats, training=False)
        return feats

    return trunk, run_head


def _score(out: Any, network: str) -> Any:
    """Return what is explained: output 0 of the regressor, the top-1 output otherwise."""
    import tensorflow as tf

    return out[:, 0] if network == "seed" else tf.reduce_max(out, axis=1)


def _wait(*tensors: Any) -> None:
    """Wait for ``tensors`` (copy them to the host); a reference call returns no maps."""
    for t in tensors:
        t.numpy()


def _reference(kind: str, model: Any, x: Any, network: str) -> tuple[Call, str]:
    import tensorflow as tf

    if kind == "forward":
        fn = tf.function(lambda t: model(t, training=False))
        return lambda: _wait(fn(x)), "tf.function(lambda t: model(t, training=False))"
    if kind == "forward_eager":
        return lambda: _wait(model(x, training=False)), "model(x, training=False), eager"
    if kind == "backward_layer":
        trunk, head = _split(model, network)

        @tf.function
        def backward_layer(t: Any) -> Any:
            feats = trunk(t, training=False)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(feats)
                score = tf.reduce_sum(_score(head(feats), network))
            # The score too: the gradient alone does not depend on the trunk, which would be
            # pruned from the graph.
            return tape.gradient(score, feats), score

        return lambda: _wait(*backward_layer(x)), (
            "tf.function: trunk to the layer, then a tape watching only the layer output over "
            "the head, gradient to the layer"
        )
    if kind == "full_backward":

        @tf.function
        def full_backward(t: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(t)
                score = tf.reduce_sum(_score(model(t, training=False), network))
            return tape.gradient(score, t)

        return lambda: _wait(full_backward(x)), (
            "tf.function: a default tape (watching every variable) and the input, gradient "
            "to the input"
        )
    raise ValueError(f"unknown reference {kind!r}")


#: SmoothGrad on Keras: noisy copies per call (the paper's 50 would take minutes per call on
#: Xception at 299x299 on one thread; the per-copy cost is what is compared), noise level.
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 10, 0.15


def _camlens(method: str, model: Any, x: Any, network: str) -> tuple[Call, str]:
    import camlens

    target = camlens.Output(0) if network == "seed" else None
    told = ", target=camlens.Output(0))" if network == "seed" else ")"
    if method in ("saliency", "smoothgrad"):
        options = (
            {"samples": SMOOTHGRAD_SAMPLES, "noise_level": SMOOTHGRAD_NOISE}
            if method == "smoothgrad"
            else {}
        )
        pixel = camlens.Saliency if method == "saliency" else camlens.SmoothGrad
        explainer = pixel(model, **options)
        shown = ", ".join(f"{k}={v}" for k, v in options.items())
        return lambda: explainer(x, target=target).maps, (
            f"camlens.{pixel.__name__}(model{', ' if shown else ''}{shown})(x{told}"
        )
    cls = camlens.GradCAM if method == "gradcam" else camlens.GradCAMPlusPlus
    explainer = cls(model, layer=LAYER)
    how = f"camlens.{cls.__name__}(model, layer={LAYER!r})(x" + told
    return lambda: explainer(x, target=target).maps, how


def _tf_keras_vis_pixels(method: str, model: Any, x: Any, network: str) -> tuple[Call, str]:
    """tf-keras-vis's Saliency, and its SmoothGrad (``smooth_samples``): camlens's definitions
    (``max_c |g|``; ``max_c |mean_m g_m|``, the noise's std a level of each image's range)."""
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    if network == "seed":
        visualizer = Saliency(model, clone=True)

        def score(out: Any) -> Any:
            return out[:, 0]

        how = "tf_keras_vis.Saliency(model, clone=True)(lambda out: out[:, 0], x"
    else:
        top = np.asarray(model(x, training=False)).argmax(1).tolist()
        visualizer = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)
        score = CategoricalScore(top)
        how = (
            "tf_keras_vis.Saliency(model, model_modifier=ReplaceToLinear(), clone=True)"
            "(CategoricalScore(top-1, given), x"
        )
    xs = np.asarray(x)
    if method == "saliency":  # its defaults: |g| per pixel, max over channels, min-max scaled
        return lambda: visualizer(score, xs), how + ")"

    def smoothgrad() -> np.ndarray:
        # Its gradient_modifier (abs by default) acts on each copy: None, then |mean| here.
        mean = visualizer(
            score,
            xs,
            smooth_samples=SMOOTHGRAD_SAMPLES,
            smooth_noise=SMOOTHGRAD_NOISE,
            gradient_modifier=None,
            keepdims=True,
            normalize_map=False,
        )
        return np.abs(mean).max(axis=-1)

    return smoothgrad, how + (
        f", smooth_samples={SMOOTHGRAD_SAMPLES}, smooth_noise={SMOOTHGRAD_NOISE}, "
        "gradient_modifier=None, keepdims=True, normalize_map=False); max_c |.|"
    )


def _tf_keras_vis(method: str, model: Any, x: Any, network: str) -> tuple[Call, str]:
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    if method in ("saliency", "smoothgrad"):
        return _tf_keras_vis_pixels(method, model, x, network)
    cls = Gradcam if method == "gradcam" else GradcamPlusPlus
    if network == "seed":
        visualizer = cls(model, clone=True)

        def score(out: Any) -> Any:
            return out[:, 0]

        how = f"tf_keras_vis.{cls.__name__}(model, clone=True)(lambda out: out[:, 0], x, "
    else:
        top = np.asarray(model(x, training=False)).argmax(1).tolist()
        visualizer = cls(model, model_modifier=ReplaceToLinear(), clone=True)
        score = CategoricalScore(top)
        how = (
            f"tf_keras_vis.{cls.__name__}(model, model_modifier=ReplaceToLinear(), clone=True)"
            "(CategoricalScore(top-1, given), x, "
        )
    how += f"penultimate_layer={LAYER!r})"
    # Without seek_penultimate_conv_layer=False, tf-keras-vis replaces an activation layer by
    # the convolution before it (block14_sepconv2, before its BatchNorm and ReLU).
    how = how[:-1] + ", seek_penultimate_conv_layer=False)"
    xs = np.asarray(x)
    return lambda: visualizer(
        score, xs, penultimate_layer=LAYER, seek_penultimate_conv_layer=False
    ), how


def _recipe(method: str, model: Any, x: Any, network: str) -> tuple[Call, str]:
    case = keras_speed.Case(network, int(x.shape[0]), model, x)
    return keras_speed._recipe(case), (
        "keras.io Grad-CAM recipe, eager GradientTape, whole batch in one tape, auxiliary "
        "models built once (keras_speed.py); maps at the layer's resolution"
    )


LIBRARIES: dict[str, Callable[[str, Any, Any, str], tuple[Call, str]]] = {
    "camlens": _camlens,
    "keras-io-recipe": _recipe,
    "tf-keras-vis": _tf_keras_vis,
}


def make(library: str, method: str, network: str, batch: int) -> Built:
    """Build the model, the input, the case's call and its in-process forward reference."""
    import keras

    warnings.simplefilter("ignore")
    model, x = keras_speed.build(network, batch)
    forward, _ = _reference("forward", model, x, network)
    if library == "reference":
        call, how = _reference(method, model, x, network)
    else:
        call, how = LIBRARIES[library](method, model, x, network)
    info = {"layer": LAYER, "keras_backend": keras.backend.backend()}
    return Built(call=call, forward=forward, how=how, info=info)


def versions() -> dict[str, str]:
    """Return the versions of Keras, TensorFlow and tf-keras-vis."""
    from importlib.metadata import version

    found = {}
    for name in ("keras", "tensorflow-cpu", "tf-keras-vis"):
        try:
            found[name] = version(name)
        except Exception as exc:  # a missing peer is reported, not fatal
            found[name] = f"unavailable ({type(exc).__name__})"
    return found
