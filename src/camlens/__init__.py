"""camlens: where a convolutional network looks. Grad-CAM and the CAM family, for PyTorch.

>>> exp = camlens.explain(model, batch)          # Grad-CAM, last spatial layer, top-1 class
>>> exp.maps                                     # (N, H, W) float32 in [0, 1]
>>> exp.overlay(images)                          # PIL images
"""

from __future__ import annotations

from camlens._factorize import Factorization, factorize
from camlens._layers import LayerInfo, layers
from camlens._version import __version__
from camlens.cohort import CohortResult, assign_bins, cohort, load_folder, tta_stability
from camlens.errors import (
    BadInputError,
    BadTargetError,
    CamlensError,
    CamlensWarning,
    DependencyError,
    LayerError,
    LayerNotFoundError,
    MapStrengthWarning,
    MethodError,
    ModelLoadError,
    UnsupportedModelError,
)
from camlens.explainer import (
    CAM,
    FEM,
    ISCAM,
    KPCACAM,
    SSCAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    Explainer,
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    OptiCAM,
    PolyCAM,
    ReciproCAM,
    RefineCAM,
    Saliency,
    ScoreCAM,
    ShapleyCAM,
    SmoothGrad,
    SmoothGradCAMPlusPlus,
    XGradCAM,
    explain,
)
from camlens.explanation import Explanation, ImageExplanation
from camlens.region import auto_fov
from camlens.render import grid, overlay, save_grid, show
from camlens.render.cohort import cohort_grid
from camlens.targets import Class, Detection, Output, Score, Segmentation, Similarity, Target, TopK
from camlens.ui import serve

__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "SSCAM",
    "AblationCAM",
    "BadInputError",
    "BadTargetError",
    "CamlensError",
    "CamlensWarning",
    "Class",
    "CohortResult",
    "DependencyError",
    "Detection",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "Explanation",
    "Factorization",
    "FinerCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "ImageExplanation",
    "LayerCAM",
    "LayerError",
    "LayerInfo",
    "LayerNotFoundError",
    "MapStrengthWarning",
    "MethodError",
    "ModelLoadError",
    "OptiCAM",
    "Output",
    "PolyCAM",
    "ReciproCAM",
    "RefineCAM",
    "Saliency",
    "Score",
    "ScoreCAM",
    "Segmentation",
    "ShapleyCAM",
    "Similarity",
    "SmoothGrad",
    "SmoothGradCAMPlusPlus",
    "Target",
    "TopK",
    "UnsupportedModelError",
    "XGradCAM",
    "__version__",
    "assign_bins",
    "auto_fov",
    "cohort",
    "cohort_grid",
    "explain",
    "factorize",
    "grid",
    "layers",
    "load_folder",
    "overlay",
    "save_grid",
    "serve",
    "show",
    "tta_stability",
]
