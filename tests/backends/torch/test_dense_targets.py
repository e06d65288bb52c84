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
from vits import TINY_VIT  # noqa: E402


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
    config = transformers.CLIPVisionConfig(**TINY_VIT, projection_dim=16)
    return transformers.CLIPVisionModelWithProjection(config).eval()


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _gradcam_by_hand(
    model: torch.nn.Module,
    layer: str,
    x: torch.Tensor,
    score: Any,
    to_grid: Any = lambda t: t,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM before its ReLU for ``score(output) -> (N,)``, and the scores, by hand;
    ``to_grid`` puts the layer's output (and its gradient) as ``(N, K, h, w)``."""
    store: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        leaf = out.detach().requires_grad_()  # the gradient starts here, whatever is frozen
        store.append(leaf)
        return leaf

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        scores = score(model(x))
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(scores.sum(), store[0])
    a, g = to_grid(store[0].detach().double()), to_grid(grad.double())
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

    def tokens(t: torch.Tensor) -> torch.Tensor:
        # (N, 1 + 16, C): the class token dropped, the 4x4 patches row by row.
        return t[:, 1:].reshape(len(t), 4, 4, -1).permute(0, 3, 1, 2)

    raw, scores = _gradcam_by_hand(model, exp.layers[0], x, score, tokens)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5)
    np.testing.assert_allclose(exp.raw, raw, atol=1e-6 * max(1.0, np.abs(raw).max()))
    assert exp.target == "cosine similarity to 'a cat'"
    with pytest.raises(camlens.BadTargetError, match="reference"):
        camlens.explain(model, x, output="image_embeds", target=camlens.Similarity(np.zeros(8)))


class _ListDetector(torch.nn.Module):
    """A torchvision-shaped detector: per image, three fixed boxes and labels, scores from the
    features (differentiable), returned as a list of dicts."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(6, 3)
        self.register_buffer(
            "boxes", torch.tensor([[0, 0, 16, 16], [8, 8, 30, 30], [0, 16, 32, 32.0]])
        )
        self.register_buffer("labels", torch.tensor([1, 2, 2]))

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        scores = torch.sigmoid(self.head(self.features(x).mean(dim=(2, 3))))
        return [{"boxes": self.boxes, "scores": s, "labels": self.labels} for s in scores]


def test_detection_explains_the_matched_detection_of_a_list_of_dicts_output() -> None:
    model, x = _ListDetector().eval(), _images()
    # (9, 9, 29, 31) overlaps box 1 best (IoU 420 / 504 = 0.83); box 2 less (0.46).
    exp = camlens.explain(model, x, layer="features", target=camlens.Detection((9, 9, 29, 31)))
    raw, scores = _gradcam_by_hand(
        model, "features", x, lambda out: torch.stack([d["scores"][1] for d in out])
    )
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-6)
    np.testing.assert_allclose(exp.raw, raw, atol=1e-6 * np.abs(raw).max())
    assert exp.units.tolist() == [2, 2]  # the matched detection's class
    # Of class 1 only box 0 qualifies, at IoU 49 / 647 = 0.08: refused in words.
    with pytest.raises(camlens.BadTargetError, match=r"no detection of class 1 .*best: 0\.08"):
        camlens.explain(
            model, x, layer="features", target=camlens.Detection((9, 9, 29, 31), label=1)
        )
    with pytest.raises(camlens.BadTargetError, match="scores perturbed inputs"):
        camlens.explain(
            model, x, layer="features", method="scorecam", target=camlens.Detection((9, 9, 29, 31))
        )


def _detr() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone=None,
        backbone_config=transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"]
        ),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=5,
        num_labels=3,
    )
    return transformers.DetrForObjectDetection(config).eval()


def test_detection_on_detr_explains_the_matched_querys_class_probability() -> None:
    model = _detr()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x)
    probs = torch.softmax(out.logits, dim=-1)[0, :, :-1].numpy()
    cx, cy, w, h = out.pred_boxes[0].numpy().T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    q = 3  # explain query 3's box: it matches itself (IoU 1)
    label = int(probs[q].argmax())
    layer = "model.backbone.model.encoder.stages.1"
    exp = camlens.explain(model, x, layer=layer, target=camlens.Detection(tuple(boxes[q])))

    def score(o: Any) -> torch.Tensor:
        return torch.softmax(o.logits, dim=-1)[:, q, label]

    raw, scores = _gradcam_by_hand(model, layer, x, score)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5)
    np.testing.assert_allclose(exp.raw, raw, rtol=1e-4, atol=1e-4 * np.abs(raw).max())
    assert exp.units.tolist() == [label]
