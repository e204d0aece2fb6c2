"""Normalization: layer_norm, batch_norm, group_norm, instance_norm and
local_response_norm.

Semantics follow ``torch.nn.functional``. Statistics are the mean and the
biased variance over the normalized elements; ``invstd = 1 / sqrt(var + eps)``
and ``y = (x - mean) * invstd * weight + bias`` (weight and bias optional)::

    layer_norm     over the trailing ``normalized_shape`` dims; weight, bias: normalized_shape
    batch_norm     per channel over (N, *spatial) of x (N, C, *spatial); weight, bias: (C,)
    group_norm     per (sample, group of C/num_groups channels); weight, bias: (C,)
    instance_norm  per (sample, channel) over the spatial dims; weight, bias: (C,)
    local_response_norm  y = x / (k + alpha/size * sum of x^2 over `size` channels)^beta

Running statistics (batch_norm, instance_norm) are updated IN PLACE when given
and the input statistics are used, as in torch: ``r = (1 - momentum) * r +
momentum * stat`` with the unbiased variance. They are not differentiated.
Without input statistics (``training=False``, ``use_input_stats=False``) the
running statistics are required and normalize the input.

Deliberate differences from PyTorch:
- instance_norm on an empty batch (N = 0) leaves the running statistics
  unchanged, as batch_norm does; torch writes NaN into them.
- Unbatched inputs are not accepted: x is (N, C, ...) as the layers use it.

Flops count one per add, multiply, compare and per sqrt/pow; these ops are
bandwidth-bound and the benchmark reports them in GB/s.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..registry import BadCase, Case, defop
from . import _checks as ck

# Statistics sum at most a few hundred elements in the cases (pairwise in
# NumPy): float32 mean/var are good to a few ulp, and the normalized output
# is O(1). The backward subtracts two means from the upstream gradient, so its
# absolute error is a little larger.
TOL = {"float32": (2e-5, 2e-5), "float64": (1e-10, 1e-12)}
GRAD_TOL = {"float32": (5e-5, 5e-5), "float64": (1e-10, 1e-11)}


# -- validation ------------------------------------------------------------------


def _eps(eps):
    """Any real, as torch takes it (a negative eps can make the variance negative: NaN,
    as in torch)."""
    return ck.real("eps", eps)


def _momentum(momentum):
    """Any real, as torch takes it (outside [0, 1] the running average extrapolates)."""
    return ck.real("momentum", momentum)


def _channels(name, v, C, x, what):
    """An optional (C,) array of x's dtype: weight, bias or a running statistic."""
    v = ck.optional_array(name, v, ndim=1, layout="(C,)")
    ck.same_dtype(x=x, **{name: v})
    return ck.shape(name, v, (C,), f"(C,) with C = {C} {what}")


def _nc(x, min_ndim=2):
    x = ck.array("x", x)
    if x.ndim < min_ndim:
        raise ValueError(f"x: expected at least {min_ndim} dimensions (N, C, ...), got shape {tuple(x.shape)}")
    return x


def _running(x, running_mean, running_var):
    C = x.shape[1]
    running_mean = _channels("running_mean", running_mean, C, x, "channels of x")
    running_var = _channels("running_var", running_var, C, x, "channels of x")
    if (running_mean is None) != (running_var is None):
        missing = "running_var" if running_var is None else "running_mean"
        raise ValueError(f"{missing}: running_mean and running_var must both be given or both be None")
    return running_mean, running_var


def _writeable_running(running_mean, running_var, when):
    """The running statistics are updated in place: refuse read-only ones before computing anything."""
    for name, v in (("running_mean", running_mean), ("running_var", running_var)):
        if v is not None and not getattr(v.flags, "writeable", True):
            raise ValueError(f"{name}: updated in place {when}: expected a writeable array, got a read-only one")


def _affine_args(x, weight, bias):
    C = x.shape[1]
    return (_channels("weight", weight, C, x, "channels of x"),
            _channels("bias", bias, C, x, "channels of x"))


