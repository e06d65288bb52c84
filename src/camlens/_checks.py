"""Argument checks shared by the public functions: one rule, one message."""

from __future__ import annotations

import math
from typing import Literal, overload

import numpy as np

from camlens.errors import BadInputError

__all__ = ["positive_float", "positive_int", "seed_int"]


@overload
def positive_int(value: object, name: str, *, optional: Literal[False] = False) -> int: ...


@overload
def positive_int(value: object, name: str, *, optional: Literal[True]) -> int | None: ...


def positive_int(value: object, name: str, *, optional: bool = False) -> int | None:
    """Return ``value`` as an ``int`` if it is an integer >= 1 (``None`` too, if ``optional``).

    Python and NumPy integers are accepted; ``bool``, floats and strings are not.

    Raises:
        BadInputError: ``"<name> must be a positive int[ or None]; got <value>"``.
    """
    if value is None and optional:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    wanted = "a positive int or None" if optional else "a positive int"
    raise BadInputError(f"{name} must be {wanted}; got {value!r}")


def positive_float(value: object, name: str) -> float:
    """Return ``value`` as a ``float`` if it is a finite number > 0 (an int or a float).

    Raises:
        BadInputError: ``"<name> must be a finite number > 0; got <value>"``.
    """
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    raise BadInputError(f"{name} must be a finite number > 0; got {value!r}")


def seed_int(value: object, name: str = "seed") -> int:
    """Return a random seed as an ``int`` (Python and NumPy integers; not ``bool``).

    Raises:
        BadInputError: ``"<name> must be an int; got <value>"``.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise BadInputError(f"{name} must be an int; got {value!r}")
