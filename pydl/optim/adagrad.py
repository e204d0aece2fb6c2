"""Adagrad (torch.optim.Adagrad).

Per parameter, at step t, with ``g`` the gradient (negated when maximizing)::

    g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    sum = sum + g * g
    p = p - clr * g / (sqrt(sum) + eps)
"""
from __future__ import annotations

from .. import _array
from .optimizer import Optimizer, check_nonnegative

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """``Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, *, maximize=False)``. As torch, the state (``step``, ``sum``) of every
    parameter is created with its group, so a fresh optimizer's state_dict has it."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 *, maximize=False):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, g):
        check_nonnegative(g, "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def _init_group_state(self, group):
        for p in group["params"]:
            self._init_state(self.state.setdefault(p, {}), p.data, group)

    def _init_state(self, state, d, group):
        if not state:
            state["step"] = self._new_step()
            state["sum"] = _array.module(d).full_like(d, group["initial_accumulator_value"])

    def step(self, closure=None):
        loss = self._run_closure(closure)
        for group in self.param_groups:
            lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
            for p, g, state in self._params_with_grad(group):
                d = p.data
                xp = _array.module(d)
                self._init_state(state, d, group)
                step_t = state["step"]
                step_t += 1
                clr = lr / (1 + (float(step_t) - 1) * lr_decay)
                g = self._effective_grad(d, g, group["maximize"], group["weight_decay"])
                _, t = self._scratch(d, 2)
                s = state["sum"]
                xp.multiply(g, g, out=t)
                s += t
                xp.sqrt(s, out=t)
                t += eps
                xp.divide(g, t, out=t)
                t *= -clr
                d += t
        return loss
