"""The explorer's logic, without gradio: settings in, overlays, maps and messages out.

Everything the browser app shows is computed here, so it is tested without a browser. A
:class:`Session` holds one model and keeps one :class:`Explainer` per (method, layer,
normalisation): a second click with the same settings reuses the explainer and whatever its
backend compiled (Keras probes, torch tails). :meth:`Session.cancel` stops a long run (Score-CAM,
Ablation-CAM) at its next batch of perturbed inputs.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from camlens import methods as _methods
from camlens._layers import LayerInfo
from camlens._layers import layers as list_layers
from camlens.backends import backend_for
from camlens.errors import (
    BadInputError,
    BadTargetError,
    CamlensError,
    LayerError,
    MapStrengthWarning,
)
from camlens.explainer import Explainer
from camlens.explanation import Explanation
from camlens.io import Preprocess
from camlens.io._images import read_image_and_notes
from camlens.postprocess import check_normalize
from camlens.render import overlay as draw_overlay
from camlens.targets import Class, Output, Target

__all__ = ["AUTO", "MAX_PIXELS", "Cancelled", "Result", "Session", "parse_target"]

#: The layer choice that lets camlens pick.
AUTO = "auto"
#: Uploads with more pixels than this are refused before they are decoded.
MAX_PIXELS = 40_000_000

Progress = Callable[[int, int], None]


class Cancelled(CamlensError):
    """A run was stopped on request (:meth:`Session.cancel`, the page's Stop button).

    Raised between two batches of perturbed inputs, or between two methods; nothing of the run
    is shown and the session serves the next request as usual.
    """


@dataclass(frozen=True)
class Result:
    """One method's explanation of one image, ready to show.

    Attributes:
        method: The method's registry name.
        overlay: The map over the (resized) image, as :func:`camlens.overlay` draws it.
        raw: The raw map at the layer's resolution, before ReLU and normalisation.
        explanation: The library's explanation the pictures come from.
        notes: Remarks on the map (a flat or empty map), shown beside it.
    """

    method: str
    overlay: Image.Image
    raw: np.ndarray
    explanation: Explanation
    notes: tuple[str, ...] = ()

    @property
    def range_text(self) -> str:
        """Return the raw map's range, for people."""
        h, w = self.raw.shape
        low, high = float(self.raw.min()), float(self.raw.max())
        return f"{self.method}: raw map {h}x{w}, range [{low:.4g}, {high:.4g}]"

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write the overlay as PNG and the raw map as .npy into ``folder``; return both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        png, npy = folder / f"{self.method}_overlay.png", folder / f"{self.method}_map.npy"
        self.overlay.save(png)
        np.save(npy, self.raw)
        return png, npy


def parse_target(text: str) -> Target | None:
    """Turn a target choice into a target.

    Args:
        text: ``"top-1"``, ``"class N"``, ``"output N up"`` or ``"output N down"``.

    Raises:
        BadTargetError: Anything else, saying what is accepted.
    """
    words = text.strip().lower().split()
    if words in (["top-1"], []):
        return None
    try:
        if len(words) == 2 and words[0] == "class":
            return Class(int(words[1]))
        if len(words) == 3 and words[0] == "output" and words[2] in ("up", "down"):
            return Output(int(words[1]), sign=1 if words[2] == "up" else -1)
    except ValueError:
        pass
    raise BadTargetError(
        f"target {text!r} is not understood; use 'top-1', 'class N', 'output N up' or "
        "'output N down'"
    )


class Session:
    """One model explored in the browser: its layers, targets, and maps per setting.

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model``.
        preprocess: How pictures become the model's input; ImageNet's at 224x224 by default
            (NHWC for a Keras model).
        classes: Class names by output index, for the predictions and the target choices.
        images: Named sample pictures (uint8 ``(H, W, 3)``) to offer besides uploads.
        regression: The model is a regressor: targets are its outputs, up or down.
    """

    def __init__(
        self,
        model: Any,
        *,
        preprocess: Preprocess | None = None,
        classes: Sequence[str] | None = None,
        images: Mapping[str, np.ndarray] | None = None,
        regression: bool = False,
    ) -> None:
        """Keep the model and its settings; nothing runs yet."""
        self.model = model
        if preprocess is None:
            channels_last = backend_for(model).channels_last
            preprocess = Preprocess(layout="NHWC" if channels_last else "NCHW")
        self.preprocess = preprocess
        self.classes = list(classes) if classes is not None else None
        self.images = dict(images or {})
        self.regression = bool(regression)
        self._explainers: dict[tuple[str, str, str], Explainer] = {}
        self._layers: list[LayerInfo] | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._progress: Progress | None = None

    def layer_choices(self) -> list[tuple[str, str]]:
        """Return ``(label, value)`` per explainable layer; the automatic pick comes first."""
        rows = self._layer_rows()
        auto = next((row.name for row in rows if row.auto), None)
        choices = [(f"auto ({auto})" if auto else "auto", AUTO)]
        choices += [(f"{row.name} [{row.layout or ''}]", row.name) for row in rows if row.candidate]
        return choices

    def _layer_rows(self) -> list[LayerInfo]:
        if self._layers is None:
            self._layers = list_layers(
                self.model, input_size=self.preprocess.size, channels=self.preprocess.channels
            )
        return self._layers

    def target_choices(self, outputs: np.ndarray | None = None, k: int = 5) -> list[str]:
        """Return target choices: top-k classes with their names, or a regressor's outputs.

        Args:
            outputs: ``(U,)`` model output of the current image, to rank classes; without it
                only ``"top-1"`` and the first ``k`` classes are offered.
            k: How many classes.
        """
        if self.regression:
            units = 1 if outputs is None else int(np.asarray(outputs).size)
            return [f"output {u} {way}" for u in range(units) for way in ("up", "down")]
        order = range(k) if outputs is None else np.argsort(-np.asarray(outputs), kind="stable")[:k]
        return ["top-1"] + [f"class {int(u)}" for u in order]

    def read(self, path: str | Path) -> np.ndarray:
        """Read an uploaded file as uint8 RGB, refusing non-images and huge images in words.

        Raises:
            BadInputError: The file is not an image Pillow reads, or it has more than
                :data:`MAX_PIXELS` pixels.
        """
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (UnidentifiedImageError, OSError) as exc:
            raise BadInputError(
                f"{Path(path).name} is not an image camlens can read; upload a PNG, JPEG, WebP "
                "or another picture file"
            ) from exc
        if width * height > MAX_PIXELS:
            raise BadInputError(
                f"{Path(path).name} is {width}x{height} pixels, over the explorer's limit of "
                f"{MAX_PIXELS / 1e6:.0f} megapixels; scale it down first"
            )
        pixels, _ = read_image_and_notes(path, channels=self.preprocess.channels)
        return pixels

    def picture(self, image: np.ndarray) -> np.ndarray:
        """Return the picture at the model's input size, as the overlays are drawn on it."""
        return self.preprocess.resize(np.asarray(image, dtype=np.uint8))

    def explainer(
        self,
        method: str,
        layer: str = AUTO,
        normalize: str = "minmax",
    ) -> Explainer:
        """Return the cached explainer for these settings, building it on first use.

        Raises:
            LayerError: ``layer`` has no spatial output camlens can explain.
        """
        key = (method, layer, normalize)
        found = self._explainers.get(key)
        if found is None:
            if layer != AUTO and layer not in {r.name for r in self._layer_rows() if r.candidate}:
                known = {r.name for r in self._layer_rows()}
                why = (
                    "has no spatial output camlens can explain"
                    if layer in known
                    else "is not a layer of this model"
                )
                raise LayerError(
                    f"layer {layer!r} {why}; pick one from the layer list "
                    "(auto: camlens's own pick)"
                )
            # A perturbation method reports to the session, which passes the report on to the
            # call in progress and stops the run there when asked to (see cancel).
            options: dict[str, Any] = {"progress": self._report} if _takes_progress(method) else {}
            found = Explainer(
                self.model,
                None if layer == AUTO else layer,
                method=method,
                normalize=check_normalize(normalize),
                **options,
            )
            self._explainers[key] = found
        return found

    def explain(
        self,
        image: np.ndarray,
        methods: Sequence[str],
        *,
        layer: str = AUTO,
        target: str = "top-1",
        normalize: str = "minmax",
        cmap: str = "jet",
        alpha: float = 0.5,
        progress: Progress | None = None,
    ) -> list[Result]:
        """Explain one picture with each method; return what the page shows.

        Calls are served one at a time. ``progress(done, total)`` hears how many perturbed
        inputs a perturbation method has scored.

        Raises:
            Cancelled: :meth:`cancel` was called while this call ran.
            CamlensError: A bad setting (method, layer, target, colormap, alpha), said in words.
        """
        if not methods:
            raise BadInputError("choose at least one method")
        chosen = parse_target(target)
        picture = self.picture(image)
        batch = self.preprocess([picture])
        results = []
        with self._lock:
            self._cancel.clear()
            self._progress = progress
            try:
                for method in methods:
                    self._stop_if_cancelled(f"before {method}")
                    explainer = self.explainer(method, layer, normalize)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", MapStrengthWarning)
                        exp = explainer(batch, chosen)
                    notes = tuple(
                        str(w.message) for w in caught if w.category is MapStrengthWarning
                    )
                    for w in caught:
                        if w.category is not MapStrengthWarning:
                            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    results.append(
                        Result(
                            method=method,
                            overlay=draw_overlay(picture, exp.maps[0], cmap=cmap, alpha=alpha),
                            raw=np.asarray(exp.raw[0]),
                            explanation=exp,
                            notes=notes,
                        )
                    )
            finally:
                self._progress = None
        return results

    def cancel(self) -> None:
        """Stop the call in progress at its next batch of perturbed inputs or its next method.

        That call raises :class:`Cancelled`; the next call runs as usual. Safe from any thread.
        """
        self._cancel.set()

    def _report(self, done: int, total: int) -> None:
        self._stop_if_cancelled(f"after {done} of {total} perturbed inputs")
        if self._progress is not None:
            self._progress(done, total)

    def _stop_if_cancelled(self, where: str) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"stopped on request {where}; click Explain to run again")

    def prediction(self, exp: Explanation, k: int = 5) -> str:
        """Return the model's prediction for the explained image, for people."""
        if exp.outputs is None:
            return f"score {exp.scores[0]:.4g}"
        out = np.asarray(exp.outputs[0], dtype=np.float64)
        if self.regression:
            return "outputs: " + ", ".join(f"{v:.4g}" for v in out[:k])
        probs = np.exp(out - out.max())
        probs /= probs.sum()
        lines = []
        for u in np.argsort(-probs, kind="stable")[:k]:
            name = self.classes[u] if self.classes and u < len(self.classes) else f"class {u}"
            lines.append(f"{name} (class {u}): {probs[u]:.1%}")
        return "\n".join(lines)


def _takes_progress(method: str) -> bool:
    cls = _methods.REGISTRY.get(method)
    return cls is not None and issubclass(cls, _methods.PerturbationMethod)
