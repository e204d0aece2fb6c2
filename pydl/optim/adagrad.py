"""Adagrad (torch.optim.Adagrad).

Per parameter, at step t, with ``g`` the gradient (negated when maximizing)::

    g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    sum = sum + g * g
    p = p - clr * g / (sqrt(sum) + eps)
"""
from __future__ import annotations

from .. import _array
from .optimizer import Optimizer

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
        if not 0.0 <= g["lr"]:
            raise ValueError(f"Invalid learning rate: {g['lr']}")
        if not 0.0 <= g["lr_decay"]:
            raise ValueError(f"Invalid lr_decay value: {g['lr_decay']}")
        if not 0.0 <= g["weight_decay"]:
            raise ValueError(f"Invalid weight_decay value: {g['weight_decay']}")
        if not 0.0 <= g["initial_accumulator_value"]:
            raise ValueError(f"Invalid initial_accumulator_value value: {g['initial_accumulator_value']}")
        if not 0.0 <= g["eps"]:
            raise ValueError(f"Invalid epsilon value: {g['eps']}")

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
