"""Elementwise activations (prelu with a learned slope), softmax, log_softmax and dropout.

Semantics follow ``torch.nn.functional``. NaN propagates through every op
(``relu(nan) == nan``, as in PyTorch). Flop counts use one flop per add,
multiply or compare and count exp/erf/tanh as one each: these ops are
bandwidth-bound, and the benchmark reports them in GB/s.

sigmoid, tanh, softmax and log_softmax save their output for the backward
(``saved = {"y": y}``, the very array the forward returns, not a copy), whose
derivative is written in it, as PyTorch's are: the backward reads y and skips
the forward's exp. Change y in place and a later backward with that ``saved``
is wrong (autograd refuses in-place changes to a graph's tensors); without
``saved`` the backward runs the forward again.
"""
from __future__ import annotations

import numpy as np

from .. import _array
from ..registry import BadCase, Case, Viewed, defop
from . import _checks as ck

# float32 kernels use SIMD polynomial exp/erf/tanh: a few ulp, compared to a
# float64 reference. float64 kernels call libm.
TOL = {"float32": (2e-5, 2e-6), "float64": (1e-11, 1e-13)}

SHAPES = [(), (1,), (7,), (3, 17), (2, 3, 33), (4, 0), (64, 129), (3, 1000)]


def _same(a):
    return a["x"].shape


def _x_cases(scale=3.0, **params):
    """Cases over SHAPES: standard normal inputs times ``scale``."""

    def cases(rng, dtype):
        return [
            Case("x" + "x".join(map(str, s)) if s else "x_scalar",
                 dict(x=np.asarray(rng.standard_normal(s) * scale, dtype=dtype), **params))
            for s in SHAPES
        ]

    return cases


def _bad(**wrong):
    """Bad cases: each keyword is (value, exception, match) for that parameter."""

    def bad(rng):
        x = rng.standard_normal((3, 4)).astype(np.float32)
        return [BadCase(f"{k}={v!r}", dict(x=x, **{k: v}), exc, match) for k, (v, exc, match) in wrong.items()]

    return bad


def _n(k):
    return lambda a: k * a["x"].size



# -- benchmark cases (pydl bench): realistic activation sizes --------------------


def _randn32(rng, shape, dtype, scale=1.0):
    """Standard normal drawn in float32 when that is the dtype (4x faster than
    drawing float64 and casting: the full-size bench cases are 16M elements)."""
    x = rng.standard_normal(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    x *= scale
    return x.astype(dtype, copy=False)


def _x_bench(scale=3.0, **params):
    """1M elements (4 MiB, quick: past L2, in L3 unless rotated) and 16M (64 MiB)."""

    def bench(rng, dtype, quick=False):
        return [Case(f"x{n}", dict(x=_randn32(rng, n, dtype, scale), **params),
                     tags=("quick",) if n == 1 << 20 else ())
                for n in ((1 << 20,) if quick else (1 << 20, 1 << 24))]

    return bench


def _softmax_bench(rng, dtype, quick=False):
    """Classifier logits (rows x 1000 classes) and attention-score rows."""
    def c(shape, quick=False):
        return Case("x".join(map(str, shape)), dict(x=_randn32(rng, shape, dtype, 3.0), dim=-1),
                    tags=("quick",) if quick else ())

    return [c((1024, 1000), quick=True)] + ([] if quick else [c((16384, 1000)), c((4096, 1024))])


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(1), tol=TOL,
       cases=_x_cases(), torch=lambda torch, F, a: F.relu(a["x"]),
       bench=_x_bench())
def relu(x, inplace=False):
    """max(x, 0), elementwise. ``inplace`` (torch's keyword) must be False: see :func:`no_inplace`."""
    if inplace is not False:
        no_inplace(inplace)
    return dict(x=ck.array("x", x))


def no_inplace(inplace):
    """torch's ``inplace=True`` overwrites its input; pydl's ops return new arrays (the
    backward takes the forward's input), so only False is accepted."""
    if ck.boolean("inplace", inplace):
        raise ValueError("inplace: pydl's ops return a new array (the backward needs the input "
                         "unchanged); pass inplace=False and assign the result")


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(2), tol=TOL,
       cases=_x_cases(negative_slope=0.1),
       bad_cases=_bad(negative_slope=("a", TypeError, "negative_slope")),
       torch=lambda torch, F, a: F.leaky_relu(a["x"], a["negative_slope"]),
       bench=_x_bench(negative_slope=0.1))
