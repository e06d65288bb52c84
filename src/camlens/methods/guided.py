"""Guided backpropagation and Guided Grad-CAM."""

from __future__ import annotations

from typing import ClassVar

from camlens._types import Array
from camlens.methods.gradcam import GradCAM
from camlens.methods.saliency import Saliency, gradient_magnitude


class GuidedBackprop(Saliency):
    """Guided backpropagation (Springenberg et al., 2015, arXiv:1412.6806).

    The input gradient with every ReLU's backward pass guided: at a ReLU ``y = max(x, 0)``,
    ``dL/dx = 1[x > 0] * max(dL/dy, 0)`` (only positive gradients pass back, only where the
    unit was active); the map is its magnitude over colour channels, ``max_c |G_c|``, at the
    input's resolution (``exp.layers`` is ``("input",)``).

    The guided ReLUs are ``torch.nn.ReLU``/``ReLU6`` modules on PyTorch (a
    ``torch.nn.functional.relu`` call is not guided: camlens cannot see it), and on Keras
    ``ReLU`` layers and layers whose activation is ``relu`` or ``relu6``; a model with none is
    refused. Hooks (PyTorch) and the traced guide (Keras) exist for the call only.

    Guided backpropagation fails the model-parameter randomisation test (Adebayo et al.,
    NeurIPS 2018, "Sanity Checks for Saliency Maps"): its maps stay nearly the same when the
    network's top layers are re-initialised, i.e. it reconstructs image edges more than it
    explains the model. ``camlens.metrics.sanity_check(model, x, method="guidedbackprop")``
    shows it; use it for pictures, not as evidence.
    """

    name = "guidedbackprop"
    #: The explainer asks the backend for a guided backward pass.
    guided: ClassVar[bool] = True


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

    The pointwise product of the upsampled Grad-CAM map ``L`` (the layer's, normalised) and
    guided backpropagation's input gradient ``G``: ``M = L * max_c |G_c|`` (the paper
    multiplies each colour channel; since ``L >= 0`` the magnitude over channels is the same),
    normalised again. Grad-CAM's gradients are the model's own (not guided), as in the paper;
    the guided pass explains the same units. ``raw`` is the product at the input's resolution.
    It inherits guided backpropagation's failure of the randomisation test in part (see
    :class:`GuidedBackprop`).
    """

    name = "guidedgradcam"
    #: The explainer multiplies the finished map by :meth:`combine` of a guided input gradient.
    guides_input: ClassVar[bool] = True

    def combine(self, maps: Array, input_gradients: Array) -> Array:
        """Return ``maps * max_c |G_c|``: ``(M, H, W)`` maps, ``(M, C, H, W)`` gradients."""
        return maps * gradient_magnitude(input_gradients)
