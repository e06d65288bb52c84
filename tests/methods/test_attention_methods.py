"""LeGrad and attention rollout against references written here from the papers' formulas.

The attention probabilities come from outside camlens: recomputed by hand from the weights of
the seeded ViTs of ``vits.py`` (``softmax(q k^T / sqrt(d))`` per head), or returned by a
``transformers`` model in eager attention (``output_attentions=True``); their gradients from
``torch.autograd`` on those tensors.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import camlens
from attention_refs import rollout_reference
from nets import NonLinearHead
from readme import python_block_after
from vits import TINY_VIT, Block, TinyViT

transformers = pytest.importorskip("transformers")

ATTENTION_METHODS = ("legrad", "attentionrollout")


def _tinyvit_attentions(
    model: TinyViT, x: torch.Tensor, outputs: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """TinyViT's forward written out, each block's attention probabilities computed by hand;
    they stay in the graph (not leaves), so their gradients are total derivatives. Each
    block's output tokens are appended to ``outputs``."""
    outputs = [] if outputs is None else outputs
    n = len(x)
    t = model.patch_embed(x).flatten(2).transpose(1, 2)
    t = torch.cat([model.prefix_tokens.expand(n, -1, -1), t], dim=1) + model.pos
    tokens = t.shape[1]
    attentions = []
    for block in model.blocks:
        mha = block.attn
        heads, width = mha.num_heads, mha.embed_dim
        head_dim = width // heads

        def split(z: torch.Tensor, heads: int = heads, head_dim: int = head_dim) -> torch.Tensor:
            return z.reshape(n, tokens, heads, head_dim).transpose(1, 2)

        q, k, v = F.linear(block.norm1(t), mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / head_dim**0.5, dim=-1)
        attentions.append(a)
        context = (a @ split(v)).transpose(1, 2).reshape(n, tokens, width)
        t = t + mha.out_proj(context)
        t = t + block.mlp(block.norm2(t))
        outputs.append(t)
    return model.head(model.norm(t)[:, 0]), attentions


def _vit(attn: str = "eager") -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(**TINY_VIT, num_labels=5, attn_implementation=attn)
    return transformers.ViTForImageClassification(config).eval()


def _deit() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.DeiTConfig(**TINY_VIT, num_labels=5, attn_implementation="eager")
    return transformers.DeiTForImageClassificationWithTeacher(config).eval()


def _hf_attentions(
    model: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.enable_grad():
        out = model(x, output_attentions=True)
    return out.logits, list(out.attentions)


def legrad_reference(
    scores: torch.Tensor, attentions: list[torch.Tensor], prefix: int, grid: tuple[int, int]
) -> np.ndarray:
    """LeGrad: ``mean_l mean_{heads, queries} ReLU(ds/dA_l)``, prefix keys dropped, on the grid;
    ``s`` the sum over images of each image's score (images are independent)."""
    grads = torch.autograd.grad(scores.sum(), attentions)
    per_layer = [g.clamp(min=0).mean(dim=(1, 2)).detach().double().numpy() for g in grads]
    mean = np.mean(per_layer, axis=0)
    return mean[:, prefix:].reshape(len(mean), *grid)


def _explain(
    model: torch.nn.Module, x: torch.Tensor, method: str, **kw: object
) -> camlens.Explanation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.MapStrengthWarning)
        return camlens.explain(model, x, method=method, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_rollout_equals_the_formula_on_a_torch_vit(prefix: int) -> None:
    model = TinyViT(prefix=prefix, depth=3, seed=prefix).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, attentions = _tinyvit_attentions(model, x)
        np.testing.assert_allclose(logits, model(x), atol=1e-5)  # the hand-written forward
    exp = _explain(model, x, "attentionrollout")
    assert exp.layers == ("blocks.0.attn", "blocks.1.attn", "blocks.2.attn")
    expected = rollout_reference([a.numpy() for a in attentions], prefix, (8, 8))
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-7)


def test_legrad_equals_autograd_on_the_attention_probabilities_of_a_torch_vit() -> None:
    model = TinyViT(depth=3, seed=3).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    classes = [4, 0, 2]
    with torch.enable_grad():
        logits, attentions = _tinyvit_attentions(model, x)
        scores = logits[torch.arange(3), torch.tensor(classes)]
        expected = legrad_reference(scores, attentions, 1, (8, 8))
    exp = _explain(model, x, "legrad", target=classes)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-9)
    assert exp.scores == pytest.approx(scores.detach().numpy(), rel=1e-6)


