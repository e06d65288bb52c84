"""Opti-CAM: softmax channel weights optimised by Adam so the masked input keeps its score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1)
        )
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.trunk(x)).mean(dim=(2, 3)))


def _reference(net: Net, x: torch.Tensor, c: int, iterations: int, lr: float) -> np.ndarray:
    """The official procedure written out with torch autograd and torch's Adam: ``S(u*)``."""
    x = x[None].double()
    net = net.double()
    with torch.no_grad():
        feats = torch.relu(net.trunk(x))
    u = torch.full((1, feats.shape[1], 1, 1), 0.5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)

    def saliency() -> torch.Tensor:
        return (torch.softmax(u, dim=1) * feats).sum(dim=1, keepdim=True)

    for _ in range(iterations):
        up = F.interpolate(saliency(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        mask = (up - up.min()) / (up.max() - up.min())
        loss = net(x)[0, c].detach() - net(x * mask)[0, c]
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.float()
    return saliency()[0, 0].detach().numpy()


@pytest.mark.parametrize("iterations, lr", [(1, 0.1), (12, 0.1), (6, 0.5)])
def test_opticam_equals_adam_on_the_masked_score_written_out(iterations: int, lr: float) -> None:
    net = Net().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    got = camlens.explain(
        net,
        x,
        method="opticam",
        layer="trunk",
        target=[1, 3],
        iterations=iterations,
        learning_rate=lr,
    )
    for n, c in enumerate([1, 3]):
        expected = _reference(net, x[n], c, iterations, lr)
        np.testing.assert_allclose(got.raw[n], expected, rtol=1e-4, atol=1e-6 * expected.max())
    uniform = torch.relu(net.trunk(x)).mean(dim=1).detach().numpy()  # u = 0.5: equal weights
    assert not np.allclose(got.raw, uniform, rtol=1e-3)  # the optimisation moved the weights


def test_opticam_raises_the_masked_score() -> None:
    net = Net().eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))

    def masked_score(exp: camlens.Explanation) -> float:
        with torch.no_grad():
            return float(net(x * torch.tensor(np.array(exp.maps[0])))[0, 2])

    start = camlens.explain(net, x, method="opticam", layer="trunk", target=2, iterations=1)
    end = camlens.explain(net, x, method="opticam", layer="trunk", target=2, iterations=40)
    assert masked_score(end) > masked_score(start)


def test_opticam_top_k_rows_each_optimise_their_own_unit() -> None:
    net = Net().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    both = camlens.explain(
        net, x, method="opticam", layer="trunk", target=camlens.TopK(2), iterations=4
    )
    for row, (n, unit) in enumerate(zip(both.image_index, both.units, strict=True)):
        alone = camlens.explain(
            net, x[n : n + 1], method="opticam", layer="trunk", target=int(unit), iterations=4
        )
        np.testing.assert_allclose(both.raw[row], alone.raw[0], rtol=1e-5, atol=1e-7)


def test_opticam_refuses_bad_options() -> None:
    with pytest.raises(camlens.BadInputError, match="iterations"):
        camlens.methods.get_method("opticam", iterations=0)
    with pytest.raises(camlens.BadInputError, match="learning_rate"):
        camlens.methods.get_method("opticam", learning_rate=float("nan"))
