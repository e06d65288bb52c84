"""The prediction `camlens explain` records: a probability as the explanation's score says."""

from __future__ import annotations

import numpy as np
import pytest

from camlens.cli._run import _prediction
from camlens.explanation import Explanation, ImageExplanation
from camlens.io import LoadedModel
from camlens.report._records import Prediction

LOADED = LoadedModel(model=None, framework="keras", source="m", layout="NHWC", classes=list("abc"))


def _image(output: list[float], score_kind: str, target_kind: str = "TopK") -> ImageExplanation:
    return Explanation(
        maps=np.zeros((1, 2, 2), np.float32),
        raw=np.zeros((1, 1, 1), np.float32),
        scores=np.zeros(1),
        image_index=np.zeros(1, np.int64),
        units=np.zeros(1, np.int64),
        signs=np.ones(1),
        target="top-1 class",
        target_kind=target_kind,
        score_kind=score_kind,
        layers=("conv",),
        method="gradcam",
        input_size=(2, 2),
        relu=True,
        framework="keras",
        outputs=np.asarray([output], np.float32),
    ).image(0)


def test_pre_softmax_logits_give_their_softmax() -> None:
    logits = [1.0, 3.0, 0.5]
    expected = np.exp(3.0) / np.exp(logits).sum()
    prediction = _prediction(_image(logits, "pre-softmax logit"), LOADED)
    assert prediction == Prediction(
        unit=1, name="b", value=3.0, probability=pytest.approx(expected)
    )


def test_softmax_probabilities_are_taken_as_they_are() -> None:
    prediction = _prediction(_image([0.1, 0.2, 0.7], "softmax probability"), LOADED)
    assert prediction is not None and prediction.unit == 2
    assert prediction.probability == pytest.approx(0.7)


def test_logits_that_happen_to_sum_to_one_are_still_logits() -> None:
    prediction = _prediction(_image([0.2, 0.3, 0.5], "pre-softmax logit"), LOADED)
    expected = np.exp(0.5) / np.exp([0.2, 0.3, 0.5]).sum()
    assert prediction is not None and prediction.probability == pytest.approx(expected)


def test_a_plain_model_output_that_is_a_distribution_is_its_probabilities() -> None:
    # A PyTorch classifier ending in its own softmax: the explanation says "model output".
    prediction = _prediction(_image([0.1, 0.2, 0.7], "model output"), LOADED)
    assert prediction is not None and prediction.probability == pytest.approx(0.7)
    logits = _prediction(_image([1.0, 3.0, 0.5], "model output"), LOADED)
    assert logits is not None and logits.probability == pytest.approx(0.8214, abs=1e-4)


def test_a_regressor_gives_its_value_without_a_probability() -> None:
    single = _prediction(_image([31.5], "model output"), LOADED)
    assert single == Prediction(unit=0, name="a", value=31.5)
    output = _prediction(_image([0.1, 0.2, 0.7], "model output", target_kind="Output"), LOADED)
    assert output == Prediction(unit=0, name="a", value=pytest.approx(0.1))