@pytest.mark.parametrize(("make", "prefix"), [(_vit, 1), (_deit, 2)], ids=["vit", "deit"])
def test_both_methods_equal_the_formulas_on_transformers_models(make: object, prefix: int) -> None:
    model = make()  # type: ignore[operator]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    logits, attentions = _hf_attentions(model, x)
    classes = [1, 3]
    scores = logits[torch.arange(2), torch.tensor(classes)]
    legrad = legrad_reference(scores, attentions, prefix, (4, 4))
    rollout = rollout_reference([a.detach().numpy() for a in attentions], prefix, (4, 4))
    got = _explain(model, x, "legrad", output="logits", target=classes)
    assert got.layers == (
        f"{model.base_model_prefix}.layers.0.attention",
        f"{model.base_model_prefix}.layers.1.attention",
    )
    np.testing.assert_allclose(got.raw, legrad, rtol=1e-5, atol=1e-9)
    got = _explain(model, x, "attentionrollout", output="logits")
    np.testing.assert_allclose(got.raw, rollout, rtol=1e-5, atol=1e-7)


def test_head_fusion_max_and_min_follow_the_formula() -> None:
    model = TinyViT(seed=4).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, attentions = _tinyvit_attentions(model, x)
    for fusion, fuse in (("max", np.max), ("min", np.min)):
        # The reference's head mean, given one "head": the fused one.
        fused = [fuse(a.numpy(), axis=1, keepdims=True) for a in attentions]
        exp = _explain(model, x, "attentionrollout", head_fusion=fusion)
        np.testing.assert_allclose(exp.raw, rollout_reference(fused, 1, (8, 8)), rtol=1e-5)


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_a_batch_and_top_k_equal_single_calls(method: str) -> None:
    model = TinyViT(seed=5).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    cam = camlens.Explainer(model, method=method)  # finds the attention layers once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.MapStrengthWarning)
        top = cam(x, target=camlens.TopK(2))
        units = top.units.reshape(3, 2)
        for j in range(2):
            batch = cam(x, target=units[:, j].tolist())
            np.testing.assert_allclose(top.raw.reshape(3, 2, 8, 8)[:, j], batch.raw, rtol=1e-5)
            for i in range(3):
                single = cam(x[i : i + 1], target=int(units[i, j]))
                np.testing.assert_allclose(batch.raw[i], single.raw[0], rtol=1e-5, atol=1e-9)
    if method == "attentionrollout":  # gradient-free: the same map for every target
        np.testing.assert_array_equal(top.raw[0::2], top.raw[1::2])


def test_layers_given_by_name_or_module_in_the_order_they_run() -> None:
    model = TinyViT(depth=3, seed=6).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.enable_grad():
        logits, attentions = _tinyvit_attentions(model, x)
        expected = legrad_reference(logits[:, 2], attentions[1:], 1, (8, 8))
    exp = camlens.LeGrad(model, layer=["blocks.1.attn", model.blocks[2].attn])(x, target=2)
    assert exp.layers == ("blocks.1.attn", "blocks.2.attn") and exp.method == "legrad"
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-9)
    with pytest.raises(camlens.LayerError, match="in the order the model runs them"):
        camlens.LeGrad(model, layer=["blocks.2.attn", "blocks.1.attn"])(x)


def test_wrong_layers_and_options_are_refused_clearly() -> None:
    model = TinyViT().eval()
    x = torch.randn(1, 3, 32, 32)
    before = _snapshot(model)
    with pytest.raises(camlens.LayerError, match="no attention probabilities"):
        camlens.explain(model, x, method="legrad", layer="blocks.0.norm1")
    with pytest.raises(camlens.LayerError, match="not attention probabilities"):
        camlens.explain(model, x, method="attentionrollout", layer="patch_embed")  # (1, 16, 8, 8)
    _assert_same(before, _snapshot(model))  # refused inside the pass: hooks gone
    with pytest.raises(camlens.LayerError, match="found no attention probabilities"):
        camlens.explain(NonLinearHead(), torch.randn(1, 3, 16, 16), method="legrad")
    with pytest.raises(camlens.LayerError, match="attn_implementation='eager'"):
        camlens.explain(_vit("sdpa"), x, method="legrad", output="logits")
    with pytest.raises(camlens.MethodError, match="eigen_smooth"):
        camlens.LeGrad(model, eigen_smooth=True)
    with pytest.raises(camlens.BadInputError, match="head_fusion"):
        camlens.AttentionRollout(model, head_fusion="median")


def _snapshot(model: torch.nn.Module) -> list[object]:
    return [
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, m.training) for n, m in model.named_modules()],
        [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()],
        [(n, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()],
        torch.is_grad_enabled(),
    ]


def _assert_same(before: list[object], after: list[object]) -> None:
    state_before, state_after = before[0], after[0]
    assert isinstance(state_before, dict) and isinstance(state_after, dict)
    assert all(torch.equal(state_before[k], state_after[k]) for k in state_before)
    assert before[1:] == after[1:]


