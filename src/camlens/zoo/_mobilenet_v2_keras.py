"""MobileNetV2 in Keras 3, computing the same function as the torch one in `_mobilenet_v2`.

Same architecture as `camlens.zoo._mobilenet_v2.MobileNetV2`, channels last, so torchvision's
ImageNet weights copied in give the same logits on every Keras backend. Unlike
`keras.applications.MobileNetV2`, stride-2 convolutions pad one pixel on every side, as torch's
`padding=1` does (Keras pads (0, 1) there), and batch norm uses torch's epsilon, 1e-5.

Layer names follow torch's module tree: `features_{i}` is the output of `features[i]` (the last
feature map, after the final ReLU6, is `features_18`); inside a stage, `features_{i}_expand_*`,
`features_{i}_dw_*` and `features_{i}_project_*` are its 1x1 expansion, 3x3 depthwise and 1x1
linear projection, each `_conv`, `_bn` (and `_relu`). The head is `pool`, `classifier_dropout`,
`classifier` (logits, no softmax). This module imports keras; the zoo imports it lazily.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import numpy.typing as npt

from camlens.zoo._setting import MOBILENET_V2_SETTING

__all__ = ["mobilenet_v2"]

_SETTING = MOBILENET_V2_SETTING

_BN_EPSILON = 1e-5  # torch's BatchNorm2d default; Keras' is 1e-3


class _Builder:
    """Build the graph layer by layer, recording the torch module each weighted layer mirrors."""

    def __init__(self) -> None:
        self.torch_modules: dict[str, str] = {}  # Keras layer name -> torch module path

    def conv_bn(
        self,
        x: keras.KerasTensor,
        name: str,
        torch_path: str,
        filters: int | None,
        kernel_size: int = 1,
        stride: int = 1,
        relu: bool = True,
        relu_name: str | None = None,
    ) -> keras.KerasTensor:
        """Conv (depthwise when `filters` is None) -> BN (-> ReLU6), as torch's Conv2d(pad=k//2).

        `torch_path` is the torch module of the conv; its batch norm is the next index there.
        """
        if kernel_size > 1 and stride > 1:
            # "same" would pad (0, 1) here; torch pads 1 on each side.
            x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same"  # for stride 1, "same" is torch's symmetric padding
        if filters is None:
            conv: keras.layers.Layer = keras.layers.DepthwiseConv2D(
                kernel_size, stride, padding, use_bias=False, name=f"{name}_conv"
            )
        else:
            conv = keras.layers.Conv2D(
                filters, kernel_size, stride, padding, use_bias=False, name=f"{name}_conv"
            )
        x = conv(x)
        head, _, index = torch_path.rpartition(".")
        self.torch_modules[conv.name] = torch_path
        self.torch_modules[f"{name}_bn"] = f"{head}.{int(index) + 1}"
        x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
        if relu:
            x = keras.layers.ReLU(max_value=6.0, name=relu_name or f"{name}_relu")(x)
        return x

    def inverted_residual(
        self, x: keras.KerasTensor, i: int, filters: int, stride: int, expand_ratio: int
    ) -> keras.KerasTensor:
        """Stage `features[i]`: expand (1x1) -> depthwise 3x3 -> project (1x1) (+ skip)."""
        inp = x.shape[-1]
        name, path = f"features_{i}", f"features.{i}.conv"
        j = 0  # index in torch's `conv` Sequential
        y = x
        if expand_ratio != 1:
            y = self.conv_bn(y, f"{name}_expand", f"{path}.0.0", inp * expand_ratio)
            j = 1
        y = self.conv_bn(y, f"{name}_dw", f"{path}.{j}.0", None, kernel_size=3, stride=stride)
        y = self.conv_bn(y, f"{name}_project", f"{path}.{j + 1}", filters, relu=False)
        if stride == 1 and inp == filters:
            return keras.layers.Add(name=name)([x, y])
        return keras.layers.Identity(name=name)(y)

    def build(self, num_classes: int, dropout: float) -> keras.Model:
        """Return the whole network, NHWC images in, logits out."""
        inputs = keras.Input((None, None, 3), name="input")
        x = self.conv_bn(
            inputs,
            "features_0",
            "features.0.0",
            32,
            kernel_size=3,
            stride=2,
            relu_name="features_0",
        )
        i = 1
        for t, c, n, s in _SETTING:
            for r in range(n):
                x = self.inverted_residual(x, i, c, s if r == 0 else 1, t)
                i += 1
        x = self.conv_bn(x, "features_18", "features.18.0", 1280, relu_name="features_18")
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(dropout, name="classifier_dropout")(x)
        dense = keras.layers.Dense(num_classes, name="classifier")
        self.torch_modules[dense.name] = "classifier.1"
        return keras.Model(inputs, dense(x), name="mobilenet_v2")


def _to_keras(
    layer: keras.layers.Layer, module: str, state: Mapping[str, npt.ArrayLike]
) -> list[str]:
    """Copy torch module `module`'s tensors from `state` into `layer`; return the keys read."""
    if isinstance(layer, keras.layers.BatchNormalization):
        names = ["weight", "bias", "running_mean", "running_var"]
    elif isinstance(layer, keras.layers.Dense):
        names = ["weight", "bias"]
    else:  # convolutions, without bias
        names = ["weight"]
    keys = [f"{module}.{n}" for n in names]
    weights = [np.asarray(state[k], dtype=np.float32) for k in keys]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        weights[0] = weights[0].transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    elif isinstance(layer, keras.layers.Conv2D):
        weights[0] = weights[0].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif isinstance(layer, keras.layers.Dense):
        weights[0] = weights[0].T  # (out, in) -> (in, out)
    layer.set_weights(weights)
    return keys


def mobilenet_v2(
    state: Mapping[str, npt.ArrayLike] | None = None,
    num_classes: int = 1000,
    dropout: float = 0.2,
) -> keras.Model:
    """Build the Keras MobileNetV2, optionally loading a torch `MobileNetV2` state dict.

    Args:
        state: The torch model's state dict with its tensors as arrays (NumPy or anything
            `np.asarray` takes), or None to keep Keras' random init. Every tensor must be used
            (`num_batches_tracked` aside), as torch's `load_state_dict(strict=True)` demands.
        num_classes: Size of the classifier's output.
        dropout: Dropout rate before the classifier (inactive at inference).

    Returns:
        A functional `keras.Model` named "mobilenet_v2": (N, H, W, 3) in, (N, num_classes) out.

    Raises:
        KeyError: `state` lacks a tensor the model needs or has one it does not use.
    """
    builder = _Builder()
    model = builder.build(num_classes, dropout)
    if state is not None:
        used: set[str] = set()
        for name, module in builder.torch_modules.items():
            used.update(_to_keras(model.get_layer(name), module, state))
        unused = sorted(k for k in set(state) - used if not k.endswith(".num_batches_tracked"))
        if unused:
            raise KeyError(f"tensors the Keras MobileNetV2 does not use: {unused}")
    return model
