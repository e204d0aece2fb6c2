"""Property-based fuzzing of the native kernels against the reference (issue 14).

Hypothesis draws an op's arguments (shapes with 1s, primes, empty dimensions and
sizes on both sides of the kernels' tile, vector and thread boundaries; memory
layouts; hyper-parameters, valid or not; dtypes) and :func:`check` runs every
registered native backend (cpp, cython, numba and their named variants) on them:

- a valid draw: forward and backward (with the forward's saved tensors and
  recomputed) agree with the float64 NumPy reference within the spec's own
  tolerance (:meth:`~pydl.registry.OpSpec.tolerance`, ``tol_scale`` included),
  outputs poisoned with NaN, inputs left unchanged;
- an invalid draw: the reference raises a documented ``TypeError`` or
  ``ValueError`` and every backend raises the same type (never a crash, another
  exception or an answer).

A module of its own next to :mod:`pydl.testing` (whose comparison helpers it
reuses: ``assert_close``, ``copy_args``, ``run_forward``, ``run_backward``,
``upstream_grads``) rather than a ``pydl/testing/`` package: ``pydl.testing`` is
imported by the CLI and the conformance suite, and Hypothesis, which only the
tests need, must stay out of it.

Strategies: one per op family (``STRATEGIES``); any other op with a native kernel
(attention, norms, losses, dropout as they get kernels) falls back to
:func:`generic`, which takes a valid case from the spec's ``cases`` generator,
renames its dimension sizes consistently across every array (the same size in
two arrays stays the same) and redraws the values and layouts.

Data is drawn from a NumPy generator seeded by Hypothesis (fast for large arrays;
Hypothesis shrinks the shapes, parameters and seed). Every draw returns a
:class:`Draw`: the op, the keyword arguments, the dtype and a readable note.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from . import backends, registry, testing
from .registry import SPECS

#: sizes that sit on both sides of the kernels' boundaries: vector widths (8/16 floats),
#: register tiles (14 x 32), KC blocks and thread splits; 0 and 1; primes
BOUNDARY = (0, 1, 2, 3, 5, 7, 8, 9, 11, 13, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129)
#: how the reference and the kernels may see an array
LAYOUTS = ("C", "C", "F", "slice", "offset", "negative", "broadcast", "misaligned")
NATIVE = ("cpp", "cython", "numba")
#: elements per array a draw may have (keeps an example a few milliseconds)
CAP = 6000


@dataclass
class Draw:
    op: str
    args: dict
    dtype: np.dtype
    note: str = ""
    #: arrays whose layout the draw chose (name -> layout), for the report
    layouts: dict = field(default_factory=dict)
    #: the upstream gradients' layout
    grad_layout: str = "C"
    #: kernel threads for this example (None: as set); 3 on 2 cores splits unevenly
    threads: int | None = None

    def __repr__(self):  # what Hypothesis prints for a falsifying example
        def show(v):
            if isinstance(v, np.ndarray):
                return (f"array{tuple(v.shape)} {v.dtype} strides={v.strides} "
                        f"C={v.flags.c_contiguous} aligned={v.flags.aligned}")
            return repr(v)
        body = ", ".join(f"{k}={show(v)}" for k, v in self.args.items())
        return (f"Draw({self.op}, {self.dtype.name}, {self.note}; {body}; layouts={self.layouts}, "
                f"grad {self.grad_layout}, threads={self.threads})")


# -- shapes, values, layouts ------------------------------------------------------------


def size(lo=0, hi=129):
    """A dimension: a boundary size or any size in [lo, hi]."""
    pick = [s for s in BOUNDARY if lo <= s <= hi]
    return st.one_of(st.sampled_from(pick), st.integers(lo, min(hi, 40))) if pick else st.integers(lo, hi)


def fit(dims, cap=CAP, keep=()):
    """Shrink the largest dimensions (not those in ``keep``) until their product is <= cap."""
    dims = list(dims)
    while math.prod(dims) > cap:
        i = max((j for j in range(len(dims)) if j not in keep), key=lambda j: dims[j], default=None)
        if i is None or dims[i] <= 1:
            break
        dims[i] = max(1, dims[i] // 2)
    return tuple(dims)


def shape(ndim_lo=0, ndim_hi=4, lo=0, hi=129, cap=CAP):
    return st.integers(ndim_lo, ndim_hi).flatmap(
        lambda n: st.tuples(*[size(lo, hi)] * n)).map(lambda s: fit(s, cap))


def relayout(v: np.ndarray, layout: str, rng) -> np.ndarray:
    """``v``'s values (for "broadcast": constant along one axis) in another memory layout."""
    if v.ndim == 0 or v.size == 0 or layout == "C":
        return v
    if layout == "F":
        return np.asfortranarray(v)
    axis = int(rng.integers(v.ndim))
    if layout == "slice":        # every other element along one axis
        big = np.empty(v.shape[:axis] + (2 * v.shape[axis],) + v.shape[axis + 1:], v.dtype)
        idx = [slice(None)] * v.ndim
        idx[axis] = slice(1, None, 2)
        big[tuple(idx)] = v
        return big[tuple(idx)]
    if layout == "offset":       # a window into a larger array (row stride > row length)
        big = np.empty(v.shape[:-1] + (v.shape[-1] + 3,), v.dtype)
        big[..., 2:2 + v.shape[-1]] = v
        return big[..., 2:2 + v.shape[-1]]
    if layout == "negative":     # reversed along one axis (negative stride), same values
        idx = [slice(None)] * v.ndim
        idx[axis] = slice(None, None, -1)
        return np.ascontiguousarray(v[tuple(idx)])[tuple(idx)]
    if layout == "broadcast":    # a zero stride (np.broadcast_to: read-only)
        if v.shape[axis] == 1:
            return v
        first = np.take(v, [0], axis=axis)
        return np.broadcast_to(first, v.shape)
    if layout == "misaligned":   # a view into a byte buffer at an odd offset
        off = int(rng.integers(1, v.itemsize)) if v.itemsize > 1 else 1
        buf = bytearray(v.nbytes + off)
        out = np.frombuffer(buf, v.dtype, count=v.size, offset=off).reshape(v.shape)
        out[...] = v
        return out
    raise ValueError(layout)


