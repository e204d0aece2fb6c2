"""Gradient clipping in place: ``clip_grad_norm_`` and ``clip_grad_value_`` (torch.nn.utils).

``clip_grad_norm_`` computes the norm of each gradient, then the norm of those
norms (the norm of all gradients as one vector, for a p-norm or inf), in the
gradients' dtype as torch does, and scales every gradient by
``min(max_norm / (total + 1e-6), 1)``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ... import _array
from ...autograd import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []
    for p in parameters:
        g = p.grad
        if isinstance(g, Tensor):
            g = g.data
        if g is not None:
            grads.append(g)
    return grads


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False):
    """Scale the gradients of ``parameters`` (a Tensor or an iterable of them) in place so
    that their total ``norm_type``-norm is at most ``max_norm``; return the total norm
    before clipping, a 0-d array of the gradients' dtype (float32 0.0 when there are none).

    ``norm_type`` may be ``inf`` (``float('inf')`` or ``'inf'``). With ``error_if_nonfinite``
    a NaN or infinite total norm raises RuntimeError; otherwise the gradients are scaled
    by it anyway (becoming NaN), as torch does.
    """
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return np.zeros((), np.float32)
    xp = _array.module(grads[0])
    norms = [xp.linalg.norm(g.reshape(-1), ord=norm_type) for g in grads]
    total = xp.asarray(xp.linalg.norm(xp.stack(norms), ord=norm_type))  # 0-d array, not a NumPy scalar
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           "so it cannot be clipped. To disable this error and scale the gradients by the "
                           "non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = xp.minimum(float(max_norm) / (total + 1e-6), 1.0)
    if xp is np and coef == 1.0:  # a factor of exactly 1 changes nothing (on a GPU, not worth a sync)
        return total
    for g in grads:
        g *= coef.astype(g.dtype, copy=False)
    return total


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient of ``parameters`` to ``[-clip_value, clip_value]`` in place."""
    if not isinstance(clip_value, numbers.Real):
        raise TypeError(f"clip_grad_value_: clip_value must be a number, got {type(clip_value).__name__}")
    clip_value = float(clip_value)
    for g in _grads(parameters):
        _array.module(g).clip(g, -clip_value, clip_value, out=g)
