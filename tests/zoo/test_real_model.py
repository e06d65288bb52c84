"""The bundled ImageNet MobileNetV2 on real photos: maps land on the object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import camlens
from camlens import metrics, zoo

BOXES = json.loads((Path(__file__).parents[1] / "data" / "boxes.json").read_text())


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    try:
        return zoo.mobilenet_v2()
    except zoo.WeightsNotFoundError as exc:  # pragma: no cover - the Makefile installs them
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def batch() -> tuple[list[zoo.Photo], torch.Tensor]:
    photos = zoo.photos()
    images = np.stack([p.image for p in photos])
    return photos, torch.from_numpy(zoo.imagenet_preprocess(images))


def _peak_in_box(cam_map: np.ndarray, box: list[int]) -> bool:
    y, x = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
    y0, x0, y1, x1 = box
    return bool(y0 <= y < y1 and x0 <= x < x1)


def test_gradcam_peak_falls_on_the_object(model: torch.nn.Module, batch: tuple) -> None:
    photos, x = batch
    exp = camlens.explain(model, x)
    assert exp.layers == ("features",)
    hits = [_peak_in_box(m, BOXES[p.name]) for p, m in zip(photos, exp.maps, strict=True)]
    assert sum(hits) >= 4, dict(zip([p.name for p in photos], hits, strict=True))


def test_batch_equals_single_images_on_the_real_model(model: torch.nn.Module, batch: tuple) -> None:
    _, x = batch
    cam = camlens.GradCAMPlusPlus(model, layer="features.17")
    together = cam(x, target=camlens.TopK(2))
    for i in range(len(x)):
        alone = cam(x[i : i + 1], target=camlens.TopK(2))
        np.testing.assert_allclose(together.maps[2 * i : 2 * i + 2], alone.maps, atol=1e-4)
        np.testing.assert_array_equal(together.units[2 * i : 2 * i + 2], alone.units)


def test_map_differs_between_classes(model: torch.nn.Module, batch: tuple) -> None:
    # Class-discriminative: the cat's map for "tripod" must not equal its top-1 map.
    _, x = batch
    cat = x[:1]
    top = camlens.explain(model, cat)
    other = camlens.explain(model, cat, target=872)
    assert np.corrcoef(top.maps.ravel(), other.maps.ravel())[0, 1] < 0.9


@pytest.mark.parametrize(("method", "options"), [("ablationcam", {}), ("scorecam", {"top_n": 64})])
def test_perturbation_peaks_fall_on_the_object(
    model: torch.nn.Module, batch: tuple, method: str, options: dict
) -> None:
    # Measured: Grad-CAM 5/5; Ablation-CAM and Score-CAM 4/5. On the astronaut photo (top-1
    # "football helmet") both peak on the suit's shoulder at (47, 47), outside the helmet box.
    # Grad-CAM's own layer map there is a near tie: 0.52 at the shoulder against 0.57 on the
    # helmet. Occluding 64-px patches with the mean colour drops the logit (14.3) most on the
    # helmet (to 9.9) and by 3.0 at the shoulder (to 11.3): the model does use the shoulder.
    # Other layers give the same order (hits Grad-CAM / Score-CAM / Ablation-CAM): features.13
    # 4/3/2, features.16 4/3/4, features.17 5/4/3. By map mass in the boxes (the energy-based
    # pointing game) the three are level: 0.770 / 0.750 (0.744 with top_n=64) / 0.759 at
    # `features`; the check below allows 0.05 less than Grad-CAM.
    photos, x = batch
    exp = camlens.explain(model, x, method=method, layer="features", **options)
    hits = [_peak_in_box(m, BOXES[p.name]) for p, m in zip(photos, exp.maps, strict=True)]
    assert sum(hits) >= 4, dict(zip([p.name for p in photos], hits, strict=True))
    boxes = [BOXES[p.name] for p in photos]
    energy = metrics.pointing_game(exp, boxes).energy.mean()
    gradcam = metrics.pointing_game(camlens.explain(model, x, layer="features"), boxes)
    assert energy >= gradcam.energy.mean() - 0.05, (energy, gradcam.energy.mean())
