"""Deep Feature Factorization: concepts shared by a batch, their maps and their class scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import device

from camlens._checks import positive_int, seed_int
from camlens._locks import model_lock
from camlens._types import Array, Size
from camlens._version import __version__
from camlens.backends import InputSelector, OutputSelector, backend_for
from camlens.backends._common import namespace
from camlens.backends.base import Scoring, rows
from camlens.errors import BadInputError
from camlens.explanation import _freeze
from camlens.methods.dff import nmf
from camlens.postprocess import normalise, resize
from camlens.targets import TopK

__all__ = ["Factorization", "Factorizer", "factorize"]


@dataclass(frozen=True, eq=False)
class Factorization:
    """The concepts of a batch at one layer (Deep Feature Factorization), frozen.

    Not an :class:`camlens.Explanation`: its rows are (image, concept) pairs, and the concepts
    are shared by the whole batch (factorised jointly, as the paper), so a batch's concepts
    differ from those of its images one by one.

    Attributes:
        maps: ``(N, k, H, W)`` float32: each image's map of each concept at the input's
            resolution, min-max scaled to ``[0, 1]`` (all zeros where a concept is absent).
        raw: ``(N, k, h, w)`` float32 concept amounts at the layer's resolution (``H`` of NMF).
        concepts: ``(k, K)`` float32: each concept's activation vector (``W^T`` of NMF).
        scores: ``(k, U)`` float32: the model's output for each concept, the layer's output
            replaced by the concept vector at every location (image 0's pass for anything the
            network reads besides the layer); ``None`` when ``scores=False``.
        layer: The factorised layer.
        input_size: ``(H, W)``.
        framework: ``"torch"`` or ``"keras"``.
        version: camlens's version.
    """

    maps: np.ndarray
    raw: np.ndarray
    concepts: np.ndarray
    scores: np.ndarray | None
    layer: str
    input_size: Size
    framework: str
    version: str = field(default="")

    def __post_init__(self) -> None:
        _freeze(self, ("maps", "raw", "concepts", "scores"))

    def top_classes(self, k: int = 1) -> np.ndarray:
        """Return each concept's ``k`` highest-scoring output units, ``(concepts, k)``."""
        if self.scores is None:
            raise BadInputError("this factorisation has no scores: call with scores=True")
        order: np.ndarray = np.argsort(-self.scores, axis=1, kind="stable")[:, :k]
        return order