class _RaisingViT(TinyViT):
    """Raises after its blocks have run (the attention hooks have fired)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x)
        raise RuntimeError("boom inside the model")


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_the_model_is_left_as_found(method: str) -> None:
    model = TinyViT(seed=7).train()  # a training model, one frozen parameter
    model.head.weight.requires_grad_(False)
    reference = copy.deepcopy(model)
    before = _snapshot(model)
    x = torch.randn(2, 3, 32, 32)
    _explain(model, x, method)
    _assert_same(before, _snapshot(model))
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    np.testing.assert_allclose(out.detach(), reference(x).detach(), atol=1e-6)
    raising = _RaisingViT().train()
    before = _snapshot(raising)
    for layer in (None, ["blocks.0.attn", "blocks.1.attn"]):
        with pytest.raises(camlens.BadInputError, match="boom inside the model"):
            camlens.explain(raising, x, method=method, layer=layer)
        _assert_same(before, _snapshot(raising))


def _per_layer_legrad(
    layer_scores: list[torch.Tensor],
    attentions: list[torch.Tensor],
    prefix: int,
    grid: tuple[int, int],
) -> np.ndarray:
    """LeGrad as the paper writes it: layer ``l``'s map from the gradient of its own score
    ``s_l = head(norm(z_l))`` with respect to its own attention maps."""
    maps = []
    for score, a in zip(layer_scores, attentions, strict=True):
        (g,) = torch.autograd.grad(score.sum(), a, retain_graph=True)
        maps.append(g.clamp(min=0).mean(dim=(1, 2)).double().numpy())
    mean = np.mean(maps, axis=0)
    return mean[:, prefix:].reshape(len(mean), *grid)


def test_legrad_with_a_head_reads_each_blocks_own_score_as_the_paper() -> None:
    model = TinyViT(depth=3, seed=8).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    outputs: list[torch.Tensor] = []

    def head(t: torch.Tensor) -> torch.Tensor:
        return model.head(model.norm(t)[:, 0])

    with torch.enable_grad():
        logits, attentions = _tinyvit_attentions(model, x, outputs)
        top2 = logits.argsort(dim=1, descending=True)[:, :2]
        per_target = [
            _per_layer_legrad(
                [head(z)[torch.arange(2), top2[:, j]] for z in outputs], attentions, 1, (8, 8)
            )
            for j in range(2)
        ]
        expected = np.stack(per_target, axis=1).reshape(4, 8, 8)
        model_score = legrad_reference(logits[torch.arange(2), top2[:, 0]], attentions, 1, (8, 8))
    exp = _explain(model, x, "legrad", head=head, target=camlens.TopK(2))
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-9)
    assert not np.allclose(expected[::2], model_score, rtol=1e-3)  # the two forms differ


def test_legrad_with_a_head_on_a_transformers_vit() -> None:
    model = _vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))

    def head(t: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.vit.layernorm(t)[:, 0])

    with torch.enable_grad():
        out = model(x, output_attentions=True, output_hidden_states=True)
        scores = [head(z)[:, 3] for z in out.hidden_states[1:]]  # after each block
        expected = _per_layer_legrad(scores, list(out.attentions), 1, (4, 4))
    exp = _explain(model, x, "legrad", output="logits", target=3, head=head)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-9)
    with pytest.raises(camlens.BadInputError, match="head= raised"):
        camlens.explain(model, x, method="legrad", output="logits", head=lambda t: t.foo)


class _WeightsUsingBlock(Block):
    """A block that reads the averaged weights ``nn.MultiheadAttention`` returns by default,
    asked for positionally: camlens asks the layer for per-head weights, the block must still
    get what it asked for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        out, weights = self.attn(h, h, h, None, True)  # (N, L, L), averaged over heads
        x = x + out + weights[:, :, :1]
        return x + self.mlp(self.norm2(x))


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_a_block_reading_the_weights_gets_those_it_asked_for(method: str) -> None:
    model = TinyViT(seed=10)
    torch.manual_seed(10)
    model.blocks = torch.nn.Sequential(_WeightsUsingBlock(16, 2), _WeightsUsingBlock(16, 2))
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    exp = _explain(model, x, method, target=1)
    assert exp.layers == ("blocks.0.attn", "blocks.1.attn")
    with torch.no_grad():
        np.testing.assert_allclose(exp.scores, model(x)[:, 1].numpy(), rtol=1e-6)


def test_the_readme_example_runs() -> None:
    code = python_block_after("Two methods read a transformer's attention maps")
    assert "camlens.LeGrad" in code and "head=" in code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", camlens.MapStrengthWarning)
        exec(compile(code, "README.md", "exec"), {})
