"""`camlens.serve` from Python: without gradio it stops in words, before anything is served."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from torch import nn

import camlens


def test_serve_without_gradio_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now fails
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with pytest.raises(camlens.DependencyError, match=r"pip install 'camlens\[ui\]'"):
        camlens.serve(model, {"black": np.zeros((8, 8, 3), np.uint8)})
