"""Finer-CAM against its objective differentiated by torch autograd, written from the paper."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import camlens
from nets import NonLinearHead, TrunkHead


def _nearest(logits: torch.Tensor, c: int, r: int) -> list[int]:
    """The r classes whose logits are closest to class c's (ties to the lower index)."""
    others = [u for u in range(logits.shape[0]) if u != c]
    return sorted(others, key=lambda u: (abs(float(logits[u] - logits[c])), u))[:r]


def _probability_objective(y: torch.Tensor, c: int, refs: list[int], gamma: float) -> torch.Tensor:
    # The paper's code: sum_t p_t (y_c - gamma y_t) / sum_t p_t, p = softmax of all logits.
    p = torch.softmax(y, dim=0)
    return sum(p[t] * (y[c] - gamma * y[t]) for t in refs) / sum(p[t] for t in refs)


def _mean_objective(y: torch.Tensor, c: int, refs: list[int], gamma: float) -> torch.Tensor:
    # torchcam: y_c - gamma mean_t y_t.
    return y[c] - gamma * torch.stack([y[t] for t in refs]).mean()


def _reference(
    net: torch.nn.Module,
    x: torch.Tensor,
    classes: list[int],
    objective: Callable[[torch.Tensor, int, list[int], float], torch.Tensor],
    gamma: float,
    r: int,
    base: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's base map on the gradients of its objective, and the objective's value."""
    net.eval()
    maps, scores = [], []
    for n, c in enumerate(classes):
        with torch.no_grad():
            a = net.trunk(x[n : n + 1]).double()
        a.requires_grad_(True)
        y = net.double().head(a)[0]
        s = objective(y, c, _nearest(y.detach(), c, r), gamma)
        (g,) = torch.autograd.grad(s, a)
        net.float()
        maps.append(base(a.detach().numpy(), g.numpy())[0])
        scores.append(float(s.detach()))
    return np.stack(maps), np.array(scores)


def _gradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.einsum("nk,nkij->nij", g.mean(axis=(2, 3)), a)


def _layercam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return (np.maximum(g, 0) * a).sum(axis=1)


CASES = {
    "probability": (_probability_objective, 1.0),
    "mean": (_mean_objective, 0.6),
}


@pytest.mark.parametrize("weighting", sorted(CASES))
@pytest.mark.parametrize("net_cls", [TrunkHead, NonLinearHead])
def test_finercam_matches_its_objective(weighting: str, net_cls: type) -> None:
    net = net_cls()
    x = torch.randn(3, 3, 16, 16)
    objective, gamma = CASES[weighting]
    with torch.no_grad():
        top = net.eval()(x).argmax(dim=1).tolist()
    r = 2
    expected, scores = _reference(net, x, top, objective, gamma, r, _gradcam)
    exp = camlens.explain(
        net, x, method="finercam", layer="trunk", references=r, gamma=gamma, weighting=weighting
    )
    np.testing.assert_array_equal(exp.units, top)
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-6)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * scale)
    assert exp.method == "finercam" and exp.target == "top-1 class against its 2 nearest classes"


def test_finercam_on_layercam_with_chosen_classes() -> None:
    net = TrunkHead(classes=6)
    x = torch.randn(2, 3, 16, 16)
    classes = [4, 1]
    expected, scores = _reference(net, x, classes, _probability_objective, 0.5, 3, _layercam)
    exp = camlens.explain(
        net, x, method="finercam", base="layercam", layer="trunk", target=classes, gamma=0.5
    )
    np.testing.assert_allclose(exp.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_finercam_with_gamma_zero_is_its_base_method() -> None:
    net = NonLinearHead()
    x = torch.randn(2, 3, 16, 16)
    finer = camlens.explain(net, x, method="finercam", layer="trunk", gamma=0.0, target=1)
    plain = camlens.explain(net, x, method="gradcam", layer="trunk", target=1)
    np.testing.assert_allclose(finer.raw, plain.raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(finer.scores, plain.scores, rtol=1e-6)


def test_finercam_topk_equals_single_class_calls() -> None:
    net = TrunkHead(classes=6)
    x = torch.randn(2, 3, 16, 16)
    cam = camlens.Explainer(net, "trunk", method="finercam")
    top = cam(x, target=camlens.TopK(2))
    for j in range(2):
        single = cam(x, target=top.units.reshape(2, 2)[:, j].tolist())
        np.testing.assert_allclose(top.raw.reshape(2, 2, 8, 8)[:, j], single.raw, atol=1e-6)


def test_finercam_caps_the_references_at_the_other_classes() -> None:
    # Three classes: at most two references, whatever was asked.
    net = NonLinearHead()
    x = torch.randn(1, 3, 16, 16)
    expected, _ = _reference(net, x, [0], _mean_objective, 1.0, 2, _gradcam)
    exp = camlens.explain(
        net, x, method="finercam", layer="trunk", target=0, references=9, weighting="mean"
    )
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(
    "target", [camlens.Output(0), lambda out: out[:, 0]], ids=["output", "function"]
)
def test_finercam_refuses_targets_that_are_not_classes(target: object) -> None:
    with pytest.raises(camlens.BadTargetError, match="compares classes"):
        camlens.explain(TrunkHead(), torch.randn(1, 3, 8, 8), method="finercam", target=target)


def test_finercam_refuses_a_single_output_model() -> None:
    with pytest.raises(camlens.BadTargetError, match="single output"):
        camlens.explain(TrunkHead(classes=1), torch.randn(1, 3, 8, 8), method="finercam")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"base": "scorecam"}, camlens.MethodError, "must be a gradient method"),
        ({"base": "eigencam"}, camlens.MethodError, "reads no gradients"),
        ({"references": 0}, camlens.BadInputError, "references must be a positive int"),
        ({"gamma": -1}, camlens.BadInputError, "gamma must be a finite number"),
        ({"weighting": "softmax"}, camlens.BadInputError, "weighting must be"),
    ],
)
def test_finercam_refuses_bad_options(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        camlens.methods.get_method("finercam", **options)


def test_finercam_takes_eigen_smooth_from_its_base() -> None:
    net = NonLinearHead()
    x = torch.randn(2, 3, 16, 16)
    options = {"layer": "trunk", "target": 1, "eigen_smooth": True}
    finer = camlens.explain(net, x, method="finercam", gamma=0.0, **options)
    plain = camlens.explain(net, x, method="gradcam", **options)
    np.testing.assert_allclose(finer.raw, plain.raw, rtol=1e-5, atol=1e-7)
    with pytest.raises(camlens.MethodError, match="weighs no channels"):
        camlens.Explainer(net, method="finercam", base=_NoWeights(), eigen_smooth=True)


class _NoWeights(camlens.methods.Method):
    """A gradient method that is no channel sum."""

    name = "noweights"

    def cam(self, activations, gradients):  # type: ignore[no-untyped-def]
        return (activations * gradients).amax(dim=1)
