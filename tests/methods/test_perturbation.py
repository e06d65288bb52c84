"""Score-CAM, SS-CAM, IS-CAM and Ablation-CAM against references written from their papers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import camlens
from camlens._forwards import ACTIVATION_FACTOR, MEMORY_BUDGET, auto_batch_size
from nets import TrunkHead


def _acts(net: TrunkHead, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval().trunk(x).double()


def _masks(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM masks for one image's (K, h, w) activations: upsample, then min-max scale."""
    up = F.interpolate(a[None], size=size, mode="bilinear", align_corners=False)[0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (up - lo) / torch.where(span > 0, span, 1), 0.0)


def _score(net: TrunkHead, x: torch.Tensor, unit: int, probability: bool) -> torch.Tensor:
    with torch.no_grad():
        out = net.eval().double()(x.double())
        net.float()
    return torch.softmax(out, 1)[:, unit] if probability else out[:, unit]


def ref_scorecam(net, x, units, probability=True, scale=lambda m, s, seed: m, samples=1, top=None):  # type: ignore[no-untyped-def]
    a = _acts(net, x)
    size = tuple(x.shape[-2:])
    out = []
    for n in range(len(x)):
        masks = _masks(a[n], size)
        keep = range(a.shape[1])
        if top is not None:
            var = a[n].reshape(a.shape[1], -1).var(dim=1, unbiased=False)
            keep = sorted(torch.argsort(-var, stable=True)[:top].tolist())
        w = torch.zeros(a.shape[1], dtype=torch.float64)
        for k in keep:
            total = 0.0
            for s in range(samples):
                m = scale(masks[k], s, k)
                total += _score(net, x[n : n + 1] * m, units[n], probability).item()
            w[k] = total / samples
        out.append(torch.einsum("k,khw->hw", w, a[n]))
    return torch.stack(out).numpy()


def ref_ablationcam(net: TrunkHead, x: torch.Tensor, units: list[int]) -> np.ndarray:
    a = _acts(net, x)
    out = []
    with torch.no_grad():
        net.double()
        for n in range(len(x)):
            y = net.head(a[n : n + 1])[0, units[n]]
            w = torch.zeros(a.shape[1], dtype=torch.float64)
            for k in range(a.shape[1]):
                ablated = a[n : n + 1].clone()
                ablated[0, k] = 0
                w[k] = (y - net.head(ablated)[0, units[n]]) / y
            out.append(torch.einsum("k,khw->hw", w, a[n]))
        net.float()
    return torch.stack(out).numpy()


@pytest.fixture
def setup() -> tuple[TrunkHead, torch.Tensor, list[int]]:
    net = TrunkHead(width=4, classes=5)
    x = torch.randn(2, 3, 12, 10)
    return net, x, [3, 4]


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_scorecam_matches_the_paper(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup
    exp = camlens.explain(net, x, method="scorecam", layer="trunk", target=units)
    _close(exp.raw, ref_scorecam(net, x, units))


def test_scorecam_raw_scores_for_a_regression_output(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, _ = setup
    exp = camlens.explain(net, x, method="scorecam", layer="trunk", target=camlens.Output(2))
    _close(exp.raw, ref_scorecam(net, x, [2, 2], probability=False))


def test_faster_scorecam_keeps_the_top_variance_channels(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup
    exp = camlens.ScoreCAM(net, "trunk", top_n=3)(x, target=units)
    _close(exp.raw, ref_scorecam(net, x, units, top=3))


def test_sscam_averages_noisy_masks(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup

    def noisy(m, s, seed):  # type: ignore[no-untyped-def]
        noise = np.random.default_rng([7, seed, s]).normal(0, 0.3, tuple(m.shape))
        return m + torch.from_numpy(noise)

    exp = camlens.SSCAM(net, "trunk", n_samples=3, std=0.3, seed=7)(x, target=units)
    _close(exp.raw, ref_scorecam(net, x, units, scale=noisy, samples=3))


def test_iscam_integrates_scaled_masks(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup
    exp = camlens.ISCAM(net, "trunk", n_steps=4)(x, target=units)
    scaled = lambda m, s, seed: m * (s + 1) / 4  # noqa: E731
    _close(exp.raw, ref_scorecam(net, x, units, scale=scaled, samples=4))


def test_ablationcam_matches_the_paper(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup
    exp = camlens.explain(net, x, method="ablationcam", layer="trunk", target=units)
    _close(exp.raw, ref_ablationcam(net, x, units))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "sscam", "iscam"])
def test_results_do_not_depend_on_batch_size(setup, method: str) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup
    options = {"n_samples": 2} if method == "sscam" else {}
    maps = [
        camlens.explain(
            net, x, method=method, layer="trunk", target=units, batch_size=b, **options
        ).raw
        for b in (1, 3, None)
    ]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-6)


def test_topk_rows_equal_single_targets(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, _ = setup
    cam = camlens.ScoreCAM(net, "trunk")
    top = cam(x, target=camlens.TopK(2))
    for j in range(2):
        single = cam(x, target=top.units.reshape(2, 2)[:, j].tolist())
        np.testing.assert_allclose(
            top.raw.reshape(2, 2, *top.raw.shape[1:])[:, j], single.raw, atol=1e-6
        )


def test_masks_are_built_in_batches_and_progress_is_reported(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup
    seen: list[int] = []
    reports: list[tuple[int, int]] = []

    class Recording(camlens.methods.ScoreCAM):
        def perturb_mask(self, masks, sample, seeds):  # type: ignore[no-untyped-def]
            seen.append(int(masks.shape[0]))
            return masks

    method = Recording(batch_size=3, progress=lambda done, total: reports.append((done, total)))
    camlens.explain(net, x, method=method, layer="trunk", target=units)
    assert max(seen) <= 3
    done = [d for d, _ in reports]
    assert done == sorted(done) and reports[-1][0] == reports[-1][1] > 0


def test_auto_batch_size_keeps_the_stated_budget() -> None:
    item = 3 * 224 * 224 * 4
    b = auto_batch_size(item)
    assert 1 <= b <= 256 and b * ACTIVATION_FACTOR * item <= MEMORY_BUDGET
    assert auto_batch_size(10**12) == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, "8", True])
def test_bad_batch_sizes(bad: object) -> None:
    with pytest.raises(camlens.BadInputError, match="batch_size must be a positive int"):
        camlens.ScoreCAM(TrunkHead(), "trunk", batch_size=bad)


def test_top_n_larger_than_the_channel_count(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, units = setup
    with pytest.raises(camlens.BadInputError, match="top_n=9 is larger than the layer's 8"):
        camlens.ScoreCAM(net, "trunk", top_n=9)(x, target=units)


def test_function_targets_are_refused_clearly(setup) -> None:  # type: ignore[no-untyped-def]
    net, x, _ = setup
    with pytest.raises(camlens.BadTargetError, match="not a function of the output"):
        camlens.ScoreCAM(net, "trunk")(x, target=lambda out: out[:, 0])


def test_all_zero_activations_give_a_zero_map_and_a_warning() -> None:
    net = TrunkHead(width=4)
    with torch.no_grad():
        net.trunk[3].weight.zero_()
        net.trunk[3].bias.fill_(-1.0)  # ReLU after it: every channel is 0
    x = torch.randn(1, 3, 12, 12)
    for method in ("scorecam", "ablationcam"):
        with pytest.warns(camlens.CamlensWarning, match="set to zeros"):
            exp = camlens.explain(net, x, method=method, layer="trunk", target=0)
        assert np.all(exp.maps == 0) and np.isfinite(exp.raw).all()
