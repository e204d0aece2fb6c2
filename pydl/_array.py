"""Array kinds (NumPy or CuPy) and output allocation.

Nothing here imports CuPy: an array is recognised as CuPy by its type's
module, so `import pydl` stays cheap on machines without a GPU.

Every backend allocates its outputs through :func:`empty`. Under
:func:`poisoned` (used by the conformance tests and ``pydl check``) new
outputs are filled with NaN first, so an element a kernel forgets to write
shows up as a mismatch instead of passing by luck.
"""
from __future__ import annotations

import contextlib
import contextvars

import numpy as np

_POISON = contextvars.ContextVar("pydl_poison", default=False)


def kind(a) -> str | None:
    """'numpy' for a NumPy ndarray, 'cupy' for a CuPy ndarray, else None."""
    if isinstance(a, np.ndarray):
        return "numpy"
    mod = type(a).__module__ or ""
    if mod.startswith("cupy") and hasattr(a, "__cuda_array_interface__"):
        return "cupy"
    return None


def module(a):
    """The array module (numpy or cupy) an array belongs to."""
    if kind(a) == "cupy":
        import cupy

        return cupy
    return np


@contextlib.contextmanager
def poisoned(on: bool = True):
    """Fill every output allocated through :func:`empty` with NaN."""
    token = _POISON.set(on)
    try:
        yield
    finally:
        _POISON.reset(token)


def empty(shape, dtype, like=None):
    """Allocate an output (NaN-filled under :func:`poisoned`)."""
    xp = module(like) if like is not None else np
    out = xp.empty(shape, dtype=dtype)
    if _POISON.get():
        if out.dtype.kind == "f":
            out.fill(np.nan)
        elif out.dtype.kind in "iu":
            out.fill(-12345)
    return out
