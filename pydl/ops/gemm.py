"""Matrix products: ``matmul`` and ``linear`` (with fused bias and activation).

Semantics follow ``torch.matmul`` and ``torch.nn.functional.linear``.

- ``matmul(a, b)``: (M, K) @ (K, N) -> (M, N); batched (B, M, K) @ (B, K, N)
  -> (B, M, N); and one 2-D operand against a 3-D one, the 2-D operand shared
  by every batch (its gradient is summed over the batch). Only these ranks.
- ``linear(x, weight, bias, activation)``: ``act(x @ weight.T + bias)`` over
  the last dimension of ``x`` (any leading dimensions).

Flops are 2*M*N*K per product (a multiply and an add per term); the bias and
activation are not counted. An output element accumulates K products, so the
float32 error against a float64 reference grows like sqrt(K) * eps * |a||b|
(backends may sum in any order, with or without FMA). The cases keep K <= 70;
the float32 tolerances are over 15x the worst error the float32 reference
makes on them; the few cases with K past 256 (to cross the kernels' KC block)
scale their inputs by 1/sqrt(K), which keeps that error bound. Weight
gradients of ``linear`` accumulate over the rows of ``x`` instead of K.
At benchmark sizes (K = 4096 with unit-normal inputs: errors of ~6e-4 in
outputs of ~64, from NumPy's GEMV, PyTorch and ours alike) ``tol_scale``
multiplies the tolerances by the longest accumulation over 64, the linear
growth of the worst-case float32 bound.

``linear`` saves ``preact`` for its backward: the pre-activation
``x @ weight.T + bias`` for gelu; for relu, tanh and sigmoid the output itself
(relu' depends only on the sign, which relu keeps; tanh' = 1 - y^2 and
sigmoid' = y (1 - y) are written in the output, as the elementwise ops' are:
one store fewer); None without an activation (the backward needs nothing).

Benchmark cases (``bench=``) are the shapes of issue #3: square 1024/2048/4096,
deep-learning shapes and ``linear`` with bias + ReLU.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _array
from ..registry import BadCase, Case, Viewed, defop
from . import _checks as ck

TOL = {"float32": (2e-5, 2e-5), "float64": (1e-12, 1e-12)}

ACTIVATIONS = (None, "relu", "gelu", "tanh", "sigmoid")


# -- matmul ------------------------------------------------------------------------

def _matmul_shape(a):
    A, B = a["a"], a["b"]
    batch = A.shape[:-2] if A.ndim == 3 else B.shape[:-2]
    return tuple(batch) + (A.shape[-2], B.shape[-1])


def _matmul_flops(a):
    # math.prod of Python ints (exact, no overflow): this runs before every native call
    # (pydl/backends/_neighbours.py), where np.prod of a short tuple cost ~2 us
    *batch, m, n = _matmul_shape(a)
    return 2 * math.prod(batch) * m * n * a["a"].shape[-1]


def _matmul_cases(rng, dtype):
    def c(sa, sb, scale=1.0):
        a = (rng.standard_normal(sa) * scale).astype(dtype)
        b = rng.standard_normal(sb).astype(dtype)
        return Case(f"{'x'.join(map(str, sa))}@{'x'.join(map(str, sb))}", dict(a=a, b=b))

    return [
        c((5, 7), (7, 3)),            # 2-D, odd sizes
        c((1, 1), (1, 1)),            # everything 1
        c((13, 64), (64, 11)),        # a longer accumulation
        c((1, 9), (9, 1)),            # dot product as a matrix
        c((3, 4, 6), (3, 6, 5)),      # batched
        c((2, 5, 3), (3, 7)),         # 3-D @ 2-D: b shared, its gradient summed
        c((4, 3), (2, 3, 6)),         # 2-D @ 3-D: a shared
        c((0, 4, 5), (0, 5, 3)),      # empty batch
        c((3, 0), (0, 4)),            # K = 0: zeros
        c((2, 0, 5), (5, 3)),         # M = 0
        c((31, 37), (37, 47)),        # primes past one 14 x 32 register tile
        c((3, 41), (41, 29)),         # M <= 4: the direct (unpacked) path
        c((17, 300), (300, 19), 1 / np.sqrt(300)),  # K crosses the KC = 256 block
        c((2, 15, 9), (9, 33)),       # 3-D @ 2-D, rows past a tile
    ]


def _matmul_bad(rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return [
        BadCase("inner mismatch", dict(a=f(3, 4), b=f(5, 2)), ValueError, "a's"),
        BadCase("batched inner mismatch", dict(a=f(2, 3, 4), b=f(2, 3, 2)), ValueError, "b: inner"),
        BadCase("batch mismatch", dict(a=f(2, 3, 4), b=f(3, 4, 2)), ValueError, "b: batch"),
        BadCase("a 0-D", dict(a=f(), b=f(4, 2)), ValueError, "a"),
        BadCase("b 4-D batch mismatch", dict(a=f(3, 3, 4), b=f(2, 2, 4, 2)), ValueError, "b: batch"),
        BadCase("b int", dict(a=f(3, 4), b=np.ones((4, 2), np.int32)), TypeError, "b"),
    ]


def _matmul_bench(rng, dtype):
    def c(m, k, n, tags=()):
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        return Case(f"{m}x{k}@{k}x{n}", dict(a=a, b=b), tags=tags)

    return [
        c(1024, 1024, 1024, ("quick",)),
        c(2048, 2048, 2048),
        c(4096, 4096, 4096),
        c(64, 784, 256, ("quick",)),      # MLP layer, small batch
        c(256, 4608, 512),                # im2col of a 3x3x512 conv
        c(2048, 768, 3072),               # transformer MLP up-projection
        c(1, 4096, 4096, ("quick",)),     # GEMV: bandwidth-bound
        c(33, 65, 17, ("quick",)),        # tiny and odd: call overhead
    ]


def _matmul_tol_scale(a):
    """Longest accumulation over 64 (the conformance cases' K): K for the output,
    N and M (times the batch for a shared operand) for the gradients."""
    A, B = a["a"], a["b"]
    batch = max(A.shape[0] if A.ndim == 3 else 1, B.shape[0] if B.ndim == 3 else 1)
    return max(A.shape[-1], B.shape[-1], A.shape[-2] * batch) / 64


def _linear_tol_scale(a):
    rows = int(np.prod(a["x"].shape[:-1], dtype=np.int64))
    return max(a["weight"].shape[0], a["weight"].shape[1], rows) / 64


@defop(family="gemm", differentiable=("a", "b"), out_shape=_matmul_shape, flops=_matmul_flops,
       tol=TOL, cases=_matmul_cases, bad_cases=_matmul_bad, bench=_matmul_bench,
       tol_scale=_matmul_tol_scale,
       torch=lambda torch, F, a: torch.matmul(a["a"], a["b"]))
def matmul(a, b):
    """Matrix product ``a @ b`` with ``torch.matmul``'s rules.

    (M, K) @ (K, N) -> (M, N); (B, M, K) @ (B, K, N) -> (B, M, N); a 2-D
    operand against a batched one is shared by every batch entry (its gradient
    is the sum over the batch). As in torch, a 1-D ``a`` is a row (K,) and a
    1-D ``b`` a column (K,), their dimension removed from the result (1-D @
    1-D is a 0-d dot product), and batch dimensions (any number) broadcast;
    a batch of 1 is shared like a 2-D operand (a view), a true broadcast of
    both operands' batches is materialized. The kernels see 2-D or 3-D
    operands.
    """
    a = ck.array("a", a, min_ndim=1)
    b = ck.array("b", b, min_ndim=1)
    ck.same_dtype(a=a, b=b)
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"b: inner dimension {b.shape[-2 if b.ndim > 1 else 0]} (b's shape {tuple(b.shape)}) does not "
            f"match a's last dimension {a.shape[-1]} (a's shape {tuple(a.shape)})"
        )
    if a.ndim in (2, 3) and b.ndim in (2, 3) and (a.ndim == 2 or b.ndim == 2 or a.shape[0] == b.shape[0]):
        batch = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
        ck.fits("a, b", (batch, a.shape[-2], b.shape[-1]), a.itemsize)
        return dict(a=a, b=b)
    return _matmul_general(a, b)


def _matmul_general(a, b):
    """torch.matmul's 1-D operands and batch broadcasting, as a :class:`Viewed` of the
    kernels' 2-D/3-D product."""
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"b: batch dimensions {shape_b[:-2]} do not broadcast with a's "
                         f"{shape_a[:-2]} (a {shape_a} @ b {shape_b})") from None
    M, N = a2.shape[-2], b2.shape[-1]
    ck.fits("a, b", batch + (M, N), a.itemsize)
    for name, x in (("a", a2), ("b", b2)):  # a broadcast batch is materialized for the kernels
        ck.fits("a, b", batch + x.shape[-2:], x.itemsize, f"{name} broadcast to the batch")
    xp = _array.module(a)

    def kernel_form(x):
        """2-D if x has no batch or a batch of ones (shared), else 3-D over ``batch``."""
        if all(n == 1 for n in x.shape[:-2]):
            return x.reshape(x.shape[-2:])
        x = xp.broadcast_to(x, batch + x.shape[-2:]) if x.shape[:-2] != batch else x
        return x.reshape((-1,) + x.shape[-2:])

    ka, kb = kernel_form(a2), kernel_form(b2)
    full = batch + (M, N)
    public = batch + ((M,) if len(shape_a) > 1 else ()) + ((N,) if len(shape_b) > 1 else ())
    kshape = (ka.shape[0],) + (M, N) if ka.ndim == 3 else ((kb.shape[0], M, N) if kb.ndim == 3 else (M, N))
    if ka.ndim == 3 and kb.ndim == 3 and ka.shape[0] != kb.shape[0]:
        raise ValueError(f"b: batch {shape_b[:-2]} does not match a's {shape_a[:-2]}")

    def grads(res):
        da, db = res
        if da is not None:
            da = ck.sum_to(da.reshape(batch + a2.shape[-2:]) if da.ndim == 3 else da, a2.shape).reshape(shape_a)
        if db is not None:
            db = ck.sum_to(db.reshape(batch + b2.shape[-2:]) if db.ndim == 3 else db, b2.shape).reshape(shape_b)
        return da, db

    def grad(g):
        return g.reshape(kshape) if getattr(g, "shape", None) == public else g

    return Viewed(dict(a=ka, b=kb), out=lambda o, saved: o.reshape(full).reshape(public),
                  grad=grad, grads=grads)


