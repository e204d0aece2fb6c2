"""Argument checks shared by every op's normalizer.

Each check names the argument, says what was expected and what came:
``TypeError`` for the kind of object or its dtype, ``ValueError`` for shapes
and hyper-parameter values. The registry prefixes the op's name.
"""
from __future__ import annotations

import builtins
import math
import numbers
import os

import numpy as np

from .. import _array

FLOAT_DTYPES = ("float32", "float64")
#: integer indices (class targets, embedding rows): any width, signed or not; not bool
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
#: dtype names -> the native-byte-order dtypes they allow (the fast path of `array`)
_NATIVE = {d: frozenset(np.dtype(n) for n in d)
           for d in (FLOAT_DTYPES, INT_DTYPES, INT_DTYPES + FLOAT_DTYPES)}


def memory_limit() -> int:
    """Bytes this process could ever hold: physical memory plus swap, or the cgroup's
    limit if lower (read once). An array or output larger than that cannot be computed:
    refusing it up front beats the kernel that would write it being killed half-way."""
    if not _LIMIT:
        n = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        try:
            with open("/proc/meminfo") as f:
                swap = next((int(line.split()[1]) * 1024 for line in f if line.startswith("SwapTotal:")), 0)
        except OSError:
            swap = 0
        n += swap
        for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            try:
                with open(path) as f:
                    n = min(n, int(f.read().strip()))
                break
            except (OSError, ValueError):  # absent, or "max": no limit
                continue
        _LIMIT.append(n)
    return _LIMIT[0]


_LIMIT: list = []
#: arrays up to this size skip the memory check (no machine pydl runs on has less)
_SMALL_BYTES = 1 << 30


def _gib(n):
    return f"{n / 2 ** 30:.3g} GiB"


def fits(names, shape, itemsize, what="the output"):
    """``what`` of ``shape`` (Python ints, so nothing wraps) can exist: ValueError naming
    ``names`` (the arguments that set the shape) if its byte count overflows int64,
    MemoryError if it exceeds :func:`memory_limit`. Cheap: call it before any allocation."""
    n = math.prod(int(d) for d in shape) * int(itemsize)
    if n <= _SMALL_BYTES:
        return
    shape = tuple(int(d) for d in shape)
    if n > np.iinfo(np.int64).max:
        raise ValueError(f"{names}: {what} would have shape {shape}, {n // itemsize} elements: "
                         f"more than a 64-bit size can count")
    if n > memory_limit():
        raise MemoryError(f"{names}: {what} would have shape {shape} and need {_gib(n)}, more than "
                          f"this machine's memory ({_gib(memory_limit())})")


def array(name, x, ndim=None, min_ndim=None, layout=None, dtypes=FLOAT_DTYPES):
    """A NumPy or CuPy array of one of ``dtypes`` and (optionally) rank ``ndim``.

    ``layout`` (e.g. "(N, C, H, W)") only makes the rank error readable. An array whose
    logical size exceeds the machine's memory (a zero-stride broadcast view can claim
    any size) is a MemoryError: every op's output or workspace is at least that big.
    """
    if (type(x) is np.ndarray and x.dtype in _NATIVE.get(dtypes, ()) and x.nbytes <= _SMALL_BYTES
            and (ndim is None or x.ndim == ndim or (type(ndim) is tuple and x.ndim in ndim))
            and (min_ndim is None or x.ndim >= min_ndim)):
        return x  # the common case, accepted in a few hundred nanoseconds
    if _array.kind(x) is None:
        raise TypeError(
            f"{name}: expected a NumPy or CuPy array, got {type(x).__module__}.{type(x).__name__}"
        )
    if dtypes is not None and x.dtype.name not in dtypes:
        raise TypeError(f"{name}: expected dtype {' or '.join(dtypes)}, got {x.dtype.name}")
    if not x.dtype.isnative:
        raise TypeError(f"{name}: expected native byte order, got {x.dtype.str} (use x.astype(x.dtype.newbyteorder('=')))")
    if ndim is not None:
        ok = x.ndim in ndim if isinstance(ndim, tuple) else x.ndim == ndim
        if not ok:
            want = " or ".join(f"{n}-D" for n in ndim) if isinstance(ndim, tuple) else f"{ndim}-D"
            raise ValueError(
                f"{name}: expected a {want} array{' ' + layout if layout else ''}, "
                f"got shape {tuple(x.shape)}"
            )
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    fits(name, x.shape, x.dtype.itemsize, "the array")
    return x


