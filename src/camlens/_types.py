"""The array contract every part of camlens keeps.

- The batch axis is always present. Images are ``(N, C, H, W)`` inside camlens; a backend whose
  framework is channels-last converts at its boundary.
- Sizes are ``(H, W)``, never ``(W, H)``.
- An explanation has one *row* per (image, target) pair, image-major: with ``N`` images and
  ``T`` targets per image there are ``M = N * T`` rows, and row ``m`` explains image
  ``m // T``. With one target per image (the default) rows and images coincide.
- Activations and gradients handed to a method are ``(M, K, h, w)`` arrays of one array library
  (NumPy, torch, JAX...), float32 or wider; a method returns ``(M, h, w)`` maps in the same library.
  A layer whose output is channels-last or tokens ``(N, L, C)`` is put on this grid by the
  backend (``backends/_layout.py``): prefix tokens dropped, patch tokens read row by row.
- Final maps are NumPy ``float32`` ``(M, H, W)``.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

#: An array of any array-API library (NumPy, torch, JAX, ...). Kept loose on purpose: the
#: method maths is written against the array API standard, not one library's types.
Array: TypeAlias = Any

FloatArray: TypeAlias = npt.NDArray[np.float32]
IntArray: TypeAlias = npt.NDArray[np.int64]

Size: TypeAlias = tuple[int, int]
