"""explain -> cohort -> report on a tiny PyTorch regressor: what the page says about the run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from camlens.cli import main
from run_folder import photo

FACTORY = """
import torch
from torch import nn


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1),
    )
"""


def test_explain_cohort_report_on_a_regressor_given_an_absolute_folder(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    (tmp_path / "regressor.py").write_text(FACTORY)
    namespace: dict[str, object] = {}
    exec(FACTORY, namespace)  # the same seeded weights as the factory's
    torch.save(namespace["build"]().state_dict(), tmp_path / "weights.pth")  # type: ignore[operator]
    eyes = tmp_path / "given" / "eyes"
    (eyes / "left").mkdir(parents=True)
    names = ["left/a.png", "left/b.png", "c.png", "d.png"]
    for i, name in enumerate(names):
        Image.fromarray(photo(i, (20, 20))).save(eyes / name)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        main, ["explain", str(tmp_path / "weights.pth"), str(eyes), "--out", str(out),
               "--factory", f"{tmp_path / 'regressor.py'}:build", "--target", "output:0",
               "--preset", "tf", "--size", "16", "--layer", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["inputs"] == [str(eyes)]
    result = runner.invoke(main, ["cohort", str(out), "--by", "bins:2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "index.html").read_text(encoding="utf-8")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    # Paths: from the input folder's name on; the absolute folder shows only in the command.
    without_command = re.sub(r'<details class="command">.*?</details>', "", html, flags=re.S)
    assert str(tmp_path) not in without_command
    titles = re.findall(r'<span class="file" title="([^"]*)"', html)
    assert sorted(titles) == sorted(f"eyes/{name}" for name in names)
    # The regressor's predictions read as values (those the model gives), never "unit 0".
    model = namespace["build"]()  # type: ignore[operator]
    for record in records:
        pixels = np.asarray(Image.open(eyes / record["image"][len(str(eyes)) + 1 :]))
        x = np.asarray(Image.fromarray(pixels).resize((16, 16), Image.Resampling.BILINEAR))
        x = torch.from_numpy(x / 127.5 - 1.0).float().permute(2, 0, 1)[None]
        with torch.no_grad():
            value = float(model(x))
        assert record["prediction"]["value"] == pytest.approx(value, abs=1e-4)
        assert f"value {record['prediction']['value']:.4g}" in html
    assert "unit 0" not in html and "output 0" in html
    # The tf preset by the range its inputs span.
    assert "Keras &#39;tf&#39; mode: RGB in [-1, 1]" in html and "mean 1, 1, 1" not in html
    # The cohort section: two bins of two images, one colour scale.
    assert html.count('class="cohort-cell"') == 2
    assert html.count('data-count="2"') == 2
    assert 'id="cohort-scale"' in html
