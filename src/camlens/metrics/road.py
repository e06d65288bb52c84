"""ROAD: RemOve And Debias, the array core (no framework, no model).

Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022 (https://arxiv.org/abs/2202.00449). ROAD removes a share of the
pixels, ranked by the saliency map, and fills them by *noisy linear imputation* so that the mask's
shape does not leak the class to the model; the model's score on the imputed image is then read
for several shares, removing the most (MoRF) or the least (LeRF) relevant pixels first.

This module holds only the arrays: the imputation, the removal masks and the combined score.
Running the model on imputed images belongs to a backend. It needs SciPy (sparse solver), imported
only when :func:`noisy_linear_impute` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from camlens.errors import BadInputError, DependencyError

__all__ = ["noisy_linear_impute", "road_combined", "road_masks"]

# (row offset, column offset, weight) of the 8 neighbours in the paper's linear imputation (and
# the authors' code): direct neighbours 1/6, diagonal ones 1/12, summing to 1.
_NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6),
    (1, 0, 1 / 6),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (-1, -1, 1 / 12),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (1, 1, 1 / 12),
)


def _sparse_lu() -> Any:
    """Return ``scipy.sparse.linalg.splu``, or raise a DependencyError saying how to install it."""
    try:
        from scipy.sparse.linalg import splu
    except ImportError as error:
        raise DependencyError(
            "ROAD's noisy linear imputation solves a sparse linear system and needs SciPy; "
            "pip install scipy"
        ) from error
    return splu


def _sparse_matrix(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> Any:
    """Return the ``(n, n)`` CSC matrix with ``values`` at ``(rows, cols)`` (duplicates summed)."""
    from scipy.sparse import coo_matrix

    return coo_matrix((values, (rows, cols)), shape=(n, n)).tocsc()


def _check_image_and_mask(image: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check a ``(C, H, W)`` float image and its ``(H, W)`` boolean mask; return them as arrays."""
    image = np.asarray(image)
    removed = np.asarray(removed)
    if image.ndim != 3 or 0 in image.shape:
        raise BadInputError(
            f"image must be a non-empty (C, H, W) array, got shape {image.shape}; "
            "move a channels-last image's last axis first"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise BadInputError(
            f"image must be a floating-point array, got dtype {image.dtype}; "
            "convert it (e.g. image.astype(np.float32) / 255) so the noise has a meaningful scale"
        )
    if removed.dtype != np.bool_ or removed.shape != image.shape[1:]:
        raise BadInputError(
            f"removed must be a boolean (H, W) = {image.shape[1:]} mask, got dtype "
            f"{removed.dtype} and shape {removed.shape}"
        )
    if not np.isfinite(image[:, ~removed]).all():
        raise BadInputError("image has NaN or infinite values in pixels that are not removed")
    return image, removed


def noisy_linear_impute(
    image: np.ndarray, removed: np.ndarray, *, noise: float = 0.01, seed: int | None = 0
) -> np.ndarray:
    """Fill the removed pixels by noisy linear imputation (Rong et al., ICML 2022, Sec. 4).

    Each removed pixel ``x_i`` equals the weighted mean of its 8 neighbours, direct ones weighted
    1/6 and diagonal ones 1/12; neighbours that are themselves removed are unknowns, so all removed
    pixels are solved together, exactly, as one sparse linear system (one factorisation shared by
    every channel)::

        x_i = sum_j w_ij x_j / sum_j w_ij        (j over the neighbours inside the image)

    Then independent Gaussian noise ``N(0, noise**2)`` is added to every imputed value (each pixel
    and channel), never to known pixels.

    At the image border the missing neighbours are dropped and the remaining weights renormalised
    to sum to 1, as in the authors' code. Inside the image the neighbourhood is symmetric, so a
    linear ramp is reproduced exactly; at the border it is lopsided and a ramp is not.

    Args:
        image: ``(C, H, W)`` floating-point image, left unmodified.
        removed: ``(H, W)`` boolean mask, True where a pixel is removed and must be imputed.
        noise: Standard deviation of the added noise, absolute, in the units of ``image`` (the
            authors pass ImageNet-normalised tensors and use 0.01, the default here); 0 for none.
        seed: Seed of the noise generator; None draws fresh entropy.

    Returns:
        A new ``(C, H, W)`` array of the image's dtype: known pixels copied unchanged, removed ones
        imputed.

    Raises:
        BadInputError: On wrong shapes or dtypes, a negative or non-finite ``noise``, non-finite
            known pixels, or a mask that removes every pixel (nothing to impute from).
        DependencyError: If SciPy is not installed.
    """
    image, removed = _check_image_and_mask(image, removed)
    if not np.isfinite(noise) or noise < 0:
        raise BadInputError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    out: np.ndarray = image.copy()
    if not removed.any():
        return out
    # On the 8-connected pixel grid, a group of removed pixels with no known pixel next to it can
    # only be the whole image: that is the one case where the system is singular.
    if removed.all():
        raise BadInputError(
            "the mask removes every pixel: linear imputation needs at least one known pixel"
        )
    splu = _sparse_lu()

    channels, height, width = image.shape
    rows, cols = np.nonzero(removed)
    n = rows.size
    unknown_id = np.full((height, width), -1, dtype=np.int64)
    unknown_id[rows, cols] = np.arange(n)
    values = image.astype(np.float64, copy=False)

    # Row i of the (symmetric, positive definite) system: s_i x_i - sum_{j removed} w_ij x_j
    # = sum_{j known} w_ij v_j, with s_i the weight of i's neighbours inside the image.
    diagonal = np.zeros(n)
    rhs = np.zeros((n, channels))
    off_rows, off_cols, off_weights = [], [], []
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = rows + dy, cols + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        equation = np.flatnonzero(inside)
        ny, nx = ny[inside], nx[inside]
        diagonal[equation] += weight
        neighbour = unknown_id[ny, nx]
        is_unknown = neighbour >= 0
        off_rows.append(equation[is_unknown])
        off_cols.append(neighbour[is_unknown])
        off_weights.append(np.full(int(is_unknown.sum()), -weight))
        known = ~is_unknown
        rhs[equation[known]] += weight * values[:, ny[known], nx[known]].T

    index = np.arange(n)
    matrix = _sparse_matrix(
        np.concatenate([diagonal, *off_weights]),
        np.concatenate([index, *off_rows]),
        np.concatenate([index, *off_cols]),
        n,
    )
    # The matrix is symmetric positive definite (diagonally dominant, strictly so in each group's
    # rows next to a known pixel): diagonal pivots are stable, and a symmetric ordering keeps the
    # fill-in of this 2-D Laplacian-like system small.
    lu = splu(
        matrix,
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    solution = lu.solve(rhs)  # (n, C)
    imputed = solution.T
    if noise > 0:
        imputed = imputed + noise * np.random.default_rng(seed).standard_normal((channels, n))
    out[:, rows, cols] = imputed
    return out


def road_masks(
    saliency: np.ndarray,
    percentiles: Sequence[float],
    *,
    most_relevant_first: bool,
    region: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Return the masks removing ``p`` % of the pixels, by saliency, for each ``p`` in turn.

    ROAD's MoRF order (``most_relevant_first=True``) removes the pixels of highest saliency first,
    LeRF the lowest (Rong et al., ICML 2022). Mask ``p`` removes the first ``k = round(p / 100 *
    n)`` pixels of that ranking (halves rounded up), ``n`` being the number of rankable pixels;
    equal saliencies are ranked by flat pixel index (row-major), lowest first, so the masks are
    deterministic and nested. On a small map an extreme share may round to no pixel or to every
    pixel (0.1 % or 99.9 % of 480); a mask removing the whole image cannot be imputed.

    Args:
        saliency: ``(H, W)`` real saliency map.
        percentiles: Shares of pixels to remove, each strictly between 0 and 100.
        most_relevant_first: True for MoRF, False for LeRF.
        region: Optional ``(H, W)`` boolean mask of the pixels that may be ranked and removed;
            pixels outside it are never removed and ``n`` counts only the region.

    Returns:
        One ``(H, W)`` boolean mask per percentile, in the given order, True where removed.

    Raises:
        BadInputError: On a map that is not 2-D and real, non-finite saliencies in the region, a
            region of the wrong shape or dtype or with no pixel, or a percentile outside (0, 100).
    """
    saliency = np.asarray(saliency)
    if saliency.ndim != 2 or 0 in saliency.shape:
        raise BadInputError(f"saliency must be a non-empty (H, W) map, got shape {saliency.shape}")
    if not (
        np.issubdtype(saliency.dtype, np.floating) or np.issubdtype(saliency.dtype, np.integer)
    ):
        raise BadInputError(f"saliency must hold real numbers, got dtype {saliency.dtype}")
    if region is None:
        region = np.ones(saliency.shape, dtype=bool)
    region = np.asarray(region)
    if region.dtype != np.bool_ or region.shape != saliency.shape:
        raise BadInputError(
            f"region must be a boolean (H, W) = {saliency.shape} mask, got dtype {region.dtype} "
            f"and shape {region.shape}"
        )
    shares = np.asarray(percentiles, dtype=np.float64)
    if shares.ndim != 1:
        raise BadInputError(f"percentiles must be a flat sequence of numbers, got {percentiles!r}")
    bad = shares[~((shares > 0) & (shares < 100))]  # NaN fails both comparisons
    if bad.size:
        raise BadInputError(
            f"percentiles must lie strictly between 0 and 100, got {bad.tolist()}; "
            "0 removes nothing and 100 leaves nothing to impute from"
        )

    candidates = np.flatnonzero(region)
    if candidates.size == 0:
        raise BadInputError("region selects no pixel: nothing can be ranked or removed")
    scores = saliency.reshape(-1)[candidates].astype(np.float64)
    if not np.isfinite(scores).all():
        raise BadInputError("saliency has NaN or infinite values inside the region")
    ranked = candidates[np.argsort(-scores if most_relevant_first else scores, kind="stable")]

    masks = []
    for share in shares:
        count = int(np.floor(share * candidates.size / 100 + 0.5))
        mask = np.zeros(saliency.size, dtype=bool)
        mask[ranked[:count]] = True
        masks.append(mask.reshape(saliency.shape))
    return masks


def road_combined(morf: np.ndarray, lerf: np.ndarray) -> float:
    """Return the combined ROAD score, ``mean_p(LeRF_p - MoRF_p) / 2``; higher is more faithful.

    ``morf[i]`` and ``lerf[i]`` are the model's scores for the target after removing the same
    share ``p_i`` of the pixels, most and least relevant first. A faithful map makes the score fall
    fast under MoRF and barely move under LeRF. The paper reports the two curves separately; this
    single number is pytorch-grad-cam's ``ROADCombined`` (which passes score changes relative to
    the unperturbed image: the baseline cancels, so raw scores give the same value).

    Args:
        morf: ``(P,)`` scores after MoRF removal, one per percentile.
        lerf: ``(P,)`` scores after LeRF removal, for the same percentiles in the same order.

    Returns:
        The mean over the ``P`` percentiles of ``(lerf - morf) / 2``.

    Raises:
        BadInputError: If the inputs are not non-empty 1-D arrays of one shape with finite values.
    """
    morf = np.asarray(morf, dtype=np.float64)
    lerf = np.asarray(lerf, dtype=np.float64)
    if morf.ndim != 1 or morf.size == 0 or morf.shape != lerf.shape:
        raise BadInputError(
            "morf and lerf must be non-empty 1-D arrays of the same length (one score per "
            f"percentile), got shapes {morf.shape} and {lerf.shape}"
        )
    if not (np.isfinite(morf).all() and np.isfinite(lerf).all()):
        raise BadInputError("morf and lerf must hold finite scores, got NaN or infinite values")
    return float(np.mean(lerf - morf) / 2)
