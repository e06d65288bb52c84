"""ROAD's array core: noisy linear imputation, removal masks, combined score."""

from __future__ import annotations

import itertools
import math
import sys
import time

import numpy as np
import pytest

from camlens.errors import BadInputError, CamlensError
from camlens.metrics.road import noisy_linear_impute, road_combined, road_masks

H, W = 20, 24
WEIGHTS = {
    (dy, dx): (1 / 6 if dy == 0 or dx == 0 else 1 / 12) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
}
del WEIGHTS[(0, 0)]


def _ramp(height: int = H, width: int = W) -> np.ndarray:
    """A 3-channel image, each channel linear in (y, x): 0.3 y + 0.7 x + 1 and two others."""
    y, x = np.mgrid[:height, :width].astype(np.float64)
    return np.stack([0.3 * y + 0.7 * x + 1, -1.2 * y + 0.1 * x, 2.0 * x - 5.0])


def _interior(mask: np.ndarray) -> np.ndarray:
    assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    return mask


def _regions() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    rect = np.zeros((H, W), bool)
    rect[3:15, 4:20] = True
    ell = np.zeros((H, W), bool)
    ell[2:18, 2:6] = True
    ell[14:18, 2:21] = True
    ring = rect.copy()
    ring[6:12, 8:16] = False
    diagonal = np.zeros((H, W), bool)
    idx = np.arange(1, H - 1)
    diagonal[idx, idx] = True
    two_blobs = np.zeros((H, W), bool)
    two_blobs[1:5, 1:5] = True
    two_blobs[10:19, 12:23] = True
    scattered = np.zeros((H, W), bool)
    scattered[1:-1, 1:-1] = rng.random((H - 2, W - 2)) < 0.6
    single = np.zeros((H, W), bool)
    single[7, 9] = True
    all_interior = np.zeros((H, W), bool)
    all_interior[1:-1, 1:-1] = True  # only the border ring is known
    return {
        "rect": rect,
        "ell": ell,
        "ring": ring,
        "diagonal": diagonal,
        "two_blobs": two_blobs,
        "scattered": scattered,
        "single": single,
        "all_interior": all_interior,
    }


@pytest.mark.parametrize("name", list(_regions()))
def test_linear_ramp_is_reproduced_exactly_inside(name: str) -> None:
    # Inside the image every removed pixel has its full, symmetric neighbourhood, whose weighted
    # mean of a linear function is the centre value: the ramp solves the system exactly.
    removed = _interior(_regions()[name])
    image = _ramp()
    damaged = image.copy()
    damaged[:, removed] = 1e6  # the removed values must not be read
    out = noisy_linear_impute(damaged, removed, noise=0.0)
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    "removed",
    [
        np.s_[0:5, 0:5],  # a corner
        np.s_[:, 10:14],  # a band from top to bottom
        np.s_[H - 1, :],  # the whole last row
        np.s_[3:, 15:],  # a block in the bottom-right corner
    ],
)
def test_border_regions_stay_within_the_known_range(removed: tuple[slice, ...]) -> None:
    # At the border the missing neighbours' weights are renormalised: the neighbourhood is
    # lopsided, so a ramp is no longer exact, but each value is still a convex combination of
    # its neighbours, so the imputed values stay inside the known values' range.
    mask = np.zeros((H, W), bool)
    mask[removed] = True
    image = _ramp()
    out = noisy_linear_impute(image, mask, noise=0.0)
    assert np.isfinite(out).all()
    known = image[:, ~mask]
    lo, hi = known.min(axis=1), known.max(axis=1)
    assert ((out[:, mask] >= lo[:, None] - 1e-9) & (out[:, mask] <= hi[:, None] + 1e-9)).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_imputed_pixel_is_the_renormalised_mean_of_its_neighbours(seed: int) -> None:
    # The defining equation, checked pixel by pixel on random images and masks touching borders.
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(2, 9, 11))
    mask = rng.random((9, 11)) < 0.7
    out = noisy_linear_impute(image, mask, noise=0.0)
    for y, x in zip(*np.nonzero(mask), strict=True):
        total, weight_sum = np.zeros(2), 0.0
        for (dy, dx), weight in WEIGHTS.items():
            if 0 <= y + dy < 9 and 0 <= x + dx < 11:
                total += weight * out[:, y + dy, x + dx]
                weight_sum += weight
        np.testing.assert_allclose(out[:, y, x], total / weight_sum, rtol=0, atol=1e-10)


