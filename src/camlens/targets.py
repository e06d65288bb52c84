"""Targets: what score a map explains. Declarative values; each backend resolves them.

A target is read from the model's output ``(N, ...)`` (flattened to ``(N, U)`` units) as ``T``
scores per image, differentiable when the output is. Unit targets (classes, raw outputs, top-k)
name output units and hold the rules that check and rank them; any other target computes its
scores from the output itself (:meth:`Target.scores`), with the output's own operations, so it
works eagerly (PyTorch) and inside a compiled Keras function alike. No framework is imported
here: the backends' ``targets`` modules do the picking.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from camlens._types import Array, IntArray
from camlens.errors import BadTargetError

__all__ = [
    "ArrayTarget",
    "Class",
    "Detection",
    "Output",
    "Score",
    "Segmentation",
    "Similarity",
    "Target",
    "TargetLike",
    "TopK",
    "UnitTarget",
    "as_target",
    "check_scores",
]


class Target(ABC):
    """Base class of targets.

    A target of your own subclasses this and implements :meth:`scores` and :meth:`describe`::

        class Margin(camlens.Target):
            def scores(self, output):            # (N, U) in, (N,) or (N, T) out
                return output[:, 3] - output[:, 5]

            def describe(self):
                return "class 3 minus class 5"

    ``scores`` receives the model output as the model's framework gives it (a torch tensor, or a
    Keras tensor inside a compiled function): use its operators, ``keras.ops`` or array-API
    functions, so the scores stay differentiable.
    """

    def scores(self, output: Array) -> Array:
        """Return ``(N,)`` or ``(N, T)`` scores computed from the model output ``(N, ...)``."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement scores(output), or subclass UnitTarget"
        )

    @abstractmethod
    def describe(self) -> str:
        """Return a short human-readable description, recorded in explanations."""


def check_scores(shape: tuple[int, ...], n: int) -> None:
    """Refuse a custom target's scores unless they are ``(N,)`` or ``(N, T)``."""
    if (len(shape) == 1 and shape[0] == n) or (len(shape) == 2 and shape[0] == n and shape[1]):
        return
    raise BadTargetError(
        f"the target function returned shape {shape}; it must return (N,) or (N, T) scores for "
        f"a batch of N={n}"
    )


class UnitTarget(Target):
    """A target that selects output units, one or several per image.

    Units are either fixed by the target and the output's shape (:meth:`fixed_units`), or
    ranked from the output's values (:class:`TopK`, which a backend may rank inside a compiled
    function). The explained score is ``sign * output[n, unit]``.
    """

    sign: int = 1

    @abstractmethod
    def fixed_units(self, n: int, n_units: int) -> IntArray | None:
        """Return the ``(N, T)`` units for a batch of ``n`` and ``n_units`` outputs, validated.

        ``None`` means the units depend on the output's values (see :meth:`ranked_units`).
        """

    def ranked_units(self, values: np.ndarray) -> IntArray:
        """Return the ``(N, T)`` units chosen from the ``(N, U)`` output values."""
        raise NotImplementedError(f"{type(self).__name__} has fixed units")


def _check_range(units: IntArray, n_units: int, what: str) -> None:
    bad = units[(units < 0) | (units >= n_units)]
    if bad.size:
        raise BadTargetError(
            f"{what} {int(bad[0])} is out of range: the model's output has {n_units} unit(s), "
            f"indices 0..{n_units - 1}"
        )


@dataclass(frozen=True)
class Class(UnitTarget):
    """Explain a class score: one index for all images, one per image, or several per image.

    Args:
        index: An int (every image), a sequence of N ints (one per image), or an ``(N, T)``
            nested sequence (T classes per image).
    """

    index: int | Sequence[int] | Sequence[Sequence[int]]

    def fixed_units(self, n: int, n_units: int) -> IntArray:
        """Return the class indices as ``(N, T)``."""
        units = np.asarray(self.index, dtype=np.int64)
        if units.ndim == 0:
            units = np.full((n, 1), int(units), dtype=np.int64)
        elif units.ndim == 1:
            if units.shape[0] != n:
                raise BadTargetError(
                    f"got {units.shape[0]} class indices for a batch of {n} images; give one "
                    "per image, or a single int for all"
                )
            units = units[:, None]
        elif units.ndim != 2 or units.shape[0] != n or units.shape[1] == 0:
            raise BadTargetError(
                f"class indices of shape {units.shape} do not fit a batch of {n} images; "
                "give an int, N ints, or an (N, T) nested list"
            )
        _check_range(units, n_units, "class")
        return units

    def describe(self) -> str:
        """Return e.g. ``class 281``."""
        return f"class {self.index}"


