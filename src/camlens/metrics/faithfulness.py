"""Faithfulness metrics: does removing what the map points at change the model's answer?

Every metric scores perturbed copies of the explained images through the model's backend, in
batches (the same batched scoring the perturbation methods use), and never modifies the
inputs. A ``region`` (e.g. a retinal photo's circular field of view) restricts which pixels
can be removed, revealed or credited: pixels outside it always keep their values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from camlens._checks import positive_int
from camlens.backends.base import ScoreMode
from camlens.errors import BadInputError
from camlens.explanation import Explanation
from camlens.methods.perturbation import Progress
from camlens.metrics._scorer import Scorer
from camlens.metrics.road import noisy_linear_impute, road_combined, road_masks

Baseline = Literal["zeros", "blur", "mean"] | np.ndarray


@dataclass(frozen=True, eq=False)
class CurveResult:
    """Deletion or insertion curves, one per explanation row.

    Attributes:
        fractions: ``(S + 1,)`` share of the region's pixels removed (deletion) or revealed.
        curves: ``(M, S + 1)`` the explained score at each step: a class probability, or for a
            regression output its value in its own units (negated for ``sign=-1`` targets).
        auc: ``(M,)`` area under each curve over ``fractions`` (trapezoid rule).
    """

    fractions: np.ndarray
    curves: np.ndarray
    auc: np.ndarray

    @property
    def change(self) -> np.ndarray:
        """Return each curve minus its first value: the score's change, in its own units."""
        return np.asarray(self.curves - self.curves[:, :1])


def _region(region: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    if region is None:
        return np.ones(size, dtype=bool)
    region = np.asarray(region, dtype=bool)
    if region.shape != size:
        raise BadInputError(f"region of shape {region.shape} does not fit images of {size}")
    if not region.any():
        raise BadInputError("the region is empty: no pixel could ever be removed or credited")
    return region


def _ranks(cam_map: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Return each pixel's rank by decreasing map value inside the region (outside: huge)."""
    order = np.argsort(-np.where(region, cam_map, -np.inf), axis=None, kind="stable")
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(order.size)
    ranks[~region.ravel()] = np.iinfo(np.int64).max
    return ranks.reshape(cam_map.shape)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, ((0, 0), (radius, radius), (radius, radius)), mode="reflect")
    rows = sum(t * padded[:, i : i + image.shape[1], :] for i, t in enumerate(taps))
    return np.asarray(sum(t * rows[:, :, i : i + image.shape[2]] for i, t in enumerate(taps)))


def _baseline(kind: Baseline, image: np.ndarray, row: int) -> np.ndarray:
    if isinstance(kind, np.ndarray):
        base = kind[row] if kind.ndim == 4 else kind
        if base.shape != image.shape:
            raise BadInputError(f"baseline of shape {kind.shape} does not fit {image.shape}")
        return base.astype(np.float32)
    if kind == "zeros":
        return np.zeros(image.shape, dtype=np.float32)
    if kind == "mean":
        return np.asarray(np.broadcast_to(image.mean(axis=(1, 2), keepdims=True), image.shape))
    if kind == "blur":
        return _gaussian_blur(image, sigma=max(image.shape[1:]) / 20).astype(np.float32)
    raise BadInputError(f"baseline must be 'zeros', 'blur', 'mean' or an array; got {kind!r}")


def _curves(
    model: Any,
    inputs: Any,
    explanation: Explanation,
    *,
    insertion: bool,
    steps: int,
    baseline: Baseline,
    region: np.ndarray | None,
    **options: Any,
) -> CurveResult:
    steps = positive_int(steps, "steps")
    scorer = Scorer(model, inputs, explanation, **options)
    size = tuple(explanation.maps.shape[1:])
    inside = _region(region, size)
    total = int(inside.sum())
    counts = np.round(np.linspace(0, total, steps + 1)).astype(np.int64)
    ranks = [_ranks(m, inside) for m in explanation.maps]
    bases = [_baseline(baseline, scorer.image(m), m) for m in range(len(explanation.maps))]

    def make(m: int, start: int, stop: int) -> np.ndarray:
        image, base = scorer.image(m), bases[m]
        chosen = ranks[m][None] < counts[start:stop, None, None]  # (B, H, W)
        keep_image = chosen if insertion else ~chosen
        return np.where(keep_image[:, None], image[None], base[None])

    curves = np.stack(scorer.scores(make, [steps + 1] * len(explanation.maps)))
    fractions = counts / total
    auc = ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)
    return CurveResult(fractions=fractions, curves=curves, auc=auc)


