"""Explainers: bind a model, a layer and a method; call them on batches."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from camlens import methods
from camlens._forwards import GRADIENT_FACTOR, BoundForwards, auto_batch_size
from camlens._layers import stage_layers
from camlens._locks import model_lock
from camlens._version import __version__
from camlens.backends import InputSelector, LayerRef, LayoutSpec, OutputSelector, backend_for
from camlens.backends._common import host_labels, no_attention, to_host
from camlens.backends._layout import LayoutName
from camlens.backends.base import (
    INPUT,
    Inputs,
    Probe,
    Resolved,
    image_of,
    reads_probabilities,
    with_image,
)
from camlens.errors import (
    BadInputError,
    BadTargetError,
    CamlensWarning,
    LayerError,
    MapStrengthWarning,
    MethodError,
    UnsupportedModelError,
)
from camlens.explanation import Explanation
from camlens.methods import Method, get_method
from camlens.methods.perturbation import PerturbationMethod, weighted_sum, weighted_terms
from camlens.methods.smoothing import eigen_smooth, weight_based
from camlens.postprocess import FLAT_CONTRAST, Normalize, check_normalize, finish, normalise
from camlens.region import AUTO_FOV, explain_region, fov_masks
from camlens.targets import Class, Detection, Output, Target, TargetLike, TopK, as_target

__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "SSCAM",
    "AblationCAM",
    "AttentionRollout",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "OptiCAM",
    "PolyCAM",
    "ReciproCAM",
    "RefineCAM",
    "Saliency",
    "ScoreCAM",
    "ShapleyCAM",
    "SmoothGrad",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "explain",
]

LayerLike = Any  # a name, a path, the framework's layer object, or a list of them
RegionLike = Any  # a bool (H, W) or (N, H, W) mask (NumPy or a framework's), or "auto-fov"

#: ``aug_smooth``'s augmentations, (horizontal flip, pixel-value factor), as pytorch-grad-cam's
#: (ttach's ``HorizontalFlip`` and ``Multiply([0.9, 1, 1.1])``).
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)
)


class Explainer:
    """Explain a model with one CAM method at one or several layers.

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model`` (any Keras 3 backend).
        layer: A dotted name (``"layer4.1.conv2"``), the layer object, a list of them (their
            maps are averaged), or ``None`` for the last layer with a spatial output. A
            pixel-level method (Saliency, SmoothGrad, Guided Backprop, FullGrad) explains the
            input itself: ``None`` (or ``"input"``).
        method: A registry name (``"gradcam++"``), a :class:`camlens.methods.Method` class or
            object; subclasses such as :class:`GradCAM` fix it.
        output: Which output to explain when the model returns a tuple, list or dict: an index,
            a key, or a function of the raw output.
        input: Which input is the explained image when the model takes several (the call's
            inputs a tuple, list or dict): an index or a key. ``None`` takes the only 4-D
            array among them (and raises, asking for ``input=``, where there are several or
            none). The others reach the model unchanged: a torch model is called
            ``model(*inputs)`` for a tuple or list and ``model(**inputs)`` for a dict, a Keras
            model ``model(inputs)``.
        relu: Rectify maps before normalising (the papers' form). ``False`` keeps the sign:
            maps are then scaled to ``[-1, 1]``.
        logits: For a Keras classifier that ends in a softmax, explain the pre-softmax score
            (the Grad-CAM paper's choice; the model is not modified). ``False`` explains the
            probability. The explanation's ``score_kind`` says which was used.
        eigen_smooth: Replace the weighted sum over channels by the first principal component
            of the weighted activations (:func:`camlens.methods.smoothing.eigen_smooth`); for
            weight-based methods (Grad-CAM, Score-CAM, ...; not Eigen-CAM, FEM, KPCA-CAM).
        aug_smooth: Average the maps of the input flipped horizontally and scaled by 0.9, 1
            and 1.1 (six passes, pytorch-grad-cam's test-time augmentation), each mapped back
            (flipped again) and all explaining the input's own target units; the mean is
            normalised again. ``raw`` is the mean of the mapped-back raw maps.
        normalize: How maps are scaled to ``[0, 1]``: ``"minmax"`` (every map spans the whole
            scale), ``"max"`` (``ReLU(L) / max``: a weak, near-flat map stays near-uniform) or
            ``"none"`` (the values as they are). Signed maps (``relu=False``) are divided by
            their largest magnitude under both ``"minmax"`` and ``"max"``. Whatever the
            choice, the explanation's ``strength`` gives each raw map's range and contrast.
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
        input: InputSelector = None,
        relu: bool = True,
        logits: bool = True,
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        normalize: Normalize = "minmax",
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
        if eigen_smooth and not weight_based(self.method):
            raise MethodError(
                f"eigen_smooth projects a method's weighted activations, and "
                f"{getattr(self.method, 'name', type(self.method).__name__)!r} weighs no "
                "channels: use it with a weight-based method (gradcam, gradcam++, scorecam, "
                "...) or drop eigen_smooth"
            )
        if not relu and hasattr(self.method, "fuse_layers"):
            raise MethodError(
                f"{self.method.name} rectifies its maps at every layer it fuses, so it has no "
                "signed map: drop relu=False"
            )
        self.eigen_smooth = bool(eigen_smooth)
        self.aug_smooth = bool(aug_smooth)
        self.relu = bool(relu)
        self.normalize: Normalize = check_normalize(normalize)
        spec = LayoutSpec(layout=layout, grid=grid, reshape=reshape)
        if isinstance(input, bool) or not isinstance(input, (int, str, type(None))):
            raise BadInputError(f"input= is the index or key of the explained input; got {input!r}")
        self._backend = backend_for(model, output=output, logits=logits, layout=spec, input=input)
        if _reads_attention(self.method) and not self._backend.attention:
            raise no_attention(self._backend.framework)
        if self.method.needs_gradients and not self._backend.gradients:
            usable = [
                n
                for n, cls in methods.REGISTRY.items()
                if n == cls.name
                and not cls.needs_gradients
                and (self._backend.attention or not _reads_attention(cls))
            ]
            raise MethodError(
                f"{getattr(self.method, 'name', type(self.method).__name__)} needs gradients, "
                f"which {self._backend.framework} models do not give; use a gradient-free "
                f"method: {', '.join(dict.fromkeys(usable))}"
            )
        if self._hessian and not getattr(self._backend, "hessians", False):
            raise MethodError(
                f"{getattr(self.method, 'name', type(self.method).__name__)} needs "
                "Hessian-vector products (a second backward pass), "
                f"which {self._backend.framework} models do not give; use it on the PyTorch or "
                "Keras model, or a first-order method here"
            )
        self._lock = model_lock(model)
        self._layers: tuple[LayerRef, ...] | None = None
        if getattr(self.method, "pixel_level", False):
            if layer not in (None, INPUT.name, [INPUT.name], (INPUT.name,)):
                raise LayerError(
                    f"{self.method.name} explains the input's pixels, not a layer: drop "
                    f"layer={layer!r} (or use a layer method such as gradcam)"
                )
            self._layers = (INPUT,)
        elif layer is not None:
            specs = list(layer) if isinstance(layer, (list, tuple)) else [layer]
            if not specs:
                raise LayerError("layer is an empty list; give at least one layer or None")
            self._layers = tuple(self._backend.resolve_layer(spec) for spec in specs)

    @property
    def layers(self) -> tuple[str, ...] | None:
        """Return the resolved layer names (``None`` until an automatic pick has run)."""
        return None if self._layers is None else tuple(ref.name for ref in self._layers)

    def __call__(
        self, inputs: Any, target: TargetLike = None, *, region: RegionLike = None
    ) -> Explanation:
        """Explain a batch.

        Args:
            inputs: The model's own input batch, ``(N, C, H, W)`` (a tensor or a NumPy array,
                already preprocessed as the model expects); for a model with several inputs, a
                tuple, list or dict of them, one row per image in each (see ``input=``).
            target: ``None`` (each image's top-1 class), a class index, one index per image
                (a list, or an integer label array or tensor of any framework: a data
                loader's labels), :class:`camlens.Class`, :class:`camlens.Output`,
                :class:`camlens.TopK`, or a function of the model output returning ``(N,)``
                or ``(N, T)`` scores.
            region: The region of interest, at the input's resolution: a bool ``(H, W)`` mask
                for every image, ``(N, H, W)`` masks (one per image; 0/1 numbers are read as
                bool), or ``"auto-fov"``: each image's circular field of view
                (:func:`camlens.auto_fov`), thresholded from ``inputs`` as given, i.e. the
                preprocessed batch (its mean over channels; a per-channel ``(x - mean) / std``
                keeps a fundus photo's black surround darkest). Each map is normalised over
                its image's region only and is 0 outside it, the explanation's ``strength``
                reads the region only, and overlays grey out the rest; the model still sees
                the whole input, and ``raw`` is the whole map. ``None``: whole images.
        """
        return self._run(inputs, target, stacklevel=3, region=region)

    explain = __call__

    def _forwards(self, x: Any, layer: LayerRef, units: np.ndarray, target: Target) -> Any:
        """Bind a perturbation method's extra forward passes to this call."""
        assert isinstance(self.method, PerturbationMethod)
        if (units < 0).any() or isinstance(target, Detection):
            raise BadTargetError(
                f"{self.method.name} scores perturbed inputs on output units: give a class, "
                "camlens.Output(i) or camlens.TopK(k), not a function of the output or a "
                "detection"
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
            item_bytes=4 * int(np.prod(tuple(image_of(x).shape[1:]))),
        )

    def _automatic_layers(self, x: Any) -> tuple[LayerRef, ...]:
        """Return the layers explained when none is given: the automatic one, or for a method
        that fuses layers (Poly-CAM) one per resolution stage (:func:`stage_layers`)."""
        backend = self._backend
        if _reads_attention(self.method):
            return backend.attention_layers(x)
        if not hasattr(self.method, "fuse_layers"):
            return (backend.auto_layer(x),)
        if isinstance(x, Inputs):
            raise LayerError(
                f"{self.method.name} picks one layer per resolution stage from a pass of the "
                "image alone, and this model takes several inputs: pass layer= a list of its "
                "layers, coarse to fine or in any order"
            )
        channels = int(x.shape[-1] if backend.channels_last else x.shape[1])
        names = stage_layers(backend.summarize(backend.input_size(x), channels))
        if not names:
            return (backend.auto_layer(x),)  # raises the usual, specific error
        return tuple(backend.resolve_layer(name) for name in names)

    @property
    def _guided(self) -> bool:
        """Whether the method's backward pass is guided at ReLUs (Guided Backprop)."""
        return bool(getattr(self.method, "guided", False))

    @property
    def _biases(self) -> bool:
        """Whether the method reads every layer's bias-gradients (FullGrad)."""
        return bool(getattr(self.method, "bias_gradients", False))

    @property
    def _hessian(self) -> bool:
        """Whether the method reads Hessian-vector products at its layers (ShapleyCAM)."""
        return bool(getattr(self.method, "needs_hessian", False))

    @property
    def _combination(self) -> str:
        """How the method's maps of several layers combine: ``"mean"`` or ``"product"``."""
        return str(getattr(self.method, "layer_combination", "mean"))

    def _probe(self, x: Any, target: Target) -> tuple[Probe, str]:
        """Probe the layers for ``target``; return the probe and the target's description."""
        assert self._layers is not None
        if _reads_attention(self.method):
            probe = self._backend.attention_probe(
                x,
                self._layers,
                target,
                gradients=self.method.needs_gradients,
                head=getattr(self.method, "head", None),
            )
            return probe, target.describe()
        if isinstance(self.method, methods.FinerCAM):
            probe = self._contrast_probe(x, target, self.method)
            return probe, (
                f"{target.describe()} against its {self.method.references} nearest classes"
            )
        probe = self._backend.probe(
            x,
            self._layers,
            target,
            gradients=self.method.needs_gradients,
            guided=self._guided,
            biases=self._biases,
            hessian=self._hessian,
        )
        return probe, target.describe()

    def _augmented(
        self,
        x: Any,
        target: Target,
        probe: Probe,
        maps: np.ndarray,
        raw: np.ndarray,
        region: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``aug_smooth``: the maps of flipped and scaled inputs, mapped back and averaged.

        Every augmented input explains the units the input's own pass resolved; a flipped
        input's maps are normalised over the flipped ``region`` (per row). Returns the averaged
        maps (normalised again over the region), raws and the degenerate rows.
        """
        backend = self._backend
        fixed = _fixed(target, probe)
        host = np.asarray(backend.to_numpy(image_of(x)))
        width = 2 if backend.channels_last else 3
        size = backend.input_size(x)
        all_maps, all_raw = [maps], [raw]
        for flip, factor in AUGMENTATIONS:
            if (flip, factor) == (False, 1.0):
                continue
            changed = host * np.asarray(factor, dtype=host.dtype)
            flipped = np.flip(changed, axis=width).copy() if flip else changed
            augmented = backend.prepare(with_image(x, flipped))
            cams = self._cams(augmented, self._probe(augmented, fixed)[0], fixed, stacklevel=None)
            m, r, _ = finish(
                cams,
                size,
                relu=self.relu,
                normalize=self.normalize,
                combination=self._combination,
                region=region if region is None or not flip else region[..., ::-1].copy(),
            )
            m, r = backend.to_numpy(m), backend.to_numpy(r)
            all_maps.append(m[..., ::-1] if flip else m)
            all_raw.append(r[..., ::-1] if flip else r)
        mean, degenerate = normalise(
            np.mean(all_maps, axis=0), signed=not self.relu, mode=self.normalize, region=region
        )
        return (
            mean.astype(np.float32),
            np.mean(all_raw, axis=0).astype(np.float32),
            np.asarray(degenerate),
        )

    def _cams(self, x: Any, probe: Probe, target: Target, *, stacklevel: int | None) -> list[Any]:
        """Return each layer's signed ``(M, h, w)`` map; warn (unless ``stacklevel`` is None).

        An attention method's maps of all its layers are one map, on the tokens' grid.
        """
        if _reads_attention(self.method):
            assert probe.tokens is not None and probe.tokens.grid is not None
            cam = self.method.cam_from_attention(  # type: ignore[attr-defined]
                probe.activations, probe.gradients, probe.tokens
            )
            expected = (probe.activations[0].shape[0], *probe.tokens.grid)
            if tuple(cam.shape) != expected:
                raise MethodError(
                    f"method {self.method!r} returned maps of shape {tuple(cam.shape)}; "
                    f"expected {expected}"
                )
            return [cam]
        grads: Sequence[Any] = probe.gradients or [None] * len(probe.activations)
        products: Sequence[Any] = probe.hessian_products or [None] * len(probe.activations)
        samples = self._noisy_gradients(x, probe, target)
        assert self._layers is not None
        cams = []
        for i, (ref, acts, grad, product) in enumerate(
            zip(self._layers, probe.activations, grads, products, strict=True)
        ):
            if acts.shape[2] * acts.shape[3] == 1 and stacklevel is not None:
                warnings.warn(
                    f"layer {ref.name!r} has a 1x1 spatial output: its map carries no location; "
                    "pick an earlier layer",
                    CamlensWarning,
                    stacklevel=stacklevel + 1,
                )
            if isinstance(self.method, PerturbationMethod):
                forwards = self._forwards(x, ref, probe.resolved.units, target)
                if self.eigen_smooth:
                    weights = self.method.channel_weights(acts, forwards)
                    cam = eigen_smooth(weighted_terms(weights, acts))
                else:
                    cam = self.method.cam_from_forwards(acts, forwards)
            elif getattr(self.method, "optimises_mask", False):
                gradient = self._mask_gradient(x, probe, target)
                cam = self.method.cam_from_mask_gradients(  # type: ignore[attr-defined]
                    acts, self._backend.input_size(x), gradient
                )
            elif self._biases:
                assert probe.biases is not None
                cam = self.method.cam_from_biases(acts, grad, probe.biases)  # type: ignore[attr-defined]
            elif samples is not None:
                cam = self.method.cam_from_samples(acts, [s[i] for s in samples])  # type: ignore[attr-defined]
            elif product is not None:
                weights = self.method.hessian_weights(acts, grad, product)  # type: ignore[attr-defined]
                cam = (
                    eigen_smooth(weighted_terms(weights, acts))
                    if self.eigen_smooth
                    else weighted_sum(weights, acts)
                )
            elif self.eigen_smooth:
                cam = eigen_smooth(self.method.weighted(acts, grad))
            else:
                cam = self.method.cam(acts, grad)
            if tuple(cam.shape) != (acts.shape[0], *acts.shape[2:]):
                raise MethodError(
                    f"method {self.method!r} returned maps of shape {tuple(cam.shape)}; expected "
                    f"{(acts.shape[0], *acts.shape[2:])}"
                )
            cams.append(cam)
        fuse = getattr(self.method, "fuse_layers", None)
        return cams if fuse is None else [fuse(cams)]

    def _noisy_gradients(self, x: Any, probe: Probe, target: Target) -> list[list[Any]] | None:
        """For a method that reads noisy copies of the input, their gradients per layer.

        Each copy explains the units the input's own pass resolved (a top-k is not re-ranked).
        Copies are stacked into batches of up to the method's ``batch_size`` (``None``: as many
        as the memory budget allows) where the target can be repeated row by row (class and
        output targets) and the model takes one input; otherwise one copy per pass. Copy ``m``
        gets the same noise either way, so the maps do not depend on the batching.
        """
        method = self.method
        if not getattr(method, "noise_samples", False):
            return None
        assert self._layers is not None
        backend = self._backend
        fixed = _fixed(target, probe)
        host = np.asarray(backend.to_numpy(image_of(x)))
        n = host.shape[0]
        chw = (host.shape[3], *host.shape[1:3]) if backend.channels_last else host.shape[1:]
        scale = method.noise_scale(host) if hasattr(method, "noise_scale") else 1.0
        samples: int = method.samples  # type: ignore[attr-defined]
        per_pass = 1
        if not isinstance(x, Inputs) and _repeatable(fixed):
            chosen = getattr(method, "batch_size", None)
            per_pass = chosen or max(1, auto_batch_size(GRADIENT_FACTOR * host[0].nbytes) // n)
        out: list[list[Any]] = []
        for start in range(0, samples, per_pass):
            copies = range(start, min(samples, start + per_pass))
            noisy = []
            for sample in copies:
                noise = method.noise(chw, sample)  # type: ignore[attr-defined]
                if backend.channels_last:
                    noise = noise.transpose(1, 2, 0)
                noisy.append((host + scale * noise[None]).astype(host.dtype, copy=False))
            stacked = noisy[0] if len(noisy) == 1 else np.concatenate(noisy)
            grads = backend.probe(
                backend.prepare(with_image(x, stacked)),
                self._layers,
                _repeated(fixed, len(noisy)),
                gradients=True,
                guided=self._guided,
            ).gradients
            assert grads is not None
            rows = grads[0].shape[0] // len(noisy)
            out.extend([g[i * rows : (i + 1) * rows] for g in grads] for i in range(len(noisy)))
        return out

    def _mask_gradient(
        self, x: Any, probe: Probe, target: Target
    ) -> Callable[[np.ndarray], np.ndarray]:
        """For a method that optimises a mask (Opti-CAM): the gradient of each row's score at
        its image times a mask, with respect to the mask, ``(M, H, W)``.

        Row ``r`` is image ``r // T`` explaining the unit the input's own pass resolved for it
        (a top-k is not re-ranked); a function target (one row per image) is used as it is.
        """
        backend = self._backend
        host = np.asarray(backend.to_numpy(image_of(x)))
        units = probe.resolved.units
        t = units.shape[1]
        if t == 1:
            fixed = _fixed(target, probe)
        elif (units < 0).any():
            raise BadTargetError(
                f"{self.method.name} optimises one mask per target: give one target per image "
                "(a function target returns (N,) scores), or units (camlens.TopK, a class list)"
            )
        else:
            fixed = Class(units.reshape(-1).tolist())
        rows = np.repeat(host, t, axis=0)
        first = np.moveaxis(rows, -1, 1) if backend.channels_last else rows
        # Of several inputs, the others' rows beside each image's repeated rows (on the host,
        # values and dtypes unchanged; prepared again with the masked image).
        beside = (
            x.others(lambda v: np.repeat(backend.to_numpy(v), t, axis=0))
            if isinstance(x, Inputs) and t > 1
            else x
        )

        def gradient(masks: np.ndarray) -> np.ndarray:
            shaped = masks[..., None] if backend.channels_last else masks[:, None]
            masked = backend.prepare(
                with_image(beside, (rows * shaped).astype(host.dtype, copy=False))
            )
            grads = backend.probe(masked, (INPUT,), fixed, gradients=True).gradients
            assert grads is not None
            g = np.asarray(backend.to_numpy(grads[0]), dtype=np.float64)
            summed: np.ndarray = (g * first).sum(axis=1)
            return summed

        return gradient

    def _guided_product(
        self, x: Any, target: Target, probe: Probe, maps: np.ndarray, region: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Guided Grad-CAM: the finished maps times a guided input gradient of the same units.

        Returns the product normalised again (over the rows' ``region``), and the product
        itself as ``raw``.
        """
        backend = self._backend
        fixed = _fixed(target, probe)
        guided = backend.probe(x, (INPUT,), fixed, gradients=True, guided=True)
        assert guided.gradients is not None
        product = backend.to_numpy(
            self.method.combine(maps, backend.to_numpy(guided.gradients[0]))  # type: ignore[attr-defined]
        ).astype(np.float32)
        scaled, _ = normalise(product, signed=not self.relu, mode=self.normalize, region=region)
        return np.asarray(scaled, dtype=np.float32), product

    def _contrast_probe(self, x: Any, target: Target, method: methods.FinerCAM) -> Probe:
        """Probe for a method that explains a combination of units (Finer-CAM).

        A first pass (no gradients) reads the outputs that pick the compared units; the second
        takes the gradients of all of them in one pass, combined per row with the method's
        coefficients. The result reads as one probe of the combined scores.
        """
        if not isinstance(target, (Class, TopK)):
            raise BadTargetError(
                f"{method.name} compares classes: give a class index or camlens.TopK(k), not "
                f"{target.describe()!r}"
            )
        assert self._layers is not None
        first = self._backend.probe(x, self._layers, target, gradients=False)
        units, coefficients, scores = method.contrast(first.outputs, first.resolved.units)
        n, t, j = units.shape
        probe = self._backend.probe(
            x, self._layers, Class(units.reshape(n, t * j).tolist()), gradients=True
        )
        assert probe.gradients is not None
        flat = coefficients.reshape(n * t, j)
        return Probe(
            activations=[a[::j] for a in probe.activations],
            gradients=[method.combine(g, flat) for g in probe.gradients],
            resolved=Resolved(values=scores, units=units[:, :, 0], signs=np.ones((n, t))),
            outputs=probe.outputs,
        )

    def _run(
        self, inputs: Any, target: TargetLike, *, stacklevel: int, region: RegionLike = None
    ) -> Explanation:
        """Explain a batch; warnings point ``stacklevel`` frames up, at the caller's code.

        Calls on one model from several threads take turns (one lock per model).
        """
        with self._lock:
            return self._explain(inputs, target, stacklevel=stacklevel + 1, region=region)

    def _region(self, region: RegionLike, x: Any) -> np.ndarray | None:
        """Return ``region=`` as one bool ``(N, H, W)`` NumPy mask per image, or None."""
        if region is None:
            return None
        backend = self._backend
        count, size = int(image_of(x).shape[0]), backend.input_size(x)
        if isinstance(region, str):
            if region != AUTO_FOV:
                raise BadInputError(
                    f"region must be a bool mask, one per image or for all, or {AUTO_FOV!r}; "
                    f"got {region!r}"
                )
            host = np.asarray(backend.to_numpy(image_of(x)))
            return fov_masks(host, channels_last=backend.channels_last)
        return explain_region(to_host(region), count, size)

    def _explain(
        self, inputs: Any, target: TargetLike, *, stacklevel: int, region: RegionLike
    ) -> Explanation:
        backend = self._backend
        resolved_target = as_target(host_labels(target))
        x = backend.prepare(inputs)
        masks = self._region(region, x)
        if self._layers is None:
            self._layers = self._automatic_layers(x)
        probe, described = self._probe(x, resolved_target)
        cams = self._cams(x, probe, resolved_target, stacklevel=stacklevel)
        size = backend.input_size(x)
        t = probe.resolved.units.shape[1]
        rows = None if masks is None else np.repeat(masks, t, axis=0)
        maps_arr, raw_arr, _ = finish(
            cams,
            size,
            relu=self.relu,
            normalize=self.normalize,
            combination=self._combination,
            region=rows,
        )
        maps = backend.to_numpy(maps_arr).astype(np.float32, copy=False)
        raw = backend.to_numpy(raw_arr).astype(np.float32, copy=False)
        if self.aug_smooth:
            maps, raw, _ = self._augmented(x, resolved_target, probe, maps, raw, rows)
        if getattr(self.method, "guides_input", False):
            maps, raw = self._guided_product(x, resolved_target, probe, maps, rows)
        if not (np.isfinite(maps).all() and np.isfinite(raw).all()):
            raise UnsupportedModelError(
                f"the maps are not finite: the model produced NaN or infinite activations or "
                f"gradients at {self.layers}; check the model and its inputs"
            )
        res = probe.resolved
        n, t = res.units.shape
        exp = Explanation(
            maps=maps,
            raw=raw,
            scores=res.values.reshape(-1),
            image_index=np.repeat(np.arange(n, dtype=np.int64), t),
            units=res.units.reshape(-1),
            signs=res.signs.reshape(-1),
            target=described,
            target_kind=type(resolved_target).__name__,
            score_kind=backend.score_kind,
            layers=tuple(ref.name for ref in self._layers),
            method=getattr(self.method, "name", type(self.method).__name__),
            input_size=size,
            relu=self.relu,
            framework=backend.framework,
            version=__version__,
            outputs=probe.outputs,
            normalize=self.normalize,
            region=masks,
        )
        _warn_weak_maps(exp, stacklevel=stacklevel)
        return exp


def _reads_attention(method: object) -> bool:
    """Whether ``method`` reads attention maps (LeGrad, attention rollout)."""
    return bool(getattr(method, "reads_attention", False))


def _fixed(target: Target, probe: Probe) -> Target:
    """Return the target a further pass explains: the units the input's own pass resolved
    (a top-k is not re-ranked on an augmented, noisy or guided pass)."""
    return Class(probe.resolved.units.tolist()) if isinstance(target, TopK) else target


def _repeatable(target: Target) -> bool:
    """Whether ``target`` can be repeated for a batch of copies of the images (see
    :func:`_repeated`): a class or output target, whose units are fixed per row."""
    return isinstance(target, (Class, Output))


def _repeated(target: Target, copies: int) -> Target:
    """Return a class or output target for ``copies`` copies of the batch, stacked copy by copy
    (one unit for all images stays as it is; per-image units are repeated)."""
    if copies == 1 or not isinstance(target, Class) or np.ndim(target.index) == 0:
        return target
    index = np.asarray(target.index, dtype=np.int64)
    return Class(np.tile(index, (copies,) + (1,) * (index.ndim - 1)).tolist())


def _warn_weak_maps(exp: Explanation, *, stacklevel: int) -> None:
    """Warn about empty maps and, where min-max scaling hides it, near-flat ones."""
    status = exp.strength.status
    empty = np.flatnonzero(status == "empty").tolist()
    if empty:
        reason = (
            "empty: constant after ReLU, with no positive evidence for the target at this layer"
            if exp.relu
            else "all zeros"
        ) + ("" if exp.region is None else " in the region")
        warnings.warn(
            f"{len(empty)} map(s) (rows {_rows(empty)}) are {reason}, and were set to zeros; "
            "try another layer, another method or relu=False",
            MapStrengthWarning,
            stacklevel=stacklevel + 1,
        )
    flat = np.flatnonzero(status == "flat").tolist()
    if flat and exp.normalize == "minmax":
        warnings.warn(
            f"{len(flat)} map(s) (rows {_rows(flat)}) are near-flat (contrast below "
            f"{FLAT_CONTRAST}; a constant one was set to zeros): min-max scaling stretches "
            "them over the whole colour scale; pass normalize='max' to show their strength, "
            "and see exp.strength",
            MapStrengthWarning,
            stacklevel=stacklevel + 1,
        )


def _rows(rows: list[int]) -> str:
    return f"{rows[:10]}{'...' if len(rows) > 10 else ''}"


def explain(
    model: Any,
    inputs: Any,
    method: str | Method | type[Method] = "gradcam",
    layer: LayerLike = None,
    target: TargetLike = None,
    *,
    output: OutputSelector = None,
    input: InputSelector = None,
    relu: bool = True,
    logits: bool = True,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    normalize: Normalize = "minmax",
    layout: LayoutName | None = None,
    grid: tuple[int, int] | None = None,
    reshape: Callable[[Any], Any] | None = None,
    region: RegionLike = None,
    **options: Any,
) -> Explanation:
    """Explain ``inputs`` with one call: Grad-CAM at the last spatial layer, top-1 class.

    See :class:`Explainer` for the arguments, and :meth:`Explainer.__call__` for ``region``.
    To explain many batches with the same layer, build an explainer once
    (``camlens.GradCAM(model, layer)``) and call it.
    """
    explainer = Explainer(
        model,
        layer,
        method=method,
        output=output,
        input=input,
        relu=relu,
        logits=logits,
        eigen_smooth=eigen_smooth,
        aug_smooth=aug_smooth,
        normalize=normalize,
        layout=layout,
        grid=grid,
        reshape=reshape,
        **options,
    )
    return explainer._run(inputs, target, stacklevel=3, region=region)


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


class CAM(Explainer):
    """CAM explainer; the maths and options are :class:`camlens.methods.CAM`."""

    method_type = methods.CAM


class FEM(Explainer):
    """FEM explainer; the maths and options are :class:`camlens.methods.FEM`."""

    method_type = methods.FEM


class KPCACAM(Explainer):
    """KPCA-CAM explainer; the maths and options are :class:`camlens.methods.KPCACAM`."""

    method_type = methods.KPCACAM


class FinerCAM(Explainer):
    """Finer-CAM explainer; the maths and options are :class:`camlens.methods.FinerCAM`."""

    method_type = methods.FinerCAM


class ReciproCAM(Explainer):
    """Recipro-CAM explainer; the maths and options are :class:`camlens.methods.ReciproCAM`."""

    method_type = methods.ReciproCAM


class SmoothGradCAMPlusPlus(Explainer):
    """Smooth Grad-CAM++ explainer; the maths: :class:`camlens.methods.SmoothGradCAMPlusPlus`."""

    method_type = methods.SmoothGradCAMPlusPlus


class RefineCAM(Explainer):
    """RefineCAM explainer; the maths and options are :class:`camlens.methods.RefineCAM`."""

    method_type = methods.RefineCAM


class ScoreCAM(Explainer):
    """Score-CAM explainer; the maths and options are :class:`camlens.methods.ScoreCAM`."""

    method_type = methods.ScoreCAM


class SSCAM(Explainer):
    """SS-CAM explainer; the maths and options are :class:`camlens.methods.SSCAM`."""

    method_type = methods.SSCAM


class ISCAM(Explainer):
    """IS-CAM explainer; the maths and options are :class:`camlens.methods.ISCAM`."""

    method_type = methods.ISCAM


class Saliency(Explainer):
    """Saliency explainer (input gradients); the maths is :class:`camlens.methods.Saliency`."""

    method_type = methods.Saliency


class SmoothGrad(Explainer):
    """SmoothGrad explainer; the maths and options are :class:`camlens.methods.SmoothGrad`."""

    method_type = methods.SmoothGrad


class GuidedBackprop(Explainer):
    """Guided backpropagation explainer; the maths is :class:`camlens.methods.GuidedBackprop`."""

    method_type = methods.GuidedBackprop


class FullGrad(Explainer):
    """FullGrad explainer (input- and bias-gradients); the maths is
    :class:`camlens.methods.FullGrad`."""

    method_type = methods.FullGrad


class GuidedGradCAM(Explainer):
    """Guided Grad-CAM explainer; the maths is :class:`camlens.methods.GuidedGradCAM`."""

    method_type = methods.GuidedGradCAM


class AblationCAM(Explainer):
    """Ablation-CAM explainer; the maths and options are :class:`camlens.methods.AblationCAM`."""

    method_type = methods.AblationCAM


class PolyCAM(Explainer):
    """Poly-CAM explainer; the maths and options are :class:`camlens.methods.PolyCAM`."""

    method_type = methods.PolyCAM


class ShapleyCAM(Explainer):
    """ShapleyCAM explainer; the maths is :class:`camlens.methods.ShapleyCAM`."""

    method_type = methods.ShapleyCAM


class OptiCAM(Explainer):
    """Opti-CAM explainer; the maths and options are :class:`camlens.methods.OptiCAM`."""

    method_type = methods.OptiCAM


class LeGrad(Explainer):
    """LeGrad explainer; the maths is :class:`camlens.methods.LeGrad`. Its layers are attention
    layers (automatic: every block's)."""

    method_type = methods.LeGrad


class AttentionRollout(Explainer):
    """Attention rollout explainer; the maths and options are
    :class:`camlens.methods.AttentionRollout`. Its layers are attention layers (automatic:
    every block's)."""

    method_type = methods.AttentionRollout
