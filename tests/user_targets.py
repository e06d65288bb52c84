"""Targets a user might write, shared by the torch and Keras tests (no framework imported)."""

from __future__ import annotations

from typing import Any

import numpy as np

import camlens
from camlens.targets import UnitTarget


class Margin(camlens.Target):
    """How much class ``a`` beats class ``b``, with the output's own operators (differentiable)."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b

    def scores(self, output: Any) -> Any:
        return output[:, self.a] - output[:, self.b]

    def describe(self) -> str:
        return f"class {self.a} minus class {self.b}"


class LastUnit(UnitTarget):
    """The output's last unit, for every image: units fixed by the output's shape."""

    def fixed_units(self, n: int, n_units: int) -> np.ndarray:
        return np.full((n, 1), n_units - 1, dtype=np.int64)

    def describe(self) -> str:
        return "last unit"
