"""Honest map strength: normalisation as a choice, and each row's range, contrast and status."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import camlens
from camlens.postprocess import FLAT_CONTRAST, map_statistics, normalise

torch = pytest.importorskip("torch")


def test_statistics_by_hand() -> None:
    raw = np.array(
        [
            [[0.000577, 0.000580], [0.000578, 0.000579]],  # the seed's case: 0.5% spread
            [[-1.0, 2.0], [0.0, 1.0]],  # positive part 0..2
            [[-3.0, -1.0], [-2.0, -0.5]],  # nothing positive
            [[0.0, 0.0], [0.0, 0.0]],
        ],
        np.float32,
    )
    stats = map_statistics(raw, relu=True)
    np.testing.assert_allclose(stats.raw_min, [0.000577, -1, -3, 0], rtol=1e-6)
    np.testing.assert_allclose(stats.raw_max, [0.000580, 2, -0.5, 0], rtol=1e-6)
    np.testing.assert_allclose(stats.contrast, [0.003 / 0.58, 1, 0, 0], rtol=1e-3)
    np.testing.assert_allclose(stats.positive_share, [1, 3 / 4, 0, 0])
    assert stats.status.tolist() == ["flat", "ok", "empty", "empty"]
    assert not stats.contrast.flags.writeable


def test_signed_statistics_measure_the_span_of_the_minus_one_to_one_scale() -> None:
    raw = np.array([[[-1.0, 1.0]], [[2.0, 2.0]], [[0.0, 0.0]], [[-4.0, 2.0]]], np.float32)
    stats = map_statistics(raw, relu=False)
    np.testing.assert_allclose(stats.contrast, [1.0, 0.0, 0.0, 6 / 8])
    assert stats.status.tolist() == ["ok", "flat", "empty", "ok"]
    np.testing.assert_allclose(stats.positive_share, [0.5, 1.0, 0.0, 2 / 6])


def test_the_three_normalisations_by_hand() -> None:
    maps = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    np.testing.assert_allclose(normalise(maps, signed=False, mode="max")[0], maps / 4)
    np.testing.assert_allclose(normalise(maps, signed=False, mode="minmax")[0], (maps - 1) / 3)
    np.testing.assert_array_equal(normalise(maps, signed=False, mode="none")[0], maps)
    signed = np.array([[[-2.0, 1.0]]])
    for mode in ("minmax", "max"):  # a signed map keeps its zero under both
        np.testing.assert_allclose(normalise(signed, signed=True, mode=mode)[0], [[[-1, 0.5]]])


class NearFlat(torch.nn.Module):
    """An input-sized feature map 0.5 + 0.001 * x, GAP and a sum: Grad-CAM is the map / (h w)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(0.5 + 0.001 * x).mean(dim=(2, 3)).sum(dim=1, keepdim=True)


def _pattern() -> torch.Tensor:
    ramp = torch.linspace(0.0, 1.0, 8)
    return (ramp[:, None] * ramp[None, :]).reshape(1, 1, 8, 8)  # 0 in a corner, 1 opposite


def test_a_near_flat_map_is_near_uniform_under_max_and_flagged_under_minmax() -> None:
    x = _pattern()
    raw = (0.5 + 0.001 * x[0, 0]).numpy() / 64  # Grad-CAM by hand: alpha = 1 / 64, one channel
    with warnings.catch_warnings():
        warnings.simplefilter("error", camlens.CamlensWarning)
        exp = camlens.explain(NearFlat(), x, layer="features", target=0, normalize="max")
    np.testing.assert_allclose(exp.maps[0], raw / raw.max(), rtol=1e-5)
    assert exp.maps.min() > 0.99 and exp.normalize == "max"
    assert exp.strength.status.tolist() == ["flat"]
    np.testing.assert_allclose(exp.strength.contrast, [(raw.max() - raw.min()) / raw.max()], 1e-4)
    np.testing.assert_allclose(exp.strength.raw_min, [raw.min()], rtol=1e-5)

    with pytest.warns(camlens.MapStrengthWarning, match="near-flat .*normalize='max'"):
        stretched = camlens.explain(NearFlat(), x, layer="features", target=0)
    np.testing.assert_allclose(stretched.maps[0], (raw - raw.min()) / np.ptp(raw), atol=1e-3)
    assert stretched.strength.status.tolist() == ["flat"]

    none = camlens.explain(NearFlat(), x, layer="features", target=0, normalize="none")
    np.testing.assert_allclose(none.maps[0], raw, rtol=1e-5)


def test_an_empty_map_warns_under_every_normalisation() -> None:
    # What pushes the output down: every gradient is negative, so nothing survives the ReLU.
    down = camlens.Output(0, sign=-1)
    for mode in ("minmax", "max", "none"):
        with pytest.warns(camlens.MapStrengthWarning, match="no positive evidence"):
            exp = camlens.explain(
                NearFlat(), _pattern(), "gradcam", "features", down, normalize=mode
            )
        assert exp.strength.status.tolist() == ["empty"] and not exp.maps.any()
        assert exp.strength.raw_max[0] < 0


def test_a_structured_map_is_ok_and_silent() -> None:
    x = _pattern() * 1000  # the same model, the feature map now 0.5 .. 1.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", camlens.CamlensWarning)
        exp = camlens.explain(NearFlat(), x, layer="features", target=0)
    assert exp.strength.status.tolist() == ["ok"]
    assert exp.strength.contrast[0] > FLAT_CONTRAST


def test_image_parts_carry_the_same_strength() -> None:
    x = torch.cat([_pattern(), _pattern() * 1000])
    with pytest.warns(camlens.MapStrengthWarning):
        exp = camlens.explain(NearFlat(), x, layer="features", target=0)
    assert [exp.image(i).strength.status.tolist() for i in range(2)] == [["flat"], ["ok"]]
    assert exp.image(1).normalize == "minmax"


def test_an_unknown_normalisation_is_a_clear_error() -> None:
    with pytest.raises(camlens.BadInputError, match="normalize must be one of 'minmax'"):
        camlens.GradCAM(NearFlat(), "features", normalize="l2")  # type: ignore[arg-type]
