"""LeGrad and attention rollout on Keras ``MultiHeadAttention`` ViTs, on every Keras backend.

The references come from outside camlens: the attention probabilities returned by each
``MultiHeadAttention`` layer itself (``return_attention_scores=True``, called here on its
block's input from a sub-model), and a PyTorch forward written out by hand from the Keras
model's weights, whose hand-computed probabilities ``softmax(q k^T / sqrt(d))`` give the
gradients (``torch.autograd``; the gradient of the score with respect to each block's
probabilities). The same weights in a ``torch.nn.MultiheadAttention`` module give camlens's
PyTorch maps, which the Keras maps equal.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from keras import layers, ops

import camlens
from attention_refs import rollout_reference
from camlens.backends import backend_for
from keras_vits import PrefixTokens, vit
from readme import python_block_after

SIZE, PATCH, WIDTH, HEADS, DEPTH, CLASSES = 16, 4, 16, 2, 2, 5
GRID = (SIZE // PATCH, SIZE // PATCH)
TOKENS = 1 + GRID[0] * GRID[1]


class Boom(keras.layers.Layer):
    """The identity, or a raise while ``armed``: a model that fails in the middle of its pass."""

    armed = False

    def call(self, x: Any) -> Any:
        if self.armed:
            raise RuntimeError("boom")
        return x


def tiny_vit(seed: int = 0, *, dropout: float = 0.0, nested: bool = False) -> keras.Model:
    """16x16 RGB -> 4x4 patches (4x4 grid) -> class token -> 2 pre-norm blocks -> norm -> head
    on the class token; ``nested``: each block a functional model of its own."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((SIZE, SIZE, 3))
    t = layers.Conv2D(WIDTH, PATCH, strides=PATCH, name="patch_embed")(x)
    t = layers.Reshape((GRID[0] * GRID[1], WIDTH), name="to_tokens")(t)
    t = PrefixTokens(1, name="cls")(t)
    for i in range(DEPTH):
        inner = keras.Input((TOKENS, WIDTH)) if nested else t
        u = _block(inner, i, dropout)
        t = keras.Model(inner, u, name=f"block{i}")(t) if nested else u
        if i == 0:
            t = Boom(name="boom")(t)
    t = layers.LayerNormalization(name="norm")(t)
    first = layers.Lambda(lambda z: z[:, 0], name="first")(t)
    return keras.Model(x, layers.Dense(CLASSES, name="head")(first), name="tiny_vit")


