"""Small torch networks for the tests, with hand-set or seeded weights."""

from __future__ import annotations

import torch
from torch import nn


class TrunkHead(nn.Module):
    """A conv trunk then a GAP + linear head, split so tests can run the halves by hand."""

    def __init__(self, in_ch: int = 3, width: int = 8, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)
        # Non-trivial running statistics so eval and train mode differ.
        self.trunk[1].running_mean.uniform_(-0.5, 0.5)
        self.trunk[1].running_var.uniform_(0.5, 2.0)

    def head(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(a), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class NonLinearHead(nn.Module):
    """A trunk with a non-linear head (conv + ReLU before pooling), so methods differ."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.post = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 4, 1))
        self.fc = nn.Linear(4 * 4, 3)

    def head(self, a: torch.Tensor) -> torch.Tensor:
        p = nn.functional.adaptive_max_pool2d(self.post(a), 2)
        return self.fc(torch.flatten(p, 1)) ** 2 / 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class TupleOut(nn.Module):
    """Returns (logits, aux) or a dict, to test output selection."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.net = TrunkHead()
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> object:
        logits = self.net(x)
        if self.as_dict:
            return {"logits": logits, "aux": logits.sum(1)}
        return logits, logits.sum(1)


class Raising(nn.Module):
    """Raises inside forward after the target layer has run (to test clean-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TrunkHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net.trunk(x)
        raise RuntimeError("boom inside the model")


class Block(nn.Module):
    """A residual block that reuses one ReLU module, as torchvision's BasicBlock does."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.conv2(self.relu(self.conv1(x))))


class MiniResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.layer2 = nn.Sequential(Block(8), Block(8))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def export_onnx(model: nn.Module, x: torch.Tensor, path: object, *, dynamic: bool = True) -> None:
    """Export ``model`` to ONNX with the TorchScript exporter (the dynamo one needs
    onnxscript), the batch axis dynamic unless ``dynamic=False``."""
    import warnings

    axes = {"x": {0: "n"}, "y": {0: "n"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own deprecation
        torch.onnx.export(
            model.eval(),
            (x,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
        )


class ChannelsLast(nn.Module):
    """An NHWC model: it takes (N, H, W, C) images and its last feature map is NHWC too."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (N, H, W, K) feature map after the ReLU."""
        return torch.relu(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(1, 2)))


class ImageAndMeta(nn.Module):
    """Two inputs: an image and a side vector (age, sex...), fused before the head.

    ``conv`` (3x3, same size) -> ``relu`` -> global mean, gated by ``tanh(side(meta))`` per
    channel, -> ``head``; so the side input changes the gradients at the image's layers. Every
    call's inputs are recorded in ``calls`` (copies), for tests that check what the model saw.
    """

    def __init__(self, seed: int = 3, channels: int = 4, meta: int = 2, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.side = nn.Linear(meta, channels)
        self.head = nn.Linear(channels, classes)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        self.calls.append((image.detach().clone(), meta.detach().clone()))
        pooled = self.relu(self.conv(image)).mean(dim=(2, 3))
        return self.head(pooled * torch.tanh(self.side(meta)))
