"""Explainers: bind a model, a layer and a method; call them on batches."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from camlens import methods
from camlens._forwards import BoundForwards
from camlens._locks import model_lock
from camlens._version import __version__
from camlens.backends import LayerRef, LayoutSpec, OutputSelector, backend_for
from camlens.backends._layout import LayoutName
from camlens.backends.base import reads_probabilities
from camlens.errors import (
    BadTargetError,
    CamlensWarning,
    LayerError,
    MethodError,
    UnsupportedModelError,
)
from camlens.explanation import Explanation
from camlens.methods import Method, get_method
from camlens.methods.perturbation import PerturbationMethod
from camlens.postprocess import finish
from camlens.targets import Output, Target, TargetLike, as_target

__all__ = [
    "ISCAM",
    "SSCAM",
    "AblationCAM",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "explain",
]

LayerLike = Any  # a name, a path, the framework's layer object, or a list of them


class Explainer:
    """Explain a model with one CAM method at one or several layers.

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model`` (any Keras 3 backend).
        layer: A dotted name (``"layer4.1.conv2"``), the layer object, a list of them (their
            maps are averaged), or ``None`` for the last layer with a spatial output.
        method: A registry name (``"gradcam++"``), a :class:`camlens.methods.Method` class or
            object; subclasses such as :class:`GradCAM` fix it.
        output: Which output to explain when the model returns a tuple, list or dict: an index,
            a key, or a function of the raw output.
        relu: Rectify maps before normalising (the papers' form). ``False`` keeps the sign:
            maps are then scaled to ``[-1, 1]``.
        logits: For a Keras classifier that ends in a softmax, explain the pre-softmax score
            (the Grad-CAM paper's choice; the model is not modified). ``False`` explains the
            probability. The explanation's ``score_kind`` says which was used.
        layout: How the layer's output lies on the image grid: ``"nchw"`` (channels first),
            ``"nhwc"`` (channels last) or ``"tokens"`` (``(N, L, C)``, prefix tokens first,
            then the patch tokens row by row). ``None`` decides per layer from what the layer
            is and its shape, and raises where that is ambiguous.
        grid: ``(h, w)`` of a token layer's patch grid (the tokens before it are prefix
            tokens, dropped), where the token count and input size do not tell it.
        reshape: For any other layout, a function of the layer output (in the framework's own
            ops) that returns it as ``(N, K, h, w)``; it must only re-index (slice, reshape,
            permute), since the gradients go through it too.
        **options: The method's hyper-parameters when it is given by name or class, e.g.
            ``batch_size``, ``top_n`` or ``progress`` for Score-CAM.

    An explainer caches only what it resolved (the layer); each call is independent and
    returns a frozen :class:`Explanation`.
    """

    method_type: ClassVar[type[Method] | None] = None

    def __init__(
        self,
        model: Any,
        layer: LayerLike = None,
        *,
        method: str | Method | type[Method] | None = None,
        output: OutputSelector = None,
        relu: bool = True,
        logits: bool = True,
        layout: LayoutName | None = None,
        grid: tuple[int, int] | None = None,
        reshape: Callable[[Any], Any] | None = None,
        **options: Any,
    ) -> None:
        """Resolve the backend, the method and any explicit layers (so bad names fail early)."""
        chosen = method if method is not None else self.method_type
        if chosen is None:
            raise MethodError("Explainer needs a method, e.g. method='gradcam'")
        self.method: Method = get_method(chosen, **options)
        self.relu = bool(relu)
        spec = LayoutSpec(layout=layout, grid=grid, reshape=reshape)
        self._backend = backend_for(model, output=output, logits=logits, layout=spec)
        self._lock = model_lock(model)
        self._layers: tuple[LayerRef, ...] | None = None
        if layer is not None:
            specs = list(layer) if isinstance(layer, (list, tuple)) else [layer]
            if not specs:
                raise LayerError("layer is an empty list; give at least one layer or None")
            self._layers = tuple(self._backend.resolve_layer(spec) for spec in specs)

    @property
    def layers(self) -> tuple[str, ...] | None:
        """Return the resolved layer names (``None`` until an automatic pick has run)."""
        return None if self._layers is None else tuple(ref.name for ref in self._layers)

    def __call__(self, inputs: Any, target: TargetLike = None) -> Explanation:
        """Explain a batch.

        Args:
            inputs: The model's own input batch, ``(N, C, H, W)`` (a tensor or a NumPy array,
                already preprocessed as the model expects).
            target: ``None`` (each image's top-1 class), a class index, one index per image,
                :class:`camlens.Class`, :class:`camlens.Output`, :class:`camlens.TopK`, or a
                function of the model output returning ``(N,)`` or ``(N, T)`` scores.
        """
        return self._run(inputs, target, stacklevel=3)

    explain = __call__

    def _forwards(self, x: Any, layer: LayerRef, units: np.ndarray, target: Target) -> Any:
        """Bind a perturbation method's extra forward passes to this call."""
        assert isinstance(self.method, PerturbationMethod)
        if (units < 0).any():
            raise BadTargetError(
                f"{self.method.name} scores perturbed inputs on output units: give a class, "
                "camlens.Output(i) or camlens.TopK(k), not a function of the output"
            )
        probabilities = reads_probabilities(
            self.method.score_mode, raw_target=isinstance(target, Output)
        )
        return BoundForwards(
            self._backend,
            x,
            layer,
            units,
            self.method,
            probabilities=probabilities,
            input_size=self._backend.input_size(x),
            item_bytes=4 * int(np.prod(tuple(x.shape[1:]))),
        )

    def _run(self, inputs: Any, target: TargetLike, *, stacklevel: int) -> Explanation:
        """Explain a batch; warnings point ``stacklevel`` frames up, at the caller's code.

        Calls on one model from several threads take turns (one lock per model).
        """
        with self._lock:
            return self._explain(inputs, target, stacklevel=stacklevel + 1)

    def _explain(self, inputs: Any, target: TargetLike, *, stacklevel: int) -> Explanation:
        backend = self._backend
        resolved_target = as_target(target)
        x = backend.prepare(inputs)
        if self._layers is None:
            self._layers = (backend.auto_layer(x),)
        probe = backend.probe(
            x, self._layers, resolved_target, gradients=self.method.needs_gradients
        )
        grads: Sequence[Any] = probe.gradients or [None] * len(probe.activations)
        cams = []
        for ref, acts, grad in zip(self._layers, probe.activations, grads, strict=True):
            if acts.shape[2] * acts.shape[3] == 1:
                warnings.warn(
                    f"layer {ref.name!r} has a 1x1 spatial output: its map carries no location; "
                    "pick an earlier layer",
                    CamlensWarning,
                    stacklevel=stacklevel,
                )
            if isinstance(self.method, PerturbationMethod):
                cam = self.method.cam_from_forwards(
                    acts, self._forwards(x, ref, probe.resolved.units, resolved_target)
                )
            else:
                cam = self.method.cam(acts, grad)
            if tuple(cam.shape) != (acts.shape[0], *acts.shape[2:]):
                raise MethodError(
                    f"method {self.method!r} returned maps of shape {tuple(cam.shape)}; expected "
                    f"{(acts.shape[0], *acts.shape[2:])}"
                )
            cams.append(cam)
        size = backend.input_size(x)
        maps_arr, raw_arr, degenerate_arr = finish(cams, size, relu=self.relu)
        maps = backend.to_numpy(maps_arr).astype(np.float32, copy=False)
        raw = backend.to_numpy(raw_arr).astype(np.float32, copy=False)
        degenerate = backend.to_numpy(degenerate_arr)
        if not (np.isfinite(maps).all() and np.isfinite(raw).all()):
            raise UnsupportedModelError(
                f"the maps are not finite: the model produced NaN or infinite activations or "
                f"gradients at {self.layers}; check the model and its inputs"
            )
        if degenerate.any():
            rows = np.flatnonzero(degenerate).tolist()
            reason = (
                "constant after ReLU (no positive evidence for the target at this layer)"
                if self.relu
                else "all zeros"
            )
            shown = f"{rows[:10]}{'...' if len(rows) > 10 else ''}"
            warnings.warn(
                f"{len(rows)} map(s) (rows {shown}) are {reason} and were set to zeros; "
                "try another layer, another method or relu=False",
                CamlensWarning,
                stacklevel=stacklevel,
            )
        res = probe.resolved
        n, t = res.units.shape
        return Explanation(
            maps=maps,
            raw=raw,
            scores=res.values.reshape(-1),
            image_index=np.repeat(np.arange(n, dtype=np.int64), t),
            units=res.units.reshape(-1),
            signs=res.signs.reshape(-1),
            target=resolved_target.describe(),
            target_kind=type(resolved_target).__name__,
            score_kind=backend.score_kind,
            layers=tuple(ref.name for ref in self._layers),
            method=getattr(self.method, "name", type(self.method).__name__),
            input_size=size,
            relu=self.relu,
            framework=backend.framework,
            version=__version__,
            outputs=probe.outputs,
        )


def explain(
    model: Any,
    inputs: Any,
    method: str | Method | type[Method] = "gradcam",
    layer: LayerLike = None,
    target: TargetLike = None,
    *,
    output: OutputSelector = None,
    relu: bool = True,
    logits: bool = True,
    layout: LayoutName | None = None,
    grid: tuple[int, int] | None = None,
    reshape: Callable[[Any], Any] | None = None,
    **options: Any,
) -> Explanation:
    """Explain ``inputs`` with one call: Grad-CAM at the last spatial layer, top-1 class.

    See :class:`Explainer` for the arguments. To explain many batches with the same layer,
    build an explainer once (``camlens.GradCAM(model, layer)``) and call it.
    """
    explainer = Explainer(
        model,
        layer,
        method=method,
        output=output,
        relu=relu,
        logits=logits,
        layout=layout,
        grid=grid,
        reshape=reshape,
        **options,
    )
    return explainer._run(inputs, target, stacklevel=3)


class GradCAM(Explainer):
    """Grad-CAM explainer; the maths is :class:`camlens.methods.GradCAM`."""

    method_type = methods.GradCAM


class GradCAMPlusPlus(Explainer):
    """Grad-CAM++ explainer; the maths is :class:`camlens.methods.GradCAMPlusPlus`."""

    method_type = methods.GradCAMPlusPlus


class XGradCAM(Explainer):
    """XGrad-CAM explainer; the maths is :class:`camlens.methods.XGradCAM`."""

    method_type = methods.XGradCAM


class HiResCAM(Explainer):
    """HiResCAM explainer; the maths is :class:`camlens.methods.HiResCAM`."""

    method_type = methods.HiResCAM


class GradCAMElementWise(Explainer):
    """Grad-CAM element-wise explainer; the maths is :class:`camlens.methods.GradCAMElementWise`."""

    method_type = methods.GradCAMElementWise


class LayerCAM(Explainer):
    """LayerCAM explainer; the maths is :class:`camlens.methods.LayerCAM`."""

    method_type = methods.LayerCAM


class EigenCAM(Explainer):
    """Eigen-CAM explainer; the maths is :class:`camlens.methods.EigenCAM`."""

    method_type = methods.EigenCAM


class EigenGradCAM(Explainer):
    """EigenGrad-CAM explainer; the maths is :class:`camlens.methods.EigenGradCAM`."""

    method_type = methods.EigenGradCAM


class ScoreCAM(Explainer):
    """Score-CAM explainer; the maths and options are :class:`camlens.methods.ScoreCAM`."""

    method_type = methods.ScoreCAM


class SSCAM(Explainer):
    """SS-CAM explainer; the maths and options are :class:`camlens.methods.SSCAM`."""

    method_type = methods.SSCAM


class ISCAM(Explainer):
    """IS-CAM explainer; the maths and options are :class:`camlens.methods.ISCAM`."""

    method_type = methods.ISCAM


class AblationCAM(Explainer):
    """Ablation-CAM explainer; the maths and options are :class:`camlens.methods.AblationCAM`."""

    method_type = methods.AblationCAM
