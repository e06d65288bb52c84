"""Models with several inputs: the explained image picked out, the others passed unchanged.

The model (``nets.ImageAndMeta``) takes an image and a side vector fused before the head; it
records what it was called with. The Keras twin is in test_keras_multi_input.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camlens
import camlens.metrics
from nets import ImageAndMeta

#: Tiny random networks give near-flat maps at times; these tests check the maths.
pytestmark = pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")


@pytest.fixture
def net() -> ImageAndMeta:
    return ImageAndMeta().eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 2, generator=g)


class MetaFirst(nn.Module):
    """The same network, its inputs in the other order: ``forward(meta, image)``."""

    def __init__(self, inner: ImageAndMeta) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, meta: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image, meta)


class Bound(nn.Module):
    """The network with its side input fixed: a one-input model of the image alone."""

    def __init__(self, inner: ImageAndMeta, meta: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.meta = meta

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image, self.meta.expand(len(image), -1))


def _gradcam_reference(net: ImageAndMeta, x: torch.Tensor, meta: torch.Tensor, classes: list[int]):  # type: ignore[no-untyped-def]
    """Grad-CAM from its formula, with a hook and autograd written here: at ``relu``'s output
    ``A``, ``alpha_k = mean_ij dy_c/dA_kij``, ``L = sum_k alpha_k A_k`` (signed, ``(N, h, w)``)."""
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, args: object, out: torch.Tensor) -> None:
        out.retain_grad()
        captured.append(out)

    handle = net.relu.register_forward_hook(keep)
    try:
        out = net(x, meta)
    finally:
        handle.remove()
    out[torch.arange(len(x)), torch.tensor(classes)].sum().backward()
    (a,) = captured
    alpha = a.grad.mean(dim=(2, 3), keepdim=True)
    return (alpha * a).sum(dim=1).detach().numpy()


def _minmax(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    return (maps - low[:, None, None]) / (high - low)[:, None, None]


def test_gradcam_on_the_image_input_equals_its_formula(net, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    exp = camlens.GradCAM(net, "relu")((x, meta), target=[0, 2, 1])
    expected = _gradcam_reference(net, x, meta, [0, 2, 1])
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(exp.maps, _minmax(np.maximum(expected, 0)), atol=1e-5)
    assert exp.input_size == (8, 8)
    with torch.no_grad():
        logits = net(x, meta).numpy()
    np.testing.assert_allclose(exp.scores, logits[[0, 1, 2], [0, 2, 1]], rtol=1e-6)
    # The side input matters: another one gives other maps.
    other = camlens.GradCAM(net, "relu")((x, -meta), target=[0, 2, 1])
    assert np.abs(other.raw - exp.raw).max() > 1e-3


def test_the_side_input_reaches_the_model_unchanged_and_the_model_is_left_as_found(
    net: ImageAndMeta, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, meta = batch
    given = meta.clone()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for method in ("gradcam", "scorecam", "saliency", "ablationcam"):
        net.calls.clear()
        layer = None if method == "saliency" else "relu"
        camlens.explain(net, (x, meta), method=method, layer=layer)
        assert net.calls
        for image, seen in net.calls:
            # Each call's rows are whole images' rows: the side input's rows beside them.
            rows = [int(np.flatnonzero((meta == row).all(dim=1).numpy())[0]) for row in seen]
            torch.testing.assert_close(seen, meta[rows], rtol=0, atol=0)
            assert seen.dtype == meta.dtype and image.shape[1:] == x.shape[1:]
    torch.testing.assert_close(meta, given, rtol=0, atol=0)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert not net.training
    assert not any(m._forward_hooks for m in net.modules())


def test_scorecam_masks_the_image_input_only(net, batch) -> None:  # type: ignore[no-untyped-def]
    """Score-CAM from its formula (``M_k`` min-max scaled ``A_k``, ``w_k = softmax(f(X ∘ M_k,
    meta))_c``, ``L = sum_k w_k A_k``), and every masked call keeps the image's own side row."""
    x, meta = batch
    net.calls.clear()
    exp = camlens.ScoreCAM(net, "relu")((x, meta), target=[1, 0, 2])
    for image, seen in net.calls[1:]:  # after the probe: batches of one image's masks
        assert (seen == seen[:1]).all()
        n = int(np.flatnonzero((meta == seen[0]).all(dim=1).numpy())[0])
        ratio = image / x[n]  # a mask, the same over the image's channels
        torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        a = net.relu(net.conv(x))
        expected = []
        for n, c in enumerate([1, 0, 2]):
            low = a[n].amin(dim=(1, 2), keepdim=True)
            high = a[n].amax(dim=(1, 2), keepdim=True)
            masks = torch.where(high > low, (a[n] - low) / (high - low), torch.zeros_like(a[n]))
            masked = x[n : n + 1] * masks[:, None]
            w = torch.softmax(net(masked, meta[n : n + 1].expand(len(masks), -1)), dim=1)[:, c]
            expected.append((w[:, None, None] * a[n]).sum(dim=0).numpy())
    np.testing.assert_allclose(exp.raw, np.stack(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("gradcam", {}),
        ("gradcam++", {}),
        ("shapleycam", {}),
        ("scorecam", {}),
        ("ablationcam", {}),
        ("reciprocam", {}),
        ("saliency", {}),
        ("smoothgrad", {"samples": 3}),
        ("guidedgradcam", {}),
        ("gradcam", {"aug_smooth": True}),
        ("opticam", {"iterations": 5}),
    ],
)
def test_each_image_is_explained_as_by_the_model_with_its_side_input_bound(
    net: ImageAndMeta, batch: tuple[torch.Tensor, torch.Tensor], method: str, options: dict
) -> None:
    """Row n of the two-input explanation is the one-input model ``image -> net(image,
    meta[n])``'s explanation of image n: the batch equals its single calls, and everything
    input-sized (masks, pixel gradients, augmentations) acts on the image alone."""
    x, meta = batch
    layer = None if method in ("saliency", "smoothgrad") else "relu"
    both = camlens.explain(net, (x, meta), method=method, layer=layer, target=[0, 1, 2], **options)
    for n, c in enumerate([0, 1, 2]):
        bound = Bound(net, meta[n : n + 1]).eval()
        layer_n = None if layer is None else "inner.relu"
        one = camlens.explain(
            bound, x[n : n + 1], method=method, layer=layer_n, target=c, **options
        )
        np.testing.assert_allclose(both.raw[n], one.raw[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(both.maps[n], one.maps[0], atol=1e-5)
        np.testing.assert_allclose(both.scores[n], one.scores[0], rtol=1e-5)


def test_list_and_dict_inputs_and_the_image_by_index_or_key(net, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    cam = camlens.GradCAM(net, "relu")
    expected = cam((x, meta), target=[0, 2, 1]).raw
    # A dict calls model(**inputs): its order does not matter.
    by_key = camlens.GradCAM(net, "relu", input="image")
    np.testing.assert_array_equal(
        by_key({"meta": meta, "image": x}, target=[0, 2, 1]).raw, expected
    )
    np.testing.assert_array_equal(cam({"meta": meta, "image": x}, target=[0, 2, 1]).raw, expected)
    np.testing.assert_array_equal(cam([x, meta], target=[0, 2, 1]).raw, expected)
    # A tuple or list calls model(*inputs); the image by index, or found as the only 4-D one.
    swapped = MetaFirst(net).eval()
    for explainer in (
        camlens.GradCAM(swapped, "inner.relu", input=1),
        camlens.GradCAM(swapped, "inner.relu"),
    ):
        np.testing.assert_array_equal(explainer((meta, x), target=[0, 2, 1]).raw, expected)
    # NumPy inputs are tensors on the model's device, their dtype kept.
    got = cam((x.numpy(), meta.numpy()), target=[0, 2, 1]).raw
    np.testing.assert_array_equal(got, expected)
    # The same through the one-line explain.
    np.testing.assert_array_equal(
        camlens.explain(
            net, {"image": x, "meta": meta}, layer="relu", input="image", target=[0, 2, 1]
        ).raw,
        expected,
    )


def test_inputs_that_do_not_say_which_is_the_image_raise(net, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    cam = camlens.GradCAM(net, "relu")
    with pytest.raises(camlens.BadInputError, match=r"2 are a 4-D image batch: pass input="):
        cam((x, x))
    with pytest.raises(camlens.BadInputError, match=r"none is a 4-D image batch: pass input="):
        cam((x[0], meta))
    with pytest.raises(camlens.BadInputError, match=r"batch size 2.*one row per image"):
        cam((x, meta[:2]))
    with pytest.raises(camlens.BadInputError, match=r"input='picture' is not a key.*'image'"):
        camlens.GradCAM(net, "relu", input="picture")({"image": x, "meta": meta})
    with pytest.raises(camlens.BadInputError, match=r"input=2 is not an index"):
        camlens.GradCAM(net, "relu", input=2)((x, meta))
    with pytest.raises(camlens.BadInputError, match=r"input=0 picks one of several inputs"):
        camlens.GradCAM(net, "relu", input=0)(x)
    with pytest.raises(camlens.BadInputError, match=r"input= is the index or key"):
        camlens.GradCAM(net, "relu", input=True)
    with pytest.raises(camlens.BadInputError, match=r"empty dict"):
        cam({})
    # The explained input is checked as a single input is; the model's own error is a camlens one.
    with pytest.raises(camlens.BadInputError, match="dtype"):
        cam((x.long(), meta))
    with pytest.raises(
        camlens.BadInputError, match=r"the model raised .* 0 of shape \(3, 3, 8, 8\)"
    ):
        cam((x, torch.randn(3, 5)))
    assert not any(m._forward_hooks for m in net.modules())


def test_a_loaders_label_tensor_with_two_inputs(net, batch) -> None:  # type: ignore[no-untyped-def]
    """``for x, m, y in loader: cam((x, m), target=y)`` equals per-image class targets."""
    x, meta = batch
    labels = torch.tensor([2, 0, 1])
    cam = camlens.GradCAM(net, "relu")
    expected = cam((x, meta), target=[2, 0, 1])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, meta, labels), batch_size=2
    )
    maps = [cam((xb, mb), target=yb).raw for xb, mb, yb in loader]
    np.testing.assert_allclose(np.concatenate(maps), expected.raw, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(cam((x, meta), target=labels.numpy()).raw, expected.raw)


def test_polycam_needs_its_layers_named_for_several_inputs(net, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    with pytest.raises(camlens.LayerError, match="pass layer= a list"):
        camlens.PolyCAM(net)((x, meta))
    exp = camlens.PolyCAM(net, ["relu"])((x, meta), target=[0, 1, 2])
    one = camlens.PolyCAM(Bound(net, meta[:1]).eval(), ["inner.relu"])(x[:1], target=0)
    np.testing.assert_allclose(exp.maps[0], one.maps[0], atol=1e-5)


def test_factorize_with_a_side_input_is_the_bound_models(net, batch) -> None:  # type: ignore[no-untyped-def]
    """Deep Feature Factorization of two inputs (the side row the same for every image) is the
    one-input model's, concept scores through the layer's tail included."""
    x, meta = batch
    same = meta[:1].expand(len(x), -1)
    both = camlens.factorize(net, {"image": x, "meta": same}, k=2, layer="relu")
    one = camlens.factorize(Bound(net, meta[:1]).eval(), x, k=2, layer="inner.relu")
    np.testing.assert_allclose(both.maps, one.maps, atol=1e-5)
    assert both.scores is not None and one.scores is not None
    np.testing.assert_allclose(both.scores, one.scores, rtol=1e-5, atol=1e-6)


def test_the_metrics_refuse_several_inputs_with_a_clear_error(net, batch) -> None:  # type: ignore[no-untyped-def]
    x, meta = batch
    exp = camlens.GradCAM(net, "relu")((x, meta))
    with pytest.raises(camlens.BadInputError, match="the metrics do not yet"):
        camlens.metrics.deletion(net, (x, meta), exp)
