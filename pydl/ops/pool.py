"""2-D pooling: ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``.

Semantics follow ``torch.nn.functional``; NCHW, or unbatched (C, H, W) (the
batch dimension added as a view and removed from the results). Window
geometry is conv's (see ``pydl.ops.conv``) plus torch's pooling rules:

- ``stride=None`` means ``stride = kernel_size``;
- padding is at most half the kernel size (``padding <= kernel_size // 2``
  per dimension; torch checks this against the kernel, not the dilated span);
- the output has at least one position per dimension;
- ``ceil_mode`` rounds the output size up, but a last window must start
  inside the input or the left padding (one starting in the right padding is
  dropped); windows may then run past the right padding, and those positions
  count for nothing.

Padded positions never win a max and add zero to an average. A NaN in a
window makes its max NaN (as in torch). Without dilation every window holds
at least one input position; with dilation a window of a small input can
fall entirely in the padding: its max is -inf (as in torch) and its index -1
(torch returns an arbitrary index there and routes the gradient to it; pydl
routes it nowhere). Bytes moved: the input read once and the output written
once (the default count), plus the int64 indices max_pool2d writes.

Tolerances: a max is exact in any order, so ``max_pool2d`` forward is
compared exactly; gradients and averages sum a handful of values (at most
~100 in the cases), a few float32 ulps of the partial sums.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import BadCase, Case, Viewed, defop
from . import _checks as ck
from .conv import NCHW, case_id, output_hw

TOL = {"float32": (5e-6, 1e-6), "float64": (1e-12, 1e-12)}
EXACT = {"float32": (0.0, 0.0), "float64": (0.0, 0.0)}


def _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate the shared pooling arguments; returns the normalized dict (x with its
    batch dimension; see :func:`_batched`)."""
    kernel_size = ck.int_tuple("kernel_size", kernel_size, 2, min=1)
    if stride is None or (type(stride) in (tuple, list) and len(stride) == 0):
        stride = kernel_size  # torch's default, also spelled stride=()
    else:
        stride = ck.int_tuple("stride", stride, 2, min=1)
    padding = ck.int_tuple("padding", padding, 2, min=0)
    dilation = ck.int_tuple("dilation", dilation, 2, min=1)
    ceil_mode = ck.boolean("ceil_mode", ceil_mode)
    if any(p > k // 2 for p, k in zip(padding, kernel_size)):
        raise ValueError(f"padding: expected at most half the kernel size {kernel_size} per "
                         f"dimension, i.e. <= {tuple(k // 2 for k in kernel_size)}, got {padding}")
    output_hw("kernel_size", x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    return dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=ceil_mode)


def _pool_hw(a):
    return output_hw("kernel_size", a["x"].shape[2:], a["kernel_size"], a["stride"], a["padding"],
                     a.get("dilation", (1, 1)), a["ceil_mode"])


def _pool_shape(a):
    return tuple(a["x"].shape[:2]) + _pool_hw(a)


def _window_flops(a):
    """One compare (max) or add (average) per window position."""
    n, c = a["x"].shape[:2]
    oh, ow = _pool_hw(a)
    return n * c * oh * ow * a["kernel_size"][0] * a["kernel_size"][1]


def _pool_bad(rng, **extra):
    """Bad arguments shared by max_pool2d and avg_pool2d; ``extra`` adds op-specific ones
    as name=(value, exception, match)."""
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)

    def b(id, exc, match, **kw):
        return BadCase(id, dict(dict(x=x, kernel_size=3), **kw), exc, match)

    return [
        b("x 2-D", ValueError, "x", x=x[0, 0]),
        b("x W=0", ValueError, "x", x=x[..., :0]),
        b("kernel 0", ValueError, "kernel_size", kernel_size=0),
        b("kernel float", TypeError, "kernel_size", kernel_size=2.0),
        b("kernel too big", ValueError, "kernel_size", kernel_size=6),
        b("kernel too big, padded", ValueError, "kernel_size", kernel_size=(8, 2), padding=(1, 0)),
        b("stride 0", ValueError, "stride", stride=(0, 1)),
        b("padding -1", ValueError, "padding", padding=-1),
        b("padding > k/2", ValueError, "padding", padding=2),
        b("padding > k/2 one dim", ValueError, "padding", kernel_size=(3, 4), padding=(1, 3)),
        b("ceil_mode int", TypeError, "ceil_mode", ceil_mode=1),
    ] + [b(f"{k}={v!r}", exc, match, **{k: v}) for k, (v, exc, match) in extra.items()]


