"""PyTorch cases of ``bench/run.py``: camlens, pytorch-grad-cam, torchcam and captum.

Every call built here returns ``(M, H, W)`` maps at the input's resolution, min-max normalised
per map (the form camlens returns), image-major when there are several targets per image. The
networks are the same objects for every library: a ResNet-50-sized and a ResNet-18-sized
network (torchvision layout, defined in ``gradcam_speed.py`` and ``perturbation_speed.py``) and
camlens's MobileNetV2, all with seeded random weights.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import camlens
from _harness import Built
from camlens import zoo
from gradcam_speed import ResNet50
from perturbation_speed import ResNet18

IMAGE_SIZE = 224
#: network -> (constructor, layer explained)
NETWORKS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet50": (ResNet50, "layer4"),
    "mobilenet_v2": (lambda: zoo.mobilenet_v2(pretrained=False), "features"),
    "resnet18": (ResNet18, "layer4"),
}
TOP_K = 5

Call = Callable[[], Any]
#: The layer a library explains: a name, or RefineCAM's list of names.
Layer = str | list[str]


def build_model(network: str, batch: int) -> tuple[nn.Module, torch.Tensor, str]:
    """Return the seeded network in eval mode, a seeded random batch and the layer name."""
    make, layer = NETWORKS[network]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    return model, x, layer


def _top(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Return each image's ``k`` highest-scoring classes, ``(N, k)``, best first.

    Under ``no_grad``, not ``inference_mode``: peers use the indices in autograd-tracked ops.
    """
    with torch.no_grad():
        return model(x).topk(k, dim=1).indices


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """Min-max normalise ``(M, H, W)`` maps per map (as camlens does) and return NumPy."""
    flat = maps.detach().flatten(1).float()
    low = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - low
    out = torch.where(span > 0, (flat - low) / span.clamp_min(1e-30), torch.zeros_like(flat))
    return out.view(maps.shape).numpy()


def _upsample(maps: torch.Tensor) -> torch.Tensor:
    """Resize ``(M, h, w)`` layer-resolution maps to the input, bilinearly (camlens's mode)."""
    return F.interpolate(
        maps[:, None].float(), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
    )[:, 0]


