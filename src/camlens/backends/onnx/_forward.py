"""Running an onnxruntime session on NumPy batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["run"]


def run(
    session: Any, feeds: Mapping[str, np.ndarray], names: Sequence[str], *, one_by_one: bool
) -> list[np.ndarray]:
    """Return ``names`` computed from ``feeds`` (arrays with a common batch axis).

    ``one_by_one`` runs the rows one at a time, for a model whose input fixes batch 1.
    """
    if not one_by_one:
        return [np.asarray(a) for a in session.run(list(names), dict(feeds))]
    count = next(iter(feeds.values())).shape[0]
    rows = [
        session.run(list(names), {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(count)
    ]
    return [np.concatenate([np.asarray(r[j]) for r in rows]) for j in range(len(names))]