def test_noise_has_the_requested_std_on_imputed_pixels_only() -> None:
    rng = np.random.default_rng(3)
    image = rng.random((3, 64, 64)).astype(np.float32)
    before = image.copy()
    mask = rng.random((64, 64)) < 0.5
    clean = noisy_linear_impute(image, mask, noise=0.0)
    noisy = noisy_linear_impute(image, mask, noise=0.1, seed=7)
    residual = (noisy - clean)[:, mask].astype(np.float64)
    assert residual.std() == pytest.approx(0.1, rel=0.03)
    assert abs(residual.mean()) < 0.005
    np.testing.assert_array_equal(noisy[:, ~mask], image[:, ~mask])  # known pixels untouched
    np.testing.assert_array_equal(image, before)  # input not modified
    assert noisy.dtype == np.float32 and noisy is not image
    # Seeded: reproducible; different seeds differ; None draws fresh noise.
    np.testing.assert_array_equal(noisy, noisy_linear_impute(image, mask, noise=0.1, seed=7))
    assert not np.array_equal(noisy, noisy_linear_impute(image, mask, noise=0.1, seed=8))
    assert np.isfinite(noisy_linear_impute(image, mask, noise=0.1, seed=None)).all()


def test_nothing_removed_returns_a_copy() -> None:
    image = _ramp()
    out = noisy_linear_impute(image, np.zeros((H, W), bool))
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_missing_scipy_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.sparse.linalg", None)
    mask = np.zeros((H, W), bool)
    mask[5, 5] = True
    with pytest.raises(CamlensError, match="pip install scipy"):
        noisy_linear_impute(_ramp(), mask)


def test_speed_of_a_224_image_half_removed() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((3, 224, 224)).astype(np.float32)
    y, x = np.mgrid[:224, :224]
    saliency = np.exp(-((y - 100.0) ** 2 + (x - 120.0) ** 2) / (2 * 40.0**2))
    for name, mask in [
        ("MoRF 50% (one blob)", road_masks(saliency, [50], most_relevant_first=True)[0]),
        ("random 50%", rng.random((224, 224)) < 0.5),
    ]:
        start = time.perf_counter()
        out = noisy_linear_impute(image, mask)
        print(f"impute 3x224x224, {name}: {time.perf_counter() - start:.3f} s")
        assert np.isfinite(out).all()


# --- masks ------------------------------------------------------------------------------------


def _expected_count(share: float, n: int) -> int:
    return math.floor(share / 100 * n + 0.5)


@pytest.mark.parametrize("morf", [True, False])
def test_masks_remove_the_right_number_of_the_right_pixels(morf: bool) -> None:
    rng = np.random.default_rng(4)
    saliency = rng.permutation(H * W).reshape(H, W).astype(np.float32)
    shares = [0.1, 10, 25, 33.3, 50, 90, 99.8]  # of 480 pixels: 0.48 -> 0, 479.04 -> 479
    masks = road_masks(saliency, shares, most_relevant_first=morf)
    assert len(masks) == len(shares)
    for share, mask in zip(shares, masks, strict=True):
        assert mask.shape == (H, W) and mask.dtype == np.bool_
        assert mask.sum() == _expected_count(share, H * W)
        if not mask.any():
            continue
        if morf:
            assert saliency[mask].min() > saliency[~mask].max()
        else:
            assert saliency[mask].max() < saliency[~mask].min()
    for smaller, larger in itertools.pairwise(masks):
        assert not (smaller & ~larger).any()  # nested


def test_counts_round_halves_up() -> None:
    counts = [
        m.sum()
        for m in road_masks(np.arange(10.0).reshape(2, 5), [5, 15, 25], most_relevant_first=True)
    ]
    assert counts == [1, 2, 3]  # 0.5, 1.5, 2.5 pixels: always up, not to even