def leaky_relu(x, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope * x. ``inplace`` must be False (:func:`no_inplace`)."""
    if inplace is not False:
        no_inplace(inplace)
    return dict(x=ck.array("x", x), negative_slope=ck.real("negative_slope", negative_slope))


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(4), tol=TOL,
       cases=_x_cases(alpha=1.3),
       bad_cases=_bad(alpha=(None, TypeError, "alpha")),
       torch=lambda torch, F, a: F.elu(a["x"], a["alpha"]),
       bench=_x_bench(alpha=1.0))
def elu(x, alpha=1.0, inplace=False):
    """x if x > 0 else alpha * (exp(x) - 1). ``inplace`` must be False (:func:`no_inplace`)."""
    if inplace is not False:
        no_inplace(inplace)
    return dict(x=ck.array("x", x), alpha=ck.real("alpha", alpha))


def _prelu_cases(rng, dtype):
    def c(shape, channels):
        x = np.asarray(rng.standard_normal(shape) * 3, dtype=dtype)
        w = np.asarray(rng.uniform(-0.5, 0.8, channels), dtype=dtype)
        return Case(f"x{'x'.join(map(str, shape)) or '_scalar'}_w{channels}", dict(x=x, weight=w))

    return [c((4, 3), 3), c((2, 5, 7), 5), c((3, 4, 5, 6), 4), c((2, 6, 3, 5), 1), c((5, 1, 4), 1),
            c((), 1), c((7,), 1), c((0, 3, 4), 3), c((2, 0, 4), 1), c((64, 129), 129)]


def _prelu_bad(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w = np.full(3, 0.25, np.float32)
    return [BadCase("weight (C+1,)", dict(x=x, weight=np.ones(4, np.float32)), ValueError, "weight"),
            BadCase("weight 2-D", dict(x=x, weight=np.full((1, 1), 0.25, np.float32)), ValueError, "weight"),
            BadCase("weight (1, 3)", dict(x=x, weight=w[None]), ValueError, "weight"),
            BadCase("1-D x, weight (C,)", dict(x=x[0, 0], weight=np.ones(4, np.float32)), ValueError, "weight"),
            BadCase("weight float64", dict(x=x, weight=w.astype(np.float64)), TypeError, "weight"),
            BadCase("weight float", dict(x=x, weight=0.25), TypeError, "weight")]


def _prelu_bench(rng, dtype, quick=False):
    """Conv activations (N, C, H, W) with one slope per channel: 1M (quick) and 16M elements."""
    shapes = [(16, 64, 32, 32)] + ([] if quick else [(64, 256, 32, 32)])
    return [Case("x".join(map(str, s)), dict(x=_randn32(rng, s, dtype, 3.0), weight=np.full(s[1], 0.25, dtype)),
                 tags=("quick",) if s[0] == 16 else ()) for s in shapes]


@defop(family="elementwise", differentiable=("x", "weight"), out_shape=_same, flops=_n(2), tol=TOL,
       grad_tol={"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)},
       tol_scale=lambda a: a["x"].size / a["weight"].size / 4096,  # dweight sums x.size / C terms
       cases=_prelu_cases, bad_cases=_prelu_bad,
       torch=lambda torch, F, a: F.prelu(a["x"], a["weight"]),
       bench=_prelu_bench)
def prelu(x, weight):
    """x if x > 0 else weight * x, with one slope (``weight`` (1,) or 0-d, as torch takes
    it) or one per channel (``weight`` (C,), C = x.shape[1]: x has at least 2 dims). Both
    are differentiated."""
    x = ck.array("x", x)
    weight = ck.array("weight", weight, ndim=(1, 0), layout="(1,) or (C,) (or 0-d)")
    ck.same_dtype(x=x, weight=weight)
    scalar = weight.ndim == 0
    if scalar:
        weight = weight.reshape(1)
    if weight.shape[0] != 1 and (x.ndim < 2 or weight.shape[0] != x.shape[1]):
        channels = f"C = x.shape[1] = {x.shape[1]}" if x.ndim >= 2 else f"x is {x.ndim}-D: only (1,)"
        raise ValueError(f"weight: expected shape (1,) or (C,) with {channels}, got {tuple(weight.shape)}")
    a = dict(x=x, weight=weight)
    if not scalar:
        return a
    return Viewed(a, grads=lambda res: (res[0], None if res[1] is None else res[1].reshape(())))


def _gelu_cases(rng, dtype):
    return _x_cases()(rng, dtype) + [
        Case(c.id + "_tanh", dict(c.args, approximate="tanh")) for c in _x_cases()(rng, dtype)[3:5]
    ]


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(8), tol=TOL,
       cases=_gelu_cases,
       bad_cases=lambda rng: _bad(approximate=("erf", ValueError, "approximate"))(rng)
       + _bad(approximate=(["none"], TypeError, "approximate"))(rng),
       torch=lambda torch, F, a: F.gelu(a["x"], approximate=a["approximate"]),
       bench=_x_bench())
def gelu(x, approximate="none"):
    """x * Phi(x) (``approximate="none"``, erf) or its tanh approximation."""
    return dict(x=ck.array("x", x), approximate=ck.choice("approximate", approximate, ("none", "tanh")))


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(4), tol=TOL,
       cases=_x_cases(scale=6.0), torch=lambda torch, F, a: torch.sigmoid(a["x"]),
       bench=_x_bench(scale=6.0), saves=("y",))
def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow. The forward saves its output ``y`` (the
    same array it returns): the backward is ``grad * y * (1 - y)``."""
    return dict(x=ck.array("x", x))


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(4), tol=TOL,
       cases=_x_cases(), torch=lambda torch, F, a: torch.tanh(a["x"]),
       bench=_x_bench(), saves=("y",))