@dataclass(frozen=True)
class Output(UnitTarget):
    """Explain a raw output unit, e.g. a regressor's prediction (``preds[:, i]``).

    Args:
        index: The output unit (after flattening the non-batch axes).
        sign: ``+1`` explains what pushes the output up, ``-1`` what pushes it down.
    """

    index: int = 0
    sign: int = 1

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise BadTargetError(f"Output sign must be +1 or -1; got {self.sign!r}")
        if not isinstance(self.index, (int, np.integer)) or isinstance(self.index, bool):
            raise BadTargetError(f"Output index must be an int; got {self.index!r}")

    def fixed_units(self, n: int, n_units: int) -> IntArray:
        """Return the unit index for every image, ``(N, 1)``."""
        units = np.full((n, 1), int(self.index), dtype=np.int64)
        _check_range(units, n_units, "output")
        return units

    def describe(self) -> str:
        """Return e.g. ``output 0`` or ``output 0 (down)``."""
        return f"output {self.index}" + (" (down)" if self.sign == -1 else "")


@dataclass(frozen=True)
class TopK(UnitTarget):
    """Explain each image's ``k`` highest-scoring output units (``k=1``: the predicted class)."""

    k: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
            raise BadTargetError(f"TopK needs a positive int k; got {self.k!r}")

    def fixed_units(self, n: int, n_units: int) -> None:
        """Check that ``k`` fits the output; the units depend on its values."""
        if self.k > n_units:
            raise BadTargetError(f"top-{self.k} asked of an output with only {n_units} unit(s)")

    def ranked_units(self, values: np.ndarray) -> IntArray:
        """Return each image's top-k units in decreasing score order, ``(N, k)``.

        Ties go to the lower index; NaN scores rank last.
        """
        order = np.argsort(-values, axis=1, kind="stable")[:, : self.k]
        return order.astype(np.int64)

    def describe(self) -> str:
        """Return ``top-1 class`` or ``top-k classes``."""
        return "top-1 class" if self.k == 1 else f"top-{self.k} classes"


@dataclass(frozen=True)
class Score(Target):
    """Explain a score computed by a function of the model output.

    Args:
        fn: Maps the model output (in the model's array library, differentiable) to ``(N,)`` or
            ``(N, T)`` scores.
        name: How the target is described in explanations.
    """

    fn: Callable[[Any], Any]
    name: str = "custom score"

    def scores(self, output: Array) -> Array:
        """Return ``fn(output)``."""
        return self.fn(output)

    def describe(self) -> str:
        """Return the given name."""
        return self.name


class ArrayTarget(Target):
    """A target written once for every framework, on the output's array namespace.

    The backend calls :meth:`scores_in` with ``xp``: the array-API namespace of the output
    (PyTorch, NumPy for ONNX, JAX) or ``keras.ops`` inside a compiled Keras function. Only the
    functions both offer are used: ``sum``, ``sqrt``, ``argmax``, ``where``, and
    :func:`constant` for arrays the target holds.
    """

    def scores(self, output: Array) -> Array:
        """Return the scores on the output's own namespace (the backends call
        :meth:`scores_in`; this serves direct calls on NumPy arrays)."""
        return self.scores_in(output, np, channels_last=False)

    @abstractmethod
    def scores_in(self, output: Array, xp: Any, *, channels_last: bool) -> Array:
        """Return ``(N,)`` or ``(N, T)`` scores of ``output``; ``channels_last`` says where a
        dense output's class axis is (last under Keras, second elsewhere)."""


def constant(xp: Any, value: Any, like: Array) -> Array:
    """Return ``value`` as an array of ``xp`` with ``like``'s float dtype (and device)."""
    if hasattr(xp, "convert_to_tensor"):  # keras.ops
        return xp.convert_to_tensor(np.asarray(value), dtype=like.dtype)
    if xp is np:
        return np.asarray(value, dtype=like.dtype)
    return xp.asarray(np.asarray(value), dtype=like.dtype, device=getattr(like, "device", None))


