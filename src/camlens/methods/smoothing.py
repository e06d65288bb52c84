"""Smoothing that applies to any weight-based method: ``eigen_smooth``."""

from __future__ import annotations

from camlens._types import Array
from camlens.methods.base import Method
from camlens.methods.eigencam import principal_projection
from camlens.methods.perturbation import PerturbationMethod


def weight_based(method: object) -> bool:
    """Return whether ``method``'s map is a channel sum of weighted activations.

    True for a :class:`Method` that defines :meth:`Method.weights` or :meth:`Method.weighted`,
    and for a :class:`PerturbationMethod` that defines ``channel_weights``; false for methods
    that are no such sum (Eigen-CAM, FEM, KPCA-CAM) and for duck-typed method objects. A
    method built on another (Finer-CAM's ``base``) is weight-based when its base is.
    """
    base = getattr(method, "base", None)
    if isinstance(base, Method):
        return weight_based(base)
    if isinstance(method, PerturbationMethod):
        return type(method).channel_weights is not PerturbationMethod.channel_weights
    if isinstance(method, Method):
        cls = type(method)
        return cls.weights is not Method.weights or cls.weighted is not Method.weighted
    return False


def eigen_smooth(terms: Array) -> Array:
    """Return the first principal component of a method's weighted activations, ``(M, h, w)``.

    pytorch-grad-cam's ``eigen_smooth``: instead of summing the terms ``w_k ⊙ A^k`` over
    channels, project them (read as ``h*w`` points in ``R^K``) on their first principal
    direction, which drops what the channels do not share. As camlens's Eigen-CAM, and unlike
    pytorch-grad-cam, the terms are not centred first (the Eigen-CAM paper's form); the sign is
    the one that makes the map sum non-negative.
    """
    return principal_projection(terms)
