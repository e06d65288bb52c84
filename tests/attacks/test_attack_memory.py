"""Attack suite: 1,000 explain calls do not grow memory (goal: under 50 MB after warm-up).

Each case runs in a fresh process: resident memory (RSS) after 50 warm-up calls, then after
1,000 more. Covers a reused explainer and the one-line ``camlens.explain`` (which builds a
backend per call and, on Keras, shares compiled probes per model), PyTorch and Keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LIMIT_MB = 50

SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
import numpy as np
import camlens

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

{setup}
calls = {{"reused": lambda: cam(x), "one-line": lambda: camlens.explain(model, x, layer=layer)}}
grown = {{}}
for name, call in calls.items():
    for _ in range(50):
        call()
    before = rss_mb()
    for _ in range(1000):
        call()
    grown[name] = rss_mb() - before
print(json.dumps(grown))
"""

TORCH = """
import torch
from nets import TrunkHead
model = TrunkHead().eval()
x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
layer = "trunk.3"
cam = camlens.GradCAM(model, layer, relu=False)
"""

KERAS = """
import keras
keras.utils.set_random_seed(0)
inp = keras.Input((12, 12, 3))
h = keras.layers.Conv2D(8, 3, padding="same", name="feat")(inp)
model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(h)))
x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
layer = "feat"
cam = camlens.GradCAM(model, layer, relu=False)
"""


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_thousand_calls_grow_memory_by_less_than_50_mb(framework: str) -> None:
    if not Path("/proc/self/statm").exists():
        pytest.skip("resident memory is read from /proc")
    tests = str(Path(__file__).parents[1])
    setup = textwrap.dedent(TORCH if framework == "torch" else KERAS)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=tests, setup=setup)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown = json.loads(proc.stdout.strip().splitlines()[-1])
    print(framework, grown)  # the figures, for the record (-s shows them)
    assert all(mb < LIMIT_MB for mb in grown.values()), grown