# -- linear ------------------------------------------------------------------------

def _linear_shape(a):
    return tuple(a["x"].shape[:-1]) + (a["weight"].shape[0],)


def _linear_flops(a):
    rows = math.prod(a["x"].shape[:-1])  # (see _matmul_flops)
    return 2 * rows * a["weight"].shape[0] * a["weight"].shape[1]


def _linear_cases(rng, dtype):
    def c(xs, out, bias=True, activation=None):
        x = rng.standard_normal(xs).astype(dtype)
        w = (rng.standard_normal((out, xs[-1])) / np.sqrt(max(xs[-1], 1))).astype(dtype)
        b = rng.standard_normal(out).astype(dtype) if bias else None
        cid = f"{'x'.join(map(str, xs))}_out{out}{'' if bias else '_nobias'}_{activation}"
        return Case(cid, dict(x=x, weight=w, bias=b, activation=activation))

    return [
        c((7, 5), 3),
        c((4, 13), 6, activation="relu"),
        c((2, 3, 9), 5, activation="gelu"),       # leading dims are flattened
        c((6, 11), 1, activation="tanh"),
        c((5, 8), 7, bias=False, activation="sigmoid"),
        c((9,), 4, bias=False),                   # 1-D x: a vector
        c((1, 1), 1, activation="relu"),
        c((2, 1, 3, 4), 3, activation="tanh"),    # 4-D x, a size-1 dim
        c((3, 70), 9, activation="gelu"),         # longer accumulation
        c((0, 5), 3, activation="sigmoid"),       # empty batch
        c((19, 23), 37, activation="relu"),       # primes past one register tile
        c((15, 290), 17, activation="gelu"),      # K crosses the KC = 256 block (epilogue on the last)
        c((3, 29), 40, activation="tanh"),        # M <= 4: the direct path
    ]


