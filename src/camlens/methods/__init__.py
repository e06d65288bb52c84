"""CAM methods: one small file each, pure array maths, and a read-only registry by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from camlens.errors import MethodError
from camlens.methods.ablationcam import AblationCAM
from camlens.methods.attention import AttentionMethod
from camlens.methods.base import Method
from camlens.methods.cam import CAM
from camlens.methods.eigencam import EigenCAM
from camlens.methods.eigengradcam import EigenGradCAM
from camlens.methods.fem import FEM
from camlens.methods.finercam import FinerCAM
from camlens.methods.gradcam import GradCAM
from camlens.methods.gradcam_elementwise import GradCAMElementWise
from camlens.methods.gradcam_plusplus import GradCAMPlusPlus
from camlens.methods.guided import GuidedBackprop, GuidedGradCAM
from camlens.methods.hirescam import HiResCAM
from camlens.methods.iscam import ISCAM
from camlens.methods.kpcacam import KPCACAM
from camlens.methods.layercam import LayerCAM
from camlens.methods.legrad import LeGrad
from camlens.methods.opticam import OptiCAM
from camlens.methods.perturbation import PerturbationMethod
from camlens.methods.polycam import PolyCAM
from camlens.methods.reciprocam import ReciproCAM
from camlens.methods.refinecam import RefineCAM
from camlens.methods.rollout import AttentionRollout
from camlens.methods.saliency import Saliency, SmoothGrad
from camlens.methods.scorecam import ScoreCAM
from camlens.methods.shapleycam import ShapleyCAM
from camlens.methods.smoothgradcampp import SmoothGradCAMPlusPlus
from camlens.methods.sscam import SSCAM
from camlens.methods.xgradcam import XGradCAM

__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "REGISTRY",
    "SSCAM",
    "AblationCAM",
    "AttentionMethod",
    "AttentionRollout",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "Method",
    "OptiCAM",
    "PerturbationMethod",
    "PolyCAM",
    "ReciproCAM",
    "RefineCAM",
    "Saliency",
    "ScoreCAM",
    "ShapleyCAM",
    "SmoothGrad",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "get_method",
]

_METHODS: tuple[type[Method], ...] = (
    GradCAM,
    GradCAMPlusPlus,
    XGradCAM,
    HiResCAM,
    GradCAMElementWise,
    LayerCAM,
    EigenCAM,
    EigenGradCAM,
    CAM,
    FEM,
    KPCACAM,
    FinerCAM,
    ShapleyCAM,
    SmoothGradCAMPlusPlus,
    RefineCAM,
    OptiCAM,
    ScoreCAM,
    SSCAM,
    ISCAM,
    AblationCAM,
    ReciproCAM,
    PolyCAM,
    GuidedGradCAM,
    Saliency,
    SmoothGrad,
    GuidedBackprop,
    LeGrad,
    AttentionRollout,
)

#: Method classes by registry key (lower case), plus a few aliases.
REGISTRY: Mapping[str, type[Method]] = MappingProxyType(
    {
        **{cls.name: cls for cls in _METHODS},
        "gradcampp": GradCAMPlusPlus,
        "gradcamplusplus": GradCAMPlusPlus,
        "smoothgradcampp": SmoothGradCAMPlusPlus,
        "gradcamelementwise": GradCAMElementWise,
        "score-cam": ScoreCAM,
        "ablation-cam": AblationCAM,
        "rollout": AttentionRollout,
    }
)


def get_method(method: str | Method | type[Method], **options: Any) -> Method:
    """Return a method instance from a registry name, a method class or a method object.

    ``options`` are the hyper-parameters of a method given by name or class. Any object with
    the :class:`Method` interface works without registering.
    """
    if isinstance(method, str):
        key = method.strip().lower().replace("_", "-")
        cls = REGISTRY.get(key) or REGISTRY.get(key.replace("-", ""))
        if cls is None:
            raise MethodError(
                f"unknown method {method!r}; choose one of: {', '.join(sorted(REGISTRY))}, "
                "or pass a Method object"
            )
        return _build(cls, options)
    if isinstance(method, type):
        return _build(method, options)
    if options:
        raise MethodError(
            f"options {sorted(options)} go to the method's constructor; {method!r} is already "
            "built: pass them when you create it"
        )
    if callable(getattr(method, "cam", None)):
        return method
    raise MethodError(
        f"method must be a name, a Method class or a Method object; got {type(method).__name__}"
    )


def _build(cls: type[Method], options: dict[str, Any]) -> Method:
    """Instantiate a method class, turning an unknown option into a clear error.

    Options that name a method (a class's ``method_options``, e.g. Finer-CAM's ``base``) may be
    registry names.
    """
    for key in getattr(cls, "method_options", ()):
        if isinstance(options.get(key), str):
            options = {**options, key: get_method(options[key])}
    try:
        return cls(**options)
    except TypeError as exc:
        raise MethodError(
            f"{cls.__name__} does not take the option(s) {sorted(options)} ({exc}); see its "
            "docstring for its hyper-parameters"
        ) from exc
