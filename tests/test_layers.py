"""camlens.layers on torch models, and the `camlens layers` command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

import camlens
from commands import camlens_command
from nets import TrunkHead


def _snapshot(model: torch.nn.Module) -> tuple[list[torch.Tensor], list[bool], list[bool], int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return (
        [t.detach().clone() for t in model.state_dict().values()],
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        hooks,
    )


def test_layers_lists_every_module_and_leaves_the_model_as_found() -> None:
    model = TrunkHead()
    model.trunk[1].train()
    model.fc.weight.requires_grad_(False)
    before = _snapshot(model)
    rows = camlens.layers(model, input_size=(16, 20))
    after = _snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0], strict=True))
    assert before[1:] == after[1:]
    assert [r.name for r in rows] == [n for n, _ in model.named_modules() if n]
    by_name = {r.name: r for r in rows}
    assert by_name["trunk.0"].output_shape == (None, 8, 16, 20)
    assert by_name["trunk.3"].type == "Conv2d" and by_name["trunk.3"].output_shape == (
        None,
        16,
        8,
        10,
    )
    assert by_name["pool"].output_shape == (None, 16, 1, 1) and not by_name["pool"].candidate
    assert by_name["fc"].output_shape == (None, 5) and not by_name["fc"].candidate
    assert by_name["trunk.3"].candidate


def test_auto_flag_is_what_explain_picks() -> None:
    model = TrunkHead().eval()
    x = torch.randn(2, 3, 16, 16)
    rows = camlens.layers(model, input_size=(16, 16))
    assert [r.name for r in rows if r.auto] == list(camlens.explain(model, x).layers)


def test_shared_and_unused_modules_are_not_candidates() -> None:
    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.unused = torch.nn.Conv2d(3, 3, 1)
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    rows = {r.name: r for r in camlens.layers(Shared(), input_size=(8, 8))}
    assert not rows["conv"].candidate and rows["conv"].output_shape == (None, 3, 8, 8)
    assert rows["unused"].output_shape is None and not rows["unused"].candidate
    assert not any(r.auto for r in rows.values())


def test_bad_arguments() -> None:
    with pytest.raises(camlens.BadInputError, match="input_size"):
        camlens.layers(TrunkHead(), input_size=(0, 3))
    with pytest.raises(camlens.BadInputError, match="channels"):
        camlens.layers(TrunkHead(), channels=0)
    with pytest.raises(camlens.UnsupportedModelError):
        camlens.layers(object())


def test_cli_lists_layers_of_a_state_dict(tmp_path: Path) -> None:
    (tmp_path / "tiny_factory.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),\n"
        "                               torch.nn.AdaptiveAvgPool2d(1))\n"
    )
    torch.save(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).state_dict(),
        tmp_path / "w.pt",
    )
    result = subprocess.run(
        [
            *camlens_command(),
            "layers",
            "w.pt",
            "--factory",
            "tiny_factory:build",
            "--size",
            "10x12",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("1 " in line and "ReLU" in line and "auto" in line for line in lines)
    assert any("(N, 4, 8, 10)" in line for line in lines)
    assert "automatic pick: 1" in result.stdout


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), tmp_path / "whole.pt")
    for args, message in [
        (["layers", "whole.pt"], "--trust-pickle"),
        (["layers", "nothere.pt"], "not found"),
        (["layers", "whole.pt", "--size", "0"], "not a size"),
    ]:
        result = subprocess.run(
            [*camlens_command(), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
        assert result.returncode in (1, 2), result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    ok = subprocess.run(
        [*camlens_command(), "layers", "whole.pt", "--trust-pickle", "--size", "6"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert ok.returncode == 0 and "(N, 4, 4, 4)" in ok.stdout
