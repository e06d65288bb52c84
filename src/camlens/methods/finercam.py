"""Finer-CAM: a CAM of the difference between the target class and its nearest classes."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from array_api_compat import device

from camlens._checks import positive_int
from camlens._types import Array
from camlens.backends._common import namespace
from camlens.errors import BadInputError, BadTargetError, MethodError
from camlens.methods.base import Method
from camlens.methods.gradcam import GradCAM
from camlens.methods.perturbation import PerturbationMethod

Weighting = Literal["probability", "mean"]


class FinerCAM(Method):
    """Finer-CAM (Zhang et al., CVPR 2025, arXiv:2501.11309), on any gradient method.

    The explained score is the target class's logit against its ``R`` nearest classes ``d_t``
    (the classes whose logits are closest to ``y_c``): the base method (Grad-CAM by default)
    runs on the gradients of

    - ``weighting="probability"`` (the default: the paper's code, as merged into
      pytorch-grad-cam): ``S = sum_t p_t (y_c - gamma y_t) / sum_t p_t``, ``p_t`` the softmax
      probabilities of the references, ``gamma = 1``;
    - ``weighting="mean"`` (torchcam's form, which uses ``gamma = 0.6``):
      ``S = y_c - gamma mean_t y_t``.

    Both are exact: the gradients of the ``1 + R`` logits are taken in one vectorised backward
    pass and combined with coefficients computed from the logits, ``dS = dy_c - gamma sum_t
    c_t dy_t``; for the probability weighting ``c_t = q_t (1 + y_t - sum_s q_s y_s)`` with
    ``q = softmax(y_refs)``, which includes the gradient through the probabilities, as the
    paper's code differentiates them (``c_t = 1/R`` for the mean). One extra forward pass
    reads the logits that pick the references. ``scores`` are the values of ``S``; ``units``
    the target classes.

    Args:
        base: The gradient method whose map is computed (a :class:`Method` class or object,
            or a registry name).
        references: How many nearest classes to compare with (the paper: 3; capped at the
            number of other classes).
        gamma: The comparison strength (0 gives the base method's map of ``y_c``).
        weighting: ``"probability"`` or ``"mean"``, see above.
    """

    name = "finercam"
    #: The explainer asks :meth:`contrast` for the units and coefficients of the score.
    compares_units: ClassVar[bool] = True
    #: Options that name a method and may be given by registry name.
    method_options: ClassVar[tuple[str, ...]] = ("base",)

    def __init__(
        self,
        *,
        base: Method | type[Method] = GradCAM,
        references: int = 3,
        gamma: float = 1.0,
        weighting: Weighting = "probability",
    ) -> None:
        """Validate and keep the base method and the comparison's settings."""
        method = base() if isinstance(base, type) else base
        if not isinstance(method, Method) or isinstance(method, (PerturbationMethod, FinerCAM)):
            raise MethodError(
                f"FinerCAM's base must be a gradient method such as GradCAM or LayerCAM; got "
                f"{base!r}"
            )
        if not method.needs_gradients:
            raise MethodError(
                f"FinerCAM's base {method.name!r} reads no gradients, so its map would not "
                "depend on the compared classes: use a gradient method"
            )
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise BadInputError(f"gamma must be a finite number >= 0; got {gamma!r}")
        if not (math.isfinite(gamma) and gamma >= 0):
            raise BadInputError(f"gamma must be a finite number >= 0; got {gamma!r}")
        if weighting not in ("probability", "mean"):
            raise BadInputError(f"weighting must be 'probability' or 'mean'; got {weighting!r}")
        self.base = method
        self.references = positive_int(references, "references")
        self.gamma = float(gamma)
        self.weighting: Weighting = weighting

    def contrast(
        self, logits: np.ndarray, units: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the units and gradient coefficients of each row's score, and the scores.

        Args:
            logits: ``(N, U)`` model outputs.
            units: ``(N, T)`` target classes.

        Returns:
            ``(units (N, T, 1 + R), coefficients (N, T, 1 + R))`` (the target class first, then
            its references nearest first) and the ``(N, T)`` scores ``S``.
        """
        n, u = logits.shape
        if u < 2:
            raise BadTargetError("FinerCAM compares classes: the model has a single output")
        r = min(self.references, u - 1)
        y = logits.astype(np.float64)
        t = units.shape[1]
        all_units = np.zeros((n, t, 1 + r), dtype=np.int64)
        coefficients = np.zeros((n, t, 1 + r))
        scores = np.zeros((n, t))
        for i in range(n):
            for j, c in enumerate(units[i]):
                distance = np.abs(y[i] - y[i, c])
                distance[c] = np.inf
                refs = np.argsort(distance, kind="stable")[:r]
                yr = y[i, refs]
                if self.weighting == "probability":
                    q = np.exp(yr - yr.max())
                    q /= q.sum()
                    mean = float(q @ yr)
                    coef = q * (1.0 + yr - mean)
                else:
                    mean = float(yr.mean())
                    coef = np.full(r, 1.0 / r)
                all_units[i, j] = [c, *refs]
                coefficients[i, j] = [1.0, *(-self.gamma * coef)]
                scores[i, j] = y[i, c] - self.gamma * mean
        return all_units, coefficients, scores

    def combine(self, gradients: Array, coefficients: np.ndarray) -> Array:
        """Return ``sum_j c_j dy_j``: ``(M * J, K, h, w)`` gradients, ``(M, J)`` coefficients."""
        xp = namespace(gradients)
        m, j = coefficients.shape
        grouped = xp.reshape(gradients, (m, j, *gradients.shape[1:]))
        c = xp.asarray(coefficients, dtype=gradients.dtype, device=device(gradients))
        return xp.sum(c[:, :, None, None, None] * grouped, axis=1)

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return the base method's weights for the gradients of the contrastive score."""
        return self.base.weights(activations, gradients)

    def weighted(self, activations: Array, gradients: Array) -> Array:
        """Return the base method's weighted activations for the contrastive score."""
        return self.base.weighted(activations, gradients)

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return the base method's map for the gradients of the contrastive score."""
        return self.base.cam(activations, gradients)

    def __repr__(self) -> str:
        return (
            f"FinerCAM(base={self.base!r}, references={self.references}, gamma={self.gamma}, "
            f"weighting={self.weighting!r})"
        )
