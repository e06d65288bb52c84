"""Tolerant readers of the fields of a run's JSON files: a value of the wrong kind (a folder
written by another version, a hand-edited file) reads as missing, never as an error."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["as_dict", "as_finite", "as_float", "as_int", "as_list"]


def as_int(value: Any) -> int | None:
    """Return an integer as it is (not a bool), anything else as None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_float(value: Any) -> float | None:
    """Return a number (not a bool) as a float, anything else as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def as_finite(value: Any) -> float | None:
    """Return a finite number as a float; NaN, infinities and anything else as None."""
    number = as_float(value)
    return number if number is not None and math.isfinite(number) else None


def as_dict(value: Any) -> dict[str, Any]:
    """Return a dict as it is, anything else as an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """Return a list as it is, anything else as an empty one."""
    return value if isinstance(value, list) else []
