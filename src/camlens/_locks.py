"""One lock per model: camlens's passes through a model take turns across threads.

A pass switches the model's modules to eval mode and back, hooks its layers (torch) or fills
its compiled-probe table (Keras); two at once would see each other's changes. Every public
entry that runs the user's model (an explainer's call, the metrics' scoring, the layer
listing, the sanity check's copy) holds the model's lock. The table is keyed weakly, so it
never keeps a model alive.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["model_lock"]

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """Return the (re-entrant) lock that serialises camlens's passes through ``model``."""
    with _GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock
