"""camlens imports light: no framework, no matplotlib, until they are needed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BLOCKED = ("torch", "tensorflow", "keras", "jax", "onnx", "onnxruntime", "matplotlib")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_core_imports_with_frameworks_blocked() -> None:
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import camlens, camlens.methods, camlens.postprocess, camlens.targets, camlens.render\n"
        "import camlens._types, camlens.backends._common\n"
        "import camlens.zoo\n"
        "import numpy as np\n"
        "a = np.random.default_rng(0).random((2, 4, 5, 5)); g = a - 0.5\n"
        "pooled = np.ones_like(a) * g.mean(axis=(2, 3), keepdims=True)  # CAM: a GAP's gradient\n"
        "from camlens.backends._layout import Layout\n"
        "att = np.exp(np.random.default_rng(1).normal(size=(2, 2, 17, 17)))\n"
        "att /= att.sum(axis=-1, keepdims=True)  # attention maps: 1 + 4x4 tokens\n"
        "tokens = Layout('tokens', prefix=1, grid=(4, 4))\n"
        "for cls in set(camlens.methods.REGISTRY.values()):\n"
        "    if issubclass(cls, camlens.methods.AttentionMethod):\n"
        "        maps = cls().cam_from_attention([att, att], [att - 0.05, att], tokens)\n"
        "        assert maps.shape == (2, 4, 4)\n"
        "    elif getattr(cls, 'needs_hessian', False):  # weights from g and H A\n"
        "        assert cls().hessian_weights(a, g, a).shape == (2, 4)\n"
        "    elif not issubclass(cls, camlens.methods.PerturbationMethod) and not getattr(\n"
        "        cls, 'optimises_mask', False\n"
        "    ):  # those two read the model beyond one probe\n"
        "        assert cls().cam(a, pooled if cls.name == 'cam' else g).shape == (2, 5, 5)\n"
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


SRC = Path(__file__).parents[1] / "src"
FRAMEWORKS = {"torch", "tensorflow", "keras", "jax", "onnx", "onnxruntime"}
#: Attributes only torch tensors have: code that uses them is framework code.
TORCH_ONLY = {"detach", "element_size", "gather", "requires_grad", "is_inference"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The camlens modules ``name`` imports anywhere (functions included), by their names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_import_cycle_among_camlens_modules() -> None:
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError(
                "import cycle: " + " -> ".join([*trail[trail.index(name) :], name])
            )
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_framework_code_lives_only_under_backends() -> None:
    """Outside backends/ (and the demo models in zoo/): no framework import, name or
    torch-only tensor attribute, in targets, _types, render, methods and everything else."""
    offending = []
    for name, path in _modules().items():
        if name.startswith(("camlens.backends", "camlens.zoo")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                hit = any(a.name.split(".")[0] in FRAMEWORKS for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                hit = (node.module or "").split(".")[0] in FRAMEWORKS
            elif isinstance(node, ast.Name):
                hit = node.id in FRAMEWORKS
            elif isinstance(node, ast.Attribute):
                hit = node.attr in TORCH_ONLY
            else:
                hit = False
            if hit:
                offending.append(f"{name}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert offending == []


def test_camlens_and_its_command_import_no_gradio() -> None:
    code = "import sys, camlens, camlens.cli, camlens.ui\nprint('gradio' in sys.modules)\n"
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_camlens_serve_is_the_explorers_serve_and_loads_no_gradio() -> None:
    code = (
        "import inspect, sys, camlens\n"
        "import camlens.ui\n"
        "assert camlens.serve is camlens.ui.serve and 'serve' in camlens.__all__\n"
        "assert 'model' in inspect.signature(camlens.serve).parameters\n"
        "assert 'camlens[ui]' in camlens.serve.__doc__\n"
        "print('gradio' in sys.modules)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_local_command_never_imports_ray(tmp_path: Path) -> None:
    """`camlens explain` without --engine ray runs with Ray blocked (it is an extra)."""
    from PIL import Image

    Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "red.png")
    code = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "from camlens.cli import main\n"
        f"sys.argv = ['camlens', 'explain', 'mobilenet_v2', {str(tmp_path / 'red.png')!r}, "
        f"'--out', {str(tmp_path / 'out')!r}]\n"
        "main()\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 1
