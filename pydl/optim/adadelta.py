"""Adadelta (torch.optim.Adadelta).

Per parameter, with ``g`` the gradient (negated when maximizing)::

    g = g + weight_decay * p
    square_avg = rho * square_avg + (1 - rho) * g * g
    delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
    acc_delta = rho * acc_delta + (1 - rho) * delta * delta
    p = p - lr * delta
"""
from __future__ import annotations

from .. import _array
from .optimizer import Optimizer, check_nonnegative

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    """``Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False)``.
    State per parameter: ``step``, ``square_avg``, ``acc_delta``."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, g):
        check_nonnegative(g, "lr")
        if not 0.0 <= g["rho"] <= 1.0:
            raise ValueError(f"Invalid rho value: {g['rho']}")
        check_nonnegative(g, "eps", "weight_decay")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            for p, g, state in self._params_with_grad(group):
                d = p.data
                xp = _array.module(d)
                if not state:
                    state["step"] = self._new_step()
                    state["square_avg"] = xp.zeros_like(d)
                    state["acc_delta"] = xp.zeros_like(d)
                state["step"] += 1
                sq, acc = state["square_avg"], state["acc_delta"]
                g = self._effective_grad(d, g, group["maximize"], group["weight_decay"])
                _, t, delta = self._scratch(d, 3)
                sq *= rho
                xp.multiply(g, g, out=t)
                t *= 1 - rho
                sq += t
                xp.add(sq, eps, out=t)
                xp.sqrt(t, out=t)  # std
                xp.add(acc, eps, out=delta)
                xp.sqrt(delta, out=delta)
                delta /= t
                delta *= g
                acc *= rho
                xp.multiply(delta, delta, out=t)
                t *= 1 - rho
                acc += t
                delta *= -lr
                d += delta
        return loss
