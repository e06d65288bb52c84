"""The explorer's session: maps per setting, cached explainers, messages for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from camlens.io import Preprocess
from camlens.ui._session import MAX_PIXELS, Cancelled, Session


class _Gap(nn.Module):
    """conv -> ReLU -> global average pool -> linear: Grad-CAM is sum_k w_ck A_k / (h w)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


@pytest.fixture
def session() -> Session:
    return Session(_Gap(), preprocess=Preprocess(size=(32, 32)), classes=["a", "b", "c"])


def _photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)


def test_gradcam_raw_map_is_the_formula_and_overlay_the_librarys(session: Session) -> None:
    (result,) = session.explain(_photo(), ["gradcam"], layer="act", target="class 2", alpha=0.3)
    model = session.model
    x = torch.from_numpy(session.preprocess([session.picture(_photo())]))
    with torch.no_grad():
        a = model.act(model.conv(x))[0]
        expected = torch.einsum("k,khw->hw", model.fc.weight[2] / (a.shape[1] * a.shape[2]), a)
    np.testing.assert_allclose(result.raw, expected.numpy(), rtol=1e-4, atol=1e-6)
    mine = camlens.overlay(session.picture(_photo()), result.explanation.maps[0], alpha=0.3)
    assert np.array_equal(np.asarray(result.overlay), np.asarray(mine))
    assert result.explanation.units[0] == 2


def test_explainers_are_reused_per_setting(session: Session) -> None:
    first = session.explainer("gradcam", "act")
    assert session.explainer("gradcam", "act") is first
    assert session.explainer("gradcam++", "act") is not first


def test_layers_mark_the_automatic_pick_and_leave_out_flat_layers(session: Session) -> None:
    choices = session.layer_choices()
    assert choices[0] == ("auto (act)", "auto")
    values = [v for _, v in choices]
    assert "conv" in values and "fc" not in values and "pool" not in values


def test_non_spatial_layer_and_bad_target_are_refused_in_words(session: Session) -> None:
    with pytest.raises(camlens.LayerError, match="no spatial output"):
        session.explain(_photo(), ["gradcam"], layer="fc")
    with pytest.raises(camlens.BadTargetError, match="'class N'"):
        session.explain(_photo(), ["gradcam"], target="dog")


def test_non_image_and_huge_uploads_are_refused(session: Session, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(camlens.BadInputError, match="not an image"):
        session.read(text)
    side = int(MAX_PIXELS**0.5) + 2
    huge = tmp_path / "huge.png"
    from PIL import Image

    Image.new("L", (side, side)).save(huge)
    with pytest.raises(camlens.BadInputError, match="megapixels"):
        session.read(huge)


def test_prediction_names_the_top_classes(session: Session) -> None:
    (result,) = session.explain(_photo(), ["gradcam"])
    logits = np.asarray(result.explanation.outputs[0], dtype=np.float64)
    top = int(np.argmax(logits))
    probability = np.exp(logits[top]) / np.exp(logits).sum()
    first = session.prediction(result.explanation).splitlines()[0]
    assert first == f"{'abc'[top]} (class {top}): {probability:.1%}"
    assert session.target_choices(logits, k=2)[1] == f"class {top}"


def test_save_writes_png_and_npy(session: Session, tmp_path: Path) -> None:
    (result,) = session.explain(_photo(), ["gradcam"])
    png, npy = result.save(tmp_path)
    assert np.array_equal(np.load(npy), result.raw)
    from PIL import Image

    with Image.open(png) as im:
        assert np.array_equal(np.asarray(im), np.asarray(result.overlay))


def test_nested_keras_regressor_up_and_down() -> None:
    keras = pytest.importorskip("keras")
    from keras import layers

    keras.utils.set_random_seed(0)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    inputs = keras.Input((71, 71, 3))
    x = layers.GlobalAveragePooling2D()(base(inputs))
    model = keras.Model(inputs, layers.Dense(1)(layers.Dropout(0.5)(x)), name="age_regressor")
    session = Session(model, preprocess=Preprocess(size=(71, 71), layout="NHWC"), regression=True)
    assert session.layer_choices()[0][1] == "auto"
    assert "xception/block14_sepconv2_act" in [v for _, v in session.layer_choices()]
    assert session.target_choices() == ["output 0 up", "output 0 down"]
    up, down = (
        session.explain(_photo(), ["gradcam"], target=t)[0] for t in session.target_choices()
    )
    # Grad-CAM of -y: the same raw map with its sign flipped.
    np.testing.assert_allclose(down.raw, -up.raw, rtol=1e-4, atol=1e-6)
    assert down.explanation.signs[0] == -1
    assert up.raw.shape == (3, 3)  # Xception's last 2048-channel map at a 71x71 input
    assert session.prediction(up.explanation).startswith("outputs: ")


def test_scorecam_reports_progress_to_the_end(session: Session) -> None:
    seen: list[tuple[int, int]] = []
    (result,) = session.explain(
        _photo(), ["scorecam"], layer="act", progress=lambda d, t: seen.append((d, t))
    )
    assert seen and seen[-1][0] == seen[-1][1]
    assert result.raw.shape == (8, 8)


class _Counting(nn.Module):
    """A wide conv -> ReLU -> pool -> linear net that counts the images its forward sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 256, 8, stride=8)
        self.act = nn.ReLU()
        self.fc = nn.Linear(256, 3)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_cancel_stops_scorecams_forwards_and_the_session_serves_on() -> None:
    model = _Counting()
    session = Session(model, preprocess=Preprocess(size=(224, 224)))
    (full,) = session.explain(_photo(), ["scorecam"], layer="act")
    full_run = model.seen
    assert full_run > 256  # a masked input per channel, in several batches at 224x224

    model.seen = 0
    reports: list[tuple[int, int]] = []

    def stop_at_once(done: int, total: int) -> None:
        reports.append((done, total))
        session.cancel()  # what the page's Stop button calls, here from inside the run

    with pytest.raises(Cancelled, match="stopped on request after"):
        session.explain(_photo(), ["scorecam", "gradcam"], layer="act", progress=stop_at_once)
    assert len(reports) == 1  # the run stopped at the next batch: no report after the Stop
    assert model.seen < full_run / 4
    assert model.training and not model.conv._forward_hooks and not model.act._forward_hooks

    model.seen = 0
    session.cancel()  # a Stop while nothing runs does not cancel the next call
    again, gradcam = session.explain(_photo(), ["scorecam", "gradcam"], layer="act")
    assert model.seen >= full_run  # the whole Score-CAM run again
    np.testing.assert_array_equal(again.raw, full.raw)
    assert gradcam.raw.shape == (28, 28)
