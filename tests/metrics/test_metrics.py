"""Faithfulness and localisation metrics against analytic truths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camlens
from camlens import metrics
from camlens.explanation import Explanation
from nets import TrunkHead

H, W = 6, 5


class Linear(torch.nn.Module):
    """y = sum_ij w_ij * (sum over channels of x_ij): a known linear function of the pixels."""

    def __init__(self, weights: np.ndarray, classes: int = 1) -> None:
        super().__init__()
        w = torch.from_numpy(weights.astype(np.float32))
        self.weight = torch.nn.Parameter(torch.stack([w * (c + 1) for c in range(classes)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,khw->nk", x, self.weight)


def _explanation(maps: np.ndarray, units: list[int], kind: str = "Output") -> Explanation:
    m = len(maps)
    return Explanation(
        maps=maps.astype(np.float32),
        raw=maps.astype(np.float32),
        scores=np.zeros(m),
        image_index=np.arange(m),
        units=np.asarray(units, dtype=np.int64),
        signs=np.ones(m),
        target="test",
        target_kind=kind,
        score_kind="model output",
        layers=("x",),
        method="truth",
        input_size=maps.shape[1:],
        relu=True,
        framework="torch",
    )


@pytest.fixture
def linear() -> tuple[Linear, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.1, 1.0, size=(H, W))
    x = rng.uniform(0.5, 1.5, size=(1, 1, H, W)).astype(np.float32)
    contributions = weights * x[0, 0]  # all positive
    return Linear(weights), x, contributions


def test_deletion_in_true_order_gives_the_lowest_auc(linear) -> None:  # type: ignore[no-untyped-def]
    model, x, c = linear
    truth = metrics.deletion(model, x, _explanation(c[None] / c.max(), [0]), steps=H * W)
    # Every point by hand: total minus the k largest contributions.
    expected = c.sum() - np.concatenate([[0], np.cumsum(np.sort(c.ravel())[::-1])])
    np.testing.assert_allclose(truth.curves[0], expected, rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(1)
    for _ in range(5):
        shuffled = rng.permutation(c.ravel()).reshape(H, W)
        other = metrics.deletion(model, x, _explanation(shuffled[None], [0]), steps=H * W)
        assert other.auc[0] > truth.auc[0]
    np.testing.assert_allclose(truth.change[0], expected - expected[0], rtol=1e-5, atol=1e-5)


def test_insertion_in_true_order_gives_the_highest_auc(linear) -> None:  # type: ignore[no-untyped-def]
    model, x, c = linear
    exp = _explanation(c[None], [0])
    truth = metrics.insertion(model, x, exp, steps=H * W, baseline="zeros")
    expected = np.concatenate([[0], np.cumsum(np.sort(c.ravel())[::-1])])
    np.testing.assert_allclose(truth.curves[0], expected, rtol=1e-5, atol=1e-6)
    reverse = metrics.insertion(
        model, x, _explanation(-c[None], [0]), steps=H * W, baseline="zeros"
    )
    assert reverse.auc[0] < truth.auc[0]


def test_results_do_not_depend_on_batch_size_and_inputs_stay_intact(linear) -> None:  # type: ignore[no-untyped-def]
    model, x, c = linear
    before = x.copy()
    exp = _explanation(c[None], [0])
    a = metrics.deletion(model, x, exp, steps=7, batch_size=1)
    b = metrics.deletion(model, x, exp, steps=7, batch_size=5)
    np.testing.assert_allclose(a.curves, b.curves, rtol=1e-6)
    np.testing.assert_array_equal(x, before)


def test_region_pixels_outside_are_never_removed(linear) -> None:  # type: ignore[no-untyped-def]
    model, x, c = linear
    region = np.zeros((H, W), dtype=bool)
    region[1:4, 1:3] = True
    result = metrics.deletion(model, x, _explanation(c[None], [0]), steps=6, region=region)
    outside = (c * ~region).sum()
    np.testing.assert_allclose(result.curves[0, -1], outside, rtol=1e-5)


def test_confidence_by_hand(linear) -> None:  # type: ignore[no-untyped-def]
    model, x, c = linear
    cam = np.linspace(0, 1, H * W).reshape(H, W)
    result = metrics.confidence(
        model, x, _explanation(cam[None], [0], kind="Class"), score_mode="raw"
    )
    y, o = c.sum(), (c * cam).sum()
    np.testing.assert_allclose([result.original[0], result.masked[0]], [y, o], rtol=1e-5)
    assert result.average_drop == pytest.approx(100 * (y - o) / y, rel=1e-5)
    assert result.increase_in_confidence == 0.0


def test_class_scores_are_probabilities(linear) -> None:  # type: ignore[no-untyped-def]
    _, x, c = linear
    model = Linear(c / x[0, 0], classes=3)
    exp = _explanation(np.ones((1, H, W)), [2], kind="TopK")
    result = metrics.confidence(model, x, exp)
    logits = np.array([c.sum() * (k + 1) for k in range(3)])
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert result.original[0] == pytest.approx(p[2], rel=1e-5)


def test_road_removes_most_relevant_pixels_with_more_effect(linear) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("scipy")
    model, x, c = linear
    result = metrics.road(model, x, _explanation(c[None], [0]), percentiles=[20, 50], noise=0)
    assert result.morf.shape == (1, 2) and (result.lerf >= result.morf).all()
    assert result.combined[0] > 0
    assert result.original[0] == pytest.approx(c.sum(), rel=1e-5)  # the output, in its units
    morf_change, _ = result.change
    np.testing.assert_allclose(morf_change, result.morf - c.sum(), rtol=1e-5)


def test_pointing_game() -> None:
    cam = np.zeros((2, H, W))
    cam[0, 1, 1] = 1.0  # peak inside the box
    cam[1, 5, 4] = 1.0  # peak outside
    cam[:, 0, 0] = 0.5
    boxes = [[0, 0, 3, 3], [0, 0, 3, 3]]
    result = metrics.pointing_game(_explanation(cam, [0, 0]), boxes)
    assert result.hits.tolist() == [True, False] and result.accuracy == 0.5
    np.testing.assert_allclose(result.energy, [1.0, 0.5 / 1.5])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, e: metrics.pointing_game(e, [[2, 2, 2, 4]]), "box 0 .* is empty"),
        (lambda m, x, e: metrics.deletion(m, x, e, region=np.zeros((H, W), bool)), "empty"),
        (lambda m, x, e: metrics.road(m, x, e, percentiles=[0, 50]), "strictly between 0"),
        (lambda m, x, e: metrics.road(m, x, e, percentiles=[100]), "strictly between 0"),
        (lambda m, x, e: metrics.deletion(m, x[:, :, :4], e), "do not fit the inputs"),
        (lambda m, x, e: metrics.deletion(m, x, e, steps=0), "steps must be"),
    ],
)
def test_bad_inputs(linear, call, message: str) -> None:  # type: ignore[no-untyped-def]
    model, x, c = linear
    with pytest.raises(camlens.CamlensError, match=message):
        call(model, x, _explanation(c[None], [0]))


def test_compare_table() -> None:
    net = TrunkHead(classes=4)
    x = torch.randn(2, 3, 12, 12)
    calls: list[tuple[int, int]] = []
    table = metrics.compare(
        net,
        x,
        ["gradcam", "eigencam"],
        layer="trunk",
        steps=4,
        metrics=("deletion", "insertion", "average_drop", "win", "pointing"),
        boxes=[[0, 0, 6, 6], [6, 6, 12, 12]],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 2), (2, 2)]
    assert [r["method"] for r in table.rows] == ["gradcam", "eigencam"]
    assert sum(r["win"] for r in table.rows) == pytest.approx(100.0)
    assert table.to_csv().splitlines()[0].startswith("method,deletion_auc,insertion_auc")
    assert table.to_markdown().count("\n") == 4


def test_progress_counts_up_to_the_number_of_scored_inputs() -> None:
    """Deletion scores steps + 1 inputs per row: progress ends at (total, total), never ahead."""
    net = TrunkHead(classes=4)
    x = torch.randn(3, 3, 12, 12)
    exp = camlens.explain(net, x, layer="trunk", relu=False)
    calls: list[tuple[int, int]] = []
    metrics.deletion(net, x, exp, steps=4, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    total = 3 * (4 + 1)
    assert calls[-1] == (total, total)
    assert all(t == total and 0 < d <= t for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) > 1  # a bar that moves, not one that starts full