def _pool_bench(rng, dtype):
    """Issue #4's pooling shapes: N32 C64 112x112, 2x2/2 and 3x3/2 pad 1 (a ResNet stem),
    and the same at N4 for ``pydl bench --quick``."""
    def c(n, tags=(), **hp):
        x = rng.standard_normal((n, 64, 112, 112)).astype(dtype)
        return Case(case_id(x.shape, **hp), dict(x=x, **hp), tags=tags)

    return [c(32, kernel_size=2, stride=2), c(32, kernel_size=3, stride=2, padding=1),
            c(4, ("quick",), kernel_size=2, stride=2),
            c(4, ("quick",), kernel_size=3, stride=2, padding=1)]


def _max_bytes(a):
    """x read once, the output and its int64 indices written once."""
    out = int(np.prod(_pool_shape(a)))
    return a["x"].nbytes + out * (a["x"].itemsize + 8)


# -- max_pool2d ----------------------------------------------------------------------

def _max_cases(rng, dtype):
    def c(xs, **hp):
        return Case(case_id(xs, **hp), dict(x=rng.standard_normal(xs).astype(dtype), **hp))

    return [
        c((2, 3, 7, 6), kernel_size=2),                              # stride = kernel
        c((1, 2, 9, 8), kernel_size=3, stride=2, padding=1),
        c((1, 3, 6, 5), kernel_size=3, stride=1, padding=1),         # overlapping windows
        c((2, 1, 7, 7), kernel_size=3, stride=2, padding=1, ceil_mode=True),
        c((1, 1, 5, 8), kernel_size=2, stride=(2, 3), ceil_mode=True),  # windows past the edge
        c((1, 2, 8, 9), kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 1)),
        c((1, 2, 9, 9), kernel_size=3, stride=3, padding=1, dilation=2, ceil_mode=True),
        c((1, 1, 1, 1), kernel_size=1),
        c((0, 2, 4, 4), kernel_size=2),                              # empty batch
    ]


@defop(family="pool", differentiable=("x",), out_shape=_pool_shape, flops=_window_flops,
       tol=EXACT, grad_tol=TOL, cases=_max_cases, saves=("indices",), bench=_pool_bench,
       bytes=_max_bytes,
       bad_cases=lambda rng: _pool_bad(rng, dilation=(0, ValueError, "dilation")),
       torch=lambda torch, F, a: F.max_pool2d(a["x"], a["kernel_size"], a["stride"], a["padding"],
                                              a["dilation"], a["ceil_mode"]))
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Maximum over each (dilated) window of x (N, C, H, W), like ``F.max_pool2d``.

    ``stride=None`` means ``kernel_size``. Padded positions never win; a NaN
    in a window gives NaN. The forward saves ``indices`` (int64, the output's
    shape): the argmax as the flat index ``h*W + w`` into its input plane, as
    ``return_indices=True`` gives in torch: the first maximum in window order
    (row-major taps) on ties, the last NaN if the window holds NaN, and -1
    for a window with no input position (see the module docstring). The
    backward adds each gradient at that position (from the saved indices, or
    recomputed); -1 receives nothing. ``return_indices=True`` returns
    ``(out, indices)`` as torch does (the backward then takes the output's
    gradient, alone or as ``(grad, None)``). An unbatched x (C, H, W) gives
    (C, OH, OW).
    """
    x, unbatched = _batched(x)
    a = _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = ck.boolean("return_indices", return_indices)
    if not (unbatched or return_indices):
        return a
    a = ck.unbatched_views(a, 4) if unbatched else Viewed(a)
    if return_indices:
        squeeze = a.out or (lambda o, s: o)
        a.out = lambda o, saved: squeeze((o, saved["indices"]), saved)
        expand = a.grad or (lambda g: g)
        a.grad = lambda g: expand(g[0] if isinstance(g, (tuple, list)) and len(g) == 2 and g[1] is None else g)
    return a


def _batched(x, empty_channels=False):
    """x with its batch dimension (see ``ck.batch_dim``); C, H, W >= 1 (C = 0 too with
    ``empty_channels``: adaptive pooling, where torch takes it)."""
    x, unbatched = ck.batch_dim("x", x, 4, NCHW)
    if 0 in x.shape[2:] or (x.shape[1] == 0 and not empty_channels):
        raise ValueError(f"x: expected {'H, W' if empty_channels else 'C, H, W'} >= 1 in {NCHW}, "
                         f"got shape {tuple(x.shape)}")
    return x, unbatched


# -- avg_pool2d ----------------------------------------------------------------------

def _avg_cases(rng, dtype):
    def c(xs, **hp):
        return Case(case_id(xs, **hp), dict(x=rng.standard_normal(xs).astype(dtype), **hp))

    return [
        c((2, 3, 7, 6), kernel_size=2),
        c((1, 2, 9, 8), kernel_size=3, stride=2, padding=1),
        c((1, 2, 9, 8), kernel_size=3, stride=2, padding=1, count_include_pad=False),
        c((2, 1, 7, 7), kernel_size=3, stride=2, padding=1, ceil_mode=True),
        c((2, 1, 7, 7), kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        c((1, 1, 5, 8), kernel_size=2, stride=(2, 3), ceil_mode=True),   # windows past the edge
        c((1, 2, 6, 5), kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), divisor_override=5),
        c((1, 3, 4, 4), kernel_size=4),                                    # one window
        c((0, 2, 4, 4), kernel_size=2),                                    # empty batch
    ]


def _avg_bad(rng):
    return _pool_bad(rng, divisor_override=(0, ValueError, "divisor_override"),
                     count_include_pad=("yes", TypeError, "count_include_pad"))


def _avg_pool_args(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    a = _pool_args(x, kernel_size, stride, padding, 1, ceil_mode)
    del a["dilation"]
    a["count_include_pad"] = ck.boolean("count_include_pad", count_include_pad)
    if divisor_override is not None:
        divisor_override = ck.integer("divisor_override", divisor_override, min=-ck.HYPER_MAX,
                                      max=ck.HYPER_MAX)
        if divisor_override == 0:
            raise ValueError("divisor_override: expected a non-zero int or None, got 0")
    a["divisor_override"] = divisor_override
    return a


@defop(family="pool", differentiable=("x",), out_shape=_pool_shape,
       flops=lambda a: _window_flops(a) + math.prod(_pool_shape(a)), tol=TOL,
       cases=_avg_cases, bad_cases=_avg_bad, bench=_pool_bench,
       torch=lambda torch, F, a: F.avg_pool2d(a["x"], a["kernel_size"], a["stride"], a["padding"],
                                              a["ceil_mode"], a["count_include_pad"],
                                              a["divisor_override"]))
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over each window of x (N, C, H, W), like ``F.avg_pool2d``.

    ``stride=None`` means ``kernel_size``. The sum covers the input positions
    of the window (padding adds zero). It is divided by ``divisor_override``
    if given; else, with ``count_include_pad``, by the window's size clipped
    to the padded input (a ceil_mode window running past the right padding
    counts only up to it); else by the number of input positions it covers.
    An unbatched x (C, H, W) gives (C, OH, OW).
    """
    x, unbatched = _batched(x)
    a = _avg_pool_args(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)
    return ck.unbatched_views(a, 4) if unbatched else a


