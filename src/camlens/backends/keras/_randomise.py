"""Randomised copies of a Keras model, for the parameter-randomisation sanity check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from camlens.backends.base import seed_for
from camlens.backends.keras._graph import children, iter_layers
from camlens.errors import UnsupportedModelError

_KERAS_ALIASES = {
    "kernel": ("kernel_initializer", "depthwise_initializer"),
    "depthwise_kernel": ("depthwise_initializer",),
    "pointwise_kernel": ("pointwise_initializer",),
}


class KerasCopies:
    """Copies of a functional or Sequential ``keras.Model`` by ``clone_model`` + ``set_weights``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.keras: Any = keras

        self.children: Callable[[Any], list[Any]] = children
        self.iter_layers: Callable[[Any], Any] = iter_layers

    def copy(self) -> Any:
        try:
            clone = self.keras.models.clone_model(self.model)
            clone.set_weights(self.model.get_weights())
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise UnsupportedModelError(
                f"keras.models.clone_model could not copy model {self.model.name!r} "
                f"({type(exc).__name__}: {first_line}); the sanity check randomises a copy, "
                "never the model itself: use a functional or Sequential model, or give custom "
                "layers get_config()/from_config()"
            ) from exc
        if {id(v) for v in clone.weights} & {id(v) for v in self.model.weights}:
            raise UnsupportedModelError(
                f"the clone of model {self.model.name!r} shares variables with it; randomising "
                "it would change the model: rebuild the model as a functional model"
            )
        return clone

    def _own(self, layer: Any) -> list[Any]:
        """Return the floating-point variables of ``layer`` that none of its sub-layers holds."""
        inner = {id(v) for child in self.children(layer) for v in child.weights}
        floating = ("float16", "bfloat16", "float32", "float64")
        return [v for v in layer.weights if id(v) not in inner and str(v.dtype) in floating]

    def default_layers(self, model: Any) -> list[str]:
        names = [path for path, layer in self.iter_layers(model) if self._own(layer)]
        return names[::-1]

    def _initializer(self, layer: Any, variable: Any, seed: int) -> Any:
        """Return the layer's own initialiser for ``variable``, seeded (Glorot-uniform if none)."""
        short = str(variable.name).rsplit("/", 1)[-1]
        init = None
        for attr in (f"{short}_initializer", *_KERAS_ALIASES.get(short, ())):
            if getattr(layer, attr, None) is not None:
                init = self.keras.initializers.get(getattr(layer, attr))
                break
        if init is None:  # what Keras's add_weight uses for a float weight without one
            init = self.keras.initializers.GlorotUniform()
        config = init.get_config()
        if "seed" in config:
            config["seed"] = seed
            init = type(init).from_config(config)
        return init

    def layer(self, model: Any, name: str) -> Any:
        return dict(self.iter_layers(model))[name]

    def _variables(self, layer: Any) -> list[tuple[str, Any, Any]]:
        """Return ``(path, owner, variable)`` for every variable inside ``layer``."""
        owners = [("", layer), *self.iter_layers(layer)]
        return [(path, sub, v) for path, sub in owners for v in self._own(sub)]

    def has_parameters(self, layer: Any) -> bool:
        return bool(self._variables(layer))

    def randomise(self, layer: Any, seed: int) -> None:
        for index, (path, sub, variable) in enumerate(self._variables(layer)):
            init = self._initializer(sub, variable, seed_for(seed, path, index))
            variable.assign(init(tuple(variable.shape), dtype=variable.dtype))