@st.composite
def _layouts(draw, arrays: dict, rng):
    """Each float array of ``arrays`` in a drawn layout; returns (args, layouts)."""
    out, chosen = dict(arrays), {}
    for k, v in arrays.items():
        if isinstance(v, np.ndarray) and v.ndim and v.size:
            lay = draw(st.sampled_from(LAYOUTS), label=f"layout of {k}")
            out[k] = relayout(v, lay, rng)
            if lay != "C":
                chosen[k] = lay
    return out, chosen


def _rng(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))


def _dtype(draw, spec):
    return np.dtype(draw(st.sampled_from(spec.dtypes), label="dtype"))


def _scale(draw):
    return draw(st.sampled_from([1.0, 1.0, 3.0, 0.25, 20.0]), label="scale")


SPECIALS = (np.nan, np.inf, -np.inf)

#: what the fuzzer found with NaN/inf in an input other than the first (not drawn by default:
#: open, see the issue's closing note); each reproduces with the arguments given
SPECIAL_VALUES_ELSEWHERE = (
    "conv2d cython: a NaN in weight gives 0 + bias at output positions whose window lies in the "
    "zero padding (the reference multiplies the padding's zeros by NaN)",
    "cross_entropy numba: an inf in a probability target gives NaN where the reference gives inf",
)


@st.composite
def _finish(draw, op, args, dtype, rng, note=""):
    # NaN and infinities in the op's first input, where the op contract places them (the
    # conformance suite's test_nan_inf_propagate, here at random positions and shapes). In the
    # other inputs (weights, targets) the backends differ from the reference today: see
    # SPECIAL_VALUES_ELSEWHERE
    first = SPECS[op].differentiable[0]
    floats = [first] if isinstance(args.get(first), np.ndarray) and args[first].size else []
    if floats and draw(st.integers(0, 19), label="special values") == 0:
        k = floats[0]
        v = args[k] = args[k].copy()
        for _ in range(draw(st.integers(1, 3))):
            v.flat[int(rng.integers(v.size))] = draw(st.sampled_from(SPECIALS))
        note += f" ({k} with nan/inf)"
    args, lays = draw(_layouts(args, rng))
    return Draw(op, args, dtype, note, lays, grad_layout=draw(st.sampled_from(LAYOUTS), label="grad layout"),
                threads=draw(st.sampled_from([None, None, 1, 2, 3]), label="threads"))


def randn(rng, shape, dtype, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=dtype)


# -- per-family strategies -------------------------------------------------------------------


