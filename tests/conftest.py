from __future__ import annotations

import importlib.util
import os

# TensorFlow 2.21 can crash in conv backward passes on these CPUs unless oneDNN's custom ops
# are off; the variable must be set before TensorFlow is imported. (The library never sets it.)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

HAVE_TORCH = importlib.util.find_spec("torch") is not None

# Modules that need torch at import time are skipped as a whole where it is not installed.
collect_ignore_glob = (
    []
    if HAVE_TORCH
    else [
        "methods/test_methods.py",
        "test_invariants.py",
        "test_errors.py",
        "test_postprocess.py",
        "backends/torch/test_targets_and_layers.py",
        "zoo/test_real_model.py",
    ]
)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    if HAVE_TORCH:
        import torch

        torch.manual_seed(0)
