"""`camlens serve` on the command line: a model it cannot load stops it in words."""

from __future__ import annotations

from pathlib import Path

from commands import run_camlens


def test_serve_refuses_a_missing_model_without_a_traceback(tmp_path: Path) -> None:
    result = run_camlens("serve", tmp_path / "missing.keras")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "missing.keras" in result.stderr


def test_serve_binds_to_this_machine_by_default() -> None:
    result = run_camlens("serve", "--help")
    assert result.returncode == 0
    assert "127.0.0.1" in result.stdout