def _block(t: Any, i: int, dropout: float) -> Any:
    h = layers.LayerNormalization(name=f"norm1_{i}")(t)
    a = layers.MultiHeadAttention(HEADS, WIDTH // HEADS, dropout=dropout, name=f"attn{i}")(h, h)
    t = layers.Add(name=f"add1_{i}")([t, a])
    h = layers.LayerNormalization(name=f"norm2_{i}")(t)
    h = layers.Dense(2 * WIDTH, activation="gelu", name=f"fc1_{i}")(h)
    h = layers.Dense(WIDTH, name=f"fc2_{i}")(h)
    return layers.Add(name=f"add2_{i}")([t, h])


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype(np.float32)


def _explain(model: Any, x: Any, method: str, **kw: Any) -> camlens.Explanation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.MapStrengthWarning)
        return camlens.explain(model, x, method=method, **kw)


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def keras_attentions(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """Each block's probabilities as its ``MultiHeadAttention`` returns them, on the block's
    input (the first norm's output) computed by a sub-model."""
    found = []
    for i in range(DEPTH):
        h = keras.Model(model.input, model.get_layer(f"norm1_{i}").output)(x)
        _, scores = model.get_layer(f"attn{i}")(h, h, return_attention_scores=True)
        found.append(_numpy(scores))
    return found


class TorchTwin(torch.nn.Module):
    """The Keras ViT's weights in PyTorch: ``torch.nn.MultiheadAttention`` blocks (camlens's
    PyTorch attention layers), and ``by_hand``, the forward written out with the probabilities
    computed explicitly, float64."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__()
        # Plain tensors in a dict, not the model: on Keras's torch backend a Keras model is a
        # torch module, which must not become part of this one.
        self.weights = {
            layer.name: [torch.tensor(_numpy(v), dtype=torch.float64) for v in layer.weights]
            for layer in model._flatten_layers()
            if layer.weights
        }
        self.eps = {
            layer.name: layer.epsilon
            for layer in model._flatten_layers()
            if isinstance(layer, layers.LayerNormalization)
        }
        w = self.w
        self.patch = torch.nn.Conv2d(3, WIDTH, PATCH, stride=PATCH).double()
        self.patch.weight.data = w("patch_embed").permute(3, 2, 0, 1).contiguous()
        self.patch.bias.data = w("patch_embed", 1)
        self.cls = torch.nn.Parameter(w("cls"))
        self.attn = torch.nn.ModuleList()
        for i in range(DEPTH):
            mha = torch.nn.MultiheadAttention(WIDTH, HEADS, batch_first=True).double()
            mha.in_proj_weight.data = torch.cat(
                [w(f"attn{i}", 2 * j).reshape(WIDTH, WIDTH).T for j in range(3)]
            )
            mha.in_proj_bias.data = torch.cat(
                [w(f"attn{i}", 2 * j + 1).reshape(-1) for j in range(3)]
            )
            mha.out_proj.weight.data = w(f"attn{i}", 6).reshape(WIDTH, WIDTH).T.contiguous()
            mha.out_proj.bias.data = w(f"attn{i}", 7)
            self.attn.append(mha)
        self.eval()

    def w(self, name: str, i: int = 0) -> torch.Tensor:
        return self.weights[name][i]

    def _norm(self, t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, (WIDTH,), self.w(name), self.w(name, 1), eps=self.eps[name])

    def _dense(self, t: torch.Tensor, name: str) -> torch.Tensor:
        return t @ self.w(name) + self.w(name, 1)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), t], dim=1)

    def _mlp(self, t: torch.Tensor, i: int) -> torch.Tensor:
        h = F.gelu(self._dense(self._norm(t, f"norm2_{i}"), f"fc1_{i}"))
        return t + self._dense(h, f"fc2_{i}")

    def _head(self, t: torch.Tensor) -> torch.Tensor:
        return self._dense(self._norm(t, "norm")[:, 0], "head")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._tokens(x)
        for i, mha in enumerate(self.attn):
            h = self._norm(t, f"norm1_{i}")
            t = self._mlp(t + mha(h, h, h, need_weights=False)[0], i)
        return self._head(t)

    def by_hand(
        self, x: torch.Tensor, outputs: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and each block's probabilities, in the graph (not leaves); each block's
        output tokens are appended to ``outputs``."""
        outputs = [] if outputs is None else outputs
        t = self._tokens(x)
        attentions = []
        for i in range(DEPTH):
            h = self._norm(t, f"norm1_{i}")
            q, k, v = (
                torch.einsum("nld,dhk->nhlk", h, self.w(f"attn{i}", 2 * j))
                + self.w(f"attn{i}", 2 * j + 1)[None, :, None]
                for j in range(3)
            )
            a = torch.softmax(q @ k.transpose(-1, -2) / (WIDTH // HEADS) ** 0.5, dim=-1)
            attentions.append(a)
            context = torch.einsum("nhlm,nhmk->nlhk", a, v)
            out = torch.einsum("nlhk,hkd->nld", context, self.w(f"attn{i}", 6))
            t = self._mlp(t + out + self.w(f"attn{i}", 7), i)
            outputs.append(t)
        return self._head(t), attentions


def legrad_reference(
    twin: TorchTwin, x: np.ndarray, classes: list[int], *, own: bool = False
) -> np.ndarray:
    """LeGrad: ``mean_l mean_{heads, queries} ReLU(ds/dA_l)``, the class token's key dropped;
    ``own``: ``s_l = head(norm(z_l))`` of block ``l``'s output tokens ``z_l`` (the paper's)."""
    xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    outputs: list[torch.Tensor] = []
    logits, attentions = twin.by_hand(xt, outputs)
    rows, units = torch.arange(len(x)), torch.tensor(classes)
    grads = [
        torch.autograd.grad(
            (twin._head(z) if own else logits)[rows, units].sum(), a, retain_graph=True
        )[0]
        for z, a in zip(outputs, attentions, strict=True)
    ]
    mean = np.mean([g.clamp(min=0).mean(dim=(1, 2)).numpy() for g in grads], axis=0)
    return mean[:, 1:].reshape(len(x), *GRID)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def _assert_as_found(model: keras.Model, weights: list[np.ndarray], config: str) -> None:
    assert model.to_json() == config
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    for layer in model._flatten_layers():
        if isinstance(layer, layers.MultiHeadAttention):
            assert "_compute_attention" not in vars(layer)
            assert layer.trainable


def test_rollout_equals_the_formula_on_the_layers_own_probabilities() -> None:
    model = tiny_vit()
    x = _images(2, seed=1)
    exp = _explain(model, x, "attentionrollout")
    assert exp.layers == ("attn0", "attn1")
    expected = rollout_reference(keras_attentions(model, x), 1, GRID)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-7)


def test_the_hand_written_torch_forward_is_the_keras_model() -> None:
    model = tiny_vit()
    x = _images(2, seed=1)
    twin = TorchTwin(model)
    with torch.no_grad():
        logits, attentions = twin.by_hand(torch.tensor(x.transpose(0, 3, 1, 2)).double())
        np.testing.assert_allclose(logits.numpy(), _numpy(model(x)), atol=1e-5)
        np.testing.assert_allclose(twin(torch.tensor(x.transpose(0, 3, 1, 2)).double()), logits)
    for ours, theirs in zip(attentions, keras_attentions(model, x), strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)


def test_legrad_equals_autograd_on_the_probabilities_of_a_hand_written_forward() -> None:
    model = tiny_vit(seed=2)
    x = _images(3, seed=2)
    classes = [4, 0, 2]
    expected = legrad_reference(TorchTwin(model), x, classes)
    exp = _explain(model, x, "legrad", target=classes)
    assert np.abs(expected).max() > 1e-4  # a map, not zeros
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_legrad_with_a_head_reads_each_blocks_own_score_as_the_paper() -> None:
    model = tiny_vit(seed=10, nested=True)
    x = _images(2, seed=10)
    classes = [3, 1]
    twin = TorchTwin(model)
    norm, head = model.get_layer("norm"), model.get_layer("head")
    exp = _explain(model, x, "legrad", target=classes, head=lambda t: head(norm(t)[:, 0]))
    expected = legrad_reference(twin, x, classes, own=True)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert not np.allclose(expected, legrad_reference(twin, x, classes), rtol=1e-3)
    # The units the model's output resolved, for every block: top-2 rows equal fixed classes.
    top = _explain(model, x, "legrad", target=camlens.TopK(2), head=lambda t: head(norm(t)[:, 0]))
    ranked = np.argsort(-_numpy(model(x)), axis=1)[:, :2]
    for j in range(2):
        fixed = legrad_reference(twin, x, ranked[:, j].tolist(), own=True)
        np.testing.assert_allclose(top.raw[j::2], fixed, rtol=1e-4, atol=1e-5 * np.abs(fixed).max())


@pytest.mark.parametrize("method", ["legrad", "attentionrollout"])
def test_keras_maps_equal_the_pytorch_backends_on_the_same_weights(method: str) -> None:
    model = tiny_vit(seed=3)
    x = _images(2, seed=3)
    twin = TorchTwin(model)
    k = _explain(model, x, method, target=1)
    t = _explain(twin, torch.tensor(x.transpose(0, 3, 1, 2)).double(), method, target=1)
    assert t.layers == ("attn.0", "attn.1")
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-5 * np.abs(t.raw).max())


def test_the_probe_gives_probabilities_tokens_and_the_models_own_output() -> None:
    model = tiny_vit(dropout=0.3)  # dropout in the layer: inactive in the probe
    x = _images(2, seed=4)
    backend = backend_for(model)
    inputs = backend.prepare(x)
    refs = backend.attention_layers(inputs)
    probe = backend.attention_probe(inputs, refs, camlens.Class(1), gradients=True)
    assert probe.tokens is not None and (probe.tokens.prefix, probe.tokens.grid) == (1, GRID)
    for got, expected in zip(probe.activations, keras_attentions(model, x), strict=True):
        assert got.shape == (2, HEADS, TOKENS, TOKENS)
        np.testing.assert_allclose(backend.to_numpy(got), expected, atol=1e-6)
    assert (
        probe.gradients is not None
        and [g.shape for g in probe.gradients] == [(2, HEADS, TOKENS, TOKENS)] * DEPTH
    )
    np.testing.assert_allclose(probe.outputs, _numpy(model(x, training=False)), atol=1e-5)


def test_gradcam_picks_the_last_nested_blocks_first_norm_and_equals_the_flat_model() -> None:
    # Each block a functional model whose MultiHeadAttention takes (query, value) as two
    # positional arguments: the automatic pick records every layer's output, the attention
    # layer's projections inside it too, and must call it with both.
    flat, nested = tiny_vit(seed=11), tiny_vit(seed=12, nested=True)
    nested.set_weights(flat.get_weights())
    x = _images(2, seed=11)
    cam = camlens.GradCAM(nested)
    exp = cam(x, target=[1, 3])
    assert cam.layers == (f"block{DEPTH - 1}/norm1_{DEPTH - 1}",) == exp.layers
    twin = camlens.GradCAM(flat)(x, target=[1, 3])
    assert twin.layers == (f"norm1_{DEPTH - 1}",)
    assert np.abs(twin.raw).max() > 0
    np.testing.assert_allclose(exp.raw, twin.raw, rtol=1e-5, atol=1e-7)
    rows = {row.name: row for row in camlens.layers(nested, input_size=(SIZE, SIZE))}
    assert (
        rows[exp.layers[0]].auto and rows[exp.layers[0]].layout == f"tokens 1+{GRID[0]}x{GRID[1]}"
    )


def test_nested_and_subclassed_blocks_are_found_in_running_order() -> None:
    flat, nested = tiny_vit(seed=5), tiny_vit(seed=6, nested=True)
    nested.set_weights(flat.get_weights())
    x = _images(2, seed=5)
    for method in ("legrad", "attentionrollout"):
        a, b = _explain(flat, x, method), _explain(nested, x, method)
        assert b.layers == ("block0/attn0", "block1/attn1")
        np.testing.assert_allclose(b.raw, a.raw, rtol=1e-5, atol=1e-8)
    subclassed = vit()  # blocks as layers of their own
    images = np.random.default_rng(5).normal(size=(1, 32, 32, 3)).astype(np.float32)
    exp = _explain(subclassed, images, "legrad")
    assert exp.layers == ("block0/attn", "block1/attn") and exp.raw.shape == (1, 8, 8)
    norm, head = subclassed.get_layer("norm"), subclassed.get_layer("head")
    own = _explain(subclassed, images, "legrad", head=lambda t: head(norm(t)[:, 0]))
    assert own.raw.shape == (1, 8, 8) and not np.allclose(own.raw, exp.raw, rtol=1e-3)


@pytest.mark.parametrize("method", ["legrad", "attentionrollout"])
def test_a_batch_equals_its_single_calls(method: str) -> None:
    model = tiny_vit(seed=7)
    x = _images(3, seed=7)
    batch = _explain(model, x, method, target=2)
    for i in range(3):
        single = _explain(model, x[i : i + 1], method, target=2)
        np.testing.assert_allclose(batch.raw[i], single.raw[0], rtol=1e-5, atol=1e-9)
    top = _explain(model, x, method, target=camlens.TopK(2))
    assert top.raw.shape == (6, *GRID)


@pytest.mark.parametrize("method", ["legrad", "attentionrollout"])
def test_the_model_is_left_as_found_after_a_call_and_after_a_raise(method: str) -> None:
    model = tiny_vit(seed=8)
    x = _images(2, seed=8)
    weights, before, config = _weights(model), _numpy(model(x)), model.to_json()
    first = _explain(model, x, method, layer=["attn0", "attn1"], target=0)
    _assert_as_found(model, weights, config)
    boom = model.get_layer("boom")
    boom.armed = True
    try:
        with pytest.raises(RuntimeError, match="boom"):
            # Another target than the first call's: a new trace, which runs the model's code.
            target = camlens.TopK(2)
            camlens.explain(model, x, method=method, layer=["attn0", "attn1"], target=target)
    finally:
        boom.armed = False
    _assert_as_found(model, weights, config)
    np.testing.assert_array_equal(_numpy(model(x)), before)
    again = _explain(model, x, method, layer=["attn0", "attn1"], target=0)
    np.testing.assert_array_equal(again.raw, first.raw)


def test_wrong_layers_and_options_are_refused_clearly() -> None:
    model = tiny_vit(seed=9)
    x = _images(1, seed=9)
    weights, config = _weights(model), model.to_json()
    with pytest.raises(camlens.LayerError, match="order the model runs them"):
        _explain(model, x, "attentionrollout", layer=["attn1", "attn0"])
    with pytest.raises(camlens.LayerError, match="is given twice"):
        _explain(model, x, "attentionrollout", layer=["attn0", "attn0"])
    with pytest.raises(camlens.LayerError, match=r"not a keras\.layers\.MultiHeadAttention"):
        _explain(model, x, "legrad", layer=["norm"])
    with pytest.raises(camlens.MethodError, match="sits in the model's own graph, in no block"):
        _explain(model, x, "legrad", head=lambda t: t)
    nested = tiny_vit(seed=9, nested=True)
    with pytest.raises(camlens.BadInputError, match="head= returned"):
        _explain(nested, x, "legrad", head=lambda t: t[0])
    _assert_as_found(model, weights, config)


@pytest.mark.parametrize("method", ["legrad", "attentionrollout"])
def test_a_model_without_multi_head_attention_is_refused_in_words(method: str) -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(h)))
    with pytest.raises(camlens.LayerError, match=r"no keras\.layers\.MultiHeadAttention") as info:
        _explain(model, _images(1, seed=0), method)
    assert "gradcam" in str(info.value)


def test_the_readme_keras_example_runs() -> None:
    code = python_block_after("A Keras ViT, on any Keras backend")
    assert "camlens.LeGrad(model)" in code and "head=" in code
    found: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.MapStrengthWarning)
        exec(compile(code, "README.md", "exec"), found)
    exp = found["exp"]
    assert exp.layers == ("block0/attn", "block1/attn") and exp.raw.shape == (2, 4, 4)
