"""``pydl.nn.functional``: every op of ``pydl.ops`` on Tensors, with the same name and
arguments, recorded for autograd (see :func:`pydl.autograd.op_function`).

A few functions torch users expect on top of the ops: ``dropout`` draws its
seed from ``pydl``'s generator when none is given (``pydl.manual_seed`` makes
a run repeat), ``pad`` (constant padding, differentiable), ``flatten``,
``one_hot``. Ops declared after this module is imported appear on first use
(module ``__getattr__``).
"""
from __future__ import annotations


import numpy as np

from .. import _array
from ..autograd import Tensor, _record, default_generator, op_function
from ..registry import SPECS

__all__ = ["dropout", "pad", "flatten", "one_hot", "scaled_dot_product_attention", "max_pool2d"]

_OWN = {"dropout", "scaled_dot_product_attention", "max_pool2d"}  # defined below on top of the ops

for _name in SPECS:
    if _name not in _OWN:
        globals()[_name] = op_function(_name)
        __all__.append(_name)
del _name

_dropout_op = op_function("dropout")
_sdpa_op = op_function("scaled_dot_product_attention")
_max_pool2d_op = op_function("max_pool2d")


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, seed=None, dropout_mask=None, generator=None,
                                 backend=None):
    """``pydl.ops.scaled_dot_product_attention`` on Tensors (a float ``attn_mask`` Tensor gets
    a gradient, as in torch). With ``dropout_p`` > 0 and neither ``seed`` nor ``dropout_mask``,
    the seed is drawn from ``generator`` (default ``pydl``'s), as :func:`dropout` does."""
    if dropout_p and seed is None and dropout_mask is None:
        seed = int((generator or default_generator()).integers(0, 2**63 - 1))
    return _sdpa_op(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, seed, dropout_mask,
                    backend=backend)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, backend=None):
    """``pydl.ops.max_pool2d`` on Tensors. With ``return_indices=True``, ``(out, indices)``:
    the indices an int64 Tensor without gradient (torch's flat per-plane positions)."""
    out = _max_pool2d_op(x, kernel_size, stride, padding, dilation, ceil_mode, backend=backend)
    if not return_indices:
        return out
    from ..ops import max_pool2d as op

    data = x.data if isinstance(x, Tensor) else x
    # the node keeps its saved indices to itself: a second forward (of the op, no graph) gives them
    return out, Tensor(op(data, kernel_size, stride, padding, dilation, ceil_mode, True, backend=backend)[1])


def dropout(x, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None, mask=None,
            generator=None, backend=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (training only).

    The mask is the op's counter-based hash of ``seed`` (drawn from ``generator``,
    default ``pydl``'s generator, when neither ``seed`` nor ``mask`` is given), so
    a run seeded with ``pydl.manual_seed`` repeats bit for bit. ``inplace`` is
    accepted for torch compatibility and ignored (the result is a new tensor).
    """
    if not training or p == 0:
        return x
    if seed is None and mask is None:
        seed = int((generator or default_generator()).integers(0, 2**63 - 1))
    return _dropout_op(x, p=p, training=training, seed=seed, mask=mask, backend=backend)


def pad(x: Tensor, pad, mode: str = "constant", value: float = 0.0) -> Tensor:
    """Constant padding, torch's order: ``(left, right, top, bottom, ...)`` from the last dim back."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of pads for at most {x.ndim} dims, got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding is not supported, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    xp = _array.module(x.data)
    y = xp.pad(x.data, widths, mode="constant", constant_values=value)
    sl = tuple(slice(a, a + n) for (a, _), n in zip(widths, x.shape))
    return _record(y, (x,), lambda g: (g[sl],), "pad")


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return x.flatten(start_dim, end_dim)


def one_hot(t, num_classes: int = -1) -> Tensor:
    idx = t.data if isinstance(t, Tensor) else t
    xp = _array.module(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected integer class indices, got dtype {idx.dtype}")
    n = int(idx.max()) + 1 if num_classes == -1 else int(num_classes)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"one_hot: class indices must lie in [0, {n})")
    return Tensor((idx[..., None] == xp.arange(n)).astype(np.int64))


def __getattr__(name):
    if name in SPECS:
        f = op_function(name)
        globals()[name] = f
        return f
    raise AttributeError(f"module 'pydl.nn.functional' has no attribute {name!r}")