# -- adaptive_avg_pool2d ---------------------------------------------------------------

def adaptive_bounds(n, out):
    """torch's adaptive windows along one dimension: output i averages
    [floor(i*n/out), ceil((i+1)*n/out))."""
    i = np.arange(out)
    return (i * n) // out, -((-(i + 1) * n) // out)


def _adaptive_shape(a):
    return tuple(a["x"].shape[:2]) + a["output_size"]


def _window_total(n, out):
    """sum(end - start) of adaptive_bounds(n, out), in plain ints (the count runs before every
    native call, for the neighbours check: NumPy's arange and sums cost ~5 us a call)."""
    return sum(-((-(i + 1) * n) // out) - (i * n) // out for i in range(out))


def _adaptive_flops(a):
    """One add per window element, one divide per output."""
    n, c, h, w = a["x"].shape
    (oh, ow) = a["output_size"]
    return n * c * (_window_total(h, oh) * _window_total(w, ow) + oh * ow)


def _adaptive_cases(rng, dtype):
    def c(xs, output_size):
        x = rng.standard_normal(xs).astype(dtype)
        return Case(case_id(xs, output_size=output_size), dict(x=x, output_size=output_size))

    return [
        c((2, 3, 7, 6), (3, 4)),          # uneven, overlapping windows
        c((1, 2, 5, 9), 3),
        c((1, 2, 3, 5), (5, 7)),          # more outputs than inputs
        c((1, 1, 4, 4), (4, 4)),          # identity
        c((1, 2, 6, 6), (None, 2)),       # None keeps the input size
        c((2, 2, 9, 10), 1),              # global average
        c((1, 1, 1, 1), 1),
        c((0, 2, 4, 4), 2),               # empty batch
    ]


def _adaptive_bad(rng):
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    return [
        BadCase("x 2-D", dict(x=x[0, 0], output_size=2), ValueError, "x"),
        BadCase("output_size -1", dict(x=x, output_size=-1), ValueError, "output_size"),
        BadCase("output_size (2, -3)", dict(x=x, output_size=(2, -3)), ValueError, "output_size"),
        BadCase("output_size triple", dict(x=x, output_size=(1, 2, 3)), TypeError, "output_size"),
        BadCase("output_size float", dict(x=x, output_size=1.5), TypeError, "output_size"),
        BadCase("output_size str", dict(x=x, output_size="2"), TypeError, "output_size"),
    ]


def _adaptive_bench(rng, dtype):
    """Global average before a ResNet classifier (N32 C512 7x7 -> 1x1) and 56x56 -> 7x7;
    quick: the same at N4."""
    def c(xs, output_size, tags=()):
        x = rng.standard_normal(xs).astype(dtype)
        return Case(case_id(xs, output_size=output_size), dict(x=x, output_size=output_size), tags=tags)

    return [c((32, 512, 7, 7), 1), c((32, 64, 56, 56), 7),
            c((4, 512, 7, 7), 1, ("quick",)), c((4, 64, 56, 56), 7, ("quick",))]


@defop(family="pool", differentiable=("x",), out_shape=_adaptive_shape, flops=_adaptive_flops,
       tol=TOL, cases=_adaptive_cases, bad_cases=_adaptive_bad, bench=_adaptive_bench,
       torch=lambda torch, F, a: F.adaptive_avg_pool2d(a["x"], a["output_size"]))
def adaptive_avg_pool2d(x, output_size):
    """Average x (N, C, H, W) into ``output_size`` (OH, OW) windows, like
    ``F.adaptive_avg_pool2d``.

    ``output_size`` is an int or a pair whose entries are ints >= 0 or None
    (None keeps that input size). Output (oh, ow) averages rows
    [floor(oh*H/OH), ceil((oh+1)*H/OH)) and likewise columns: windows may
    overlap and differ in size by one. An unbatched x (C, H, W) gives (C, OH, OW);
    C may be 0, as in torch.
    """
    x, unbatched = _batched(x, empty_channels=True)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(n if o is None else o for o, n in zip(output_size, x.shape[2:]))
    output_size = ck.int_tuple("output_size", output_size, 2, min=0)
    ck.fits("x, output_size", x.shape[:2] + output_size, x.itemsize)
    a = dict(x=x, output_size=output_size)
    return ck.unbatched_views(a, 4) if unbatched else a


# -- window tables for the native kernels ------------------------------------------------

def window_table(n, out, kernel, stride, padding, dilation=1):
    """Along one dimension of size ``n``: int64 ``(start, count)``, output ``o``
    reading input positions ``start[o] + t*dilation`` for ``t < count[o]`` (the
    window's taps that fall inside the input; count 0 for a window wholly in the padding)."""
    first = np.arange(out, dtype=np.int64) * stride - padding
    t_lo = (np.maximum(0, -first) + dilation - 1) // dilation
    t_hi = np.minimum(kernel, np.maximum(0, (n - 1 - first) // dilation + 1))
    count = np.maximum(0, t_hi - t_lo)
    start = np.where(count > 0, first + t_lo * dilation, 0)
    return start, count


def avg_divisors(n, out, kernel, stride, padding, count_include_pad, dtype):
    """Along one dimension: each window's size as avg_pool2d counts it (the product over
    the two dimensions is the divisor): clipped to the padded input with
    ``count_include_pad``, else to the input."""
    first = np.arange(out, dtype=np.int64) * stride - padding
    end = np.minimum(first + kernel, n + padding)
    size = end - first if count_include_pad else np.minimum(end, n) - np.maximum(first, 0)
    return size.astype(dtype)


def avg_tables(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
               dtype):
    """((hstart, hcount), (wstart, wcount), hdiv, wdiv) of avg_pool2d: the divisor of output
    (oh, ow) is ``hdiv[oh] * wdiv[ow]``."""
    h, w = x_shape[2:]
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, (1, 1), ceil_mode)
    th = window_table(h, oh, kernel_size[0], stride[0], padding[0])
    tw = window_table(w, ow, kernel_size[1], stride[1], padding[1])
    if divisor_override is not None:
        return th, tw, np.full(oh, divisor_override, dtype), np.ones(ow, dtype)
    return (th, tw) + tuple(avg_divisors(n, o, k, s, p, count_include_pad, dtype)
                            for n, o, k, s, p in zip((h, w), (oh, ow), kernel_size, stride, padding))


def adaptive_tables(x_shape, output_size, dtype):
    """((hstart, hcount), (wstart, wcount), hdiv, wdiv) of adaptive_avg_pool2d."""
    tables = []
    for n, o in zip(x_shape[2:], output_size):
        start, end = adaptive_bounds(n, o)
        tables.append((start.astype(np.int64), (end - start).astype(np.int64)))
    return tables[0], tables[1], tables[0][1].astype(dtype), tables[1][1].astype(dtype)


def inverse_table(start, count, n):
    """The transpose of a table of step-1 windows with nondecreasing bounds: int64
    ``(lo, count)`` per input position ``i < n``, the outputs ``[lo, lo + count)`` whose
    windows hold ``i``."""
    i = np.arange(n)
    lo = np.searchsorted(start + count, i, side="right")   # first window ending after i
    hi = np.searchsorted(start, i, side="right")            # first window starting after i
    return lo.astype(np.int64), np.maximum(hi - lo, 0).astype(np.int64)
