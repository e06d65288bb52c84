"""Attack suite: 1,000 explain calls do not grow memory (goal: under 50 MB after warm-up).

Each framework runs in a fresh process: resident memory (RSS, after a garbage collection) after
50 warm-up calls, then after 1,000 more, per case: a reused explainer, the one-line
``camlens.explain`` (which builds a backend per call and, on Keras, shares compiled probes per
model), and on torch a gradient-free method (Score-CAM, 16 channels). Keras runs on the backend
that is set. One more Keras case gives a new function target on every call, which compiles a
new probe each time (45 ms a call on this tiny model with TensorFlow, 100 ms with JAX): it runs
100 calls after 100 warm-up calls, not 1,000, enough to catch the growth it had when every
compiled probe was kept (0.9 MB a call with TensorFlow, 90 MB here). At most 16 are kept now;
TensorFlow's memory then levels off within the warm-up (+23 MB, then flat over 1,000 calls).
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
import gc, json, os, sys
sys.path.insert(0, {tests!r})
import numpy as np
import camlens

def rss_mb():
    gc.collect()  # what is still held, not garbage waiting for the cycle collector
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

{setup}
grown = {{}}
for name, (call, warm_up, n) in cases.items():
    for _ in range(warm_up):
        call()
    before = rss_mb()
    for i in range(n):
        call(i)
    grown[name] = round(rss_mb() - before, 2)
print(json.dumps(grown))
"""

TORCH = """
import torch
from nets import TrunkHead
model = TrunkHead().eval()
x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
layer = "trunk.3"
cam = camlens.GradCAM(model, layer, relu=False)
score_cam = camlens.ScoreCAM(model, layer, batch_size=8)
cases = {
    "reused": (lambda i=0: cam(x), 50, 1000),
    "one-line": (lambda i=0: camlens.explain(model, x, layer=layer), 50, 1000),
    "scorecam": (lambda i=0: score_cam(x), 50, 1000),
}
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

def new_target(i=0):
    return camlens.explain(model, x, layer=layer, target=lambda out: out[:, i % 5])

cases = {
    "reused": (lambda i=0: cam(x), 50, 1000),
    "one-line": (lambda i=0: camlens.explain(model, x, layer=layer), 50, 1000),
    "new-target": (new_target, 100, 100),
}
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
