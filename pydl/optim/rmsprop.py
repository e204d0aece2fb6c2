"""RMSprop (torch.optim.RMSprop), plain or centered, with or without momentum.

Per parameter, with ``g`` the gradient (negated when maximizing)::

    g = g + weight_decay * p
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    grad_avg = lerp(grad_avg, g, 1 - alpha)                             (centered)
    avg = sqrt(square_avg - grad_avg**2) + eps   (centered), else sqrt(square_avg) + eps
    buf = momentum * buf + g / avg; p = p - lr * buf                    (momentum > 0)
    p = p - lr * g / avg                                                (otherwise)
"""
from __future__ import annotations

from .. import _array
from .optimizer import Optimizer, check_nonnegative

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
    *, maximize=False)``. State per parameter: ``step``, ``square_avg``, and
    ``momentum_buffer`` / ``grad_avg`` when momentum / centered."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, g):
        check_nonnegative(g, "lr", "eps", "momentum", "weight_decay", "alpha")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        for group in self.param_groups:
            lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
            centered = group["centered"]
            for p, g, state in self._params_with_grad(group):
                d = p.data
                xp = _array.module(d)
                if not state:
                    state["step"] = self._new_step()
                    state["square_avg"] = xp.zeros_like(d)
                if momentum > 0 and "momentum_buffer" not in state:
                    state["momentum_buffer"] = xp.zeros_like(d)
                if centered and "grad_avg" not in state:
                    state["grad_avg"] = xp.zeros_like(d)
                state["step"] += 1
                sq = state["square_avg"]
                g = self._effective_grad(d, g, group["maximize"], group["weight_decay"])
                _, t = self._scratch(d, 2)
                sq *= alpha
                xp.multiply(g, g, out=t)
                t *= 1 - alpha
                sq += t
                if centered:
                    ga = state["grad_avg"]
                    self._lerp_(ga, g, 1 - alpha, t)
                    xp.multiply(ga, ga, out=t)
                    xp.subtract(sq, t, out=t)
                    xp.sqrt(t, out=t)
                else:
                    xp.sqrt(sq, out=t)
                t += eps  # avg
                xp.divide(g, t, out=t)
                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf *= momentum
                    buf += t
                    xp.multiply(buf, -lr, out=t)
                else:
                    t *= -lr
                d += t
        return loss
