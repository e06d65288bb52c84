"""Shared post-processing: bilinear resizing, normalisation without NaN, layer combination."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camlens.postprocess import bilinear_matrix, finish, normalise, resize


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize(("h", "w", "H", "W"), [(7, 7, 224, 224), (3, 5, 17, 40), (6, 4, 6, 9)])
def test_resize_matches_torch_bilinear(m: int, h: int, w: int, H: int, W: int) -> None:
    maps = np.random.default_rng(0).normal(size=(m, h, w))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(maps)[:, None], size=(H, W), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    np.testing.assert_allclose(resize(maps, (H, W)), expected, atol=1e-12)
    # Same maths on torch arrays, on their device, without leaving torch.
    got = resize(torch.from_numpy(maps), (H, W))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_interpolation_rows_sum_to_one() -> None:
    for out_size, in_size in [(10, 3), (3, 10), (1, 1), (224, 7)]:
        np.testing.assert_allclose(bilinear_matrix(out_size, in_size).sum(axis=1), 1.0)


def test_normalise_min_max_and_degenerate_rows() -> None:
    maps = np.stack(
        [
            np.array([[1.0, 3.0], [5.0, 2.0]]),  # regular
            np.full((2, 2), 4.0),  # constant: zeros, flagged
            np.zeros((2, 2)),  # all zero: zeros, flagged
        ]
    )
    out, degenerate = normalise(maps, signed=False)
    np.testing.assert_allclose(out[0], [[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_array_equal(out[1:], 0.0)
    np.testing.assert_array_equal(degenerate, [False, True, True])
    assert np.isfinite(out).all()


def test_normalise_signed_scales_by_largest_magnitude() -> None:
    maps = np.array([[[-2.0, 1.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])
    out, degenerate = normalise(maps, signed=True)
    np.testing.assert_allclose(out[0], [[-1.0, 0.5], [0.0, 0.25]])
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(degenerate, [False, True])


def test_all_negative_map_becomes_zero_after_relu() -> None:
    maps, raw, degenerate = finish([-np.ones((1, 3, 3)) - np.eye(3)], (6, 6), relu=True)
    np.testing.assert_array_equal(maps, 0.0)
    assert degenerate.tolist() == [True]
    assert raw.min() < 0  # the signed raw map is kept


def test_several_layers_average_their_normalised_maps() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 4, 4)), rng.random((2, 8, 8))
    maps, raw, _ = finish([a, b], (16, 16), relu=True)
    single_a, _, _ = finish([a], (16, 16), relu=True)
    single_b, _, _ = finish([b], (16, 16), relu=True)
    expected, _ = normalise((single_a + single_b) / 2, signed=False)
    np.testing.assert_allclose(maps, expected, atol=1e-12)
    assert raw.shape == (2, 8, 8)  # the finest layer's resolution