@st.composite
def elementwise(draw, op):
    spec, rng = SPECS[op], _rng(draw)
    dtype = _dtype(draw, spec)
    s = draw(shape(0, 4))
    args = dict(x=randn(rng, s, dtype, _scale(draw)))
    bad = draw(st.integers(0, 15)) == 0   # one draw in 16 takes a wrong hyper-parameter
    if op == "leaky_relu":
        # float32-representable values: the reference computes in float64, and a slope such
        # as 5e-324 is 0 in float32 (where -inf * slope is then nan, as in torch)
        args["negative_slope"] = draw(st.floats(-3, 3, width=32, allow_subnormal=False)) if not bad else draw(
            st.sampled_from(["0.1", None, float("nan"), True]))
    elif op == "elu":
        args["alpha"] = draw(st.floats(0, 3, width=32, allow_subnormal=False)) if not bad else draw(
            st.sampled_from(["1", None, float("nan")]))
    elif op == "gelu":
        args["approximate"] = draw(st.sampled_from(["none", "tanh"])) if not bad else draw(
            st.sampled_from(["erf", "", None, ("tanh",)]))
    elif op in ("softmax", "log_softmax"):
        nd = len(s)
        args["dim"] = draw(st.integers(-max(nd, 1), max(nd, 1) - 1)) if not bad else draw(
            st.sampled_from([nd, -nd - 1, 1.0, None]))
        if draw(st.booleans()):
            args["dtype"] = draw(st.sampled_from([None, np.float32, np.float64, "float64"]))
    return draw(_finish(op, args, dtype, rng, f"shape {s}" + (" (bad hyper-parameter)" if bad else "")))


