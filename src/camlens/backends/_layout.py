"""How a layer's output lies on the image grid: the one conversion to ``(N, K, h, w)``.

No framework here: the conversion is array-API code that runs on the backend's own arrays.

A layer's output reaches the methods as ``(N, K, h, w)`` whatever its layout in the model:

- ``"nchw"``: channels first, as torch convolutions give it;
- ``"nhwc"``: channels last, as Keras (by default), Swin stages and ConvNeXt's norms give it;
- ``"tokens"``: ``(N, L, C)`` with ``L = P + h * w``: ``P`` prefix tokens (a class token,
  distillation or register tokens) followed by the patch tokens in row-major order, as vision
  transformers give it. Prefix tokens are dropped.

Which one applies is never guessed: an explicit ``layout=`` wins; else what the layer is says
it (a convolution is channels-first, a ``Linear``/``LayerNorm`` on a 4-D tensor channels-last,
a layer's own ``data_format``); else the geometry: a reading is plausible when its grid has the
input's aspect (within one cell) and is no larger than the input. Where both readings are
plausible, the layer defined just before it decides (a ReLU after a convolution); two plausible
readings with nothing to decide, or none, are an error that names the option to pass. A token
grid is inferred from the token count and the input size only where exactly one patch grid
fits (see :func:`token_grids`), or, where several fit, exactly one is tiled by square patches
without padding (a 16x16 input of 17 tokens is 4x4 patches of 4 after a class token, not 3x3
padded patches after 8 prefix tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from camlens._types import Array, Size
from camlens.errors import LayerError, MethodError

__all__ = [
    "LAYOUTS",
    "MAX_PREFIX",
    "Layout",
    "LayoutName",
    "LayoutSpec",
    "attention_layout",
    "layout_for",
    "plausible",
    "token_grids",
]

LayoutName: TypeAlias = Literal["nchw", "nhwc", "tokens"]
LAYOUTS: tuple[LayoutName, ...] = ("nchw", "nhwc", "tokens")

#: The most prefix tokens an inferred token grid may leave before the patch tokens (a class
#: token, a distillation token, up to 4 register tokens... with margin).
MAX_PREFIX = 8

#: ``layer output -> (N, K, h, w)``, written with the framework's own ops.
Reshape: TypeAlias = Callable[[Any], Any]


@dataclass(frozen=True)
class LayoutSpec:
    """What the user said about the explained layers' layout (nothing: decide per layer).

    Attributes:
        layout: ``"nchw"``, ``"nhwc"``, ``"tokens"`` or ``None`` (decide per layer).
        grid: ``(h, w)`` of the patch grid of a token layer, or of a 4-D map (to pick the
            reading); ``None`` to infer it.
        reshape: A function of the layer output returning ``(N, K, h, w)``, for any other
            layout; it must only re-index (slice, reshape, permute): gradients go through it
            too.
    """

    layout: LayoutName | None = None
    grid: Size | None = None
    reshape: Reshape | None = None

    def __post_init__(self) -> None:
        """Refuse unknown layouts, bad grids and a reshape given with another option."""
        if self.layout is not None and self.layout not in LAYOUTS:
            raise LayerError(
                f"layout must be one of {', '.join(repr(x) for x in LAYOUTS)} or None; got "
                f"{self.layout!r}"
            )
        if self.grid is not None:
            grid = tuple(self.grid)
            if len(grid) != 2 or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in grid
            ):
                raise LayerError(f"grid must be (h, w), two positive ints; got {self.grid!r}")
            object.__setattr__(self, "grid", (int(grid[0]), int(grid[1])))
        if self.reshape is not None:
            if not callable(self.reshape):
                raise LayerError(f"reshape must be a function; got {type(self.reshape).__name__}")
            if self.layout is not None or self.grid is not None:
                raise LayerError(
                    "reshape= decides the layout on its own; drop layout= and grid=, or reshape="
                )


@dataclass(frozen=True)
class Layout:
    """How one layer's output maps onto ``(N, K, h, w)``.

    Attributes:
        kind: ``"nchw"``, ``"nhwc"``, ``"tokens"``, or ``"reshape"`` (the user's function).
        prefix: Tokens before the patch grid (``"tokens"`` only).
        grid: ``(h, w)`` of the map (``None`` for ``"reshape"``: the function decides).
        reshape: The user's function (``"reshape"`` only).
    """

    kind: Literal["nchw", "nhwc", "tokens", "reshape"]
    prefix: int = 0
    grid: Size | None = None
    reshape: Reshape | None = None

    def describe(self) -> str:
        """Return the layout as the layer listing shows it."""
        if self.kind == "tokens" and self.grid is not None:
            h, w = self.grid
            return f"tokens {self.prefix}+{h}x{w}"
        return self.kind if self.grid is None else f"{self.kind} {self.grid[0]}x{self.grid[1]}"

    def to_grid(self, a: Array, xp: Any, name: str) -> Array:
        """Return ``a`` (the layer output, or its gradient) as ``(N, K, h, w)``."""
        if self.kind == "nchw":
            return a
        if self.kind == "nhwc":
            return xp.permute_dims(a, (0, 3, 1, 2))
        if self.kind == "tokens":
            assert self.grid is not None
            n, _, c = a.shape
            patches = xp.reshape(a[:, self.prefix :, :], (n, *self.grid, c))
            return xp.permute_dims(patches, (0, 3, 1, 2))
        assert self.reshape is not None
        out = self.reshape(a)
        shape = tuple(getattr(out, "shape", ()))
        if len(shape) != 4 or shape[0] != a.shape[0]:
            raise LayerError(
                f"reshape= turned layer {name!r}'s output {tuple(a.shape)} into "
                f"{shape or type(out).__name__}; it must return (N, K, h, w) with the same N"
            )
        return out

    def from_grid(self, g: Array, xp: Any, name: str) -> Array:
        """Return ``(B, K, h, w)`` values in the layer's own layout (the input Ablation-CAM and
        Recipro-CAM feed to the network after the layer)."""
        if self.kind == "nchw":
            return g
        if self.kind == "nhwc":
            return xp.permute_dims(g, (0, 2, 3, 1))
        if self.kind == "tokens" and self.prefix == 0:
            b, k, h, w = g.shape
            return xp.reshape(xp.permute_dims(g, (0, 2, 3, 1)), (b, h * w, k))
        what = f"{self.prefix} prefix token(s)" if self.kind == "tokens" else "a reshape= function"
        raise MethodError(
            f"Ablation-CAM and Recipro-CAM re-run the network from layer {name!r}, whose "
            f"output has {what}; camlens cannot rebuild that output from the grid: use "
            "Score-CAM or Eigen-CAM, or a layer whose output is the grid alone"
        )


def plausible(grid: tuple[int, int], size: Size) -> bool:
    """Return whether an ``(h, w)`` map can be the image grid of an ``(H, W)`` input.

    It is no larger than the input and has its aspect within one cell either way.
    """
    (h, w), (big_h, big_w) = grid, size
    if not (1 <= h <= big_h and 1 <= w <= big_w):
        return False
    return abs(big_h * w / big_w - h) <= 1 and abs(big_w * h / big_h - w) <= 1


def tiles(grid: tuple[int, int], size: Size) -> bool:
    """Return whether square ``p x p`` patches tile an ``(H, W)`` input into ``grid`` exactly."""
    (h, w), (big_h, big_w) = grid, size
    return big_h % h == 0 and big_w % w == 0 and big_h // h == big_w // w


def token_grids(tokens: int, size: Size) -> list[tuple[int, int, int]]:
    """Return every ``(prefix, h, w)`` a patch embedding could give ``tokens`` tokens with.

    A patch size (or stride) ``p`` gives ``h x w = floor(H/p) x floor(W/p)`` or the ceilings
    (padded inputs); the prefix is what remains, at most :data:`MAX_PREFIX`.
    """
    big_h, big_w = size
    found: set[tuple[int, int, int]] = set()
    for p in range(1, max(big_h, big_w) + 1):
        for h, w in ((big_h // p, big_w // p), (-(-big_h // p), -(-big_w // p))):
            prefix = tokens - h * w
            if h >= 1 and w >= 1 and 0 <= prefix <= MAX_PREFIX:
                found.add((prefix, h, w))
    return sorted(found)


def layout_for(
    name: str,
    shape: tuple[int, ...],
    batch: int,
    size: Size,
    spec: LayoutSpec,
    evidence: LayoutName | None,
    hint: LayoutName | None = None,
) -> Layout:
    """Return how layer ``name``'s output of ``shape`` lies on the grid of ``size`` inputs.

    Args:
        name: The layer's name, for messages.
        shape: The layer output's shape, batch axis first.
        batch: The number of inputs (the output's first axis must be it).
        size: ``(H, W)`` of the inputs.
        spec: What the user said.
        evidence: The layout the layer itself declares for a 4-D output (its kind or
            ``data_format``), or ``None``.
        hint: Weaker evidence, used only where both readings fit: the layout of the layer the
            model defines just before this one (an activation after a convolution).

    Raises:
        LayerError: The layout is ambiguous or does not fit; the message names the option.
    """
    if spec.reshape is not None:
        return Layout("reshape", reshape=spec.reshape)
    if not shape or shape[0] != batch:
        raise LayerError(
            f"layer {name!r} outputs shape {shape} for a batch of {batch}: the batch axis is not "
            "first (a sequence-first layer?); pass reshape= a function that returns (N, K, h, w)"
        )
    if len(shape) == 4:
        return _resolve_map(name, shape, size, spec, evidence, hint)
    if len(shape) == 3:
        return _resolve_tokens(name, shape, size, spec)
    raise LayerError(
        f"layer {name!r} outputs shape {shape}, which has no spatial extent; CAM needs a feature "
        "map (N, C, H, W) or (N, H, W, C), or tokens (N, L, C), e.g. the last convolutional "
        "block or the last transformer block's first norm"
    )


def _resolve_map(
    name: str,
    shape: tuple[int, ...],
    size: Size,
    spec: LayoutSpec,
    evidence: LayoutName | None,
    hint: LayoutName | None,
) -> Layout:
    readings: dict[LayoutName, tuple[int, int]] = {
        "nchw": (shape[2], shape[3]),
        "nhwc": (shape[1], shape[2]),
    }
    if spec.layout == "tokens":
        raise LayerError(
            f"layout='tokens' needs a 3-D (N, L, C) output, but layer {name!r} outputs {shape}; "
            "pass layout='nchw' or 'nhwc'"
        )
    if spec.layout is not None:
        kind: LayoutName = spec.layout
    else:
        fits = [k for k, grid in readings.items() if plausible(grid, size)]
        if spec.grid is not None:
            fits = [k for k, grid in readings.items() if grid == spec.grid]
            if not fits:
                raise LayerError(
                    f"grid={spec.grid} fits neither reading of layer {name!r}'s output {shape} "
                    f"(channels first: {readings['nchw']}, channels last: {readings['nhwc']})"
                )
        if evidence is not None and spec.grid is None and evidence not in fits:
            raise LayerError(
                f"layer {name!r} is {evidence} by its kind, but its output {shape} read so is a "
                f"{readings[evidence]} map, which is not the grid of {size} inputs (a "
                "per-head or per-token tensor?); pick another layer, or pass layout= or grid= "
                "if this is the image grid"
            )
        if evidence is not None and (spec.grid is None or evidence in fits):
            kind = evidence
        elif len(fits) == 1:
            kind = fits[0]
        elif len(fits) == 2 and hint is not None:
            kind = hint
        else:
            why = "both readings fit" if fits else "neither reading fits"
            raise LayerError(
                f"cannot tell the layout of layer {name!r}'s output {shape} for inputs of size "
                f"{size}: as channels first it is a {readings['nchw']} map, as channels last a "
                f"{readings['nhwc']} map, and {why}; pass layout='nchw' or layout='nhwc'"
            )
    if spec.grid is not None and readings[kind] != spec.grid:
        raise LayerError(
            f"grid={spec.grid} does not match layer {name!r}'s {readings[kind]} map "
            f"(layout {kind!r}, output {shape})"
        )
    return Layout(kind, grid=readings[kind])


def _resolve_tokens(name: str, shape: tuple[int, ...], size: Size, spec: LayoutSpec) -> Layout:
    if spec.layout not in (None, "tokens"):
        raise LayerError(
            f"layout={spec.layout!r} needs a 4-D output, but layer {name!r} outputs tokens "
            f"{shape}; pass layout='tokens' (or nothing) for (N, L, C) tokens"
        )
    if spec.layout is None and spec.grid is None and shape[2] < 2:
        raise LayerError(
            f"layer {name!r} outputs {shape}: one channel per token, as a pooled (N, C, 1) "
            "output has; pass layout='tokens' with grid=(h, w) if these are tokens"
        )
    return _token_grid(name, shape[1], shape, size, spec)


def attention_layout(
    name: str, shape: tuple[int, ...], batch: int, size: Size, spec: LayoutSpec
) -> Layout:
    """Return how the tokens of layer ``name``'s attention maps lie on the grid of ``size``
    inputs.

    Attention maps are ``(N, heads, L, L)``: for each head, the probabilities with which each
    query token attends to each key token, ``L = P + h * w`` tokens (prefix tokens, then the
    patch tokens row by row), found as for a token layer (``grid=`` where the count does not
    tell it).

    Raises:
        LayerError: The output is no attention map for this batch, or its grid is ambiguous.
    """
    if spec.reshape is not None or spec.layout not in (None, "tokens"):
        raise LayerError(
            "attention maps are (N, heads, L, L) over tokens: drop reshape= and layout= "
            "(grid=(h, w) says the patch grid where the token count does not tell it)"
        )
    if len(shape) != 4 or shape[0] != batch or shape[2] != shape[3]:
        raise LayerError(
            f"layer {name!r} gives {shape} for a batch of {batch}, not attention maps "
            "(N, heads, L, L); pass the layers whose outputs are the attention probabilities "
            "(or none, to find them)"
        )
    return _token_grid(name, shape[2], shape, size, spec)


def attention_tokens(
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    batch: int,
    size: Size,
    spec: LayoutSpec,
) -> Layout:
    """Return how the tokens of several attention layers' maps lie on the grid: one layout,
    the same for every layer (see :func:`attention_layout`).

    Raises:
        LayerError: A layer's output is no attention map, or the layers' tokens differ.
    """
    layouts = [
        attention_layout(name, shape, batch, size, spec)
        for name, shape in zip(names, shapes, strict=True)
    ]
    if len({(lay.prefix, lay.grid) for lay in layouts}) != 1:
        found = ", ".join(
            f"{name}: {lay.describe()}" for name, lay in zip(names, layouts, strict=True)
        )
        raise LayerError(
            f"the attention layers' maps are over different tokens ({found}); pass layers of "
            "one token grid (the blocks of one stage)"
        )
    return layouts[0]


def _token_grid(
    name: str, tokens: int, shape: tuple[int, ...], size: Size, spec: LayoutSpec
) -> Layout:
    """Return the tokens layout of ``tokens`` tokens: ``grid=`` if given, else the one patch
    grid that fits the input size."""
    if spec.grid is not None:
        h, w = spec.grid
        prefix = tokens - h * w
        if prefix < 0:
            raise LayerError(
                f"grid={spec.grid} needs {h * w} patch tokens, but layer {name!r} has {tokens} "
                f"tokens (output {shape})"
            )
        return Layout("tokens", prefix=prefix, grid=(h, w))
    grids = token_grids(tokens, size)
    exact = [g for g in grids if tiles(g[1:], size)]
    if len(grids) > 1 and len(exact) == 1:
        grids = exact  # one grid of square patches tiles the input; the others need padding
    if len(grids) == 1:
        prefix, h, w = grids[0]
        return Layout("tokens", prefix=prefix, grid=(h, w))
    found = (
        "no patch grid fits"
        if not grids
        else "several patch grids fit: "
        + ", ".join(f"{h}x{w} after {p} prefix token(s)" for p, h, w in grids)
    )
    raise LayerError(
        f"layer {name!r} outputs {tokens} tokens {shape} for inputs of size {size}, and {found}; "
        "pass grid=(h, w) (prefix tokens are those before the grid), or reshape= a function "
        "that returns (N, K, h, w)"
    )
