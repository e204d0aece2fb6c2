"""What the layers share: their ``dtype=`` / ``device=`` arguments and the checks of
integer hyper-parameters, with torch's names and clear messages."""
from __future__ import annotations

import numbers

import numpy as np

from .parameter import Parameter


def float_dtype(dtype) -> np.dtype:
    """A layer's parameter dtype: None is float32 (torch's default); a NumPy dtype,
    its name, or a torch dtype (``torch.float64``) otherwise. Floats only."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        name = str(dtype)
        if not name.startswith("torch."):
            raise TypeError(f"dtype: expected a float dtype (np.float32, 'float64', torch.float64), "
                            f"got {dtype!r}") from None
        try:
            dt = np.dtype(name[len("torch."):])
        except TypeError:
            raise TypeError(f"dtype: {dtype!r} has no NumPy equivalent") from None
    if dt.kind != "f" or dt.itemsize < 4:
        raise TypeError(f"dtype: the layers hold float32 or float64 parameters, got {dt}")
    return dt


def empty_param(shape, dtype) -> Parameter:
    """An uninitialised Parameter; ``reset_parameters`` fills it."""
    return Parameter(np.empty(tuple(shape), float_dtype(dtype)))


def place(module, device):
    """Move a freshly built module to ``device`` (None and "cpu" leave it on the host)."""
    if device is not None and str(device).split(":")[0] != "cpu":
        module.to(device)
    return module


def integer(name: str, v, min=None) -> int:
    """An int (bools refused): TypeError for another type, ValueError below ``min``."""
    if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if min is not None and v < min:
        raise ValueError(f"{name} must be >= {min}, got {v}")
    return v


def pair(name: str, v, min=None) -> tuple:
    """torch's ``_pair``: an int becomes (v, v); a pair of ints is kept as a tuple."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {tuple(v)!r}")
        return tuple(integer(name, e, min) for e in v)
    return (integer(name, v, min),) * 2


def window(name: str, v, min=None):
    """A pooling window argument as given (torch keeps ``kernel_size=2`` as 2 in the repr),
    checked to be an int or a pair of ints; lists become tuples."""
    pair(name, v, min)
    return tuple(v) if isinstance(v, (tuple, list)) else int(v)