@dataclass(frozen=True, eq=False)
class Segmentation(ArrayTarget):
    """Explain a segmentation class over a region: its logits summed over a mask.

    Seg-Grad-CAM (Vinogradova, Dibrov & Myers, AAAI 2020): the score is
    ``y = sum_{(i, j) in M} Y_c[i, j]`` for the class's logits map ``Y_c`` of a dense output
    ``(N, classes, h, w)`` (``(N, h, w, classes)`` under Keras) and a mask ``M``: by default the
    pixels predicted as ``c`` (``argmax`` over the classes), else a given boolean mask at the
    output's resolution, ``(h, w)`` for every image or ``(N, h, w)``. An image with no pixel in
    its mask has score 0 (and an empty map).

    Args:
        index: The class.
        mask: A boolean mask at the output's resolution, or ``None`` for the predicted mask.
    """

    index: int
    mask: Any = None

    def scores_in(self, output: Array, xp: Any, *, channels_last: bool) -> Array:
        """Return ``(N,)``: each image's class logits summed over its mask."""
        if len(output.shape) != 4:
            raise BadTargetError(
                f"Segmentation needs a dense output (N, classes, h, w); the model gives "
                f"{tuple(output.shape)}; for a classifier use a class target"
            )
        axis = 3 if channels_last else 1
        classes = int(output.shape[axis])
        if not 0 <= self.index < classes:
            raise BadTargetError(
                f"class {self.index} is out of range: the output has {classes} classes"
            )
        logits = output[..., self.index] if channels_last else output[:, self.index]
        size = tuple(int(d) for d in logits.shape[1:])
        if self.mask is None:
            inside = xp.argmax(output, axis=axis) == self.index
        else:
            mask = np.asarray(self.mask)
            if mask.dtype != bool or mask.shape not in (size, (int(output.shape[0]), *size)):
                raise BadTargetError(
                    f"the mask must be boolean, {size} or (N, *{size}) (the output's "
                    f"resolution); got {mask.dtype} {mask.shape}"
                )
            inside = constant(xp, np.broadcast_to(mask, logits.shape), logits) > 0.5
        zero = constant(xp, 0.0, logits)
        return xp.sum(xp.sum(xp.where(inside, logits, zero), axis=2), axis=1)

    def describe(self) -> str:
        """Return e.g. ``class 3 over its predicted mask``."""
        region = "its predicted mask" if self.mask is None else "the given mask"
        return f"class {self.index} over {region}"


@dataclass(frozen=True, eq=False)
class Similarity(ArrayTarget):
    """Explain the cosine similarity of the model's embedding to a given embedding.

    ``y = <f(x), e> / (|f(x)| |e|)`` for an embedding output ``(N, D)`` and a reference ``e``
    of shape ``(D,)`` (every image) or ``(N, D)``: a text embedding for a CLIP image encoder
    (what in the image matches the text), another image's embedding for a retrieval model.

    Args:
        embedding: The reference embedding(s), as a NumPy array or anything it converts.
        name: How the reference is described (e.g. the text).
    """

    embedding: Any
    name: str = "the given embedding"

    def scores_in(self, output: Array, xp: Any, *, channels_last: bool) -> Array:
        """Return ``(N,)`` cosine similarities."""
        ref = np.asarray(self.embedding, dtype=np.float64)
        n, dims = int(output.shape[0]), tuple(int(d) for d in output.shape[1:])
        if len(dims) != 1 or ref.shape not in ((dims[0],), (n, dims[0])):
            raise BadTargetError(
                f"Similarity needs an embedding output (N, D) and a reference (D,) or (N, D); "
                f"the model gives {tuple(output.shape)}, the reference is {ref.shape}"
            )
        norm = np.linalg.norm(ref, axis=-1, keepdims=True)
        if np.any(norm == 0) or not np.all(np.isfinite(ref)):
            raise BadTargetError("the reference embedding is zero or not finite")
        unit = constant(xp, np.broadcast_to(ref / norm, (n, dims[0])), output)
        dot = xp.sum(output * unit, axis=1)
        length = xp.sqrt(xp.sum(output * output, axis=1))
        return dot / xp.where(length > 0, length, constant(xp, 1.0, length))

    def describe(self) -> str:
        """Return e.g. ``cosine similarity to 'a photo of a cat'``."""
        return f"cosine similarity to {self.name}"


