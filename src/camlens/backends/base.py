"""What every backend offers: the small surface the explainer relies on."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np

from camlens._types import Array, IntArray, Size
from camlens.backends._layout import Layout
from camlens.targets import Target

#: How the model's output is picked when the model returns several: an index into a tuple or
#: list, a key of a mapping, or a function of the raw output.
OutputSelector: TypeAlias = "int | str | Callable[[Any], Any] | None"


@dataclass(frozen=True, eq=False)
class Resolved:
    """A target resolved against one batch, on the host.

    Attributes:
        values: ``(N, T)`` float64: the explained quantities as the model gives them (a unit's
            raw output, before any sign; a custom target's scores).
        units: ``(N, T)`` int64: the explained output unit, ``-1`` for a custom target.
        signs: ``(N, T)`` float64: ``+1`` or ``-1``.
    """

    values: np.ndarray
    units: IntArray
    signs: np.ndarray


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a model: its name for ``layer=``, type, output shape, and CAM suitability.

    Attributes:
        name: Full name, as ``layer=`` accepts it (dotted for torch, ``outer/inner`` for Keras).
        type: The layer's class name.
        output_shape: Output shape in the model's layout, batch axis ``None``; ``None`` when
            the layer did not run or returned something other than a tensor.
        candidate: Whether camlens can explain this layer: a feature map (channels first or
            last) or tokens on a grid it can tell, more than 1x1, run once.
        auto: Whether this is the layer camlens picks when none is given.
        layout: How the output lies on the image grid (``"nchw 7x7"``, ``"nhwc 7x7"``,
            ``"tokens 1+14x14"``: prefix tokens + grid), or ``None`` when camlens cannot tell.
    """

    name: str
    type: str
    output_shape: tuple[int | None, ...] | None
    candidate: bool
    auto: bool
    layout: str | None = None


@dataclass(frozen=True, eq=False)
class LayerRef:
    """A resolved target layer: its full name and the framework's object for it."""

    name: str
    handle: Any


class _Input:
    """The handle of :data:`INPUT`: the model's input, not a layer of it."""

    def __repr__(self) -> str:
        return "<the model's input>"


#: The model's input as a pseudo-layer: pixel-level methods (Saliency, Guided Backprop) read
#: their "activations" (the input batch) and gradients there, ``(N, C, H, W)``; for a model
#: with several inputs, the explained one (:class:`Inputs`).
INPUT = LayerRef(name="input", handle=_Input())

#: Which of a model's several inputs is the explained image: an index into a tuple or list of
#: inputs, or a key of a dict of them; ``None`` picks the only 4-D array.
InputSelector: TypeAlias = "int | str | None"

#: A key of one of several inputs: an index into a tuple or list, or a dict's key.
InputKey: TypeAlias = "int | str"


def keys_of(entries: tuple[Any, ...] | list[Any] | dict[str, Any]) -> list[InputKey]:
    """Return the keys of a tuple, list or dict of inputs, in order."""
    return list(entries) if isinstance(entries, dict) else list(range(len(entries)))


def replaced(entries: Any, key: InputKey, value: Any) -> Any:
    """Return a copy of a tuple, list or dict of inputs with the entry ``key`` set to ``value``."""
    if isinstance(entries, dict):
        return {**entries, key: value}
    items = list(entries)
    items[key] = value  # type: ignore[index]
    return tuple(items) if isinstance(entries, tuple) else items


@dataclass(frozen=True, eq=False)
class Inputs:
    """A model's several inputs, prepared, with the explained image picked out.

    A backend's ``prepare`` returns this for a tuple, list or dict of inputs (and the tensor
    itself for a single input). Only the explained input is the image camlens reads sizes
    from, masks, perturbs and takes pixel gradients of; the others reach the model unchanged
    (put on its device), with each row of them beside its image's row.

    Attributes:
        entries: The inputs as the model takes them: a tuple, list or dict of the same keys as
            given, the explained one prepared as a single input is.
        key: The index or key of the explained input in ``entries``.
        batched: The keys of the entries with a batch axis (arrays and tensors, one row per
            image); any other entry (``None``, a flag) is passed as it is to every call.
    """

    entries: tuple[Any, ...] | list[Any] | dict[str, Any]
    key: InputKey
    batched: frozenset[InputKey]

    @property
    def image(self) -> Any:
        """Return the explained input, ``(N, C, H, W)`` (or channels-last)."""
        return self.entries[self.key]  # type: ignore[index]

    def with_image(self, image: Any) -> Inputs:
        """Return these inputs with the explained one replaced (the others as they are)."""
        return Inputs(replaced(self.entries, self.key, image), self.key, self.batched)

    def map(self, fn: Callable[[Any], Any]) -> Inputs:
        """Return these inputs with ``fn`` applied to every batched entry, the image included."""
        entries = self.entries
        for key in keys_of(entries):
            if key in self.batched:
                entries = replaced(entries, key, fn(entries[key]))  # type: ignore[index]
        return Inputs(entries, self.key, self.batched)

    def others(self, fn: Callable[[Any], Any]) -> Inputs:
        """Return these inputs with ``fn`` applied to every batched entry but the image."""
        image = self.image
        return self.map(fn).with_image(image)


def image_of(inputs: Any) -> Any:
    """Return the explained image of prepared inputs: itself, or an :class:`Inputs`' image."""
    return inputs.image if isinstance(inputs, Inputs) else inputs


def with_image(inputs: Any, image: Any) -> Any:
    """Return prepared inputs with their explained image replaced by ``image``."""
    return inputs.with_image(image) if isinstance(inputs, Inputs) else image


def model_inputs(inputs: Any) -> Any:
    """Return prepared inputs as the model takes them: the tensor, or several's entries."""
    return inputs.entries if isinstance(inputs, Inputs) else inputs


def rows(inputs: Any, start: int, stop: int) -> Any:
    """Return rows ``start..stop`` of prepared inputs (of every batched entry of several)."""
    if isinstance(inputs, Inputs):
        return inputs.map(lambda v: v[start:stop])
    return inputs[start:stop]


def signature(inputs: Any) -> tuple[Any, ...]:
    """Return what a compiled function of prepared inputs depends on: each batched entry's
    shape and dtype, and for several inputs their keys and which one is explained."""
    if not isinstance(inputs, Inputs):
        return (tuple(inputs.shape), str(inputs.dtype))
    return (
        type(inputs.entries).__name__,
        inputs.key,
        tuple(
            (k, tuple(v.shape), str(v.dtype)) if k in inputs.batched else (k, repr(v))
            for k, v in ((k, inputs.entries[k]) for k in keys_of(inputs.entries))  # type: ignore[index]
        ),
    )


#: How the outputs of perturbed inputs are read: ``"probability"`` (softmax over the output
#: units), ``"raw"``, or ``"auto"``: probabilities for class targets, raw values for
#: :class:`camlens.Output` targets (a regressor's units, e.g. years).
ScoreMode: TypeAlias = Literal["auto", "probability", "raw"]


def reads_probabilities(mode: ScoreMode, *, raw_target: bool) -> bool:
    """Return whether ``mode`` reads softmax probabilities, for a raw-output target or not."""
    return mode == "probability" or (mode == "auto" and not raw_target)


@dataclass(frozen=True, eq=False)
class Scoring:
    """How a backend scores perturbed inputs: which units, what score, how many at a time.

    Attributes:
        units: ``(N, T)`` output units whose scores are wanted, per image.
        probabilities: Softmax probabilities over all output units instead of raw outputs.
        batch_size: Perturbed inputs per forward pass (at most this many exist at a time).
        on_batch: Called with the number of perturbed inputs each forward pass scored.
    """

    units: np.ndarray
    probabilities: bool
    batch_size: int
    on_batch: Callable[[int], None]

    def batches(self, count: int) -> Iterator[tuple[int, int]]:
        """Yield ``(start, stop)`` ranges covering ``count`` items, ``batch_size`` at a time."""
        for start in range(0, count, self.batch_size):
            yield start, min(count, start + self.batch_size)

    def collect(
        self, counts: Sequence[int], outputs: Callable[[int, int, int], Any]
    ) -> list[np.ndarray]:
        """Score on the host, batch by batch: ``outputs(n, start, stop)`` gives image ``n``'s
        raw outputs for items ``start..stop`` (rows past ``stop - start``, padding, are
        dropped); returns ``(counts[n], T)`` per image, softmaxed where asked."""
        results = []
        for n, count in enumerate(counts):
            rows = []
            for start, stop in self.batches(count):
                flat = np.asarray(outputs(n, start, stop), dtype=np.float64)
                flat = flat.reshape(flat.shape[0], -1)[: stop - start]
                if self.probabilities:
                    flat = np.exp(flat - flat.max(axis=1, keepdims=True))
                    flat /= flat.sum(axis=1, keepdims=True)
                rows.append(flat[:, self.units[n]])
                self.on_batch(stop - start)
            results.append(np.concatenate(rows) if rows else np.zeros((0, self.units.shape[1])))
        return results


@dataclass(frozen=True, eq=False)
class BiasGradients:
    """The bias-gradients of one probe (FullGrad), row-major as in ``camlens._types``.

    A layer with a bias ``b`` (a convolution, a dense layer, a batch norm's effective bias
    ``beta - gamma * mu / sqrt(var + eps)`` in inference mode) gives the gradient of each row's
    score with respect to the layer's output (before any activation fused into the layer)
    times ``b`` broadcast over its channel axis: ``g ⊙ b``. For a network of such layers and
    piecewise-linear activations the scores decompose completely:
    ``score = sum(x ⊙ dscore/dx) + sum over layers of sum(g ⊙ b)`` (Srinivas & Fleuret, 2019).

    Attributes:
        layers: The names of the layers in ``maps``, in the order they ran.
        maps: One ``(M, K, h, w)`` float array per layer whose output is a feature map
            (rank 4, channels first or last), in the maths' library.
        rest: ``(M,)`` float64 NumPy: the summed ``g ⊙ b`` of every other layer with a bias
            (dense layers on vectors or tokens, batch norms of other ranks, 1-D and 3-D
            convolutions), which no map shows but the decomposition counts.
    """

    layers: tuple[str, ...]
    maps: list[Array]
    rest: np.ndarray


@dataclass(frozen=True, eq=False)
class Probe:
    """What one probe of the model captured, row-major as in ``camlens._types``.

    Attributes:
        activations: One ``(M, K, h, w)`` float array per layer, in the model's array library.
        gradients: Matching gradients of each row's score, or ``None`` if not asked for.
        resolved: The target's scores per image, ``(N, T)``.
        outputs: The model output the scores were read from, ``(N, U)`` float32 NumPy, one
            flattened row per image (pre-softmax where the backend skips a softmax).
        tokens: For an attention probe, how the attention maps' tokens lie on the image grid
            (prefix tokens, then the patch grid); its activations are then the layers'
            attention maps ``(M, heads, L, L)`` and its gradients theirs. ``None`` otherwise.
        hessian_products: Matching Hessian-vector products ``H A`` of each row's score at the
            layer, in the direction of the activations themselves (``sum_j d2y / dA_i dA_j
            A_j``), or ``None`` if not asked for.
        biases: The bias-gradients of every layer with a bias, when asked for
            (``biases=True``), else ``None``.
    """

    activations: list[Array]
    gradients: list[Array] | None
    resolved: Resolved
    outputs: np.ndarray
    tokens: Layout | None = None
    hessian_products: list[Array] | None = None
    biases: BiasGradients | None = None


class Backend(Protocol):
    """The framework-specific half of camlens. Hooks and state changes live inside :meth:`probe`."""

    framework: str
    #: Whether the model takes channels-last images, ``(N, H, W, C)``.
    channels_last: bool
    #: What the explained scores are read from: ``"model output"``, ``"pre-softmax logit"``...
    score_kind: str
    #: Whether :meth:`probe` can give gradients (an ONNX graph gives none).
    gradients: bool
    #: Whether :meth:`attention_probe` can capture attention maps (torch and Keras models).
    attention: bool
    #: Whether :meth:`probe` can give Hessian-vector products (a second backward pass).
    hessians: bool

    def resolve_layer(self, layer: Any) -> LayerRef:
        """Return the layer named by a name, a path or the framework's layer object."""
        ...

    def auto_layer(self, inputs: Any) -> LayerRef:
        """Return the last layer whose output is a spatial feature map for these inputs."""
        ...

    def summarize(self, input_size: Size | None, channels: int) -> list[LayerInfo]:
        """Describe every layer from one image of zeros (``camlens.layers``)."""
        ...

    def copies(self) -> Copies:
        """Return the maker of randomised copies of the model (for the sanity check)."""
        ...

    def prepare(self, inputs: Any) -> Any:
        """Validate the inputs and return them as the model's own tensor, on its device; a
        tuple, list or dict of several inputs as an :class:`Inputs` (an :class:`Inputs` with
        its image rebuilt on the host is prepared again, the same input explained)."""
        ...

    def input_size(self, inputs: Any) -> Size:
        """Return the spatial size ``(H, W)`` of prepared inputs (of the explained image)."""
        ...

    def probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        *,
        gradients: bool,
        guided: bool = False,
        biases: bool = False,
        hessian: bool = False,
    ) -> Probe:
        """Run the model once, capturing the layers' activations, the scores and gradients.

        A layer may be :data:`INPUT` (the input batch and its gradient). ``guided`` makes the
        backward pass guided (Springenberg et al.): at every ReLU's output only positive
        gradients pass on. ``biases`` (with ``gradients``) also takes the gradients at the
        output of every layer with a bias, times that bias (:class:`BiasGradients`, FullGrad);
        a backend that cannot raises :class:`camlens.errors.MethodError`. ``hessian`` (with
        ``gradients``) also gives each row's Hessian-vector product ``H A`` at each layer (a
        second backward pass through the first one's graph; zero where the score is linear in
        the layer's output). One probe takes one of ``biases`` and ``hessian``, not both.
        """
        ...

    def attention_layers(self, inputs: Any) -> tuple[LayerRef, ...]:
        """Return every layer whose output holds attention probabilities, in the order they
        run (only where :attr:`attention`)."""
        ...

    def attention_probe(
        self,
        inputs: Any,
        layers: Sequence[LayerRef],
        target: Target,
        *,
        gradients: bool,
        head: Callable[[Any], Any] | None = None,
    ) -> Probe:
        """Run the model once, capturing each attention layer's maps ``(M, heads, L, L)``, the
        scores and (if asked) the maps' gradients; ``Probe.tokens`` says how the tokens lie on
        the grid (only where :attr:`attention`). With ``head`` (a function of a block's output
        tokens returning the model's output for them), each layer's gradient is that of its
        own block's score for the units the model's output resolved (LeGrad's per-layer
        scores)."""
        ...

    def to_numpy(self, array: Array) -> np.ndarray:
        """Copy a result array to NumPy (once, at the end of a call)."""
        ...

    def masked_scores(
        self,
        inputs: Any,
        masks: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score ``inputs[n] * masks(n, start, stop)`` in batches; ``(counts[n], T)`` per image.

        Runs in inference mode on the model's device; at most ``scoring.batch_size`` masks and
        masked inputs exist at a time.
        """
        ...

    def perturbed_scores(
        self,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score the inputs ``make(n, start, stop)`` builds, ``(B, C, H, W)`` channels-first
        whatever the model's layout, in batches; ``(counts[n], T)`` per image ``n``.
        """
        ...

    def ablated_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        activations: Sequence[Array],
        channels: Sequence[np.ndarray],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score each image with each listed channel of ``layer`` zeroed; ``(len, T)`` per image.

        ``activations[n]`` is image ``n``'s ``(K, h, w)`` layer output. Only the network after
        the layer is re-run where the backend can isolate it.
        """
        ...

    def replaced_scores(
        self,
        inputs: Any,
        layer: LayerRef,
        make: Callable[[int, int, int], Array],
        counts: Sequence[int],
        scoring: Scoring,
    ) -> list[np.ndarray]:
        """Score each image with ``layer``'s output replaced; ``(counts[n], T)`` per image.

        ``make(n, start, stop)`` builds image ``n``'s replacements ``(B, K, h, w)``,
        channels-first whatever the model's layout. Only the network after the layer is re-run
        where the backend can isolate it.
        """
        ...


def seed_for(seed: int, *parts: str | int) -> int:
    """Return a 31-bit seed from ``seed`` and a layer's name, the same in either mode."""
    keys = [seed, *(zlib.crc32(p.encode()) if isinstance(p, str) else p for p in parts)]
    return int(np.random.SeedSequence(keys).generate_state(1)[0] & 0x7FFFFFFF)


class Copies(Protocol):
    """Framework-specific half of the check: copy the model, list and re-initialise layers."""

    def copy(self) -> Any:
        """Return an independent copy of the model, sharing no parameter with it."""
        ...

    def default_layers(self, model: Any) -> list[str]:
        """Return the names of the layers that own parameters, from the output to the input."""
        ...

    def layer(self, model: Any, name: str) -> Any:
        """Return the layer of ``model`` with this full name."""
        ...

    def has_parameters(self, layer: Any) -> bool:
        """Return whether re-initialising ``layer`` changes anything."""
        ...

    def randomise(self, layer: Any, seed: int) -> None:
        """Re-initialise every parameter inside ``layer`` (a layer of a copy)."""
        ...
