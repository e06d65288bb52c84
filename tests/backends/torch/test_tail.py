"""The tail of a torch model after one layer, for Ablation-CAM's many replacement activations."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from camlens import zoo
from camlens.backends.torch._tail import Tail, make_tail


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: in-place ReLU used twice, in-place residual add."""

    def __init__(self, inp: int, out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """A small ResNet-18 layout: stem, layer1..layer4 of two BasicBlocks, avgpool, fc."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.layer3 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.layer4 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                nn.init.uniform_(module.weight, 0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Branchy(nn.Module):
    """Upstream values the tail reads, writes into or returns; a shape read; a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        s = torch.relu(self.stem(x))
        y = self.body(s)
        skip = s * 2.0
        skip = skip.add_(y)
        logits = self.fc(skip.mean((2, 3)).reshape(n, -1)) * self.scale
        return {"logits": logits, "stem": s}


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = -x
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


class WritesUpstreamLate(nn.Module):
    """Writes in place into a value before the layer, after the layer has run."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = self.body(s) * s
        s.relu_()
        return (y + s).mean((1, 2, 3))


class ReadsAfterTailWrite(nn.Module):
    """The tail writes into a value before the layer that is read again later (fx cannot see)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        s.add_(self.body(s))
        return s.mean((1, 2, 3))


class ScalesInput(nn.Module):
    """Writes into its own input before the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x.mul_(2.0))
        return (self.body(s) + s).mean((1, 2, 3))


class BatchSecond(nn.Module):
    """Holds a value before the layer with its batch on axis 1: it cannot be broadcast."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        t = s.transpose(0, 1)
        y = self.body(s).transpose(0, 1)
        return (y + t).transpose(0, 1).mean((1, 2, 3))


def _resnet() -> ResNet:
    torch.manual_seed(0)
    return ResNet().eval()


def _mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return zoo.mobilenet_v2(pretrained=False).eval()


def _activation(model: nn.Module, layer: str, image: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Return the layer's output and the model's output on ``image``."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda module, args, out: seen.append(out.clone())
    )
    try:
        with torch.no_grad():
            out = model(image)
    finally:
        handle.remove()
    return seen[0], out


def _reference(model: nn.Module, layer: str, image: torch.Tensor, swap: torch.Tensor) -> Any:
    """The full model on the expanded image, the layer's output replaced by a hook."""
    handle = model.get_submodule(layer).register_forward_hook(lambda *_: swap.clone())
    try:
        with torch.no_grad():
            return model(image.expand(swap.shape[0], *image.shape[1:]))
    finally:
        handle.remove()


def _check(model: nn.Module, layer: str, image: torch.Tensor, batch: int = 5) -> Tail:
    """Assert that the tail matches the full model, with random and with true activations."""
    tail = make_tail(model, layer)
    act, plain = _activation(model, layer, image)
    swap = torch.randn(batch, *act.shape[1:])
    before = swap.clone()
    got = tail(image, swap)
    assert torch.equal(swap, before), "the tail wrote into the caller's replacements"
    _assert_close(got, _reference(model, layer, image, swap))
    _assert_close(tail(image, act.expand(batch, *act.shape[1:])), _expand(plain, batch))
    return tail


def _expand(out: Any, batch: int) -> Any:
    if isinstance(out, dict):
        return {key: _expand(value, batch) for key, value in out.items()}
    return out.expand(batch, *out.shape[1:])


def _assert_close(got: Any, want: Any) -> None:
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            _assert_close(got[key], want[key])
        return
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer", ["layer4", "layer3", "layer2.1", "layer3.0.conv2", "layer4.1.bn2", "conv1"]
)
def test_resnet_tail_matches_full_model(layer: str) -> None:
    tail = _check(_resnet(), layer, torch.randn(1, 3, 64, 64))
    assert tail.exact_tail_only, tail.reason


@pytest.mark.parametrize("layer", ["features", "features.18", "features.16", "features.18.1"])
def test_mobilenet_tail_matches_full_model(layer: str) -> None:
    tail = _check(_mobilenet(), layer, torch.randn(1, 3, 96, 96), batch=3)
    assert tail.exact_tail_only, tail.reason


