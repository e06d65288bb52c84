"""The model-parameter randomisation test: does the map change when the model does?

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018. A map that explains the model
must change when the model's learned weights are replaced by random ones. The test compares each
image's map on the trained model with its map on copies whose layers are re-initialised, by the
Spearman rank correlation of the two maps: high correlations after randomisation mean the method
does not depend on what the model learned (the paper's finding for guided back-propagation and
edge detectors), low correlations mean it passes.

- *cascading*: re-initialise the layers one after the other from the output towards the input,
  keeping earlier ones random (row ``i`` has layers ``0..i`` randomised);
- *independent*: re-initialise each layer alone, on a fresh copy of the trained model.

The user's model is never modified: only copies are randomised.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camlens._locks import model_lock
from camlens.backends import Copies, backend_for
from camlens.backends._common import host_labels
from camlens.backends.base import seed_for
from camlens.errors import BadInputError, CamlensWarning
from camlens.explainer import explain
from camlens.explanation import Explanation
from camlens.methods import Method
from camlens.methods.perturbation import Progress
from camlens.targets import Class, TargetLike, TopK, as_target

__all__ = ["MODES", "SanityResult", "sanity_check", "spearman"]

#: The two orders in which the paper randomises layers.
MODES = ("cascading", "independent")


@dataclass(frozen=True, eq=False)
class SanityResult:
    """Rank correlations between original maps and maps of randomised copies of the model.

    Attributes:
        mode: ``"cascading"`` (row ``i``: layers ``0..i`` randomised together) or
            ``"independent"`` (row ``i``: layer ``i`` alone randomised).
        layers: The randomised layers, in the order applied; from the output towards the input
            unless they were given in another order.
        correlations: ``(len(layers), M)`` Spearman rank correlation between each explanation
            row's original map and its map with those parameters randomised (``M = N`` images
            with one target each). Read-only.
    """

    mode: str
    layers: tuple[str, ...]
    correlations: np.ndarray

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInputError(f"mode must be one of {MODES}; got {self.mode!r}")
        if self.correlations.ndim != 2 or self.correlations.shape[0] != len(self.layers):
            raise BadInputError(
                f"correlations of shape {self.correlations.shape} do not fit "
                f"{len(self.layers)} layer(s); expected (len(layers), M)"
            )
        self.correlations.setflags(write=False)

    def mean(self) -> np.ndarray:
        """Return the mean correlation over the explanation rows, one per layer, ``(L,)``."""
        return np.asarray(self.correlations.mean(axis=1))

    def to_markdown(self) -> str:
        """Return a Markdown table: one row per randomisation step, mean/min/max correlation."""
        what = "randomised up to" if self.mode == "cascading" else "randomised alone"
        lines = [
            f"| step | {what} | mean Spearman | min | max |",
            "|---:|---|---:|---:|---:|",
        ]
        for step, (name, row) in enumerate(zip(self.layers, self.correlations, strict=True), 1):
            lines.append(
                f"| {step} | `{name}` | {row.mean():.3f} | {row.min():.3f} | {row.max():.3f} |"
            )
        return "\n".join(lines) + "\n"


def _ranks(values: np.ndarray) -> np.ndarray:
    """Return the ranks ``0..P-1`` of each row's values, ties given their average rank."""
    ranks = np.empty(values.shape, dtype=np.float64)
    for row, out in zip(values, ranks, strict=True):
        order = np.argsort(row, kind="stable")
        ordered = row[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], ordered.size]
        group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
        out[order] = ((starts + ends - 1) / 2.0)[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the Spearman rank correlation of each pair of rows of ``a`` and ``b``.

    Args:
        a: ``(M, ...)`` maps; each row is flattened.
        b: ``(M, ...)`` maps of the same shape.

    Returns:
        ``(M,)`` float64: the Pearson correlation of the rows' ranks (ties averaged). A row
        whose values are all equal has no ranking: its correlation is defined as ``0``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 1:
        raise BadInputError(f"maps of shapes {a.shape} and {b.shape} cannot be compared")
    ra = _ranks(a.reshape(a.shape[0], -1))
    rb = _ranks(b.reshape(b.shape[0], -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    num = (ra * rb).sum(axis=1)
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, 0.0)


def _same_target(target: TargetLike, original: Explanation) -> TargetLike:
    """Return a target that makes a randomised model explain what the original explained.

    Units picked from the model's own output (the default top-1, ``TopK``) are frozen to the
    ``(N, T)`` units the trained model picked; fixed targets are reused as given.
    """
    if isinstance(as_target(host_labels(target)), (TopK, Class)):
        units = np.asarray(original.units).reshape(-1, original.targets_per_image)
        return [[int(u) for u in row] for row in units]
    return target


def sanity_check(
    model: Any,
    inputs: Any,
    *,
    method: str | Method | type[Method] = "gradcam",
    layer: Any = None,
    target: TargetLike = None,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    **explain_options: Any,
) -> SanityResult:
    """Run the model-parameter randomisation test of Adebayo et al. (NeurIPS 2018).

    The maps of ``camlens.explain(model, inputs, method=..., layer=..., target=...)`` are
    compared with those of copies of ``model`` whose ``layers`` are re-initialised, by the
    Spearman rank correlation ``rho(rank(map), rank(map_random))`` of each flattened pair of
    ``(H, W)`` maps (ties ranked by their average; a constant map has no ranking and scores 0).
    A method that explains the model gives low correlations once the top layers are random; a
    method that ignores the model (an edge detector) keeps them near 1 and fails.

    Each layer is re-initialised with its own initialiser (torch: ``reset_parameters()``,
    BatchNorm statistics included; other parameters Kaiming-uniform as torch's ``Linear``;
    Keras: the layer's ``*_initializer``, Glorot-uniform where it has none), seeded from ``seed``
    and the layer's name, so a layer gets the same random weights in both modes. The model
    itself, its modes, hooks and the global random state are left as they were.

    Args:
        model: A ``torch.nn.Module`` (copied with ``copy.deepcopy``) or a functional or
            Sequential ``keras.Model`` (copied with ``keras.models.clone_model``).
        inputs: The model's own input batch, as for :func:`camlens.explain`.
        method: The CAM method: a registry name, a method class or object.
        layer: The explained layer (``None``: the automatic pick, kept for every copy).
        target: As for :func:`camlens.explain`. The top-1 class (default) and ``TopK`` are
            frozen to the units the trained model picked, so every copy explains the same classes.
        mode: ``"cascading"`` or ``"independent"``.
        layers: Names of the layers to randomise, in the order applied.
            ``None``: every layer that owns parameters, from the output towards the input
            (torch: modules with direct parameters; Keras: layers with weights, inside nested
            models too). Randomising a container randomises everything inside it.
        seed: Non-negative int; the same seed gives the same random weights.
        progress: Called as ``progress(done, total)`` after each randomised layer.
        **explain_options: Passed to :func:`camlens.explain` (``relu``, ``logits``, ``output``,
            method hyper-parameters...).

    Returns:
        A :class:`SanityResult` with ``(len(layers), M)`` correlations.

    Raises:
        BadInputError: ``mode`` is unknown, ``layers`` is empty, repeats a layer or names one
            without parameters, or ``seed`` is not a non-negative int.
        LayerNotFoundError: A name in ``layers`` is not a layer of the model.
        UnsupportedModelError: The model cannot be copied (a subclassed Keras model, a torch
            module that ``copy.deepcopy`` rejects).

    Warnings about constant maps (:class:`camlens.CamlensWarning`) are raised for the trained
    model's maps only: randomised models often give them, and they score 0.
    """
    if mode not in MODES:
        raise BadInputError(f"mode must be 'cascading' or 'independent'; got {mode!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise BadInputError(f"seed must be a non-negative int; got {seed!r}")
    if isinstance(layers, str):
        raise BadInputError(f"layers must be a list of layer names, e.g. [{layers!r}]")
    copies = backend_for(model).copies()
    if layers is None:
        names = copies.default_layers(model)
        if not names:
            raise BadInputError(f"{type(model).__name__} has no layer with parameters to randomise")
    else:
        names = _chosen_layers(model, copies, layers, explain_options)

    original = explain(model, inputs, method=method, layer=layer, target=target, **explain_options)
    options = dict(explain_options)
    options.update(layer=list(original.layers), target=_same_target(target, original))

    def correlation(net: Any) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CamlensWarning)
            maps = explain(net, inputs, method=method, **options).maps
        return spearman(original.maps, maps)

    def fresh_copy() -> Any:
        with model_lock(model):  # not mid-way through another thread's pass (modes, hooks)
            return copies.copy()

    rows = []
    net = fresh_copy()
    for index, name in enumerate(names):
        if mode == "independent" and index > 0:
            net = fresh_copy()
        copies.randomise(copies.layer(net, name), seed_for(int(seed), name))
        rows.append(correlation(net))
        if progress is not None:
            progress(index + 1, len(names))
    return SanityResult(mode=mode, layers=tuple(names), correlations=np.stack(rows))


def _chosen_layers(
    model: Any, copies: Copies, layers: Sequence[Any], options: dict[str, Any]
) -> list[str]:
    """Resolve the layers to randomise to full names; fail before anything is explained."""
    if not layers:
        raise BadInputError("layers is empty; name at least one layer, or pass None for all")
    backend = backend_for(model, **{k: options[k] for k in ("output", "logits") if k in options})
    refs = [backend.resolve_layer(spec) for spec in layers]
    names = [ref.name for ref in refs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadInputError(f"layers names {repeated} more than once; list each layer once")
    for ref in refs:
        if not copies.has_parameters(ref.handle):
            raise BadInputError(
                f"layer {ref.name!r} ({type(ref.handle).__name__}) has no parameters to "
                "randomise; choose a layer that owns weights, or pass layers=None for all of them"
            )
    return names