@st.composite
def matmul(draw):
    spec, rng = SPECS["matmul"], _rng(draw)
    dtype = _dtype(draw, spec)
    m, k, n = draw(size(0)), draw(size(0)), draw(size(0))
    form = draw(st.sampled_from(["2@2", "2@2", "3@3", "3@2", "2@3", "1@2", "2@1", "1@1", "4@3", "b1@3"]))
    b = draw(st.integers(0, 5))
    m, k, n = fit((m, k, n), CAP // max(b, 1))
    shapes = {"2@2": ((m, k), (k, n)), "3@3": ((b, m, k), (b, k, n)), "3@2": ((b, m, k), (k, n)),
              "2@3": ((m, k), (b, k, n)), "1@2": ((k,), (k, n)), "2@1": ((m, k), (k,)),
              "1@1": ((k,), (k,)), "4@3": ((2, b, m, k), (b, k, n)), "b1@3": ((1, m, k), (b, k, n))}
    sa, sb = shapes[form]
    if draw(st.integers(0, 11)) == 0:   # a wrong inner or batch dimension
        sb = (sb[:-2] + (sb[-2] + 1, sb[-1])) if len(sb) > 1 else (sb[0] + 1,)
        form += " (mismatch)"
    scale = 1 / math.sqrt(max(k, 1))
    args = dict(a=randn(rng, sa, dtype, scale), b=randn(rng, sb, dtype))
    return draw(_finish("matmul", args, dtype, rng, f"{form} {sa}@{sb}"))


@st.composite
def linear(draw):
    spec, rng = SPECS["linear"], _rng(draw)
    dtype = _dtype(draw, spec)
    lead = draw(shape(0, 3, hi=33, cap=300))
    k, out = draw(size(0)), draw(size(0))
    k, out = fit((k, out), CAP // 8)
    xs = lead + (k,)
    xs = fit(xs, CAP, keep=(len(xs) - 1,))
    act = draw(st.sampled_from((None, "relu", "gelu", "tanh", "sigmoid")))
    ws = (out, k)
    bs = (out,) if draw(st.booleans()) else None
    bad = draw(st.integers(0, 11))
    note = ""
    if bad == 0:
        ws, note = (out, k + 1), "weight mismatch"
    elif bad == 1:
        act, note = draw(st.sampled_from(["softmax", "", 1, "RELU"])), "bad activation"
    elif bad == 2 and bs is not None:
        bs, note = (out + 1,), "bias mismatch"
    args = dict(x=randn(rng, xs, dtype), weight=randn(rng, ws, dtype, 1 / math.sqrt(max(k, 1))),
                bias=None if bs is None else randn(rng, bs, dtype), activation=act)
    return draw(_finish("linear", args, dtype, rng, f"x {xs} out {out} {act} {note}"))


def _pair(draw, lo, hi, label):
    a = draw(st.integers(lo, hi), label=label)
    return a if draw(st.booleans()) else (a, draw(st.integers(lo, hi), label=label))


def _hw(draw, cap=40):
    return draw(size(1, cap)), draw(size(1, cap))


@st.composite
def conv2d(draw):
    spec, rng = SPECS["conv2d"], _rng(draw)
    dtype = _dtype(draw, spec)
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    cg, kg = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if draw(st.integers(0, 5)) == 0:  # depthwise
        cg, kg = 1, draw(st.integers(1, 2))
        groups = draw(st.sampled_from([3, 8, 16, 17]))
    n = draw(st.sampled_from([0, 1, 1, 2, 3, 5]))
    h, w = _hw(draw, 33)
    r, s = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if draw(st.integers(0, 7)):   # mostly a kernel that fits the input (else: refused)
        r, s = min(r, h), min(s, w)
    stride = _pair(draw, 1, 3, "stride")
    dilation = _pair(draw, 1, 3, "dilation") if draw(st.integers(0, 2)) == 0 else 1
    padding = draw(st.one_of(st.just(0), st.integers(0, 3).map(lambda p: p),
                             st.tuples(st.integers(0, 3), st.integers(0, 3)),
                             st.sampled_from(["same", "valid"])))
    c, k = groups * cg, groups * kg
    n, c, h, w = fit((n, c, h, w), CAP, keep=(1,))
    xs = (n, c, h, w)
    ws = (k, cg, r, s)
    bad = draw(st.integers(0, 15))
    note = ""
    if bad == 0:
        ws, note = (k, cg + 1, r, s), "weight channels"
    elif bad == 1:
        groups, note = draw(st.sampled_from([0, -1, groups + 1])), "groups"
    elif bad == 2:
        padding, note = draw(st.sampled_from([-1, (0, -2), "full", 1.5])), "padding"
    if padding == "same" and (stride if isinstance(stride, int) else max(stride)) > 1:
        note += " same+stride (invalid)"
    if draw(st.integers(0, 7)) == 0 and n == 1:
        xs = xs[1:]  # unbatched
        note += " unbatched"
    args = dict(x=randn(rng, xs, dtype), weight=randn(rng, ws, dtype, 1 / math.sqrt(cg * r * s)),
                bias=randn(rng, (k,), dtype) if draw(st.booleans()) else None,
                stride=stride, padding=padding, dilation=dilation, groups=groups)
    return draw(_finish("conv2d", args, dtype, rng, f"x {xs} w {ws} g{groups} {note}"))


def _window(draw, pool=False):
    ks = _pair(draw, 1, 5, "kernel_size")
    stride = _pair(draw, 1, 4, "stride")
    if pool and draw(st.integers(0, 3)) == 0:
        stride = None
    kmin = min(ks) if isinstance(ks, tuple) else ks
    padding = _pair(draw, 0, max(kmin // 2, 0) + (1 if draw(st.integers(0, 9)) == 0 else 0), "padding")
    dilation = _pair(draw, 1, 3, "dilation") if draw(st.integers(0, 2)) == 0 else 1
    if draw(st.integers(0, 19)) == 0:   # hostile values
        which = draw(st.sampled_from(["kernel_size", "stride", "padding", "dilation"]))
        bad = draw(st.sampled_from([0, -1, (1, 0), 2.0, (1, 2, 3), "2"]))
        return {**dict(kernel_size=ks, stride=stride, padding=padding, dilation=dilation), which: bad}
    return dict(kernel_size=ks, stride=stride, padding=padding, dilation=dilation)


@st.composite
def im2col(draw):
    spec, rng = SPECS["im2col"], _rng(draw)
    dtype = _dtype(draw, spec)
    n, c = draw(st.sampled_from([0, 1, 2, 3])), draw(size(1, 17))
    h, w = _hw(draw)
    xs = fit((n, c, h, w), CAP // 4)
    hp = _window(draw)
    try:
        from .ops.conv import _cols_shape
        while math.prod(_cols_shape(xs, **hp)) > 4 * CAP and xs[1] > 1:
            xs = (xs[0], xs[1] // 2) + xs[2:]
    except (TypeError, ValueError):
        pass
    return draw(_finish("im2col", dict(x=randn(rng, xs, dtype), **hp), dtype, rng, f"x {xs} {hp}"))


@st.composite
def col2im(draw):
    from .ops.conv import _cols_shape

    spec, rng = SPECS["col2im"], _rng(draw)
    dtype = _dtype(draw, spec)
    n, c = draw(st.sampled_from([0, 1, 2, 3])), draw(size(1, 17))
    h, w = _hw(draw)
    n, c, h, w = fit((n, c, h, w), CAP // 4)
    hp = _window(draw)
    try:
        cs = _cols_shape((n, c, h, w), **hp)
    except (TypeError, ValueError):     # an invalid geometry: any cols (the op must refuse it)
        cs = (n, c * 4, 7)
    while math.prod(cs) > 4 * CAP and c > 1:   # keep the columns small: fewer channels
        c = c // 2
        cs = _cols_shape((n, c, h, w), **hp)
    if draw(st.integers(0, 15)) == 0:
        cs = (cs[0], cs[1], cs[2] + 1)   # L mismatch
    return draw(_finish("col2im", dict(cols=randn(rng, cs, dtype), output_size=(h, w), **hp), dtype, rng,
                        f"cols {cs} out {(h, w)} {hp}"))


@st.composite
def pool(draw, op):
    spec, rng = SPECS[op], _rng(draw)
    dtype = _dtype(draw, spec)
    n, c = draw(st.sampled_from([0, 1, 2, 3])), draw(size(1, 33))
    h, w = _hw(draw)
    xs = fit((n, c, h, w), CAP)
    if op == "adaptive_avg_pool2d":
        o = draw(st.one_of(st.integers(0, 9), st.tuples(st.one_of(st.none(), st.integers(0, 9)),
                                                         st.one_of(st.none(), st.integers(0, 9)))))
        if draw(st.integers(0, 15)) == 0:
            o = draw(st.sampled_from([-1, (2, -1), 1.5, (1, 2, 3)]))
        args = dict(x=randn(rng, xs, dtype), output_size=o)
    else:
        hp = _window(draw, pool=True)
        hp["ceil_mode"] = draw(st.booleans())
        if op == "avg_pool2d":
            del hp["dilation"]
            hp["count_include_pad"] = draw(st.booleans())
            hp["divisor_override"] = draw(st.sampled_from([None, None, None, 1, 3, -2, 0]))
        elif draw(st.integers(0, 3)) == 0:
            hp["return_indices"] = True
        args = dict(x=randn(rng, xs, dtype), **hp)
    if xs[0] == 1 and draw(st.integers(0, 5)) == 0:
        args["x"] = args["x"][0]   # unbatched (C, H, W)
    return draw(_finish(op, args, dtype, rng, f"x {args['x'].shape}"))


_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@st.composite
def rnn(draw, op):
    spec, rng = SPECS[op], _rng(draw)
    dtype = _dtype(draw, spec)
    kind = op.replace("_cell", "")
    cell = op.endswith("_cell")
    G = _GATES[kind]
    T = 1 if cell else draw(st.integers(1, 7))
    B = draw(size(0, 33))
    I, H = draw(size(1, 65)), draw(size(1, 65))
    T, B, I = fit((T, B, I), CAP, keep=(0,))
    while G * H * (I + H) > 4 * CAP:   # the weights stay small too
        if H >= I:
            H = max(1, H // 2)
        else:
            I = max(1, I // 2)
    T, B, I = fit((T, B, I), CAP, keep=(0,))
    fan = math.sqrt(I + H)
    xs = (B, I) if cell else (T, B, I)
    args = dict(x=randn(rng, xs, dtype), w_ih=randn(rng, (G * H, I), dtype, 1 / fan),
                w_hh=randn(rng, (G * H, H), dtype, 1 / fan))
    bias = draw(st.sampled_from(["both", "both", "none", "ih", "hh"]))
    args["b_ih"] = randn(rng, (G * H,), dtype, 0.5) if bias in ("both", "ih") else None
    args["b_hh"] = randn(rng, (G * H,), dtype, 0.5) if bias in ("both", "hh") else None
    names = (("h", "c") if kind == "lstm" else ("h",)) if cell else (("h0", "c0") if kind == "lstm" else ("h0",))
    for k in names:
        args[k] = randn(rng, (B, H), dtype) if draw(st.integers(0, 3)) else None
    if kind == "rnn":
        args["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    note = f"T{T} B{B} I{I} H{H} bias={bias}"
    bad = draw(st.integers(0, 15))
    if bad == 0:
        k = draw(st.sampled_from(names))
        args[k] = randn(rng, (B, H + 1), dtype)
        note += f" ({k} H mismatch)"
    elif bad == 1:
        args["w_hh"] = randn(rng, (G * H + 1, H), dtype)
        note += " (w_hh rows)"
    elif bad == 2 and kind == "rnn":
        args["nonlinearity"] = draw(st.sampled_from(["sigmoid", None]))
        note += " (nonlinearity)"
    return draw(_finish(op, args, dtype, rng, note))


@st.composite
def cross_entropy(draw):
    spec, rng = SPECS["cross_entropy"], _rng(draw)
    dtype = _dtype(draw, spec)
    n, c = draw(size(0, 65)), draw(size(1, 129))
    spatial = draw(st.lists(size(1, 9), max_size=2))
    dims = fit((n, c) + tuple(spatial), CAP, keep=(1,))
    n, c, spatial = dims[0], dims[1], dims[2:]
    xs = (n, c) + spatial
    ts = (n,) + spatial
    probs = draw(st.integers(0, 3)) == 0
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]))
    ignore = draw(st.sampled_from([-100, -100, 0, c - 1, 255]))
    if probs:
        e = np.exp(rng.standard_normal(xs))
        target = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        tdt = draw(st.sampled_from(["int64", "int32", "uint8", "int16"]))
        if tdt == "uint8" and (c > 255 or ignore == -100):
            tdt = "int64"
        target = rng.integers(0, c, ts)
        if ignore in (-100, 255) or 0 <= ignore < c:
            target[rng.random(ts) < 0.2] = ignore
        if tdt == "uint8" and ignore not in range(256):
            tdt = "int64"
        target = target.astype(tdt)
    weight = np.abs(randn(rng, (c,), dtype)) + dtype.type(0.1) if draw(st.booleans()) else None
    args = dict(input=randn(rng, xs, dtype, _scale(draw)), target=target, weight=weight,
                ignore_index=ignore, reduction=reduction, label_smoothing=smoothing)
    note = f"x {xs} {'probs' if probs else target.dtype.name}"
    bad = draw(st.integers(0, 15))
    if bad == 0 and not probs and target.size:
        t = target.astype(np.int64)
        t.flat[0] = c if ignore != c else c + 1
        args["target"], note = t, note + " (target >= C)"
    elif bad == 1:
        args["label_smoothing"], note = draw(st.sampled_from([-0.1, 1.5, float("nan")])), note + " (smoothing)"
    elif bad == 2:
        args["reduction"], note = "batchmean", note + " (reduction)"
    if n == 1 and not spatial and draw(st.integers(0, 5)) == 0:   # unbatched (C,)
        args["input"] = args["input"][0]
        args["target"] = args["target"][0]
        note += " unbatched"
    return draw(_finish("cross_entropy", args, dtype, rng, note))


# -- the generic strategy: a spec case with its sizes renamed -------------------------------------


@st.composite
def generic(draw, op):
    """A valid case of ``op``'s ``cases`` generator with every dimension size renamed
    (consistently across the arrays: equal sizes stay equal), values redrawn, layouts
    drawn. The renamed case may be invalid (two roles shared a size): then every backend
    must refuse it as the reference does."""
    spec, rng = SPECS[op], _rng(draw)
    dtype = _dtype(draw, spec)
    cases = spec.cases(np.random.default_rng(0), dtype)
    case = cases[draw(st.integers(0, len(cases) - 1), label="case")]
    arrays = {k: v for k, v in case.args.items() if isinstance(v, np.ndarray)}
    sizes = sorted({d for v in arrays.values() for d in v.shape})
    rename = {d: draw(size(0 if d == 0 else 1, 65), label=f"size {d}") if draw(st.booleans()) else d
              for d in sizes}
    args = dict(case.args)
    for k, v in arrays.items():
        s = fit(tuple(rename[d] for d in v.shape), CAP)
        if v.dtype.kind == "f":
            sc = float(np.abs(v).max()) if v.size else 1.0
            args[k] = randn(rng, s, v.dtype, min(max(sc / 2, 0.1), 3.0))
            if v.size and v.min() >= 0:   # probabilities, variances, scales: keep them non-negative
                args[k] = np.abs(args[k])
        elif v.dtype == np.bool_:
            args[k] = rng.random(s) < 0.5
        elif v.size:
            args[k] = rng.choice(v.ravel(), size=s).astype(v.dtype)
        else:
            args[k] = np.zeros(s, v.dtype)
    return draw(_finish(op, args, dtype, rng, f"generic from case {case.id}"))


#: op -> strategy (ops with native kernels without one get :func:`generic`)
STRATEGIES = {
    **{op: (lambda op=op: elementwise(op)) for op in
       ("relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax")},
    "matmul": matmul, "linear": linear, "conv2d": conv2d, "im2col": im2col, "col2im": col2im,
    **{op: (lambda op=op: pool(op)) for op in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")},
    **{op: (lambda op=op: rnn(op)) for op in ("rnn_cell", "lstm_cell", "gru_cell", "rnn", "lstm", "gru")},
    "cross_entropy": cross_entropy,
}


def native_ops() -> list[str]:
    """Ops with at least one native CPU kernel (forward), sorted."""
    backends.load()
    return sorted(op for op in SPECS if any(b in registry.IMPLS.get(op, {}) for b in NATIVE))


def strategy(op: str):
    make = STRATEGIES.get(op)
    return make() if make is not None else generic(op)


def targets(op: str, backward: bool = False) -> list[str]:
    """Every native backend of ``op`` (or its backward) and their named variants."""
    key = op + ("_backward" if backward else "")
    impls = registry.IMPLS.get(key, {})
    out = [b for b in NATIVE if b in impls]
    for b in NATIVE:
        out += [f"{b}:{v}" for v in sorted(registry.VARIANTS.get(key, {}).get(b, {}))]
    return out


# -- running one draw ----------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def _tuple(x):
    return tuple(x) if isinstance(x, tuple) else (x,)


def _snapshot(args):
    return {k: np.array(v, copy=True) for k, v in args.items() if isinstance(v, np.ndarray)}


def _undo(args, keys, snap):
    for k in keys:
        if args[k].flags.writeable:  # read-only ones are only valid where nothing is updated
            args[k][...] = snap[k]


def _unchanged(what, args, snap):
    for k, before in snap.items():
        now = args[k]
        if not np.array_equal(now, before, equal_nan=now.dtype.kind == "f"):
            raise Mismatch(f"{what}: modified its input {k}")


def _refusal(fn):
    """None if ``fn()`` returns, else the exception it raised."""
    try:
        with np.errstate(all="ignore"):
            fn()
    except Exception as e:  # noqa: BLE001  (compared below: only the documented types pass)
        return e
    return None


def _float_dtypes(args):
    return {v.dtype for v in args.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}


def check(d: Draw, variants: bool = True) -> str:
    """:func:`check_args` at the draw's thread count."""
    if d.threads is None:
        return check_args(d, variants)
    before = backends.get_num_threads()
    backends.set_num_threads(d.threads)
    try:
        return check_args(d, variants)
    finally:
        backends.set_num_threads(before)


def check_args(d: Draw, variants: bool = True) -> str:
    """Run ``d`` on the reference and every native backend (and variant); raise
    :class:`Mismatch` (an AssertionError) on any disagreement. Returns "valid" or "invalid".

    The reference runs in float64 on the same values (as in the conformance suite),
    unless the op casts (softmax's ``dtype=``): the dtype the kernels compute in is the
    bound arguments' (``spec.dtype_of``), and the tolerance is float32's whenever float32
    is involved."""
    spec = SPECS[d.op]
    try:
        with np.errstate(all="ignore"):
            if spec.mutates:  # validity of the arrays as given (a read-only running_mean)
                spec.bind((), dict(d.args))
            a64 = spec.bind((), testing.copy_args(d.args, np.float64))
            ref_args = testing.copy_args(d.args, np.float64)
            ref = spec.forward(**ref_args, backend="numpy")
    except (TypeError, ValueError) as e:
        _check_refused(d, spec, type(e), variants)
        return "invalid"
    a = spec.bind((), testing.copy_args(d.args))
    work = spec.dtype_of(a)                     # the dtype the kernels compute in
    loose = min(_float_dtypes(d.args) | {work}, key=lambda t: t.itemsize)
    rtol, atol = spec.tolerance(loose, a)
    snap = _snapshot(d.args)
    # arguments the op updates in place (spec.mutates): each backend's update is checked against
    # the reference's, then undone
    inplace = [k for k in spec.mutates if isinstance(d.args.get(k), np.ndarray)]
    names = targets(d.op) if variants else [b for b in NATIVE if b in registry.IMPLS.get(d.op, {})]
    saved_of = {}
    for b in names:
        with np.errstate(all="ignore"):
            out, sv = testing.run_forward(spec, d.args, b, saved=True, fresh=False)
        for k in inplace:  # where the reference's statistic is inf or NaN (an inf in x), any
            # non-finite value agrees: the cpp kernel's shifted sums give inf - inf = NaN there
            got, want = np.asarray(d.args[k], np.float64), ref_args[k]
            bad = ~np.isfinite(want)
            if (np.isfinite(got) & bad).any():
                raise Mismatch(f"{d.op} on {b}: the updated {k} is finite where the reference's is not")
            testing.assert_close(f"{d.op} on {b}: the updated {k}", np.where(bad, 0, got), np.where(bad, 0, want),
                                 rtol, atol)
        _undo(d.args, inplace, snap)
        _unchanged(f"{d.op} forward on {b}", d.args, snap)
        saved_of[b] = sv
        outs, refs = _tuple(out), _tuple(ref)
        if len(outs) != len(refs):
            raise Mismatch(f"{d.op} on {b}: {len(outs)} outputs, the reference gives {len(refs)}")
        for i, (o, r) in enumerate(zip(outs, refs)):
            if type(o) is not np.ndarray:
                raise Mismatch(f"{d.op} on {b}: output {i} is {type(o).__name__}")
            want = work if r.dtype.kind == "f" else r.dtype
            if o.dtype != want:
                raise Mismatch(f"{d.op} on {b}: output {i} has dtype {o.dtype}, expected {want}")
            exact = r.dtype.kind != "f"   # max_pool2d's indices
            testing.assert_close(f"{d.op} on {b}: output {i}", o, r, 0 if exact else rtol, 0 if exact else atol)
    bnames = (targets(d.op, True) if variants
              else [b for b in NATIVE if b in registry.IMPLS.get(d.op + "_backward", {})])
    if not bnames:
        return "valid"
    g = testing.upstream_grads(spec, a, np.random.default_rng(len(d.note)), work)
    lay = np.random.default_rng(1)
    g = tuple(relayout(x, d.grad_layout, lay) for x in _tuple(g))
    g = g if spec.outputs > 1 else g[0]
    ref_dtype = spec.dtype_of(a64)
    g_ref = tuple(x.astype(ref_dtype) for x in _tuple(g))
    with np.errstate(all="ignore"):
        ref_g = spec.backward(g_ref if spec.outputs > 1 else g_ref[0],
                              **testing.copy_args(d.args, np.float64), backend="numpy")
    grtol, gatol = spec.tolerance(loose, a, grad=True)
    for b in bnames:
        for label, sv in (("saved", saved_of.get(b)), ("recomputed", None)):
            if label == "saved" and sv is None:
                continue
            with np.errstate(all="ignore"):
                res = testing.run_backward(spec, g, d.args, b, saved=sv, fresh=False)
            _undo(d.args, inplace, snap)  # a backward without saved may run the forward again
            _unchanged(f"{d.op} backward on {b}", d.args, snap)
            if not isinstance(res, tuple) or len(res) != len(spec.differentiable):
                raise Mismatch(f"{d.op}_backward on {b}: {res!r:.80} is not one gradient per "
                               f"{spec.differentiable}")
            for wrt, o, r in zip(spec.differentiable, res, ref_g):
                what = f"{d.op}_backward on {b} ({label}): d{wrt}"
                if r is None:
                    if o is not None:
                        raise Mismatch(f"{what}: expected None")
                    continue
                arg = d.args.get(wrt)
                want = arg.dtype if isinstance(arg, np.ndarray) else work
                if type(o) is not np.ndarray or o.dtype != want:
                    raise Mismatch(f"{what}: got {type(o).__name__} {getattr(o, 'dtype', '')}, "
                                   f"expected an array of {want}")
                testing.assert_close(what, o, r, grtol, gatol)
    return "valid"


def _check_refused(d: Draw, spec, exc: type, variants: bool):
    names = targets(d.op) if variants else [b for b in NATIVE if b in registry.IMPLS.get(d.op, {})]
    for b in names:
        e = _refusal(lambda: spec.forward(**d.args, backend=b))
        if e is None:
            raise Mismatch(f"{d.op} on {b}: accepted arguments the reference refuses with {exc.__name__}")
        if type(e) is not exc:
            raise Mismatch(f"{d.op} on {b}: raised {type(e).__name__}: {e}; the reference raises {exc.__name__}")
        if f"pydl.ops.{d.op}" not in str(e):
            raise Mismatch(f"{d.op} on {b}: the message does not name the op: {e}")


__all__ = ["Draw", "Mismatch", "STRATEGIES", "BOUNDARY", "LAYOUTS", "check", "check_args", "generic", "native_ops",
           "relayout", "strategy", "targets"]
