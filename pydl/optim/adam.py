"""Adam and AdamW (torch.optim.Adam / AdamW, including amsgrad and maximize).

Per parameter, at step t, with ``g`` the gradient (negated when maximizing)::

    p = p * (1 - lr * weight_decay)       (AdamW: decoupled weight decay)
    g = g + weight_decay * p              (Adam: L2 penalty in the gradient)
    m = lerp(m, g, 1 - beta1)             (exp_avg)
    v = beta2 * v + (1 - beta2) * g * g   (exp_avg_sq)
    vmax = max(vmax, v); v' = vmax        (amsgrad; else v' = v)
    p = p - lr / (1 - beta1**t) * m / (sqrt(v') / sqrt(1 - beta2**t) + eps)
"""
from __future__ import annotations

import numpy as np

from .. import _array
from .optimizer import Optimizer, _fusable, _kernels, check_nonnegative

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
    maximize=False, fused=None, decoupled_weight_decay=False)``.

    ``decoupled_weight_decay=True`` is AdamW. ``fused``: None (or True) uses the Numba
    loop where it applies (contiguous float32/float64 NumPy arrays), False the
    array-module reference. State per parameter: ``step`` (0-d float32 array),
    ``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, fused=None, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _validate_group(self, g):
        check_nonnegative(g, "lr", "eps")
        betas = g["betas"]
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        check_nonnegative(g, "weight_decay")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            amsgrad, maximize = group["amsgrad"], group["maximize"]
            decoupled = group["decoupled_weight_decay"]
            fused_scalars = {}
            for p, g, state in self._params_with_grad(group):
                d = p.data
                if not state:
                    xp = _array.module(d)
                    state["step"] = self._new_step()
                    state["exp_avg"] = xp.zeros_like(d)
                    state["exp_avg_sq"] = xp.zeros_like(d)
                if amsgrad and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = _array.module(d).zeros_like(d)
                step_t = state["step"]
                step_t += 1
                step = float(step_t)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                vmax = state["max_exp_avg_sq"] if amsgrad else None
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                step_size = lr / bias_correction1
                arrays = (d, g, m, v) if vmax is None else (d, g, m, v, vmax)
                if group["fused"] is not False and _fusable(*arrays):
                    h = fused_scalars.get((d.dtype, step))
                    if h is None:  # once per dtype and step value in a group, not per parameter
                        h = np.array([0 if decoupled else wd, 1 - lr * wd if decoupled else 1, 1 - beta1, 0,
                                      beta2, 1 - beta2, bias_correction2_sqrt, eps, -step_size], d.dtype)
                        h[3] = h.dtype.type(1) - h[2]  # 1 - w in the arrays' precision, as torch's lerp
                        fused_scalars[d.dtype, step] = h
                    _kernels().adam(d.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                                (m if vmax is None else vmax).reshape(-1), amsgrad, maximize, h)
                else:
                    self._update(d, g, m, v, vmax, lr, beta1, beta2, eps, wd, decoupled, maximize,
                                 bias_correction2_sqrt, step_size)
        return loss

    def _update(self, d, g, m, v, vmax, lr, beta1, beta2, eps, wd, decoupled, maximize,
                bias_correction2_sqrt, step_size):
        """The reference: array-module ufuncs into the state and one scratch array."""
        xp = _array.module(d)
        if wd != 0 and decoupled:
            d *= 1 - lr * wd
        g = self._effective_grad(d, g, maximize, 0 if decoupled else wd)
        _, t = self._scratch(d, 2)
        self._lerp_(m, g, 1 - beta1, t)
        v *= beta2
        xp.multiply(g, g, out=t)
        t *= 1 - beta2
        v += t
        if vmax is not None:
            xp.maximum(vmax, v, out=vmax)
        xp.sqrt(v if vmax is None else vmax, out=t)
        t /= bias_correction2_sqrt
        t += eps
        xp.divide(m, t, out=t)
        t *= -step_size
        d += t


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
    maximize=False, fused=None)``: Adam with decoupled weight decay."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, fused=fused,
                         decoupled_weight_decay=True)

    def _after_load(self):
        for group in self.param_groups:  # a plain Adam's state dict loaded into AdamW stays AdamW
            group["decoupled_weight_decay"] = True