def deletion(
    model: Any,
    inputs: Any,
    explanation: Explanation,
    *,
    steps: int = 20,
    baseline: Baseline = "zeros",
    region: np.ndarray | None = None,
    score_mode: ScoreMode = "auto",
    batch_size: int | None = None,
    progress: Progress | None = None,
    **backend_options: Any,
) -> CurveResult:
    """Remove pixels most-salient first and record the score (Petsiuk et al., RISE, 2018).

    In ``steps`` equal steps, the region's pixels in decreasing map order are replaced by the
    ``baseline`` (zeros, a blurred copy, the channel means, or your own array). A faithful map
    makes the score fall fast: lower AUC is better.

    Args:
        model, inputs, explanation: The explained model, its inputs and their explanation.
        steps: Number of removal steps (``steps + 1`` points with the intact image).
        baseline: What removed pixels become.
        region: ``(H, W)`` bool; pixels outside are never removed.
        score_mode: ``"auto"`` (class probability, or a regression output's value), or forced.
        batch_size: Perturbed inputs per forward pass (default: the memory budget's).
        progress: Called as ``progress(done, total)`` as the perturbed inputs are scored.
        **backend_options: ``output=`` / ``logits=`` as given to the explainer.
    """
    return _curves(
        model,
        inputs,
        explanation,
        insertion=False,
        steps=steps,
        baseline=baseline,
        region=region,
        score_mode=score_mode,
        batch_size=batch_size,
        progress=progress,
        **backend_options,
    )


def insertion(
    model: Any,
    inputs: Any,
    explanation: Explanation,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    region: np.ndarray | None = None,
    score_mode: ScoreMode = "auto",
    batch_size: int | None = None,
    progress: Progress | None = None,
    **backend_options: Any,
) -> CurveResult:
    """Reveal pixels most-salient first on a baseline and record the score (RISE, 2018).

    Starts from the ``baseline`` (a blurred copy by default, as in the paper) inside the region
    and restores the image's pixels in decreasing map order. Higher AUC is better. Arguments as
    :func:`deletion`.
    """
    return _curves(
        model,
        inputs,
        explanation,
        insertion=True,
        steps=steps,
        baseline=baseline,
        region=region,
        score_mode=score_mode,
        batch_size=batch_size,
        progress=progress,
        **backend_options,
    )


@dataclass(frozen=True, eq=False)
class ConfidenceResult:
    """Scores of the images masked by their maps (Chattopadhay et al., Grad-CAM++, 2018).

    Attributes:
        original: ``(M,)`` the explained score on each image.
        masked: ``(M,)`` the score on the image multiplied by its map.
    """

    original: np.ndarray
    masked: np.ndarray

    @property
    def drop(self) -> np.ndarray:
        """Return ``max(0, Y - O) / Y`` per row (classifier scores; 0 where ``Y <= 0``)."""
        y, o = self.original, self.masked
        return np.where(y > 0, np.maximum(0.0, y - o) / np.where(y > 0, y, 1.0), 0.0)

    @property
    def average_drop(self) -> float:
        """Return the Average Drop, in percent (lower is better)."""
        return float(100 * self.drop.mean())

    @property
    def increase_in_confidence(self) -> float:
        """Return the share of rows whose score rose, in percent (higher is better)."""
        return float(100 * (self.masked > self.original).mean())

    @property
    def change(self) -> np.ndarray:
        """Return ``O - Y`` per row: for a regression output, the change in its own units."""
        return np.asarray(self.masked - self.original)


