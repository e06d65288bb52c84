"""A region of interest at explain time: normalisation, statistics, rows and bad masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import camlens
from camlens.errors import BadInputError

torch = pytest.importorskip("torch")

from nets import TrunkHead  # noqa: E402

F = torch.nn.functional


class Identity(torch.nn.Module):
    """The input as the feature map, GAP and a sum: Grad-CAM at ``features`` is
    ``sum_k x_k / (H W)`` (every gradient is ``1 / (H W)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3)).sum(dim=1, keepdim=True)


def _box(shape: tuple[int, int], y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.asarray((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2)


def _peaks_outside() -> tuple[torch.Tensor, np.ndarray]:
    """An 8x8 one-channel input whose largest values (and most negative) lie outside the
    region, a smooth ramp inside."""
    region = _box((8, 8), 2, 1, 6, 7)
    rng = np.random.default_rng(0)
    pattern = rng.uniform(0.1, 1.0, (8, 8))
    pattern[0, 0], pattern[7, 7], pattern[0, 7] = 9.0, 7.0, -5.0
    return torch.tensor(pattern, dtype=torch.float32).reshape(1, 1, 8, 8), region


@pytest.mark.parametrize("mode", ["minmax", "max", "none"])
def test_normalisation_reads_only_the_region(mode: str) -> None:
    x, region = _peaks_outside()
    cam = np.maximum(x[0, 0].numpy().astype(np.float64), 0) / 64  # Grad-CAM by hand
    inside = cam[region]
    expected = {
        "minmax": (cam - inside.min()) / (inside.max() - inside.min()),
        "max": cam / inside.max(),
        "none": cam,
    }[mode]
    exp = camlens.explain(Identity(), x, layer="features", target=0, normalize=mode, region=region)
    np.testing.assert_allclose(exp.maps[0], np.where(region, expected, 0), rtol=1e-5, atol=1e-7)
    assert exp.region is not None and np.array_equal(exp.region[0], region)
    # The raw map is whole: the same as without a region.
    whole = camlens.explain(Identity(), x, layer="features", target=0, normalize=mode)
    np.testing.assert_array_equal(exp.raw, whole.raw)
    if mode != "none":
        assert exp.maps[0].max() == pytest.approx(1.0) and whole.maps[0][region].max() < 0.2


def test_signed_maps_are_divided_by_the_largest_magnitude_in_the_region() -> None:
    x, region = _peaks_outside()
    x = x - 0.5  # negative values inside too
    cam = x[0, 0].numpy().astype(np.float64) / 64
    expected = np.where(region, cam / np.abs(cam[region]).max(), 0)
    exp = camlens.explain(Identity(), x, layer="features", target=0, relu=False, region=region)
    np.testing.assert_allclose(exp.maps[0], expected, rtol=1e-5, atol=1e-7)


def _statistics_by_hand(raw: np.ndarray, region: np.ndarray, relu: bool) -> dict[str, float]:
    """Each figure over the region's pixels at the input size: the raw map resized by torch's
    bilinear interpolation (``align_corners=False``); a rectified map's contrast from the raw
    map rectified first, then resized, as the final maps are made."""

    def up(a: np.ndarray) -> np.ndarray:
        t = torch.tensor(a, dtype=torch.float64)[None, None]
        out = F.interpolate(t, size=region.shape, mode="bilinear", align_corners=False)
        return out[0, 0].numpy()[region]

    values = up(raw)
    if relu:
        shown = up(np.maximum(raw, 0))
        contrast = (shown.max() - shown.min()) / shown.max()
    else:
        contrast = (values.max() - values.min()) / (2 * np.abs(values).max())
    return {
        "raw_min": values.min(),
        "raw_max": values.max(),
        "contrast": contrast,
        "positive_share": np.maximum(values, 0).sum() / np.abs(values).sum(),
    }


@pytest.mark.parametrize("relu", [True, False])
def test_statistics_read_only_the_region(relu: bool) -> None:
    model = TrunkHead().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    region = _box((8, 8), 1, 2, 7, 6)
    exp = camlens.GradCAM(model, "trunk.3", relu=relu)(x, region=region)  # raw maps are 4x4
    assert exp.raw.shape[1:] == (4, 4)
    stats = exp.strength
    for m in range(len(exp)):
        truth = _statistics_by_hand(exp.raw[m].astype(np.float64), region, relu)
        for name, value in truth.items():
            assert getattr(stats, name)[m] == pytest.approx(value, rel=1e-5, abs=1e-9), name
    # The image's own rows read the same region.
    part = exp.image(2)
    assert part.region is not None and np.array_equal(part.region, region)
    np.testing.assert_allclose(part.strength.contrast, stats.contrast[2:3])


def test_statistics_of_a_pixel_level_map_read_its_region_pixels() -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    region = _disc((8, 8), (3.5, 3.5), 3.0)
    exp = camlens.Saliency(TrunkHead().eval())(x, region=region)
    for m in range(2):
        raw = exp.raw[m].astype(np.float64)[region]
        assert exp.strength.raw_min[m] == pytest.approx(raw.min(), rel=1e-6)
        assert exp.strength.raw_max[m] == pytest.approx(raw.max(), rel=1e-6)
        share = np.maximum(raw, 0).sum() / np.abs(raw).sum()
        assert exp.strength.positive_share[m] == pytest.approx(share, rel=1e-6)


@pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")  # some rows are empty
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"relu": False},
        {"aug_smooth": True},
        {"method": "guidedgradcam"},
        {"method": "scorecam", "batch_size": 8},
    ],
    ids=["gradcam", "signed", "aug_smooth", "guided", "scorecam"],
)
def test_a_batch_with_one_mask_per_image_equals_its_single_calls(options: dict) -> None:
    options = {"method": "gradcam", **options}
    explainer = camlens.Explainer(TrunkHead().eval(), "trunk.3", **options)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    masks = np.stack(
        [_box((8, 8), 0, 0, 5, 6), _disc((8, 8), (4, 3), 2.5), _box((8, 8), 3, 1, 8, 8)]
    )
    target = camlens.TopK(2)
    batch = explainer(x, target, region=masks)
    assert len(batch) == 6 and batch.region is not None and batch.region.shape == (3, 8, 8)
    assert not batch.region.flags.writeable
    for i in range(3):
        single = explainer(x[i : i + 1], target, region=masks[i])
        rows = slice(2 * i, 2 * i + 2)
        np.testing.assert_allclose(batch.maps[rows], single.maps, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batch.raw[rows], single.raw, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(batch.strength.contrast[rows], single.strength.contrast, 1e-4)
        assert np.array_equal(batch.image(i).region, masks[i])
        assert np.array_equal(single.region[0], masks[i])
    outside = ~np.repeat(masks, 2, axis=0)
    assert (batch.maps[outside] == 0).all()
    ok = batch.strength.status == "ok"
    top = np.abs(batch.maps).reshape(6, -1).max(axis=1)
    np.testing.assert_allclose(top[ok], 1.0, rtol=1e-5)


def test_several_layers_combine_region_normalised_maps() -> None:
    model = TrunkHead().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    region = _box((8, 8), 1, 1, 7, 5)

    def minmax(m: np.ndarray) -> np.ndarray:
        inside = m[:, region]
        low, high = inside.min(axis=1)[:, None, None], inside.max(axis=1)[:, None, None]
        return np.where(region, (m - low) / (high - low), 0)

    per_layer = [
        camlens.GradCAM(model, name, normalize="none")(x, 0).maps.astype(np.float64)
        for name in ("trunk.0", "trunk.3")
    ]
    expected = minmax(np.mean([minmax(m) for m in per_layer], axis=0))
    exp = camlens.GradCAM(model, ["trunk.0", "trunk.3"])(x, 0, region=region)
    np.testing.assert_allclose(exp.maps, expected, rtol=1e-5, atol=1e-6)


def _fundus(shape: tuple[int, int], centre: tuple[float, float], radius: float, seed: int):
    """A fundus-like photo: a textured grey-red disc with dark vessels, on a black surround
    with faint specks; returned as uint8 HWC and ImageNet-normalised CHW."""
    rng = np.random.default_rng(seed)
    disc = _disc(shape, centre, radius)
    photo = rng.uniform(0, 6, (*shape, 3))
    photo[disc] = rng.uniform(90, 230, (int(disc.sum()), 1)) * np.array([1.0, 0.6, 0.35])
    photo[disc & (rng.random(shape) < 0.1)] *= 0.4  # vessels
    pixels = photo.round().astype(np.uint8)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((pixels / 255.0 - mean) / std).transpose(2, 0, 1).astype(np.float32)
    return pixels, x, disc


def test_auto_fov_finds_each_images_disc_from_the_preprocessed_input() -> None:
    shape, discs = (32, 32), [((15.0, 16.0), 12.0), ((17.0, 14.0), 10.0)]
    made = [_fundus(shape, c, r, seed) for seed, (c, r) in enumerate(discs)]
    x = torch.tensor(np.stack([m[1] for m in made]))
    exp = camlens.GradCAM(TrunkHead().eval(), "trunk.3")(x, region="auto-fov")
    assert exp.region is not None and exp.region.shape == (2, *shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i, ((centre, radius), (_, _, truth)) in enumerate(zip(discs, made, strict=True)):
        wrong = exp.region[i] != truth
        edge = np.abs(np.hypot(yy - centre[0], xx - centre[1]) - radius)
        assert wrong.sum() <= 2 * np.pi * radius * 0.5 and (edge[wrong] <= 2.0).all()
        assert (exp.maps[i][~exp.region[i]] == 0).all()
    # A NumPy batch and a tensor give the same regions.
    again = camlens.GradCAM(TrunkHead().eval(), "trunk.3")(x.numpy(), region="auto-fov")
    np.testing.assert_array_equal(again.region, exp.region)


def test_integer_zero_one_masks_are_masks_and_the_callers_mask_is_copied() -> None:
    explainer = camlens.GradCAM(TrunkHead().eval(), "trunk.3")
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    mask = _box((8, 8), 2, 2, 6, 6)
    as_bool = explainer(x, region=mask)
    as_int = explainer(x, region=mask.astype(np.uint8))
    as_tensor = explainer(x, region=torch.tensor(mask))
    np.testing.assert_array_equal(as_bool.maps, as_int.maps)
    np.testing.assert_array_equal(as_bool.maps, as_tensor.maps)
    mask[:] = False
    assert as_bool.region is not None and as_bool.region.sum() == 2 * 16


@pytest.mark.parametrize(
    ("region", "message"),
    [
        (np.ones((7, 8), bool), r"\(H, W\) = \(8, 8\) mask for every image or \(N, H, W\)"),
        (np.ones((3, 8, 8), bool), r"got shape \(3, 8, 8\)"),
        (np.full((8, 8), 0.5), "hold only 0 and 1; got dtype float64 with other values"),
        (np.full((8, 8), "x"), "must be a bool mask"),
        (
            np.stack([np.ones((8, 8), bool), np.zeros((8, 8), bool)]),
            r"no pixel inside for image\(s\) \[1\]",
        ),
        ("fov", "or 'auto-fov'; got 'fov'"),
    ],
    ids=["shape", "count", "not-bool", "strings", "empty", "unknown-name"],
)
def test_bad_regions_raise_specific_errors(region: object, message: str) -> None:
    model = TrunkHead().eval()
    with pytest.raises(BadInputError, match=message):
        camlens.explain(model, torch.zeros(2, 3, 8, 8), layer="trunk.3", region=region)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_auto_fov_on_a_uniform_image_names_the_image() -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    x[1] = 0.3
    with pytest.raises(BadInputError, match="image 1: auto_fov found no lit field of view"):
        camlens.explain(TrunkHead().eval(), x, layer="trunk.3", region="auto-fov")


def test_a_hand_built_explanation_refuses_a_region_of_the_wrong_shape() -> None:
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    exp = camlens.explain(TrunkHead().eval(), x, layer="trunk.3")

    with pytest.raises(BadInputError, match=r"region must be bool \(1, 8, 8\)"):
        dataclasses.replace(exp, region=np.ones((8, 8), bool))


def test_aug_smooth_normalises_each_flipped_map_over_the_flipped_region() -> None:
    model = TrunkHead().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    region = _box((8, 8), 0, 0, 6, 3)  # far from symmetric: a flip moves it
    exp = camlens.GradCAM(model, "trunk.3", aug_smooth=True)(x, 2, region=region)
    plain = camlens.GradCAM(model, "trunk.3")
    maps = []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            xa = torch.flip(x * factor, dims=(3,)) if flip else x * factor
            m = plain(xa, 2, region=region[:, ::-1] if flip else region).maps
            maps.append(m[..., ::-1] if flip else m)
    mean = np.mean(maps, axis=0).astype(np.float64)
    inside = mean[:, region]
    low, high = inside.min(axis=1)[:, None, None], inside.max(axis=1)[:, None, None]
    np.testing.assert_allclose(
        exp.maps, np.where(region, (mean - low) / (high - low), 0), 1e-5, 1e-6
    )