def _interleave_targets(per_target: list[np.ndarray]) -> np.ndarray:
    """Stack ``T`` lists of ``(N, H, W)`` maps into ``(N * T, H, W)``, image-major."""
    return np.stack(per_target, axis=1).reshape(-1, *per_target[0].shape[1:])


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def _reference(kind: str, model: nn.Module, x: torch.Tensor, layer: str) -> tuple[Call, str]:
    """Return the reference call ``kind`` and how it is made."""
    if kind == "forward":

        def forward() -> None:
            with torch.inference_mode():
                model(x)

        return forward, "model(x) under torch.inference_mode()"
    if kind == "backward_layer":
        for p in model.parameters():
            p.requires_grad_(False)
        slot: list[torch.Tensor] = []

        def leaf(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            slot.append(out.detach().requires_grad_())
            return slot[-1]

        model.get_submodule(layer).register_forward_hook(leaf)

        def backward_layer() -> None:
            slot.clear()
            out = model(x)
            torch.autograd.grad(out.max(1).values.sum(), slot[0])

        return backward_layer, (
            "frozen parameters, a forward hook making the layer output a graph leaf, "
            "torch.autograd.grad(top-1 scores summed, layer output): the floor of Grad-CAM"
        )
    if kind == "full_backward":
        xi = x.clone().requires_grad_()

        def full_backward() -> None:
            model.zero_grad(set_to_none=True)
            xi.grad = None
            model(xi).max(1).values.sum().backward()

        return full_backward, (
            "parameters requiring grad, input requiring grad, "
            "model(x).max(1).values.sum().backward(): what a naive implementation pays"
        )
    raise ValueError(f"unknown reference {kind!r}")


# --------------------------------------------------------------------------------------------
# camlens
# --------------------------------------------------------------------------------------------

CAMLENS = {
    "gradcam": camlens.GradCAM,
    "gradcam++": camlens.GradCAMPlusPlus,
    "layercam": camlens.LayerCAM,
    "eigencam": camlens.EigenCAM,
    "top5": camlens.GradCAM,
    "scorecam": camlens.ScoreCAM,
    "ablationcam": camlens.AblationCAM,
    "cam": camlens.CAM,
    "fem": camlens.FEM,
    "kpcacam": camlens.KPCACAM,
    "finercam": camlens.FinerCAM,
    "reciprocam": camlens.ReciproCAM,
    "hirescam": camlens.HiResCAM,
    "xgradcam": camlens.XGradCAM,
    "gradcam-elementwise": camlens.GradCAMElementWise,
    "eigengradcam": camlens.EigenGradCAM,
    "refinecam": camlens.RefineCAM,
    "smoothgradcam++": camlens.SmoothGradCAMPlusPlus,
    "saliency": camlens.Saliency,
    "smoothgrad": camlens.SmoothGrad,
    "guidedbackprop": camlens.GuidedBackprop,
    "guidedgradcam": camlens.GuidedGradCAM,
}
#: Methods that explain the input itself (no layer).
PIXEL_LEVEL = ("saliency", "smoothgrad", "guidedbackprop")
#: RefineCAM's layers per network: a 14x14 stage and the last 7x7 one.
REFINE_LAYERS = {"resnet50": ["layer3", "layer4"], "mobilenet_v2": ["features.13", "features"]}
#: Deep Feature Factorization: concepts per batch (camlens's default; pytorch-grad-cam's is 16).
DFF_CONCEPTS = 4
#: SmoothGrad: noisy copies and noise level over the input's range (the paper's, camlens's).
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 50, 0.15


def _camlens(method: str, model: nn.Module, x: torch.Tensor, layer: Layer) -> tuple[Call, str]:
    if method == "dff":
        factorizer = camlens.Factorizer(model, layer, k=DFF_CONCEPTS)
        how = f"camlens.Factorizer(model, {layer!r}, k={DFF_CONCEPTS})(x).maps"
        return lambda: factorizer(x).maps, how
    explained = None if method in PIXEL_LEVEL else layer
    explainer = CAMLENS[method](model, layer=explained)
    target = camlens.TopK(TOP_K) if method == "top5" else None
    how = f"camlens.{CAMLENS[method].__name__}(model, layer={explained!r})(x"
    how += ", target=camlens.TopK(5))" if method == "top5" else ")"
    return lambda: explainer(x, target=target).maps, how


# --------------------------------------------------------------------------------------------
# pytorch-grad-cam
# --------------------------------------------------------------------------------------------


def _grad_cam(method: str, model: nn.Module, x: torch.Tensor, layer: Layer) -> tuple[Call, str]:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method == "dff":
        return _grad_cam_dff(model, x, str(layer))
    if method == "guidedbackprop":
        return _grad_cam_guided(model, x)
    classes = {
        "gradcam": pgc.GradCAM,
        "gradcam++": pgc.GradCAMPlusPlus,
        "layercam": pgc.LayerCAM,
        "eigencam": pgc.EigenCAM,
        "top5": pgc.GradCAM,
        "scorecam": pgc.ScoreCAM,
        "ablationcam": pgc.AblationCAM,
        "fem": pgc.FEM,
        "kpcacam": pgc.KPCA_CAM,
        "finercam": pgc.FinerCAM,  # defaults: top-1 against ranks 1-3, alpha 1 (camlens's)
        "hirescam": pgc.HiResCAM,
        "xgradcam": pgc.XGradCAM,
        "gradcam-elementwise": pgc.GradCAMElementWise,
        "eigengradcam": pgc.EigenGradCAM,
        "refinecam": pgc.RefineCAM,  # base_method=GradCAMPlusPlus, as camlens's
    }
    cls = classes[method]
    names = layer if isinstance(layer, list) else [layer]
    cam = cls(model=model, target_layers=[model.get_submodule(n) for n in names])
    how = f"pytorch_grad_cam.{cls.__name__}(model, target_layers=[{', '.join(names)}])"
    if method == "top5":
        top = _top(model, x, TOP_K).tolist()

        def loop() -> np.ndarray:
            maps = [
                cam(input_tensor=x, targets=[ClassifierOutputTarget(row[k]) for row in top])
                for k in range(TOP_K)
            ]
            return _interleave_targets(maps)

        return loop, how + "; 5 calls, targets=[ClassifierOutputTarget(c) ...] (top-5 given)"
    return lambda: cam(input_tensor=x, targets=None), how + "(input_tensor=x, targets=None)"


def _grad_cam_dff(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[Call, str]:
    from pytorch_grad_cam import DeepFeatureFactorization

    head = model.fc if hasattr(model, "fc") else model.classifier
    dff = DeepFeatureFactorization(
        model=model, target_layer=model.get_submodule(layer), computation_on_concepts=head
    )

    def call() -> np.ndarray:
        _, maps, _ = dff(x, n_components=DFF_CONCEPTS)
        return np.stack(maps)  # (N, k, H, W), each map min-max scaled, image-major

    how = (
        f"pytorch_grad_cam.DeepFeatureFactorization(model, target_layer=model.{layer}, "
        f"computation_on_concepts=<the linear head>)(x, n_components={DFF_CONCEPTS})"
    )
    return call, how


def _grad_cam_guided(model: nn.Module, x: torch.Tensor) -> tuple[Call, str]:
    from pytorch_grad_cam import GuidedBackpropReLUModel

    guided = GuidedBackpropReLUModel(model, device="cpu")
    top = _top(model, x, 1)[:, 0].tolist()
    # It explains image 0 of its input only, and makes that input require grad (its gradient
    # accumulates): one private copy per image, gradient cleared before each call.
    images = [x[i : i + 1].clone() for i in range(len(x))]

    def call() -> np.ndarray:
        maps = []
        for image, cls in zip(images, top, strict=True):
            image.grad = None
            grad = guided(image, target_category=cls)  # (H, W, C) NumPy
            maps.append(np.abs(grad).max(-1))
        return _normalise(torch.from_numpy(np.stack(maps)))

    how = (
        "pytorch_grad_cam.GuidedBackpropReLUModel(model, device='cpu')(x[i:i+1], "
        "target_category=c) per image (top-1 given); max over channels of |G|"
    )
    return call, how


# --------------------------------------------------------------------------------------------
# torchcam
# --------------------------------------------------------------------------------------------


def _torchcam(method: str, model: nn.Module, x: torch.Tensor, layer: Layer) -> tuple[Call, str]:
    from torchcam import methods as tcm

    classes = {
        "gradcam": tcm.GradCAM,
        "gradcam++": tcm.GradCAMpp,
        "layercam": tcm.LayerCAM,
        "top5": tcm.GradCAM,
        "scorecam": tcm.ScoreCAM,
        "cam": tcm.CAM,  # its fc layer found automatically
        "xgradcam": tcm.XGradCAM,
        "refinecam": tcm.RefineCAM,  # base_method=GradCAMpp, as camlens's
        "smoothgradcam++": tcm.SmoothGradCAMpp,  # num_samples=4, std=0.3: camlens's defaults
    }
    cls = classes[method]
    extractor = cls(model, target_layer=layer, input_shape=(3, IMAGE_SIZE, IMAGE_SIZE))
    how = f"torchcam.methods.{cls.__name__}(model, target_layer={layer!r})"
    if method == "scorecam":

        def score() -> np.ndarray:
            with torch.no_grad():
                out = model(x)
            maps = extractor(out.argmax(1).tolist())[0]
            return _normalise(_upsample(maps))

        return score, how + ": forward under no_grad, then extractor(class_idx); upsampled"
    if method == "top5":
        top = _top(model, x, TOP_K)

        def loop() -> np.ndarray:
            out = model(x)
            maps = [
                _normalise(
                    _upsample(extractor(top[:, k].tolist(), out, retain_graph=k < TOP_K - 1)[0])
                )
                for k in range(TOP_K)
            ]
            return _interleave_targets(maps)

        return loop, how + ": one forward, 5 extractor calls with retain_graph (top-5 given)"

    def call() -> np.ndarray:
        out = model(x)
        return _normalise(_upsample(extractor(out.argmax(1).tolist(), out)[0]))

    return call, how + ": out = model(x); extractor(out.argmax(1).tolist(), out); upsampled"


# --------------------------------------------------------------------------------------------
# captum
# --------------------------------------------------------------------------------------------


def _captum(method: str, model: nn.Module, x: torch.Tensor, layer: Layer) -> tuple[Call, str]:
    from captum.attr import LayerAttribution, LayerGradCam

    if method in ("saliency", "smoothgrad", "guidedbackprop", "guidedgradcam"):
        return _captum_input(method, model, x, str(layer))
    gc = LayerGradCam(model, model.get_submodule(str(layer)))
    top = _top(model, x, TOP_K)

    def attribute(target: torch.Tensor) -> np.ndarray:
        attr = gc.attribute(x, target=target, relu_attributions=True)
        up = LayerAttribution.interpolate(attr, (IMAGE_SIZE, IMAGE_SIZE), "bilinear")
        return _normalise(up[:, 0])

    how = (
        f"captum.attr.LayerGradCam(model, model.{layer}).attribute(x, target=..., "
        "relu_attributions=True), LayerAttribution.interpolate(..., 'bilinear')"
    )
    if method == "top5":
        return (
            lambda: _interleave_targets([attribute(top[:, k]) for k in range(TOP_K)]),
            how + "; 5 calls (top-5 given)",
        )
    return lambda: attribute(top[:, 0]), how + " (top-1 given)"


def _captum_input(method: str, model: nn.Module, x: torch.Tensor, layer: str) -> tuple[Call, str]:
    """Return captum's input-gradient attribution, as the map ``max_c |A_c|``."""
    from captum.attr import GuidedBackprop, GuidedGradCam, NoiseTunnel, Saliency

    top = _top(model, x, 1)[:, 0]
    kwargs: dict[str, Any] = {"target": top}
    if method == "saliency":
        attr: Any = Saliency(model)
        how = "captum.attr.Saliency(model).attribute(x, target=..., abs=True)"
    elif method == "smoothgrad":
        # camlens's noise: std = noise level x the image's value range (one image here)
        std = SMOOTHGRAD_NOISE * float(x.max() - x.min())
        attr = NoiseTunnel(Saliency(model))
        kwargs.update(nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES, stdevs=std, abs=False)
        how = (
            f"captum.attr.NoiseTunnel(Saliency(model)).attribute(x, nt_type='smoothgrad', "
            f"nt_samples={SMOOTHGRAD_SAMPLES}, stdevs={SMOOTHGRAD_NOISE} x range, abs=False, "
            "target=...): the mean gradient, then its magnitude (the paper's)"
        )
    elif method == "guidedbackprop":
        attr = GuidedBackprop(model)
        how = "captum.attr.GuidedBackprop(model).attribute(x, target=...)"
    else:
        attr = GuidedGradCam(model, model.get_submodule(layer))
        kwargs["interpolate_mode"] = "bilinear"  # camlens's; captum's default is "nearest"
        how = (
            f"captum.attr.GuidedGradCam(model, model.{layer}).attribute(x, target=..., "
            "interpolate_mode='bilinear')"
        )

    def call() -> np.ndarray:
        return _normalise(attr.attribute(x, **kwargs).abs().amax(1))

    return call, how + " (top-1 given); max over channels of |A|"


LIBRARIES: dict[str, Callable[[str, nn.Module, torch.Tensor, Layer], tuple[Call, str]]] = {
    "camlens": _camlens,
    "pytorch-grad-cam": _grad_cam,
    "torchcam": _torchcam,
    "captum": _captum,
}


def make(library: str, method: str, network: str, batch: int) -> Built:
    """Build the model, the input, the case's call and its in-process forward reference."""
    warnings.simplefilter("ignore")  # random weights: degenerate-map warnings, peers' notices
    model, x, layer = build_model(network, batch)
    # The forward reference runs a copy: peers leave hooks on the model they explain.
    forward, _ = _reference("forward", copy.deepcopy(model), x, layer)
    if library == "reference":
        call, how = _reference(method, model, x, layer)
    else:
        layers: Layer = REFINE_LAYERS[network] if method == "refinecam" else layer
        call, how = LIBRARIES[library](method, model, x, layers)
    info = {"layer": layer, "torch_threads": torch.get_num_threads()}
    return Built(call=call, forward=forward, how=how, info=info)


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads (0: torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)


def versions() -> dict[str, str]:
    """Return the versions of torch and the PyTorch peers that import."""
    found = {"torch": torch.__version__}
    for name, module in (
        ("pytorch-grad-cam", "pytorch_grad_cam"),
        ("torchcam", "torchcam"),
        ("captum", "captum"),
        ("torchvision", "torchvision"),
    ):
        try:
            from importlib.metadata import version

            found[name] = version(name if name != "pytorch-grad-cam" else "grad-cam")
            __import__(module)
        except Exception as exc:  # a missing peer is reported, not fatal
            found[name] = f"unavailable ({type(exc).__name__})"
    return found
