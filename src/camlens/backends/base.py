"""What every backend offers: the small surface the explainer relies on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import numpy as np

from camlens._types import Array, Size
from camlens.targets import Resolved, Target

#: How the model's output is picked when the model returns several: an index into a tuple or
#: list, a key of a mapping, or a function of the raw output.
OutputSelector: TypeAlias = "int | str | Callable[[Any], Any] | None"


@dataclass(frozen=True, eq=False)
class LayerRef:
    """A resolved target layer: its full name and the framework's object for it."""

    name: str
    handle: Any


@dataclass(frozen=True, eq=False)
class Probe:
    """What one probe of the model captured, row-major as in ``camlens._types``.

    Attributes:
        activations: One ``(M, K, h, w)`` float array per layer, in the model's array library.
        gradients: Matching gradients of each row's score, or ``None`` if not asked for.
        resolved: The target's scores per image, ``(N, T)``.
    """

    activations: list[Array]
    gradients: list[Array] | None
    resolved: Resolved


class Backend(Protocol):
    """The framework-specific half of camlens. Hooks and state changes live inside :meth:`probe`."""

    framework: str
    #: What the explained scores are read from: ``"model output"``, ``"pre-softmax logit"``...
    score: str

    def resolve_layer(self, layer: Any) -> LayerRef:
        """Return the layer named by a name, a path or the framework's layer object."""
        ...

    def auto_layer(self, inputs: Any) -> LayerRef:
        """Return the last layer whose output is a spatial feature map for these inputs."""
        ...

    def prepare(self, inputs: Any) -> Any:
        """Validate the inputs and return them as the model's own tensor, on its device."""
        ...

    def input_size(self, inputs: Any) -> Size:
        """Return the spatial size ``(H, W)`` of prepared inputs."""
        ...

    def probe(
        self, inputs: Any, layers: Sequence[LayerRef], target: Target, *, gradients: bool
    ) -> Probe:
        """Run the model once, capturing the layers' activations, the scores and gradients."""
        ...

    def to_numpy(self, array: Array) -> np.ndarray:
        """Copy a result array to NumPy (once, at the end of a call)."""
        ...

    def masked_scores(
        self,
        inputs: Any,
        masks: Callable[[int, int, int], Array],
        counts: Sequence[int],
        units: np.ndarray,
        *,
        probabilities: bool,
        batch_size: int,
        on_batch: Callable[[int], None],
    ) -> list[np.ndarray]:
        """Score ``inputs[n] * masks(n, start, stop)`` in batches; ``(counts[n], T)`` per image.

        Runs in inference mode on the model's device; at most ``batch_size`` masks and masked
        inputs exist at a time. Scores are the target units' outputs (``units``, ``(N, T)``),
        or their softmax probabilities over all output units.
        """
        ...

    def ablated_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        activations: Sequence[Array],
        channels: Sequence[np.ndarray],
        units: np.ndarray,
        *,
        probabilities: bool,
        batch_size: int,
        on_batch: Callable[[int], None],
    ) -> list[np.ndarray]:
        """Score each image with each listed channel of ``layer`` zeroed; ``(len, T)`` per image.

        ``activations[n]`` is image ``n``'s ``(K, h, w)`` layer output. Only the network after
        the layer is re-run where the backend can isolate it.
        """
        ...
