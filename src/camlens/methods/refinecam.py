"""RefineCAM: the product of a method's maps at several layers."""

from __future__ import annotations

from typing import ClassVar

from camlens._types import Array
from camlens.errors import MethodError
from camlens.methods.base import Method
from camlens.methods.gradcam_plusplus import GradCAMPlusPlus
from camlens.methods.perturbation import PerturbationMethod


class RefineCAM(Method):
    """RefineCAM (arXiv:2605.14641), as pytorch-grad-cam implements it: a multi-layer method.

    The base method's map (Grad-CAM++ by default) at each of several layers, rectified,
    upsampled and min-max scaled, are multiplied: ``L = s(prod_l s(Up(ReLU(L_l))))``, so a
    location stays only where every layer agrees; a deep layer's coarse map cleans a shallow
    layer's noisy one. Give it several layers (``layer=["layer2", "layer4"]``); with one layer
    it is the base method. ``raw`` is the product of each layer's raw map divided by its largest
    magnitude, at the finest layer's resolution.

    Args:
        base: The method at each layer (a :class:`Method` class or object, or a registry
            name); not a perturbation method.
    """

    name = "refinecam"
    layer_combination: ClassVar[str] = "product"
    #: Options that name a method and may be given by registry name.
    method_options: ClassVar[tuple[str, ...]] = ("base",)

    def __init__(self, *, base: Method | type[Method] = GradCAMPlusPlus) -> None:
        """Validate and keep the base method."""
        method = base() if isinstance(base, type) else base
        if not isinstance(method, Method) or isinstance(method, (PerturbationMethod, RefineCAM)):
            raise MethodError(
                f"RefineCAM's base must be a method that reads the probe (Grad-CAM++, LayerCAM, "
                f"...), not a perturbation method; got {base!r}"
            )
        self.base = method

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return the base method's weights."""
        return self.base.weights(activations, gradients)

    def weighted(self, activations: Array, gradients: Array) -> Array:
        """Return the base method's weighted activations."""
        return self.base.weighted(activations, gradients)

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return the base method's map at one layer."""
        return self.base.cam(activations, gradients)

    def __repr__(self) -> str:
        return f"RefineCAM(base={self.base!r})"