def tanh(x):
    """Hyperbolic tangent. Saves its output ``y``: the backward is ``grad * (1 - y^2)``."""
    return dict(x=ck.array("x", x))


def _softmax_cases(rng, dtype):
    def c(shape, dim, scale=3.0):
        x = (rng.standard_normal(shape) * scale).astype(dtype)
        return Case(f"{'x'.join(map(str, shape))}_dim{dim}_s{scale:g}", dict(x=x, dim=dim))

    return [c((5,), 0), c((4, 10), -1), c((3, 5, 7), 1), c((3, 5, 7), 0), c((2, 1000), -1),
            c((8, 37), -1, scale=40.0), c((0, 6), -1), c((6, 3, 2), -1), c((1, 1), 1),
            c((2, 5, 257), 1), c((9, 1031), -1)]


def _softmax_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    return [BadCase("dim=2", dict(x=x, dim=2), ValueError, "dim"),
            BadCase("dim=1.0", dict(x=x, dim=1.0), TypeError, "dim"),
            BadCase("0-d, dim=1", dict(x=np.ones((), np.float32), dim=1), ValueError, "dim"),
            BadCase("dtype int", dict(x=x, dtype=np.int32), TypeError, "dtype")]


def _softmax_args(x, dim, dtype):
    """x (cast to ``dtype`` first if given, as torch does) and dim; a 0-d x is a 1-D view
    of one element (torch's softmax of a scalar is 1, its log_softmax 0)."""
    if dtype is None and type(x) is np.ndarray and x.ndim:
        x = ck.array("x", x)
        return dict(x=x, dim=ck.dim("dim", dim, x.ndim))
    x = ck.array("x", x)
    given = x.dtype
    if dtype is not None:
        try:
            want = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype: expected a float dtype (float32 or float64) or None, got {dtype!r}") from None
        if want.name not in ck.FLOAT_DTYPES:
            raise TypeError(f"dtype: expected float32 or float64 (or None), got {want.name}")
        if want != given:
            x = x.astype(want)
    scalar = x.ndim == 0
    if scalar:
        ck.dim("dim", dim, 1)
        x, dim = x.reshape(1), 0
    a = dict(x=x, dim=ck.dim("dim", dim, x.ndim))
    if not scalar and x.dtype == given:
        return a

    def grads(res):
        dx = res[0]
        if dx is None:
            return res
        return (dx.reshape(()) if scalar else dx).astype(given, copy=False),

    return Viewed(a, out=(lambda o, saved: o.reshape(())) if scalar else None,
                  grad=(lambda g: g.reshape(1) if getattr(g, "ndim", None) == 0 else g) if scalar else None,
                  grads=grads)


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(4), tol=TOL,
       cases=_softmax_cases, bad_cases=_softmax_bad,
       torch=lambda torch, F, a: F.softmax(a["x"], dim=a["dim"]),
       bench=_softmax_bench, saves=("y",))
def softmax(x, dim=-1, dtype=None):
    """exp(x - max) / sum(exp(x - max)) along ``dim``. ``dtype`` (float32 or float64)
    casts x first, as torch's does; the gradient comes back in x's own dtype. Saves its
    output ``y``: the backward is ``y * (grad - sum(grad * y))``."""
    return _softmax_args(x, dim, dtype)


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(4), tol=TOL,
       cases=_softmax_cases, bad_cases=_softmax_bad,
       torch=lambda torch, F, a: F.log_softmax(a["x"], dim=a["dim"]),
       bench=_softmax_bench, saves=("y",))
def log_softmax(x, dim=-1, dtype=None):
    """x - max - log(sum(exp(x - max))) along ``dim``. ``dtype`` as in :func:`softmax`. Saves
    its output ``y``: the backward is ``grad - exp(y) * sum(grad)``."""
    return _softmax_args(x, dim, dtype)


# -- dropout ----------------------------------------------------------------------

