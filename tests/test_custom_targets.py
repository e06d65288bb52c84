"""A user's own Target subclasses, on PyTorch (the Keras twin: test_keras_custom_targets.py)."""

from __future__ import annotations

import numpy as np
import torch

import camlens
from nets import TrunkHead
from user_targets import LastUnit, Margin

X = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_a_score_target_is_linear_in_its_classes() -> None:
    """Grad-CAM's signed map is linear in the score: raw(y1 - y2) = raw(y1) - raw(y2)."""
    model = TrunkHead().eval()
    cam = camlens.GradCAM(model, "trunk.3", relu=False)
    margin = cam(X, target=Margin(1, 2))
    one, two = cam(X, target=1), cam(X, target=2)
    np.testing.assert_allclose(margin.raw, one.raw - two.raw, atol=1e-5)
    np.testing.assert_allclose(margin.scores, one.scores - two.scores, rtol=1e-5, atol=1e-6)
    assert margin.target == "class 1 minus class 2"
    np.testing.assert_array_equal(margin.units, [-1, -1, -1])


def test_a_unit_target_subclass_picks_its_units() -> None:
    model = TrunkHead().eval()
    for method in ("gradcam", "scorecam"):
        got = camlens.explain(model, X, method, "trunk.3", target=LastUnit())
        want = camlens.explain(model, X, method, "trunk.3", target=4)
        np.testing.assert_array_equal(got.units, [4, 4, 4])
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-6)
