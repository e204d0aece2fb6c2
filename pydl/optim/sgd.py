"""SGD with momentum, dampening, Nesterov, weight decay and maximize (torch.optim.SGD).

Per parameter, with ``g`` the gradient (negated when maximizing)::

    g = g + weight_decay * p
    buf = g                                       (first step)
    buf = momentum * buf + (1 - dampening) * g    (later steps)
    g = g + momentum * buf if nesterov else buf   (when momentum != 0)
    p = p - lr * g
"""
from __future__ import annotations

import numpy as np

from .. import _array
from .optimizer import Optimizer, _fusable, _kernels

__all__ = ["SGD"]


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
    maximize=False, fused=None)``. ``fused``: None (or True) uses the Numba loop where it
    applies (contiguous float32/float64 NumPy arrays), False the array-module reference."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, fused=fused)
        super().__init__(params, defaults)

    def _validate_group(self, g):
        if g["lr"] < 0.0:
            raise ValueError(f"Invalid learning rate: {g['lr']}")
        if g["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {g['momentum']}")
        if g["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {g['weight_decay']}")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
            fused_scalars = {}
            for p, g, state in self._params_with_grad(group):
                d = p.data
                buf = state.get("momentum_buffer") if momentum != 0 else None
                first = momentum != 0 and buf is None
                if first:
                    buf = _array.module(d).empty_like(d)
                    state["momentum_buffer"] = buf
                arrays = (d, g) if momentum == 0 else (d, g, buf)
                if group["fused"] is not False and _fusable(*arrays):
                    h = fused_scalars.get(d.dtype)
                    if h is None:
                        h = fused_scalars[d.dtype] = np.array([wd, momentum, 1 - dampening, -lr], d.dtype)
                    _kernels().sgd(d.reshape(-1), g.reshape(-1), (d if buf is None else buf).reshape(-1),
                               momentum != 0, first, nesterov, maximize, h)
                else:
                    self._update(d, g, buf, first, lr, momentum, dampening, wd, nesterov, maximize)
        return loss

    def _update(self, d, g, buf, first, lr, momentum, dampening, wd, nesterov, maximize):
        """The reference: array-module ufuncs into the buffer and two scratch arrays."""
        xp = _array.module(d)
        g = self._effective_grad(d, g, maximize, wd)
        _, t = self._scratch(d, 2)
        if momentum != 0:
            if first:
                xp.copyto(buf, g)
            else:
                buf *= momentum
                if dampening != 0:
                    xp.multiply(g, 1 - dampening, out=t)
                    buf += t
                else:
                    buf += g
            if nesterov:
                xp.multiply(buf, momentum, out=t)
                xp.add(g, t, out=t)
                g = t
            else:
                g = buf
        xp.multiply(g, -lr, out=t)
        d += t