# -- cases --------------------------------------------------------------------------


def _randn(rng, shape, dtype, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def _positive(rng, shape, dtype):
    """Running variances: away from 0."""
    return rng.uniform(0.5, 2.0, shape).astype(dtype)


def _id(shape):
    return "x".join(map(str, shape))


def _out_x(a):
    return a["x"].shape


def _flops_affine(per_element):
    """``per_element`` flops per element plus 2 for the affine map when present."""

    def flops(a):
        n = a["x"].size
        return n * (per_element + (a.get("weight") is not None) + (a.get("bias") is not None))

    return flops


# -- layer_norm ----------------------------------------------------------------------


def _layer_norm_cases(rng, dtype):
    def c(shape, ns, affine=(True, True), **kw):
        ns_t = (ns,) if isinstance(ns, int) else ns
        w = _randn(rng, ns_t, dtype, 0.5, 1.0) if affine[0] else None
        b = _randn(rng, ns_t, dtype) if affine[1] else None
        tag = "wb" if all(affine) else "w" if affine[0] else "b" if affine[1] else "plain"
        return Case(f"{_id(shape)}_ns{_id(ns_t)}_{tag}" + "".join(f"_{k}{v}" for k, v in kw.items()),
                    dict(x=_randn(rng, shape, dtype, 2.0, 0.5), normalized_shape=ns, weight=w, bias=b, **kw))

    return [c((4, 7), (7,)), c((3, 5, 6), (5, 6)), c((2, 3, 5), 5, (False, False)),
            c((0, 4), (4,)), c((6,), (6,), (True, False)), c((1, 1, 13), [13], (False, True), eps=1e-3),
            c((2, 4), (2, 4)), c((3, 1), (1,), eps=0.5)]


def _layer_norm_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = np.ones(4, np.float32)
    return [
        BadCase("ns mismatch", dict(x=x, normalized_shape=(3,)), ValueError, "normalized_shape"),
        BadCase("ns too long", dict(x=x, normalized_shape=(2, 3, 4)), ValueError, "normalized_shape"),
        BadCase("ns empty", dict(x=x, normalized_shape=()), ValueError, "normalized_shape"),
        BadCase("ns float", dict(x=x, normalized_shape=4.0), TypeError, "normalized_shape"),
        BadCase("weight shape", dict(x=x, normalized_shape=(4,), weight=np.ones(3, np.float32)), ValueError, "weight"),
        BadCase("bias shape", dict(x=x, normalized_shape=(4,), weight=w, bias=np.ones((1, 4), np.float32)),
                ValueError, "bias"),
        BadCase("eps nan", dict(x=x, normalized_shape=(4,), eps=float("nan")), ValueError, "eps"),
    ]


def _normalized_shape(ns, x):
    if isinstance(ns, numbers.Integral) and not isinstance(ns, (bool, np.bool_)):
        ns = (ns,)
    if not isinstance(ns, (tuple, list)):
        raise TypeError(f"normalized_shape: expected an int or a sequence of ints, got {ns!r}")
    ns = tuple(ck.integer("normalized_shape", d, min=0) for d in ns)
    if not 1 <= len(ns) <= x.ndim or tuple(x.shape[x.ndim - len(ns):]) != ns:
        raise ValueError(f"normalized_shape: expected 1 to {x.ndim} trailing dimensions of x "
                         f"(shape {tuple(x.shape)}), got {ns}")
    return ns



# -- benchmark cases (pydl bench): transformer and CNN activations ----------------


def _nchw_bench(make):
    """CNN activations N x C x H x W: 1.5 MiB (quick), 25 MiB (issue 12's N32 C64 56x56) and 49 MiB."""

    def bench(rng, dtype, quick=False):
        return [Case("x".join(map(str, s)), make(rng, dtype, s), tags=("quick",) if q else ())
                for s, q in (((8, 64, 28, 28), True), ((32, 64, 56, 56), False), ((32, 128, 56, 56), False))
                if q or not quick]

    return bench


def _randn32(rng, shape, dtype):
    """Standard normal drawn in float32 when that is the dtype (faster for the big cases)."""
    return rng.standard_normal(shape, dtype=np.float32 if dtype == np.float32 else np.float64).astype(dtype, copy=False)


def _affine(rng, dtype, C):
    return dict(weight=(1 + 0.1 * rng.standard_normal(C)).astype(dtype),
                bias=(0.1 * rng.standard_normal(C)).astype(dtype))


def _layer_norm_bench(rng, dtype, quick=False):
    """Token rows x hidden size (BERT-base and a wider model)."""
    def c(T, E, quick=False):
        return Case(f"{T}x{E}", dict(x=_randn32(rng, (T, E), dtype), normalized_shape=(E,),
                                     **_affine(rng, dtype, E)), tags=("quick",) if quick else ())

    return [c(2048, 768, quick=True)] + ([] if quick else [c(8192, 768), c(8192, 1024)])


def _batch_norm_bench_args(rng, dtype, s):
    C = s[1]
    return dict(x=_randn32(rng, s, dtype), running_mean=np.zeros(C, dtype),
                running_var=np.ones(C, dtype), **_affine(rng, dtype, C), training=True)


def _group_norm_bench_args(rng, dtype, s):
    return dict(x=_randn32(rng, s, dtype), num_groups=32, **_affine(rng, dtype, s[1]))


def _instance_norm_bench_args(rng, dtype, s):
    return dict(x=_randn32(rng, s, dtype), **_affine(rng, dtype, s[1]))


def _lrn_bench_args(rng, dtype, s):
    return dict(x=_randn32(rng, s, dtype), size=5, alpha=1e-4, beta=0.75, k=2.0)


@defop(family="norm", differentiable=("x", "weight", "bias"), out_shape=_out_x,
       flops=_flops_affine(7), tol=TOL, grad_tol=GRAD_TOL,
       cases=_layer_norm_cases, bad_cases=_layer_norm_bad,
       torch=lambda torch, F, a: F.layer_norm(a["x"], a["normalized_shape"], a["weight"], a["bias"], a["eps"]),
       bench=_layer_norm_bench)
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the trailing ``normalized_shape`` dimensions."""
    x = ck.array("x", x)
    ns = _normalized_shape(normalized_shape, x)
    weight = ck.optional_array("weight", weight)
    bias = ck.optional_array("bias", bias)
    ck.same_dtype(x=x, weight=weight, bias=bias)
    ck.shape("weight", weight, ns, "(normalized_shape)")
    ck.shape("bias", bias, ns, "(normalized_shape)")
    return dict(x=x, normalized_shape=ns, weight=weight, bias=bias, eps=_eps(eps))


# -- batch_norm ------------------------------------------------------------------------


def _batch_norm_cases(rng, dtype):
    def c(shape, training, stats=True, affine=(True, True), **kw):
        C = shape[1]
        args = dict(x=_randn(rng, shape, dtype, 2.0, 0.3))
        if stats:
            args.update(running_mean=_randn(rng, (C,), dtype), running_var=_positive(rng, (C,), dtype))
        args.update(weight=_randn(rng, (C,), dtype, 0.5, 1.0) if affine[0] else None,
                    bias=_randn(rng, (C,), dtype) if affine[1] else None, training=training, **kw)
        tag = f"{'train' if training else 'eval'}{'_stats' if stats else ''}"
        return Case(f"{_id(shape)}_{tag}" + "".join(f"_{k}{v}" for k, v in kw.items()), args)

    return [c((4, 3), False), c((5, 3, 7), True, momentum=0.2), c((2, 4, 3, 3), True, False, (False, False)),
            c((7, 5), True, False, (True, False), eps=1e-3), c((2, 3, 2, 5), False, affine=(False, True)),
            c((1, 2, 5), True), c((2, 3, 1, 2, 2), True, momentum=1.0), c((0, 3, 4), False), c((0, 3), True)]


def _batch_norm_bad(rng):
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    return [
        BadCase("1-D x", dict(x=np.ones(3, np.float32), running_mean=rm, running_var=rv), ValueError, "x"),
        BadCase("eval without stats", dict(x=x), ValueError, "running_mean"),
        BadCase("only running_mean", dict(x=x, running_mean=rm, training=True), ValueError, "running_var"),
        BadCase("running_var shape", dict(x=x, running_mean=rm, running_var=np.ones(4, np.float32)),
                ValueError, "running_var"),
        BadCase("weight shape", dict(x=x, training=True, weight=np.ones((3, 1), np.float32)), ValueError, "weight"),
        BadCase("one value per channel", dict(x=x[:1, :, :1], training=True), ValueError, "x"),
        BadCase("momentum", dict(x=x, training=True, momentum="0.1"), TypeError, "momentum"),
        BadCase("training=1", dict(x=x, training=1), TypeError, "training"),
        BadCase("eps", dict(x=x, training=True, eps=None), TypeError, "eps"),
    ]


@defop(family="norm", mutates=("running_mean", "running_var"), differentiable=("x", "weight", "bias"), out_shape=_out_x,
       flops=_flops_affine(7), tol=TOL, grad_tol=GRAD_TOL, saves=("mean", "invstd"),
       cases=_batch_norm_cases, bad_cases=_batch_norm_bad,
       torch=lambda torch, F, a: F.batch_norm(a["x"], a["running_mean"], a["running_var"], a["weight"],
                                              a["bias"], a["training"], a["momentum"], a["eps"]),
       bench=_nchw_bench(_batch_norm_bench_args))
def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalize each channel of x (N, C, *spatial) over the batch and spatial dims.

    ``training=True`` uses the batch statistics and updates ``running_mean`` /
    ``running_var`` in place when given; ``training=False`` normalizes with the
    running statistics. Saves the per-channel ``mean`` and ``invstd`` (C,) used.
    """
    x = _nc(x)
    running_mean, running_var = _running(x, running_mean, running_var)
    weight, bias = _affine_args(x, weight, bias)
    training = ck.boolean("training", training)
    if training:
        _writeable_running(running_mean, running_var, "when training")
    if not training and running_mean is None:
        raise ValueError("running_mean: needed with training=False (the running statistics normalize the input)")
    count = x.size // max(x.shape[1], 1)
    if training and count == 1:
        raise ValueError(f"x: expected more than 1 value per channel when training, got shape {tuple(x.shape)}")
    return dict(x=x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias,
                training=training, momentum=_momentum(momentum), eps=_eps(eps))


# -- group_norm -----------------------------------------------------------------------


def _group_norm_cases(rng, dtype):
    def c(shape, G, affine=(True, True), **kw):
        C = shape[1]
        return Case(f"{_id(shape)}_G{G}" + ("" if all(affine) else "_partial") + "".join(f"_{k}{v}" for k, v in kw.items()),
                    dict(x=_randn(rng, shape, dtype, 2.0, -0.4), num_groups=G,
                         weight=_randn(rng, (C,), dtype, 0.5, 1.0) if affine[0] else None,
                         bias=_randn(rng, (C,), dtype) if affine[1] else None, **kw))

    # No bias-only case: torch 2.13's CPU group_norm backward fails for
    # weight=None with a bias ("tensor does not have a device").
    # Groups of 3 or more elements: a group of 2 close values is nearly
    # degenerate (its invstd amplifies float32 rounding in the backward).
    return [c((3, 6, 5), 3), c((3, 6), 2), c((2, 6, 2, 3), 1, (False, False)), c((2, 5, 3), 5, (True, False)),
            c((1, 4, 3, 1, 2), 2, eps=1e-3), c((0, 4, 3), 2)]


def _group_norm_bad(rng):
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    return [
        BadCase("1-D x", dict(x=np.ones(6, np.float32), num_groups=2), ValueError, "x"),
        BadCase("C % G", dict(x=x, num_groups=4), ValueError, "num_groups"),
        BadCase("G=0", dict(x=x, num_groups=0), ValueError, "num_groups"),
        BadCase("G float", dict(x=x, num_groups=2.0), TypeError, "num_groups"),
        BadCase("bias shape", dict(x=x, num_groups=2, bias=np.ones(3, np.float32)), ValueError, "bias"),
        BadCase("eps", dict(x=x, num_groups=2, eps=float("nan")), ValueError, "eps"),
    ]


@defop(family="norm", differentiable=("x", "weight", "bias"), out_shape=_out_x,
       flops=_flops_affine(7), tol=TOL, grad_tol=GRAD_TOL,
       cases=_group_norm_cases, bad_cases=_group_norm_bad,
       torch=lambda torch, F, a: F.group_norm(a["x"], a["num_groups"], a["weight"], a["bias"], a["eps"]),
       bench=_nchw_bench(_group_norm_bench_args))
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize each sample's groups of C/num_groups channels of x (N, C, *spatial)."""
    x = _nc(x)
    G = ck.integer("num_groups", num_groups, min=1)
    if x.shape[1] % G:
        raise ValueError(f"num_groups: expected a divisor of the {x.shape[1]} channels of x, got {G}")
    weight, bias = _affine_args(x, weight, bias)
    return dict(x=x, num_groups=G, weight=weight, bias=bias, eps=_eps(eps))


# -- instance_norm ----------------------------------------------------------------------


def _instance_norm_cases(rng, dtype):
    def c(shape, stats, affine=(True, True), **kw):
        C = shape[1]
        args = dict(x=_randn(rng, shape, dtype, 1.5, 0.7))
        if stats:
            args.update(running_mean=_randn(rng, (C,), dtype), running_var=_positive(rng, (C,), dtype))
        args.update(weight=_randn(rng, (C,), dtype, 0.5, 1.0) if affine[0] else None,
                    bias=_randn(rng, (C,), dtype) if affine[1] else None, **kw)
        return Case(f"{_id(shape)}{'_stats' if stats else ''}" + "".join(f"_{k}{v}" for k, v in kw.items()), args)

    # Empty batches without weight and bias: torch 2.13's instance_norm fails
    # on N = 0 with them (it repeats weight and bias N times).
    return [c((2, 3, 5), True, momentum=0.3), c((3, 2, 4, 3), False, (False, False)),
            c((2, 3, 5), True, use_input_stats=False), c((2, 3), True, (True, False), use_input_stats=False),
            c((1, 4, 7), False, (True, False), eps=1e-3), c((2, 2, 1, 3, 2), True, (False, True)),
            c((0, 3, 4), True, (False, False)), c((0, 3, 4), False, (False, False))]


def _instance_norm_bad(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    return [
        BadCase("1-D x", dict(x=np.ones(3, np.float32)), ValueError, "x"),
        BadCase("one spatial element", dict(x=x[:, :, :1]), ValueError, "x"),
        BadCase("no stats", dict(x=x, use_input_stats=False), ValueError, "running_mean"),
        BadCase("only running_var", dict(x=x, running_var=rv), ValueError, "running_mean"),
        BadCase("running_mean shape", dict(x=x, running_mean=np.zeros(2, np.float32), running_var=rv),
                ValueError, "running_mean"),
        BadCase("running_mean dtype", dict(x=x, running_mean=rm.astype(np.float64), running_var=rv),
                TypeError, "running_mean"),
        BadCase("momentum", dict(x=x, momentum=float("nan")), ValueError, "momentum"),
        BadCase("use_input_stats", dict(x=x, use_input_stats="yes"), TypeError, "use_input_stats"),
    ]


@defop(family="norm", mutates=("running_mean", "running_var"), differentiable=("x", "weight", "bias"), out_shape=_out_x,
       flops=_flops_affine(7), tol=TOL, grad_tol=GRAD_TOL,
       cases=_instance_norm_cases, bad_cases=_instance_norm_bad,
       torch=lambda torch, F, a: F.instance_norm(a["x"], a["running_mean"], a["running_var"], a["weight"],
                                                 a["bias"], a["use_input_stats"], a["momentum"], a["eps"]),
       bench=_nchw_bench(_instance_norm_bench_args))
def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Normalize each (sample, channel) of x (N, C, *spatial) over its spatial dims.

    With ``use_input_stats`` the running statistics, when given, move towards
    the batch average of the per-instance mean and unbiased variance.
    """
    x = _nc(x)
    running_mean, running_var = _running(x, running_mean, running_var)
    weight, bias = _affine_args(x, weight, bias)
    use_input_stats = ck.boolean("use_input_stats", use_input_stats)
    if use_input_stats:
        _writeable_running(running_mean, running_var, "with use_input_stats=True")
    if use_input_stats and int(np.prod(x.shape[2:])) <= 1:
        raise ValueError(f"x: expected more than 1 spatial element per channel with use_input_stats=True, "
                         f"got shape {tuple(x.shape)}")
    if not use_input_stats and running_mean is None:
        raise ValueError("running_mean: needed with use_input_stats=False "
                         "(the running statistics normalize the input)")
    return dict(x=x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias,
                use_input_stats=use_input_stats, momentum=_momentum(momentum), eps=_eps(eps))


# -- local_response_norm ------------------------------------------------------------------


def _lrn_cases(rng, dtype):
    def c(shape, size, **kw):
        return Case(f"{_id(shape)}_size{size}" + "".join(f"_{k}{v}" for k, v in kw.items()),
                    dict(x=_randn(rng, shape, dtype, 1.5), size=size, **kw))

    # alpha large enough that the cross-channel term of the gradient matters
    return [c((2, 7, 5), 3, alpha=0.5), c((2, 6, 3, 4), 2, alpha=0.8, k=2.0), c((1, 5, 2, 2, 3), 4, alpha=0.3, beta=0.6),
            c((3, 4, 5), 7, alpha=1.0, beta=1.2, k=0.5), c((2, 3, 4), 1, alpha=0.4), c((2, 5, 3), 5),
            c((0, 4, 3), 3)]


def _lrn_bad(rng):
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    return [
        BadCase("2-D x", dict(x=x[0], size=2), ValueError, "x"),
        BadCase("size=0", dict(x=x, size=0), ValueError, "size"),
        BadCase("size float", dict(x=x, size=2.0), TypeError, "size"),
        BadCase("alpha None", dict(x=x, size=2, alpha=None), TypeError, "alpha"),
        BadCase("beta str", dict(x=x, size=2, beta="1"), TypeError, "beta"),
        BadCase("k nan", dict(x=x, size=2, k=float("nan")), ValueError, "k"),
    ]


@defop(family="norm", differentiable=("x",), out_shape=_out_x,
       flops=lambda a: a["x"].size * (a["size"] + 5), tol=TOL, grad_tol=GRAD_TOL,
       cases=_lrn_cases, bad_cases=_lrn_bad,
       torch=lambda torch, F, a: F.local_response_norm(a["x"], a["size"], a["alpha"], a["beta"], a["k"]),
       bench=_nchw_bench(_lrn_bench_args))
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha * mean of x^2 over channels c - size//2 .. c + (size-1)//2)^beta.

    The mean divides by ``size`` (channels outside [0, C) count as zeros), as in torch.
    """
    x = _nc(x, min_ndim=3)
    return dict(x=x, size=ck.integer("size", size, min=1, max=ck.HYPER_MAX), alpha=ck.real("alpha", alpha),
                beta=ck.real("beta", beta), k=ck.real("k", k))
