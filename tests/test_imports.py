"""camlens imports light: no framework, no matplotlib, until they are needed."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("torch", "tensorflow", "keras", "jax", "matplotlib")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_core_imports_with_frameworks_blocked() -> None:
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import camlens, camlens.methods, camlens.postprocess, camlens.targets, camlens.render\n"
        "import camlens.zoo\n"
        "import numpy as np\n"
        "a = np.random.default_rng(0).random((2, 4, 5, 5)); g = a - 0.5\n"
        "for cls in set(camlens.methods.REGISTRY.values()):\n"
        "    if not issubclass(cls, camlens.methods.PerturbationMethod):\n"
        "        assert cls().cam(a, g).shape == (2, 5, 5)\n"
        "try:\n"
        "    camlens.explain(object(), a)\n"
        "except camlens.UnsupportedModelError as e:\n"
        "    print('ok', e)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_import_loads_no_framework() -> None:
    code = f"import sys, camlens\nprint([m for m in {BLOCKED!r} if m in sys.modules])\n"
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
