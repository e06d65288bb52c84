"""The errors camlens raises: one base class and a few specific ones."""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "BadTargetError",
    "CamlensError",
    "CamlensWarning",
    "DependencyError",
    "LayerError",
    "LayerNotFoundError",
    "MapStrengthWarning",
    "MethodError",
    "ModelLoadError",
    "UnsupportedModelError",
]


class CamlensError(Exception):
    """Base class of every error camlens raises on purpose."""


class UnsupportedModelError(CamlensError, TypeError):
    """The model is of a kind no backend handles, or it returns an output camlens cannot read."""


class LayerError(CamlensError, ValueError):
    """The target layer exists but cannot be explained (no spatial output, called twice...)."""


class LayerNotFoundError(LayerError, KeyError):
    """No layer of the model matches the given name or object."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BadTargetError(CamlensError, ValueError):
    """The target cannot be resolved against the model's output (index out of range...)."""


class BadInputError(CamlensError, ValueError):
    """The inputs are unusable: wrong rank, empty batch, NaN or infinite values..."""


class MethodError(CamlensError, ValueError):
    """The method is unknown, given options it does not take, or returned maps of the wrong
    shape."""


class DependencyError(CamlensError, ImportError):
    """A feature needs an optional package that is not installed (the message says which)."""


class ModelLoadError(CamlensError):
    """A model cannot be loaded: missing or corrupt file, unknown format, bad factory..."""


class CamlensWarning(UserWarning):
    """A legal but suspicious situation: an all-zero map, a layer with no spatial extent..."""


class MapStrengthWarning(CamlensWarning):
    """Maps that are empty (no positive evidence) or, under min-max scaling, near-flat.

    ``Explanation.strength`` holds the figures; filter this category to silence the warning
    alone (``warnings.simplefilter("ignore", camlens.MapStrengthWarning)``).
    """