class Factorizer:
    """Deep Feature Factorization of a model at one layer, reusable across batches.

    Finds ``k`` concepts in each batch it is called on (Collins et al., ECCV 2018,
    arXiv:1806.10206): the layer's activations over the whole batch, read as a non-negative
    ``(K, N*h*w)`` matrix ``V``, are factorised as ``V ≈ W H`` (NMF,
    :func:`camlens.methods.dff.nmf`): ``W``'s columns are concepts in channel space, ``H``'s
    rows their amount at each location of each image. Each concept is scored by the network
    after the layer (the concept vector at every location), which for a global average pool
    and a linear head is the linear layer applied to the concept, as pytorch-grad-cam's
    ``computation_on_concepts=model.fc``, and works for any head. The backend, the layer and
    the network after it (which scores the concepts) are found once and kept for the next
    batch, as an :class:`camlens.Explainer` keeps its own.

    Deviation: pytorch-grad-cam subtracts each channel's minimum to make any layer
    non-negative; camlens refuses negative activations instead (pick a layer after a ReLU),
    since the shifted factors no longer add up to the activations.

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model``.
        layer: A layer name, path or object; ``None`` for the automatic pick (made on the
            first batch and kept).
        k: How many concepts.
        iterations: NMF updates.
        seed: Seed of NMF's initialisation.
        scores: Score each concept with the network after the layer.
        output, logits, input: As for :class:`camlens.Explainer` (``input`` picks the image
            of several inputs).
    """

    def __init__(
        self,
        model: Any,
        layer: Any = None,
        *,
        k: int = 4,
        iterations: int = 200,
        seed: int = 0,
        scores: bool = True,
        output: OutputSelector = None,
        logits: bool = True,
        input: InputSelector = None,
    ) -> None:
        """Validate the options and resolve the backend and any explicit layer."""
        self.k = positive_int(k, "k")
        self.iterations = positive_int(iterations, "iterations")
        self.seed = seed_int(seed)
        self.scores = bool(scores)
        self._model = model
        self._backend = backend_for(model, output=output, logits=logits, input=input)
        self._layer = self._backend.resolve_layer(layer) if layer is not None else None

    @property
    def layer(self) -> str | None:
        """Return the factorised layer's name (``None`` until an automatic pick has run)."""
        return None if self._layer is None else self._layer.name

    def __call__(self, inputs: Any) -> Factorization:
        """Return the concepts of one batch, their maps and (if asked) their scores."""
        backend = self._backend
        with model_lock(self._model):
            x = backend.prepare(inputs)
            if self._layer is None:
                self._layer = backend.auto_layer(x)
            ref = self._layer
            probe = backend.probe(x, [ref], TopK(1), gradients=False)
            acts = probe.activations[0]  # (N, K, h, w)
            xp = namespace(acts)
            n, channels, h, w = acts.shape
            if bool(backend.to_numpy(xp.any(acts < 0))):
                raise BadInputError(
                    "Deep Feature Factorization needs non-negative activations; layer "
                    f"{ref.name!r} has negative ones: pick a layer after a ReLU"
                )
            matrix = xp.reshape(xp.permute_dims(acts, (1, 0, 2, 3)), (channels, n * h * w))
            k = self.k
            concepts, amounts = nmf(matrix, k, iterations=self.iterations, seed=self.seed)
            raw = xp.permute_dims(xp.reshape(amounts, (k, n, h, w)), (1, 0, 2, 3))
            size = backend.input_size(x)
            maps, _ = normalise(resize(xp.reshape(raw, (n * k, h, w)), size), signed=False)
            concept_scores = None
            if self.scores:
                concept_scores = _concept_scores(backend, x, ref, concepts, (h, w), probe.outputs)
        return Factorization(
            maps=backend.to_numpy(xp.reshape(maps, (n, k, *size))).astype(np.float32),
            raw=backend.to_numpy(raw).astype(np.float32),
            concepts=backend.to_numpy(xp.permute_dims(concepts, (1, 0))).astype(np.float32),
            scores=concept_scores,
            layer=ref.name,
            input_size=size,
            framework=backend.framework,
            version=__version__,
        )

    def __repr__(self) -> str:
        return (
            f"Factorizer(layer={self.layer!r}, k={self.k}, iterations={self.iterations}, "
            f"seed={self.seed}, scores={self.scores})"
        )


def factorize(
    model: Any,
    inputs: Any,
    k: int = 4,
    layer: Any = None,
    *,
    iterations: int = 200,
    seed: int = 0,
    scores: bool = True,
    output: OutputSelector = None,
    logits: bool = True,
    input: InputSelector = None,
) -> Factorization:
    """Find ``k`` concepts in a batch's activations at one layer (Deep Feature Factorization).

    One call of a :class:`Factorizer` (see it for the method and its options); to factorise
    many batches of one model, make the :class:`Factorizer` once and call it on each, so the
    network after the layer is prepared once.

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model``.
        inputs: The model's own input batch.
        k, layer, iterations, seed, scores, output, logits, input: As for :class:`Factorizer`.
    """
    return Factorizer(
        model,
        layer,
        k=k,
        iterations=iterations,
        seed=seed,
        scores=scores,
        output=output,
        logits=logits,
        input=input,
    )(inputs)


def _concept_scores(
    backend: Any, x: Any, ref: Any, concepts: Array, grid: Size, outputs: np.ndarray
) -> np.ndarray:
    """Return the ``(k, U)`` outputs with the layer's output the concept at every location."""
    xp = namespace(concepts)
    k = concepts.shape[1]
    units = np.arange(outputs.shape[1])[None, :]

    def make(n: int, start: int, stop: int) -> Array:
        vectors = xp.permute_dims(concepts[:, start:stop], (1, 0))  # (B, K)
        ones = xp.ones((1, 1, *grid), dtype=concepts.dtype, device=device(concepts))
        return vectors[:, :, None, None] * ones

    scoring = Scoring(units=units, probabilities=False, batch_size=64, on_batch=lambda _: None)
    (result,) = backend.replaced_scores(rows(x, 0, 1), ref, make, [k], scoring)
    return np.asarray(result, dtype=np.float32)
