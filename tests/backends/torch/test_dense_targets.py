"""Segmentation and similarity targets on real architectures from ``transformers`` (SegFormer,
a CLIP image encoder; random weights from configs): scores and maps against the formulas
computed here with hooks and ``torch.autograd``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import camlens  # noqa: E402


def _segformer() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=3,
    )
    return transformers.SegformerForSemanticSegmentation(config).eval()


def _clip_vision() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=16,
    )
    return transformers.CLIPVisionModelWithProjection(config).eval()


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _gradcam_by_hand(
    model: torch.nn.Module, layer: str, x: torch.Tensor, score: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM before its ReLU for ``score(output) -> (N,)``, and the scores, by hand."""
    store: list[torch.Tensor] = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, out: store.append(out))
    try:
        scores = score(model(x))
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(scores.sum(), store[0])
    a, g = store[0].detach().double(), grad.double()
    raw = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)
    return raw.numpy(), scores.detach().double().numpy()


def test_segmentation_explains_the_class_over_its_predicted_mask() -> None:
    model, x = _segformer(), _images()
    cam = camlens.GradCAM(model, output="logits")
    exp = cam(x, target=camlens.Segmentation(1))
    # The automatic layer is the last map before the logits, not the logits themselves.
    assert cam.layers == ("decode_head.dropout",)

    def score(out: Any) -> torch.Tensor:  # Seg-Grad-CAM: sum of Y_c over {argmax = c}
        logits = out.logits
        return (logits[:, 1] * (logits.argmax(dim=1) == 1)).sum(dim=(1, 2))

    raw, scores = _gradcam_by_hand(model, "decode_head.dropout", x, score)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5)
    np.testing.assert_allclose(exp.raw, raw, atol=1e-6 * max(1.0, np.abs(raw).max()))
    assert exp.target == "class 1 over its predicted mask"


def test_a_given_mask_and_the_score_is_additive_over_disjoint_masks() -> None:
    model, x = _segformer(), _images()
    cam = camlens.GradCAM(model, "decode_head.dropout", output="logits", relu=False)
    top = np.zeros((8, 8), dtype=bool)
    top[:4] = True
    left = np.zeros((2, 8, 8), dtype=bool)  # one mask per image
    left[:, 4:, :3] = True
    a = cam(x, target=camlens.Segmentation(2, mask=top))
    b = cam(x, target=camlens.Segmentation(2, mask=left))
    both = cam(x, target=camlens.Segmentation(2, mask=top | left))
    with torch.no_grad():
        logits = model(x).logits[:, 2].double().numpy()
    np.testing.assert_allclose(a.scores, logits[:, top].sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(both.scores, a.scores + b.scores, rtol=1e-5)
    # Grad-CAM is linear in the score: the disjoint masks' raw maps add up.
    np.testing.assert_allclose(both.raw, a.raw + b.raw, atol=1e-5 * np.abs(both.raw).max())


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (camlens.Segmentation(7), "out of range"),
        (camlens.Segmentation(0, mask=np.ones((4, 4), dtype=bool)), "resolution"),
        (camlens.Segmentation(0, mask=np.ones((8, 8))), "boolean"),
    ],
)
def test_bad_segmentation_targets_are_refused_in_words(target: Any, message: str) -> None:
    with pytest.raises(camlens.BadTargetError, match=message):
        camlens.explain(_segformer(), _images(), output="logits", target=target)


def test_segmentation_of_a_classifier_output_is_refused() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    net(_images(1))
    with pytest.raises(camlens.BadTargetError, match="dense output"):
        camlens.explain(net.eval(), _images(), layer="0", target=camlens.Segmentation(0))


def test_similarity_explains_the_cosine_to_a_given_embedding() -> None:
    model, x = _clip_vision(), _images()
    text = np.random.default_rng(1).standard_normal(16)  # stands for a text embedding
    exp = camlens.explain(
        model, x, output="image_embeds", target=camlens.Similarity(text, name="'a cat'")
    )
    assert exp.layers == ("vision_model.encoder.layers.1.layer_norm1",)
    ref = torch.from_numpy(text).float()

    def score(out: Any) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(out.image_embeds, ref[None], dim=1)

    store: list[torch.Tensor] = []
    module = dict(model.named_modules())[exp.layers[0]]
    handle = module.register_forward_hook(lambda m, a, out: store.append(out))
    try:
        scores = score(model(x))
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(scores.sum(), store[0])
    # Tokens (N, 1 + 16, C): the class token dropped, the 4x4 patches row by row.
    a = store[0].detach().double()[:, 1:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    g = grad.double()[:, 1:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    raw = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1).numpy()
    np.testing.assert_allclose(exp.scores, scores.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(exp.raw, raw, atol=1e-6 * max(1.0, np.abs(raw).max()))
    assert exp.target == "cosine similarity to 'a cat'"
    with pytest.raises(camlens.BadTargetError, match="reference"):
        camlens.explain(model, x, output="image_embeds", target=camlens.Similarity(np.zeros(8)))