def test_ties_are_broken_by_pixel_index() -> None:
    saliency = np.zeros((4, 5))
    saliency[3, 4] = 1.0
    morf = road_masks(saliency, [30], most_relevant_first=True)[0].reshape(-1)
    lerf = road_masks(saliency, [30], most_relevant_first=False)[0].reshape(-1)
    np.testing.assert_array_equal(np.flatnonzero(morf), [0, 1, 2, 3, 4, 19])  # the 1, then 0s
    np.testing.assert_array_equal(np.flatnonzero(lerf), [0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("morf", [True, False])
def test_region_restricts_ranking_and_counts(morf: bool) -> None:
    rng = np.random.default_rng(5)
    saliency = rng.normal(size=(H, W))
    region = np.zeros((H, W), bool)
    region[4:16, 6:18] = True
    saliency[~region] = 100.0 if morf else -100.0  # would be removed first if ranked
    for share, mask in zip(
        [20, 50],
        road_masks(saliency, [20, 50], most_relevant_first=morf, region=region),
        strict=True,
    ):
        assert not (mask & ~region).any()
        assert mask.sum() == _expected_count(share, int(region.sum()))
        inside_kept = region & ~mask
        if morf:
            assert saliency[mask].min() > saliency[inside_kept].max()
        else:
            assert saliency[mask].max() < saliency[inside_kept].min()


# --- combined score ---------------------------------------------------------------------------


def test_combined_is_half_the_mean_gap_and_baseline_free() -> None:
    morf = np.array([0.6, 0.3, 0.1])
    lerf = np.array([0.9, 0.8, 0.8])
    assert road_combined(morf, lerf) == pytest.approx((0.3 + 0.5 + 0.7) / 3 / 2)
    assert road_combined(morf - 0.95, lerf - 0.95) == pytest.approx(road_combined(morf, lerf))


# --- bad inputs -------------------------------------------------------------------------------


def test_removing_every_pixel_is_refused() -> None:
    with pytest.raises(BadInputError, match="removes every pixel"):
        noisy_linear_impute(_ramp(), np.ones((H, W), bool))


@pytest.mark.parametrize("share", [0, 100, -5, 150, float("nan")])
def test_percentiles_outside_the_open_interval_are_refused(share: float) -> None:
    with pytest.raises(BadInputError, match="strictly between 0 and 100"):
        road_masks(np.zeros((H, W)), [10, share], most_relevant_first=True)


@pytest.mark.parametrize(
    ("image", "removed"),
    [
        (np.zeros((3, H, W)), np.zeros((H, W + 1), bool)),  # mask shape
        (np.zeros((3, H, W)), np.zeros((H, W), np.uint8)),  # mask dtype
        (np.zeros((H, W)), np.zeros((H, W), bool)),  # no channel axis
        (np.zeros((3, H, W), np.uint8), np.zeros((H, W), bool)),  # integer image
        (np.full((3, H, W), np.nan), np.zeros((H, W), bool)),  # NaN in known pixels
    ],
)
def test_impute_refuses_bad_arrays(image: np.ndarray, removed: np.ndarray) -> None:
    with pytest.raises(BadInputError):
        noisy_linear_impute(image, removed)


def test_impute_refuses_negative_noise() -> None:
    with pytest.raises(BadInputError, match="noise"):
        noisy_linear_impute(_ramp(), np.zeros((H, W), bool), noise=-0.1)


@pytest.mark.parametrize(
    ("saliency", "region"),
    [
        (np.zeros((2, H, W)), None),  # batched map
        (np.zeros((H, W)), np.ones((H, W + 1), bool)),  # region shape
        (np.zeros((H, W)), np.ones((H, W), np.float32)),  # region dtype
        (np.zeros((H, W)), np.zeros((H, W), bool)),  # empty region
        (np.full((H, W), np.nan), None),  # NaN saliency
    ],
)
def test_masks_refuse_bad_arrays(saliency: np.ndarray, region: np.ndarray | None) -> None:
    with pytest.raises(BadInputError):
        road_masks(saliency, [50], most_relevant_first=True, region=region)


@pytest.mark.parametrize(
    ("morf", "lerf"),
    [
        (np.zeros(3), np.zeros(4)),
        (np.zeros(0), np.zeros(0)),
        (np.zeros((2, 3)), np.zeros((2, 3))),
        (np.array([np.nan]), np.zeros(1)),
    ],
)
def test_combined_refuses_bad_arrays(morf: np.ndarray, lerf: np.ndarray) -> None:
    with pytest.raises(BadInputError):
        road_combined(morf, lerf)