def optional_array(name, x, **kw):
    return None if x is None else array(name, x, **kw)


def same_dtype(**arrays):
    """All non-None arrays share one dtype."""
    dtypes = {v.dtype for v in arrays.values() if v is not None}
    if len(dtypes) <= 1:
        return
    items = [(k, v) for k, v in arrays.items() if v is not None]
    k0, v0 = items[0]
    for k, v in items[1:]:
        if v.dtype != v0.dtype:
            raise TypeError(
                f"{k}: dtype {v.dtype.name} does not match {k0}'s {v0.dtype.name} "
                f"(pydl does not promote; cast explicitly)"
            )


def shape(name, x, expected, what=""):
    """``x.shape == expected``."""
    if x is not None and tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name}: expected shape {tuple(expected)}{' ' + what if what else ''}, got {tuple(x.shape)}"
        )
    return x


def integer(name, v, min=None, max=None):
    if type(v) is not int:  # (a plain int skips the ABC check: ~0.4 us of every op call)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
        v = int(v)
    if min is not None and v < min:
        raise ValueError(f"{name}: expected an int >= {min}, got {v}")
    if max is not None and v > max:
        raise ValueError(f"{name}: expected an int <= {max}, got {v}")
    return v


#: the largest window hyper-parameter (kernel size, stride, padding, dilation, output size)
#: accepted: the native kernels hold each in 32 bits and multiply them with sizes in 64
HYPER_MAX = 2 ** 31 - 1


def int_tuple(name, v, n, min=None, max=HYPER_MAX):
    """An int or a sequence of ``n`` ints (or of one int, repeated, as torch takes it),
    returned as an ``n``-tuple, each at most ``max`` (window hyper-parameters: 2**31 - 1)."""
    # plain ints and tuples of plain ints (nearly every call) skip the generic checks: this
    # runs 3-4 times per conv or pooling call, and the ABC checks below cost ~2 us each time
    if type(v) is int:
        out = (v,) * n
    elif type(v) is tuple and len(v) == n and all(type(e) is int for e in v):
        out = v
    else:
        if isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)):
            v = (v,) * n
        if isinstance(v, (tuple, list)) and len(v) == 1 and n > 1:
            v = tuple(v) * n
        if not isinstance(v, (tuple, list)) or len(v) != n:
            raise TypeError(f"{name}: expected an int or a sequence of {n} ints, got {v!r}")
        out = tuple(integer(name, e) for e in v)
    if min is not None and builtins.min(out) < min:
        raise ValueError(f"{name}: expected every value >= {min}, got {out}")
    if max is not None and builtins.max(out) > max:
        raise ValueError(f"{name}: expected every value <= {max}, got {out}")
    return out


def real(name, v, min=None, max=None, min_open=False, max_open=False):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if v != v:  # NaN (np.isnan on a Python float costs ~1 us)
        raise ValueError(f"{name}: expected a number, got nan")
    if min is not None and (v <= min if min_open else v < min):
        raise ValueError(f"{name}: expected a value {'>' if min_open else '>='} {min}, got {v}")
    if max is not None and (v >= max if max_open else v > max):
        raise ValueError(f"{name}: expected a value {'<' if max_open else '<='} {max}, got {v}")
    return v


def boolean(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__} {v!r}")
    return bool(v)