def test_upstream_values_are_broadcast_copied_and_returned() -> None:
    torch.manual_seed(0)
    model = Branchy().eval()
    image = torch.randn(1, 3, 8, 8)
    tail = _check(model, "body", image)
    assert tail.exact_tail_only, tail.reason
    rows: list[int] = []
    model.stem.register_forward_hook(lambda module, args, out: rows.append(len(out)))
    tail(image, torch.randn(6, 4, 8, 8))
    assert rows == [1]  # no per-call fallback: the batch size read from x.shape broadcasts


def _hooked_container() -> nn.Module:
    model = _resnet()
    model.layer1.register_forward_hook(lambda *_: None)
    return model


@pytest.mark.parametrize(
    ("build", "layer", "why"),
    [
        (DataDependent, "conv", "cannot trace"),
        (WritesUpstreamLate, "body", "writes in place after the layer"),
        (ReadsAfterTailWrite, "body", "read after it outside the tail"),
        (_resnet, "layer1.0.relu", "called 2 times"),
        (_hooked_container, "layer3", "forward hooks"),
    ],
)
def test_falls_back_where_the_split_is_not_exact(build: Any, layer: str, why: str) -> None:
    torch.manual_seed(0)
    model = build().eval()
    tail = make_tail(model, layer)
    assert not tail.exact_tail_only
    assert why in tail.reason
    if layer != "layer1.0.relu":  # a layer run twice has no one output to replace
        _check(model, layer, torch.randn(1, 3, 16, 16))


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        name: (
            set(vars(module)),
            module.training,
            {k: v.clone() for k, v in module.state_dict(keep_vars=False).items()},
        )
        for name, module in model.named_modules()
    }


@pytest.mark.parametrize(("build", "layer"), [(_resnet, "layer3.0.conv2"), (DataDependent, "conv")])
def test_model_is_left_as_found(build: Any, layer: str) -> None:
    model = build().eval()
    before = _snapshot(model)
    tail = make_tail(model, layer)
    act, _ = _activation(model, layer, torch.randn(1, 3, 32, 32))
    tail(torch.randn(1, 3, 32, 32), torch.randn(4, *act.shape[1:]))
    after = _snapshot(model)
    assert before.keys() == after.keys()
    for name, (attrs, training, state) in before.items():
        assert after[name][0] == attrs, name
        assert after[name][1] == training, name
        assert all(torch.equal(state[k], after[name][2][k]) for k in state), name
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks


def test_upstream_runs_once_per_call_at_batch_one() -> None:
    model = copy.deepcopy(_resnet())
    rows: list[int] = []
    model.layer1[0].conv1.register_forward_hook(lambda module, args, out: rows.append(len(out)))
    image = torch.randn(1, 3, 64, 64)
    for layer, expected in [("layer3.0.conv2", [1]), ("layer4", [])]:
        tail = make_tail(model, layer)
        act, _ = _activation(model, layer, image)
        rows.clear()
        tail(image, torch.randn(16, *act.shape[1:]))
        assert tail.exact_tail_only, tail.reason
        # The block's residual branch needs layer1's output: computed once, for one image.
        # layer4 needs nothing before it: the trunk does not run at all.
        assert rows == expected, layer


def test_a_model_writing_into_its_input_leaves_the_image_alone() -> None:
    tail = make_tail(ScalesInput().eval(), "body")
    image = torch.randn(1, 3, 8, 8)
    kept = image.clone()
    swap = torch.randn(4, 4, 8, 8)
    first = tail(image, swap)
    assert tail.exact_tail_only, tail.reason
    assert torch.equal(image, kept)
    assert torch.equal(tail(image, swap), first)


def test_a_call_whose_upstream_values_do_not_broadcast_runs_the_full_model() -> None:
    model = BatchSecond().eval()
    image = torch.randn(1, 3, 8, 8)
    tail = _check(model, "body", image)
    rows: list[int] = []
    model.stem.register_forward_hook(lambda module, args, out: rows.append(len(out)))
    tail(image, torch.randn(6, 4, 8, 8))
    assert rows == [1, 6]  # the upstream value has shape (4, 1, 8, 8): the full model runs


def test_rejects_a_batch_of_images() -> None:
    tail = make_tail(_resnet(), "layer4")
    with pytest.raises(ValueError, match="one image"):
        tail(torch.randn(2, 3, 32, 32), torch.randn(4, 64, 1, 1))