def _linear_bad(rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, w, b = f(4, 5), f(3, 5), f(3)
    return [
        BadCase("in mismatch", dict(x=f(4, 6), weight=w, bias=b), ValueError, "weight"),
        BadCase("weight 1-D", dict(x=x, weight=f(5), bias=b), ValueError, "weight"),
        BadCase("weight 3-D", dict(x=x, weight=f(1, 3, 5), bias=b), ValueError, "weight"),
        BadCase("bias shape", dict(x=x, weight=w, bias=f(4)), ValueError, "bias"),
        BadCase("bias 2-D", dict(x=x, weight=w, bias=f(1, 3)), ValueError, "bias"),
        BadCase("x 0-D", dict(x=np.ones((), np.float32), weight=w), ValueError, "x"),
        BadCase("activation", dict(x=x, weight=w, bias=b, activation="softmax"), ValueError, "activation"),
        BadCase("activation type", dict(x=x, weight=w, bias=b, activation=1), TypeError, "activation"),
    ]


_TORCH_ACT = {
    None: lambda torch, F, z: z,
    "relu": lambda torch, F, z: F.relu(z),
    "gelu": lambda torch, F, z: F.gelu(z),
    "tanh": lambda torch, F, z: torch.tanh(z),
    "sigmoid": lambda torch, F, z: torch.sigmoid(z),
}


def _linear_torch(torch, F, a):
    z = F.linear(a["x"], a["weight"], a["bias"])
    return _TORCH_ACT[a["activation"]](torch, F, z)


def _linear_bench(rng, dtype):
    def c(rows, n_in, n_out, tags=()):
        x = rng.standard_normal((rows, n_in)).astype(dtype)
        w = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
        b = rng.standard_normal(n_out).astype(dtype)
        return Case(f"{rows}x{n_in}->{n_out}_relu", dict(x=x, weight=w, bias=b, activation="relu"), tags=tags)

    return [
        c(64, 784, 256, ("quick",)),
        c(256, 4608, 512),
        c(2048, 768, 3072),
        c(1, 4096, 4096),
    ]


@defop(family="gemm", differentiable=("x", "weight", "bias"), out_shape=_linear_shape,
       flops=_linear_flops, tol=TOL, cases=_linear_cases, bad_cases=_linear_bad,
       torch=_linear_torch, saves=("preact",), bench=_linear_bench, tol_scale=_linear_tol_scale)
def linear(x, weight, bias=None, activation=None):
    """``activation(x @ weight.T + bias)``: x (..., in), weight (out, in), bias (out,).

    ``x`` has any leading dimensions (at least 1-D). ``activation`` is one of
    None, "relu", "gelu" (exact, with erf), "tanh", "sigmoid", applied after
    the bias: one fused op, equal to ``F.linear`` followed by the activation.
    """
    x = ck.array("x", x, min_ndim=1)
    weight = ck.array("weight", weight, ndim=2, layout="(out_features, in_features)")
    bias = ck.optional_array("bias", bias, ndim=1, layout="(out_features,)")
    ck.same_dtype(x=x, weight=weight, bias=bias)
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"weight: expected shape (out_features, {x.shape[-1]}) to match x's last dimension "
            f"{x.shape[-1]} (x's shape {tuple(x.shape)}), got {tuple(weight.shape)}"
        )
    ck.shape("bias", bias, (weight.shape[0],), "(out_features, from weight)")
    ck.fits("x, weight", tuple(x.shape[:-1]) + (weight.shape[0],), x.itemsize)
    if not (activation is None or isinstance(activation, str)):
        raise TypeError(f"activation: expected None or a str, one of {', '.join(map(repr, ACTIVATIONS))}, "
                         f"got {type(activation).__name__} {activation!r}")
    activation = ck.choice("activation", activation, ACTIVATIONS)
    return dict(x=x, weight=weight, bias=bias, activation=activation)