def confidence(
    model: Any,
    inputs: Any,
    explanation: Explanation,
    *,
    region: np.ndarray | None = None,
    score_mode: ScoreMode = "auto",
    batch_size: int | None = None,
    progress: Progress | None = None,
    **backend_options: Any,
) -> ConfidenceResult:
    """Score each image and the image multiplied by its map (Average Drop, Increase in Conf.).

    Pixels outside ``region`` keep their values. Win% compares methods:
    :func:`camlens.metrics.compare` reports it.
    """
    scorer = Scorer(
        model,
        inputs,
        explanation,
        score_mode=score_mode,
        batch_size=batch_size,
        progress=progress,
        **backend_options,
    )
    inside = _region(region, tuple(explanation.maps.shape[1:]))

    def make(m: int, start: int, stop: int) -> np.ndarray:
        image = scorer.image(m)
        weight = np.where(inside, explanation.maps[m], 1.0).astype(np.float32)
        both = np.stack([image, image * weight[None]])
        return both[start:stop]

    pairs = np.stack(scorer.scores(make, [2] * len(explanation.maps)))
    return ConfidenceResult(original=pairs[:, 0], masked=pairs[:, 1])


def _check_percentiles(percentiles: Sequence[float]) -> np.ndarray:
    values = np.asarray(percentiles, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or ((values <= 0) | (values >= 100)).any():
        raise BadInputError(
            f"percentiles must be a non-empty list of values strictly between 0 and 100; got "
            f"{list(percentiles)}"
        )
    return values


@dataclass(frozen=True, eq=False)
class RoadResult:
    """ROAD scores (Rong et al., ICML 2022): removal by noisy linear imputation.

    Attributes:
        percentiles: ``(P,)`` shares of the region's pixels removed, in percent.
        original: ``(M,)`` the score on the intact image.
        morf: ``(M, P)`` scores with the most relevant pixels removed first.
        lerf: ``(M, P)`` scores with the least relevant pixels removed first.
    """

    percentiles: np.ndarray
    original: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray

    @property
    def change(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(morf - original, lerf - original)``: for a regressor, in its own units."""
        base = self.original[:, None]
        return np.asarray(self.morf - base), np.asarray(self.lerf - base)

    @property
    def combined(self) -> np.ndarray:
        """Return each row's ``mean_p(LeRF_p - MoRF_p) / 2`` (higher is more faithful)."""
        pairs = zip(self.morf, self.lerf, strict=True)
        return np.array([road_combined(morf, lerf) for morf, lerf in pairs])


def road(
    model: Any,
    inputs: Any,
    explanation: Explanation,
    *,
    percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    noise: float = 0.01,
    seed: int = 0,
    region: np.ndarray | None = None,
    score_mode: ScoreMode = "auto",
    batch_size: int | None = None,
    progress: Progress | None = None,
    **backend_options: Any,
) -> RoadResult:
    """Remove pixels by noisy linear imputation, most and least relevant first (ROAD).

    Removed pixels are imputed from their neighbours (a sparse linear system, see
    :func:`camlens.metrics.road.noisy_linear_impute`), which leaks far less of the removal's
    shape to the model than a constant baseline. Imputed images are built batch by batch.

    Args:
        percentiles: Shares of the region's pixels to remove, each strictly in (0, 100).
        noise: Standard deviation of the noise added to imputed values.
        seed: Seed of that noise.
        region, score_mode, batch_size, progress, **backend_options: As :func:`deletion`.
    """
    values = _check_percentiles(percentiles)
    scorer = Scorer(
        model,
        inputs,
        explanation,
        score_mode=score_mode,
        batch_size=batch_size,
        progress=progress,
        **backend_options,
    )
    size = tuple(explanation.maps.shape[1:])
    inside = _region(region, size)
    p = len(values)
    plans = [
        road_masks(m, values.tolist(), most_relevant_first=True, region=inside)
        + road_masks(m, values.tolist(), most_relevant_first=False, region=inside)
        for m in explanation.maps
    ]

    def make(m: int, start: int, stop: int) -> np.ndarray:
        # Item 0 is the intact image; then MoRF and LeRF removals, one per percentile.
        image = scorer.image(m)
        return np.stack(
            [
                image
                if i == 0
                else noisy_linear_impute(image, plans[m][i - 1], noise=noise, seed=seed + i - 1)
                for i in range(start, stop)
            ]
        ).astype(np.float32)

    scores = np.stack(scorer.scores(make, [1 + 2 * p] * len(explanation.maps)))
    return RoadResult(
        percentiles=values,
        original=scores[:, 0],
        morf=scores[:, 1 : 1 + p],
        lerf=scores[:, 1 + p :],
    )