def choice(name, v, options):
    kinds = {type(o) for o in options}
    if type(v) not in kinds:
        names = " or ".join(sorted("None" if k is type(None) else k.__name__ for k in kinds))
        raise TypeError(f"{name}: expected {names} (one of {', '.join(map(repr, options))}), got {type(v).__name__}")
    if v not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {v!r}")
    return v


def dim(name, d, ndim):
    """A dimension index in [-ndim, ndim), returned non-negative."""
    d = integer(name, d)
    if not -ndim <= d < ndim:
        raise ValueError(f"{name}: expected a dimension in [{-ndim}, {ndim}), got {d}")
    return d % ndim


def indices(name, x, n, what="indices", ignore_index=None):
    """An array of any integer dtype whose values lie in [0, n) (or equal ``ignore_index``)."""
    x = array(name, x, dtypes=INT_DTYPES)
    if x.size == 0 or (0 <= x.min() and x.max() < n):  # the common case: two reductions, no masks
        return x
    bad = (x < 0) | (x >= n)
    if ignore_index is not None:
        bad &= x != ignore_index
    if bool(bad.any()):
        also = "" if ignore_index is None else f" or ignore_index={ignore_index}"
        raise ValueError(f"{name}: expected {what} in [0, {n}){also}, got {int(x[bad].ravel()[0])}")
    return x


def check_grad_array(name, g, expected_shape, dtype):
    """The upstream gradient: an array of the forward output's shape and dtype.

    For a 0-d output (a loss) a Python number, a NumPy scalar or a 0-d array of
    either float dtype is accepted and converted to ``dtype`` (``backward(1.0)``,
    or a float64 gradient for a float32 loss). A Python number becomes a NumPy
    array: for CuPy inputs pass a 0-d CuPy array.
    """
    if tuple(expected_shape) == ():
        if isinstance(g, numbers.Real) and not isinstance(g, (bool, np.bool_)):
            return np.asarray(g, dtype=dtype)
        if (_array.kind(g) is not None and g.ndim == 0 and g.dtype != dtype
                and g.dtype.name in FLOAT_DTYPES):
            return g.astype(dtype)
    if _array.kind(g) is None:
        raise TypeError(f"{name}: expected a NumPy or CuPy array, got {type(g).__name__}")
    if g.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name} (the inputs'), got {g.dtype.name}")
    if tuple(g.shape) != tuple(expected_shape):
        raise ValueError(f"{name}: expected the output's shape {tuple(expected_shape)}, got {tuple(g.shape)}")
    return g


# -- the forms torch accepts beyond the kernels' canonical one --------------------------


def batch_dim(name, x, ndim, layout):
    """``x`` with ``ndim`` dimensions, or one fewer (unbatched, as torch accepts): returns
    ``(x with the batch dimension, unbatched)``; the added dimension is a view."""
    x = array(name, x, ndim=(ndim, ndim - 1), layout=f"{layout} or unbatched without N")
    return (x[None], True) if x.ndim == ndim - 1 else (x, False)


def sum_to(g, shape):
    """Sum a gradient over the dimensions its argument was broadcast along."""
    if g is None or tuple(g.shape) == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    if lead < 0:  # the kernel saw the argument without its leading ones
        return g.reshape(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def unbatched_views(a, ndim):
    """A :class:`~pydl.registry.Viewed` of ``a`` for an unbatched call: the kernels'
    output (each of a tuple), of rank ``ndim`` with the batch dimension, loses it; an
    upstream gradient of rank ``ndim - 1`` gains it; the first input's gradient loses it
    again (the other inputs, weights, have no batch dimension)."""
    from ..registry import Viewed

    def out(o, saved):
        return o[0] if not isinstance(o, tuple) else tuple(e[0] for e in o)

    def grad(g):
        if isinstance(g, (tuple, list)):
            return tuple(e if getattr(e, "ndim", None) != ndim - 1 else e[None] for e in g)
        return g[None] if getattr(g, "ndim", None) == ndim - 1 else g

    def grads(res):
        return (None if res[0] is None else res[0][0],) + tuple(res[1:])

    return Viewed(a, out, grad, grads)