@dataclass(frozen=True)
class Detection(Target):
    """Explain one detection: the score of the detection that best matches a given box.

    For a detector's structured output (PyTorch; the backend reads it, see
    ``backends/torch/_targets.py``):

    - torchvision-style, a list of one dict per image with ``boxes`` ``(K, 4)`` (``x0, y0,
      x1, y1`` in pixels), ``scores`` ``(K,)`` and ``labels`` ``(K,)``: the score is
      ``scores[k]`` of the matched detection;
    - DETR-style (``transformers``), ``logits`` ``(N, Q, classes + 1)`` (the last is "no
      object") and ``pred_boxes`` ``(N, Q, 4)`` (``cx, cy, w, h`` relative to the image):
      the score is the matched query's softmax probability of its class, and ``box`` is given
      relative to the image too (``x0, y0, x1, y1`` in ``[0, 1]``).

    The matched detection is the one of highest IoU with ``box`` among those of ``label``
    (any class when ``None``; for DETR a query's class is its most probable real class), and
    it must reach ``iou``; an image without such a detection is an error that says its best IoU.

    Args:
        box: ``(x0, y0, x1, y1)``, the same for every image, in the output's coordinates.
        label: The class of the detection to explain, or ``None`` for any.
        iou: The least IoU a match needs.
    """

    box: tuple[float, float, float, float]
    label: int | None = None
    iou: float = 0.5

    def __post_init__(self) -> None:
        box = np.asarray(self.box, dtype=np.float64)
        if (
            box.shape != (4,)
            or not np.all(np.isfinite(box))
            or not (box[2] > box[0] and box[3] > box[1])
        ):
            raise BadTargetError(
                f"Detection box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0; got {self.box!r}"
            )
        if not 0 < self.iou <= 1:
            raise BadTargetError(f"Detection iou must be in (0, 1]; got {self.iou!r}")

    def scores(self, output: Array) -> Array:
        """Refuse: the PyTorch backend reads a detector's structured output itself."""
        raise BadTargetError(
            "Detection targets read PyTorch detectors' outputs (torchvision, transformers DETR) "
            "with gradient methods; elsewhere give a function of the output that returns the "
            "detection's score"
        )

    def match(self, boxes: np.ndarray, labels: np.ndarray, image: int) -> int:
        """Return the index of the detection that matches, among ``(K, 4)`` xyxy ``boxes``
        with their ``(K,)`` ``labels``."""
        ious = box_iou(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(self.box))
        if self.label is not None:
            ious = np.where(np.asarray(labels).reshape(-1) == self.label, ious, -1.0)
        if ious.size == 0 or ious.max() < self.iou:
            best = "no detection" if ious.size == 0 or ious.max() < 0 else f"{ious.max():.2f}"
            of = "" if self.label is None else f" of class {self.label}"
            raise BadTargetError(
                f"image {image} has no detection{of} with IoU >= {self.iou} to the box "
                f"{tuple(self.box)} (best: {best}); give a box the model detects, or a lower iou"
            )
        return int(ious.argmax())

    def describe(self) -> str:
        """Return e.g. ``detection of class 3 at (10, 10, 50, 60)``."""
        what = "detection" if self.label is None else f"detection of class {self.label}"
        return f"{what} at {tuple(self.box)}"


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Return the IoU of each ``(K, 4)`` xyxy box with one xyxy ``box``."""
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 2], box[2])
    y1 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas + (box[2] - box[0]) * (box[3] - box[1]) - inter
    result: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return result


TargetLike: TypeAlias = (
    "Target | int | Sequence[int] | Sequence[Sequence[int]] | Callable[[Any], Any] | None"
)


def _labels(target: Any) -> np.ndarray | None:
    """Return a label sequence or array as NumPy, or ``None`` for anything else (framework
    tensors reach here already on the host: see ``backends._common.host_labels``)."""
    if isinstance(target, str):
        return None
    if isinstance(target, (Sequence, np.ndarray)) or hasattr(target, "__array__"):
        return np.asarray(target)
    return None


def as_target(target: TargetLike) -> Target:
    """Normalise the public ``target=`` argument into a :class:`Target`.

    ``None`` is each image's top-1 class; an int or (nested) int sequence is :class:`Class`,
    and so is an integer label array or tensor (NumPy, torch, TensorFlow, JAX): ``for x, y in
    loader: cam(x, target=y)``; a callable is a :class:`Score`.
    """
    if target is None:
        return TopK(1)
    if isinstance(target, Target):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return Class(int(target))
    if callable(target):
        return Score(target, name=getattr(target, "__name__", "custom score"))
    labels = _labels(target)
    if labels is not None:
        if labels.size and np.issubdtype(labels.dtype, np.integer):
            return Class(int(labels) if labels.ndim == 0 else labels.tolist())
        if labels.size and np.issubdtype(labels.dtype, np.floating):
            raise BadTargetError(
                f"the target holds {labels.dtype} values, not class indices; give the labels "
                "as integers (e.g. y.long()), or for a regressor camlens.Output(i)"
            )
    raise BadTargetError(
        f"cannot use {target!r} as a target; give None (top-1 class), a class index, one index "
        "per image, camlens.Output(i), camlens.TopK(k), or a function of the model output"
    )
