"""The Keras layers with a bias and their bias-gradients ``g ⊙ b`` (FullGrad's decomposition).

Counted: convolutions (1-D to 3-D, transposed, depthwise, separable) and ``Dense`` layers with
a bias, and batch norms (in inference mode an affine map, whose effective bias is
``beta - gamma * mean / sqrt(variance + epsilon)``). ``EinsumDense`` and a bias a layer adds
in its own ``call`` are not seen, so the decomposition then misses them. A layer's output is
after its fused activation, so the gradient before it is read from the output: linear, ReLU,
ReLU6, sigmoid, tanh and softmax are supported, another activation is refused. Each counted
layer must run once per forward pass (a shared layer is refused).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from camlens.backends.base import BiasGradients, LayerRef
from camlens.errors import LayerError, MethodError

_WITH_BIAS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)


def _has_bias(layer: Any) -> bool:
    if isinstance(layer, keras.layers.BatchNormalization):
        return True
    return (
        isinstance(layer, _WITH_BIAS)
        and bool(getattr(layer, "use_bias", False))
        and getattr(layer, "bias", None) is not None
    )


def _unfused(grad: Any, out: Any) -> Any:
    return grad


def _relu(grad: Any, out: Any) -> Any:
    return grad * ops.cast(ops.greater(out, 0), grad.dtype)


def _relu6(grad: Any, out: Any) -> Any:
    inside = ops.logical_and(ops.greater(out, 0), ops.less(out, 6))
    return grad * ops.cast(inside, grad.dtype)


def _sigmoid(grad: Any, out: Any) -> Any:
    return grad * out * (1.0 - out)


def _tanh(grad: Any, out: Any) -> Any:
    return grad * (1.0 - out * out)


def _softmax(grad: Any, out: Any) -> Any:
    return out * (grad - ops.sum(grad * out, axis=-1, keepdims=True))


#: ``(gradient at the output, the output) -> gradient before the fused activation``.
_BACKWARD: dict[Any, Callable[[Any, Any], Any]] = {
    keras.activations.linear: _unfused,
    keras.activations.relu: _relu,
    keras.activations.relu6: _relu6,
    keras.activations.sigmoid: _sigmoid,
    keras.activations.tanh: _tanh,
    keras.activations.softmax: _softmax,
}


def _backward(path: str, layer: Any, replaced: bool) -> Callable[[Any, Any], Any]:
    """Return how a layer's output gradient becomes the gradient before its activation."""
    activation = getattr(layer, "activation", None)
    if replaced or activation is None:  # a replaced final layer is read before its softmax
        return _unfused
    backward = _BACKWARD.get(activation)
    if backward is None:
        name = getattr(activation, "__name__", repr(activation))
        raise MethodError(
            f"layer {path!r} fuses the activation {name!r}, whose input gradient FullGrad cannot "
            "read from the layer's output; give the model the activation as its own layer "
            "(keras.layers.Activation) or use a linear, relu, relu6, sigmoid, tanh or softmax one"
        )
    return backward


def _channel_axis(layer: Any, ndim: int) -> int:
    """Return the axis of a layer's output that its bias lies along."""
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    elif isinstance(layer, keras.layers.Dense):
        axis = -1
    else:
        axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1
    return int(axis) % ndim


def effective_bias(layer: Any) -> np.ndarray:
    """Return the bias a layer adds to its output, ``(K,)`` float64 (a batch norm's effective
    bias)."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return np.asarray(ops.convert_to_numpy(layer.bias), dtype=np.float64)
    mean = np.asarray(ops.convert_to_numpy(layer.moving_mean), dtype=np.float64)
    var = np.asarray(ops.convert_to_numpy(layer.moving_variance), dtype=np.float64)
    scale = 1.0 / np.sqrt(var + layer.epsilon)
    if getattr(layer, "gamma", None) is not None:
        scale = scale * np.asarray(ops.convert_to_numpy(layer.gamma), dtype=np.float64)
    shift: np.ndarray = -mean * scale
    if getattr(layer, "beta", None) is not None:
        shift = shift + np.asarray(ops.convert_to_numpy(layer.beta), dtype=np.float64)
    return shift


def bias_layers(
    finished: Sequence[tuple[str, Any, tuple[int, ...]]], counts: dict[int, int]
) -> list[LayerRef]:
    """Return the layers with a bias in the order they ran (``_layers.record``'s record).

    Raises:
        LayerError: A layer with a bias runs more than once per forward pass.
    """
    found = []
    for path, layer, _ in finished:
        if not _has_bias(layer):
            continue
        if counts.get(id(layer), 0) > 1:
            raise LayerError(
                f"layer {path!r} has a bias and runs {counts[id(layer)]} times in one forward "
                "pass (a shared layer); FullGrad needs each layer with a bias to run once"
            )
        found.append(LayerRef(path, layer))
    return found


def check_activations(refs: Sequence[LayerRef], replaced: set[int]) -> None:
    """Refuse a layer whose fused activation's gradient cannot be read from its output."""
    for ref in refs:
        _backward(ref.name, ref.handle, id(ref.handle) in replaced)


def terms(
    refs: Sequence[LayerRef],
    outputs: Sequence[Any],
    gradients: Sequence[Any],
    images: int,
    targets: int,
    replaced: set[int],
    for_maths: Callable[[Any], Any],
) -> BiasGradients:
    """Return ``g ⊙ b`` per layer from its output ``(N, ...)`` and output gradient
    ``(N * targets, ...)``: feature maps on the grid ``(M, K, h, w)``, the rest summed."""
    names: list[str] = []
    maps: list[Any] = []
    rows = images * targets
    rest = np.zeros(rows)
    for ref, out, grad in zip(refs, outputs, gradients, strict=True):
        grad = ops.cast(grad, "float32") if str(grad.dtype) not in ("float32", "float64") else grad
        out = ops.cast(out, grad.dtype)
        if targets > 1:
            out = ops.repeat(out, targets, axis=0)
        grad = _backward(ref.name, ref.handle, id(ref.handle) in replaced)(grad, out)
        ndim = len(out.shape)
        axis = _channel_axis(ref.handle, ndim)
        bias = effective_bias(ref.handle)
        if bias.shape[0] != out.shape[axis]:
            raise MethodError(
                f"layer {ref.name!r} has {bias.shape[0]} biases for an output of shape "
                f"{tuple(out.shape)}; FullGrad reads biases along the channel axis"
            )
        shape = [1] * ndim
        shape[axis] = -1
        term = grad * ops.reshape(ops.convert_to_tensor(bias, dtype=grad.dtype), shape)
        if ndim == 4 and axis in (1, 3):
            names.append(ref.name)
            maps.append(for_maths(term if axis == 1 else ops.transpose(term, (0, 3, 1, 2))))
        else:
            summed = ops.sum(ops.reshape(term, (rows, -1)), axis=1)
            rest += np.asarray(ops.convert_to_numpy(summed), dtype=np.float64)
    return BiasGradients(layers=tuple(names), maps=maps, rest=rest)
