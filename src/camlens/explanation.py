"""The frozen result of one explanation call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from camlens._types import FloatArray, IntArray, Size

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True, eq=False)
class Explanation:
    """Maps for a batch, one row per (image, target) pair, and what produced them.

    With ``N`` images and ``T`` targets per image there are ``M = N * T`` rows, image-major
    (row ``m`` belongs to image ``image_index[m] = m // T``). With the default single target,
    rows are images.

    Attributes:
        maps: ``(M, H, W)`` float32 at the input's resolution, in ``[0, 1]`` (``[-1, 1]`` when
            the explainer was built with ``relu=False``).
        raw: ``(M, h, w)`` float32 signed map at the layer's resolution, before ReLU and
            normalisation.
        scores: ``(M,)`` float64 value of the explained quantity (a class logit, a regressor's
            output, a custom score) as the model gave it, before any ``sign``.
        image_index: ``(M,)`` int64 image each row explains.
        units: ``(M,)`` int64 output unit each row explains (``-1`` for a custom score).
        signs: ``(M,)`` float64, ``-1`` where the map explains what pushes the score down.
        target: Description of the target, e.g. ``"top-1 class"`` or ``"output 0 (down)"``.
        target_kind: The target's type: ``"TopK"``, ``"Class"``, ``"Output"`` or ``"Score"``.
        score_kind: What the scores were read from: ``"model output"``, or for a Keras classifier
            ending in a softmax ``"pre-softmax logit"`` (the default) or
            ``"softmax probability"``.
        layers: Full names of the layers the maps come from.
        method: Name of the CAM method.
        input_size: ``(H, W)`` of the inputs.
        relu: Whether maps were rectified before normalisation.
        framework: The backend that ran the model.
        version: camlens version that produced the explanation.
        outputs: ``(N, U)`` float32 model output per image, flattened, that the scores were
            read from (pre-softmax logits where ``score_kind`` says so): the predictions, without
            another forward pass. ``softmax(outputs, axis=1)`` gives a classifier's
            probabilities.
    """

    maps: FloatArray
    raw: FloatArray
    scores: np.ndarray
    image_index: IntArray
    units: IntArray
    signs: np.ndarray
    target: str
    target_kind: str
    score_kind: str
    layers: tuple[str, ...]
    method: str
    input_size: Size
    relu: bool
    framework: str
    version: str = field(default="")
    outputs: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("maps", "raw", "scores", "image_index", "units", "signs", "outputs"):
            value = getattr(self, name)
            if value is not None:
                value.setflags(write=False)

    def __len__(self) -> int:
        """Return the number of rows ``M``."""
        return int(self.maps.shape[0])

    @property
    def targets_per_image(self) -> int:
        """Return ``T``, the number of rows per image."""
        n_images = int(self.image_index[-1]) + 1
        return len(self) // n_images

    def overlay(
        self, images: Sequence[Any] | np.ndarray, *, cmap: str = "jet", alpha: float = 0.5
    ) -> list[Image.Image]:
        """Return one overlay per row: its image blended with its map.

        Args:
            images: The ``N`` images, in any layout and value range ``camlens.overlay`` accepts
                (uint8 photos, float tensors, CHW or HWC); maps are resized to each image.
            cmap: Any matplotlib colormap name.
            alpha: Weight of the heatmap in the blend.
        """
        from camlens.render import overlay

        n_images = int(self.image_index[-1]) + 1
        if len(images) != n_images:
            from camlens.errors import BadInputError

            raise BadInputError(
                f"got {len(images)} images for an explanation of {n_images}; pass the same "
                "images, in the same order, as the explained batch"
            )
        return [
            overlay(images[int(i)], cam_map, cmap=cmap, alpha=alpha)
            for i, cam_map in zip(self.image_index, self.maps, strict=True)
        ]
