"""One probe of a Keras model: the compiled function that captures the layers' activations,
the target's scores and their gradients, compiled once per input shape, layers and target.

The per-framework gradient code is in ``tensorflow.py``, ``jax.py`` and ``torch.py`` (the same
``compile_probe``); activations arrive channels-last and leave as ``(M, K, h, w)``.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from keras import ops

from camlens._types import Array
from camlens.backends.base import LayerRef, OutputSelector, Probe
from camlens.backends.keras import _targets
from camlens.backends.keras._forward import Forward
from camlens.backends.keras._graph import Replacement
from camlens.targets import Target

__all__ = ["MAX_COMPILED", "Prober"]

MAX_COMPILED = 16


class Prober:
    """Runs probes of one model, keeping each compiled probe for the calls that can reuse it.

    The model is held weakly, by the prober and by the compiled probes: a prober is kept per
    model for as long as the model lives (see ``KerasBackend``).
    """

    def __init__(
        self,
        model: Any,
        impl: ModuleType,
        replacements: dict[int, Replacement],
        output: OutputSelector,
        channels_last: bool,
    ) -> None:
        """Bind the model, the framework's gradient module and how the output is read."""
        self._model = weakref.ref(model)
        self._impl = impl
        self._replacements = replacements
        self._output = output
        self._channels_last = channels_last
        self._compiled: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()
        self._traces = 0

    @property
    def traces(self) -> int:
        """Return how many probes have been compiled (one per distinct shape, layers, target)."""
        return self._traces

    def probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        n_units: int,
        *,
        gradients: bool,
    ) -> Probe:
        """Run the compiled probe for these inputs, layers and target."""
        units, signs = _targets.plan(target, int(inputs.shape[0]), n_units)
        key = (
            tuple(inputs.shape),
            str(inputs.dtype),
            tuple(id(ref.handle) for ref in layers),
            _targets.trace_key(target),
            units.shape,
            gradients,
        )
        compiled = self._compiled.get(key)
        if compiled is None:
            forward = Forward(self._model(), list(layers), self._replacements, self._output)
            picker = _targets.Picker(target)
            compiled = self._impl.compile_probe(forward, picker, gradients=gradients)
            self._compiled[key] = compiled
            self._traces += 1
            if len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        acts, picked, used, flat, grads = compiled(inputs, ops.convert_to_tensor(units), signs)
        t = int(picked.shape[1])
        resolved = _targets.record(target, picked, used, signs)
        for_maths = self._impl.for_maths
        rows = [self._channels_first(for_maths(a), t) for a in acts]
        grad_rows = (
            None if grads is None else [self._channels_first(for_maths(g), 1) for g in grads]
        )
        outputs = np.asarray(ops.convert_to_numpy(flat), dtype=np.float32)
        return Probe(activations=rows, gradients=grad_rows, resolved=resolved, outputs=outputs)

    def _channels_first(self, a: Array, repeat: int) -> Array:
        xp = array_namespace(a)
        if self._channels_last:
            a = xp.permute_dims(a, (0, 3, 1, 2))
        if repeat > 1:
            a = xp.repeat(a, repeat, axis=0)
        return a if a.dtype in (xp.float32, xp.float64) else xp.astype(a, xp.float32)
