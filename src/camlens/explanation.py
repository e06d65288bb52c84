"""The frozen result of one explanation call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from camlens._types import FloatArray, IntArray, Size
from camlens.errors import BadInputError
from camlens.postprocess import MapStatistics, map_statistics

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
        normalize: How ``maps`` were scaled: ``"minmax"``, ``"max"`` or ``"none"``.
        region: ``(N, H, W)`` bool, one mask per image at the input's resolution, True inside
            the region of interest (the explainer's ``region=``), or None for whole images.
            ``maps`` were scaled over each image's region and are 0 outside it; ``raw`` is
            whole; :attr:`strength` reads the region only; overlays grey out the outside.

    :attr:`strength` says, per row, how strong and how flat the raw map is (its range, its
    contrast, its share of positive evidence, and ``"ok"``, ``"flat"`` or ``"empty"``).
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
    normalize: str = field(default="minmax")
    region: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.region is not None:
            expected = (self._n_images, *self.maps.shape[1:])
            if self.region.dtype != np.bool_ or self.region.shape != expected:
                raise BadInputError(
                    f"an explanation's region must be bool {expected} (one mask per image at "
                    f"the maps' size); got {self.region.dtype} {self.region.shape}"
                )
        _freeze(
            self, ("maps", "raw", "scores", "image_index", "units", "signs", "outputs", "region")
        )

    @property
    def _row_region(self) -> np.ndarray | None:
        """Return the region of each row, ``(M, H, W)`` bool (a read-only view), or None."""
        if self.region is None:
            return None
        rows: np.ndarray = self.region[self.image_index]
        rows.setflags(write=False)
        return rows

    @cached_property
    def strength(self) -> MapStatistics:
        """Return each row's raw range, contrast, positive share and status (``(M,)`` arrays).

        See :func:`camlens.postprocess.map_statistics`: a ``"flat"`` row's contrast is below
        :data:`camlens.postprocess.FLAT_CONTRAST`, and min-max scaling shows it stretched over
        the whole colour scale; an ``"empty"`` row has no positive evidence.
        """
        return map_statistics(self.raw, relu=self.relu, region=self._row_region)

    def __repr__(self) -> str:
        """Return a one-line description: method, layers, target, sizes; no array values."""
        from camlens.render.notebook import summary

        return summary(self)

    def _repr_html_(self) -> str:
        """Return a compact grid of the maps with their units and scores, for notebooks."""
        from camlens.render.notebook import explanation_html

        return explanation_html(self)

    def __len__(self) -> int:
        """Return the number of rows ``M``."""
        return int(self.maps.shape[0])

    @property
    def targets_per_image(self) -> int:
        """Return ``T``, the number of rows per image."""
        return len(self) // self._n_images

    @property
    def _n_images(self) -> int:
        return int(self.image_index[-1]) + 1

    def image(self, index: int) -> ImageExplanation:
        """Return image ``index``'s part of the explanation: its ``T`` rows and its output.

        The arrays are read-only views of this explanation's, not copies.

        Raises:
            BadInputError: If ``index`` is not the position of an explained image.
        """
        n_images = self._n_images
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise BadInputError(f"the image index must be an integer; got {index!r}")
        if not 0 <= index < n_images:
            raise BadInputError(
                f"image {index} is not in an explanation of {n_images} image(s); pass 0 to "
                f"{n_images - 1}"
            )
        index = int(index)
        t = self.targets_per_image
        rows = slice(index * t, (index + 1) * t)
        return ImageExplanation(
            image_index=index,
            maps=self.maps[rows],
            raw=self.raw[rows],
            scores=self.scores[rows],
            units=self.units[rows],
            signs=self.signs[rows],
            output=None if self.outputs is None else self.outputs[index],
            target=self.target,
            target_kind=self.target_kind,
            score_kind=self.score_kind,
            layers=self.layers,
            method=self.method,
            input_size=self.input_size,
            relu=self.relu,
            framework=self.framework,
            version=self.version,
            normalize=self.normalize,
            region=None if self.region is None else self.region[index],
        )

    def overlay(
        self, images: Sequence[Any] | np.ndarray, *, cmap: str = "jet", alpha: float = 0.5
    ) -> list[Image.Image]:
        """Return one overlay per row: its image blended with its map.

        Outside the explanation's region, if it has one, the image is greyed out and has no
        heat colour (see :func:`camlens.overlay`).

        Args:
            images: The ``N`` images, in any layout and value range ``camlens.overlay`` accepts
                (uint8 photos, float tensors, CHW or HWC); maps are resized to each image.
            cmap: Any matplotlib colormap name.
            alpha: Weight of the heatmap in the blend.
        """
        from camlens.render import overlay

        n_images = self._n_images
        if len(images) != n_images:
            raise BadInputError(
                f"got {len(images)} images for an explanation of {n_images}; pass the same "
                "images, in the same order, as the explained batch"
            )
        return [
            overlay(
                images[int(i)],
                cam_map,
                cmap=cmap,
                alpha=alpha,
                region=None if self.region is None else self.region[int(i)],
            )
            for i, cam_map in zip(self.image_index, self.maps, strict=True)
        ]


@dataclass(frozen=True, eq=False)
class ImageExplanation:
    """One image's part of an :class:`Explanation` (:meth:`Explanation.image`): its ``T`` rows.

    Row ``t`` is the image's ``t``-th target (for a top-k target, its ``t``-th ranked unit).

    Attributes:
        image_index: The image's position in the explained batch.
        maps: ``(T, H, W)`` float32 maps at the input's resolution.
        raw: ``(T, h, w)`` float32 signed maps at the layer's resolution.
        scores: ``(T,)`` float64 value of each explained quantity, before any ``sign``.
        units: ``(T,)`` int64 output unit each row explains (``-1`` for a custom score).
        signs: ``(T,)`` float64, ``-1`` where the map explains what pushes the score down.
        output: ``(U,)`` float32 model output for the image (pre-softmax logits where
            ``score_kind`` says so), or None where the explanation has no outputs.
        target, target_kind, score_kind, layers, method, input_size, relu, framework, version,
        normalize: As the :class:`Explanation`'s.
        region: ``(H, W)`` bool, the image's region of interest, or None for the whole image.
    """

    image_index: int
    maps: FloatArray
    raw: FloatArray
    scores: np.ndarray
    units: IntArray
    signs: np.ndarray
    output: np.ndarray | None
    target: str
    target_kind: str
    score_kind: str
    layers: tuple[str, ...]
    method: str
    input_size: Size
    relu: bool
    framework: str
    version: str
    normalize: str = "minmax"
    region: np.ndarray | None = None

    def __post_init__(self) -> None:
        _freeze(self, ("maps", "raw", "scores", "units", "signs", "output", "region"))

    @cached_property
    def strength(self) -> MapStatistics:
        """Return each row's raw range, contrast, positive share and status (``(T,)`` arrays)."""
        rows = None
        if self.region is not None:
            rows = np.broadcast_to(self.region, (len(self), *self.region.shape))
        return map_statistics(self.raw, relu=self.relu, region=rows)

    def __len__(self) -> int:
        """Return the number of rows ``T``."""
        return int(self.maps.shape[0])

    def __repr__(self) -> str:
        """Return a one-line description; no array values."""
        h, w = self.maps.shape[1:]
        return (
            f"ImageExplanation(image {self.image_index}, method={self.method!r}, "
            f"layers={', '.join(self.layers)!r}, target={self.target!r}, {len(self)} row(s), "
            f"maps {h}x{w}, units {self.units.tolist()})"
        )


def _freeze(record: object, names: tuple[str, ...]) -> None:
    """Make the named array attributes of ``record`` read-only (None is left as it is)."""
    for name in names:
        value = getattr(record, name)
        if value is not None:
            value.setflags(write=False)
