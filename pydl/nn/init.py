"""``pydl.nn.init``: torch 2.13's initialisers, in place on a Tensor's array.

Random draws come from ``generator`` or pydl's generator (``pydl.manual_seed``);
the distributions and their scales are torch's, the streams are not (a model
seeded in pydl and one seeded in torch start from different weights: copy a
state_dict to compare them).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _array
from ..autograd import Tensor, default_generator

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_", "dirac_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
           "trunc_normal_"]


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity, as torch."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _check(t, name):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    return t


def _fill(t: Tensor, values):
    a = t.data
    if _array.kind(a) == "cupy":
        import cupy
        values = cupy.asarray(values)
    a[...] = values.astype(a.dtype, copy=False) if hasattr(values, "astype") else values
    return t


def _fan_in_and_fan_out(t: Tensor):
    if t.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor of at least 2 dimensions, got shape {t.shape}")
    receptive = int(np.prod(t.shape[2:])) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def _fan(t, mode):
    mode = mode.lower() if isinstance(mode, str) else mode
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    _check(tensor, "uniform_")
    return _fill(tensor, (generator or default_generator()).uniform(a, b, tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    _check(tensor, "normal_")
    return _fill(tensor, (generator or default_generator()).normal(mean, std, tensor.shape))


def trunc_normal_(tensor: Tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None) -> Tensor:
    """Normal(mean, std) restricted to [a, b] (``a``, ``b`` in the tensor's units, as torch).

    torch's sampler: redraw the normal draws outside [a, b] while [a, b] holds
    more than 30% of the mass; otherwise draw uniformly on [a, b] and accept by
    the density, which ends quickly even for a window far in a tail.
    """
    _check(tensor, "trunc_normal_")
    if not a < b:
        raise ValueError(f"trunc_normal_: expected a < b, got a={a}, b={b}")
    g = generator or default_generator()
    lo, hi = (float(np.asarray(v, tensor.dtype)) for v in (a, b))  # bounds as the tensor will hold them

    def cdf(x):
        return (1.0 + math.erf((x - mean) / (std * math.sqrt(2.0)))) / 2.0

    shape = tensor.shape
    if cdf(b) - cdf(a) > 0.3:
        out = g.normal(mean, std, shape)
        bad = (out < lo) | (out > hi)
        while bad.any():
            out[bad] = g.normal(mean, std, int(bad.sum()))
            bad = (out < lo) | (out > hi)
    else:
        mode = max(a, min(mean, b))
        log_peak = -0.5 * ((mode - mean) / std) ** 2
        out = g.uniform(a, b, shape)
        bad = np.log(g.random(shape)) > -0.5 * ((out - mean) / std) ** 2 - log_peak
        while bad.any():
            n = int(bad.sum())
            cand = g.uniform(a, b, n)
            out[bad] = cand
            keep = np.log(g.random(n)) <= -0.5 * ((cand - mean) / std) ** 2 - log_peak
            idx = np.flatnonzero(bad)
            bad.flat[idx[keep]] = False
    return _fill(tensor, np.clip(out, lo, hi))


def constant_(tensor: Tensor, val: float) -> Tensor:
    _check(tensor, "constant_")
    tensor.data.fill(val)
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def eye_(tensor: Tensor) -> Tensor:
    _check(tensor, "eye_")
    if tensor.ndim != 2:
        raise ValueError(f"eye_: expected a 2-D tensor, got shape {tensor.shape}")
    return _fill(tensor, np.eye(*tensor.shape))


def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    """A convolution weight (3-, 4- or 5-D) that passes its input channels through:
    a 1 at the kernel's centre for output channel d of each group and input channel d."""
    _check(tensor, "dirac_")
    if tensor.ndim not in (3, 4, 5):
        raise ValueError(f"dirac_: expected a 3-, 4- or 5-D tensor, got shape {tensor.shape}")
    if groups <= 0 or tensor.shape[0] % groups:
        raise ValueError(f"dirac_: dim 0 ({tensor.shape[0]}) must be divisible by groups ({groups})")
    per_group = tensor.shape[0] // groups
    centre = tuple(s // 2 for s in tensor.shape[2:])
    w = np.zeros(tensor.shape)
    for g in range(groups):
        for d in range(min(per_group, tensor.shape[1])):
            w[(g * per_group + d, d) + centre] = 1
    return _fill(tensor, w)


def sparse_(tensor: Tensor, sparsity: float, std: float = 0.01, generator=None) -> Tensor:
    """A 2-D tensor of Normal(0, std) values with ceil(sparsity * rows) zeros in each column,
    at random rows (Martens 2010)."""
    _check(tensor, "sparse_")
    if tensor.ndim != 2:
        raise ValueError(f"sparse_: expected a 2-D tensor, got shape {tensor.shape}")
    g = generator or default_generator()
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    w = g.normal(0.0, std, (rows, cols))
    for c in range(cols):
        w[g.permutation(rows)[:num_zeros], c] = 0
    return _fill(tensor, w)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    fan_in, fan_out = _fan_in_and_fan_out(_check(tensor, "xavier_uniform_"))
    a = gain * math.sqrt(6.0 / float(fan_in + fan_out))
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    fan_in, fan_out = _fan_in_and_fan_out(_check(tensor, "xavier_normal_"))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator=None) -> Tensor:
    if _check(tensor, "kaiming_uniform_").data.size == 0:
        return tensor  # torch warns and leaves a zero-element tensor alone
    fan = _fan(tensor, mode)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator=None) -> Tensor:
    if _check(tensor, "kaiming_normal_").data.size == 0:
        return tensor
    fan = _fan(tensor, mode)
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), generator)


def orthogonal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """A (semi-)orthogonal matrix over the first dim x the rest, scaled by ``gain``."""
    _check(tensor, "orthogonal_")
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_: expected at least 2 dimensions, got shape {tensor.shape}")
    rows = tensor.shape[0]
    cols = tensor.data.size // max(rows, 1)
    if rows == 0 or cols == 0:
        return tensor
    flat = (generator or default_generator()).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, (gain * q).reshape(tensor.shape))