_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def dropout_mask(seed: int, shape, p: float, xp=np):
    """The keep-mask dropout draws from ``seed``: element ``i`` (C order) is kept
    when the top 24 bits of splitmix64(seed + (i + 1) * golden) / 2**24 >= p.

    Counter-based, so every backend and device can draw the same mask.
    """
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = xp.uint64(seed) + (xp.arange(1, n + 1, dtype=xp.uint64) * xp.uint64(_GOLDEN))
        z = (z ^ (z >> xp.uint64(30))) * xp.uint64(_M1)
        z = (z ^ (z >> xp.uint64(27))) * xp.uint64(_M2)
        z = z ^ (z >> xp.uint64(31))
    u = (z >> xp.uint64(40)).astype(xp.float64) * (1.0 / (1 << 24))
    return (u >= p).reshape(shape)


def _dropout_cases(rng, dtype):
    out = []
    for s in [(7,), (4, 33), (2, 3, 5), (0, 3)]:
        x = (rng.standard_normal(s) * 2).astype(dtype)
        out.append(Case(f"seed_{'x'.join(map(str, s))}", dict(x=x, p=0.3, seed=int(rng.integers(1 << 40)))))
    x = rng.standard_normal((6, 5)).astype(dtype)
    out.append(Case("mask", dict(x=x, p=0.5, mask=rng.random((6, 5)) > 0.5)))
    out.append(Case("eval", dict(x=x, p=0.5, training=False)))
    out.append(Case("p1", dict(x=x, p=1.0)))
    return out


def _dropout_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    return [
        BadCase("p=1.5", dict(x=x, p=1.5, seed=1), ValueError, "p"),
        BadCase("p=-0.1", dict(x=x, p=-0.1, seed=1), ValueError, "p"),
        BadCase("no seed", dict(x=x, p=0.5), ValueError, "seed"),
        BadCase("seed=-1", dict(x=x, p=0.5, seed=-1), ValueError, "seed"),
        BadCase("seed and mask", dict(x=x, p=0.5, seed=1, mask=np.ones((3, 4), bool)), ValueError, "seed"),
        BadCase("training=1", dict(x=x, p=0.5, seed=1, training=1), TypeError, "training"),
        BadCase("mask shape", dict(x=x, p=0.5, mask=np.ones((4, 3), bool)), ValueError, "mask"),
        BadCase("mask dtype", dict(x=x, p=0.5, mask=np.ones((3, 4), np.float32)), TypeError, "mask"),
    ]


def _dropout_torch(torch, F, a):
    keep, p = a["mask"], a["p"]
    if keep is None and a["seed"] is not None:  # the mask the backends draw from the seed
        keep = torch.from_numpy(dropout_mask(a["seed"], tuple(a["x"].shape), p)).to(a["x"].device)
    if keep is None:
        return a["x"] * 1.0
    return a["x"] * keep.to(a["x"].dtype) * (0.0 if p == 1.0 else 1.0 / (1.0 - p))


@defop(family="elementwise", differentiable=("x",), out_shape=_same, flops=_n(1), tol=TOL,
       cases=_dropout_cases, bad_cases=_dropout_bad, torch=_dropout_torch, saves=("mask",),
       bench=_x_bench(p=0.5, seed=0))
def dropout(x, p=0.5, training=True, seed=None, mask=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p).

    The mask is explicit: pass ``mask`` (a bool array, True = keep) or ``seed``
    (the mask is then :func:`dropout_mask`), so forward and backward agree and
    every backend gives the same result. ``training=False`` or ``p=0`` is the
    identity (a copy); ``p=1`` gives zeros. The normalized arguments carry the
    mask, or the seed it is drawn from (each backend draws :func:`dropout_mask`
    itself, e.g. inside its kernel), or neither for the identity.
    """
    x = ck.array("x", x)
    p = ck.real("p", p, 0.0, 1.0)
    training = ck.boolean("training", training)
    if seed is not None:
        seed = ck.integer("seed", seed, min=0, max=(1 << 64) - 1)
    if seed is not None and mask is not None:
        raise ValueError("seed: pass seed= or mask=, not both")
    if mask is not None:
        ck.array("mask", mask, dtypes=("bool",))
        ck.shape("mask", mask, x.shape, "(the shape of x)")
    xp = _array.module(x)
    if not training or p == 0.0:
        mask, p, seed = None, 0.0, None
    elif p == 1.0:
        mask = xp.zeros(x.shape, bool)
    elif mask is None and seed is None:
        raise ValueError("seed: dropout needs seed= (an int >= 0) or mask= (a bool array) "
                         "so that forward and backward agree")
    return dict(x=x, p=p, training=training, seed=None if mask is not None else seed, mask=mask)
