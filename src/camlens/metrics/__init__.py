"""Metrics that measure whether a saliency map is faithful to the model, and where it points.

Every model-facing metric scores perturbed copies of the explained images through the same
backend as the explainers (PyTorch or Keras), in batches, and never modifies the inputs.
"""

from __future__ import annotations

from camlens.metrics.compare import Table, compare
from camlens.metrics.faithfulness import (
    ConfidenceResult,
    CurveResult,
    RoadResult,
    confidence,
    deletion,
    insertion,
    road,
)
from camlens.metrics.localisation import PointingResult, pointing_game
from camlens.metrics.sanity import SanityResult, sanity_check

__all__ = [
    "ConfidenceResult",
    "CurveResult",
    "PointingResult",
    "RoadResult",
    "SanityResult",
    "Table",
    "compare",
    "confidence",
    "deletion",
    "insertion",
    "pointing_game",
    "road",
    "sanity_check",
]
