"""Argument checks shared by the public functions: one rule, one message."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np

from camlens.errors import BadInputError

__all__ = ["positive_int"]


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
