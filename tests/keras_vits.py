"""Keras token models for the layout tests: a small ViT and a token model with a linear head.

Built with Keras 3 ops only, so each runs on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


class PrefixTokens(keras.layers.Layer):
    """Prepend ``count`` learned tokens (a class token, register tokens) to ``(N, L, C)``."""

    def __init__(self, count: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = count

    def build(self, shape: tuple[int, ...]) -> None:
        self.tokens = self.add_weight(
            shape=(1, self.count, shape[-1]), initializer="random_normal", name="tokens"
        )

    def call(self, x: Any) -> Any:
        if self.count == 0:
            return x
        prefix = ops.broadcast_to(self.tokens, (ops.shape(x)[0], self.count, ops.shape(x)[-1]))
        return ops.concatenate([ops.cast(prefix, x.dtype), x], axis=1)


class Block(keras.layers.Layer):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.norm1 = layers.LayerNormalization(name="norm1")
        self.attn = layers.MultiHeadAttention(2, width // 2, name="attn")
        self.norm2 = layers.LayerNormalization(name="norm2")
        self.mlp = layers.Dense(width, activation="gelu", name="mlp")

    def call(self, x: Any) -> Any:
        h = self.norm1(x)
        x = x + self.attn(h, h)
        return x + self.mlp(self.norm2(x))


class ClassToken(keras.layers.Layer):
    """Return the first token of ``(N, L, C)``."""

    def call(self, x: Any) -> Any:
        return x[:, 0]


class PatchMean(keras.layers.Layer):
    """Mean over the tokens after the first ``prefix`` ones."""

    def __init__(self, prefix: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix

    def call(self, x: Any) -> Any:
        return ops.mean(x[:, self.prefix :], axis=1)


def _patches(x: Any, width: int) -> Any:
    t = layers.Conv2D(width, 4, strides=4, name="patch_embed")(x)
    return layers.Reshape((64, width), name="to_tokens")(t)


def vit(prefix: int = 1, depth: int = 2, width: int = 16, classes: int = 5) -> keras.Model:
    """32x32 RGB -> 4x4 patches (8x8 grid) -> prefix tokens -> blocks -> norm -> class token."""
    keras.utils.set_random_seed(0)
    x = keras.Input((32, 32, 3))
    t = PrefixTokens(prefix, name="prefix")(_patches(x, width))
    for i in range(depth):
        t = Block(width, name=f"block{i}")(t)
    t = layers.LayerNormalization(name="norm")(t)
    return keras.Model(x, layers.Dense(classes, name="head")(ClassToken(name="first")(t)))


def linear_token_model(prefix: int = 1, width: int = 6, classes: int = 4) -> keras.Model:
    """Tokens -> ``tokens`` (a LayerNorm, the explained layer) -> mean of the patch tokens ->
    Dense: the gradient of class c at every patch token is ``W[:, c] / 64``."""
    keras.utils.set_random_seed(1)
    x = keras.Input((32, 32, 3))
    t = PrefixTokens(prefix, name="prefix")(_patches(x, width))
    t = layers.LayerNormalization(name="tokens")(t)
    head = layers.Dense(classes, name="head")
    return keras.Model(x, head(PatchMean(prefix, name="patch_mean")(t)))
