"""Losses: mse_loss, l1_loss, cross_entropy, nll_loss, binary_cross_entropy,
binary_cross_entropy_with_logits, gaussian_nll_loss, kl_div.

Semantics follow ``torch.nn.functional``. ``reduction`` is "none" (one loss
per element or sample), "mean" or "sum" (a 0-d output); kl_div also takes
"batchmean" (the sum divided by the batch size ``input.shape[0]``). As in
torch, a mean over nothing (an empty batch, or cross_entropy / nll_loss
with every target ignored) is NaN, and a sum over nothing is 0.

Differentiable inputs: the predictions always; targets where they are
commonly trained through too (mse_loss, l1_loss, gaussian_nll_loss, kl_div:
both sides of a regression or a distillation). cross_entropy, nll_loss and
the binary cross entropies do not differentiate their targets (labels or
label probabilities), nor any weight.

Deliberate differences from PyTorch:
- input and target must have the same shape everywhere (torch broadcasts in
  mse_loss, kl_div and gaussian_nll_loss, with a warning in mse_loss).
- cross_entropy and nll_loss take batched input only, (N, C) or
  (N, C, d1, ...); their class indices may have any integer dtype (torch:
  int64, and uint8 in some ops).
- binary_cross_entropy's gradient divides by max(x * (1 - x), 1e-12), as
  torch does, while its forward clamps the logs at -100: the two agree
  except within ~1e-12 of 0 and 1.

Flops count one per add, multiply, compare, exp or log; these ops are
bandwidth-bound and the benchmark reports them in GB/s.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from .. import _array
from ..registry import BadCase, Case, Viewed, defop
from . import _checks as ck

# The reductions sum at most a few hundred O(1) terms (pairwise in NumPy);
# kl_div's terms have both signs, so its sum can be small next to them: the
# absolute tolerance covers a few ulp of the terms' magnitudes.
TOL = {"float32": (2e-5, 1e-5), "float64": (1e-11, 1e-13)}

REDUCTIONS = ("none", "mean", "sum")


# -- validation -----------------------------------------------------------------------


def _reduction(reduction, options=REDUCTIONS):
    return ck.choice("reduction", reduction, options)


def _input_target(input, target):
    """Two float arrays of one dtype and one shape."""
    input = ck.array("input", input)
    target = ck.array("target", target)
    ck.same_dtype(input=input, target=target)
    ck.shape("target", target, input.shape, "(the shape of input)")
    return input, target


def _broadcast_to_input(name, w, input):
    """An optional array of input's dtype that broadcasts to input's shape."""
    w = ck.optional_array(name, w)
    ck.same_dtype(input=input, **{name: w})
    if w is not None:
        try:
            ok = np.broadcast_shapes(w.shape, input.shape) == tuple(input.shape)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name}: expected a shape that broadcasts to input's {tuple(input.shape)}, "
                             f"got {tuple(w.shape)}")
    return w


def _out_shape(a):
    return tuple(a["input"].shape) if a["reduction"] == "none" else ()


def _n(k):
    return lambda a: k * a["input"].size


# -- cases ------------------------------------------------------------------------------


def _id(shape):
    return "x".join(map(str, shape)) if shape else "scalar"


def _tag(**kw):
    return "".join(f"_{k}{v}" for k, v in kw.items())


def _randn(rng, shape, dtype, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=dtype)


def _uniform(rng, lo, hi, shape, dtype):
    return np.asarray(rng.uniform(lo, hi, shape), dtype=dtype)


def _bad(base, *wrong):
    """BadCases from (id, changes to ``base``, exception, match)."""
    return [BadCase(i, dict(base, **changes), exc, match) for i, changes, exc, match in wrong]


# -- mse_loss ----------------------------------------------------------------------------


def _mse_cases(rng, dtype):
    def c(shape, reduction):
        return Case(f"{_id(shape)}_{reduction}", dict(input=_randn(rng, shape, dtype, 2.0),
                                                     target=_randn(rng, shape, dtype), reduction=reduction))

    return [c((5,), "none"), c((3, 4, 2), "mean"), c((7, 3), "sum"), c((), "mean"), c((1,), "sum"),
            c((0, 3), "mean"), c((0, 3), "sum"), c((0, 3), "none")]


def _mse_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    return _bad(dict(input=x, target=x.copy()),
                ("target shape", dict(target=x[:2]), ValueError, "target"),
                ("reduction", dict(reduction="avg"), ValueError, "reduction"),
                ("target int", dict(target=x.astype(np.int64)), TypeError, "target"))



# -- benchmark cases (pydl bench): a batch of predictions ---------------------------


def _randn32(rng, shape, dtype, scale=1.0):
    """Standard normal drawn in float32 when that is the dtype (faster for the 16M-element cases)."""
    x = rng.standard_normal(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    x *= scale
    return x.astype(dtype, copy=False)


def _uniform32(rng, lo, hi, shape, dtype):
    x = rng.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    x *= hi - lo
    x += lo
    return x.astype(dtype, copy=False)


def _pair_bench(make):
    """Elementwise losses over 1M (quick) and 16M elements."""

    def bench(rng, dtype, quick=False):
        return [Case(f"{n}x1024_mean", make(rng, dtype, (n, 1024)), tags=("quick",) if n == 1024 else ())
                for n in ((1024,) if quick else (1024, 16384))]

    return bench


def _ce_bench(rng, dtype, quick=False):
    """Classifier: batch x 1000 classes, class-index targets; and per-pixel segmentation."""
    def c(shape, quick=False):
        return Case(_id(shape) + "_idx", dict(input=_randn32(rng, shape, dtype, 2.0),
                                              target=rng.integers(0, shape[1], (shape[0],) + shape[2:])),
                    tags=("quick",) if quick else ())

    return [c((1024, 1000), quick=True)] + ([] if quick else [c((4096, 1000)), c((8192, 1000)), c((8, 21, 128, 128))])


def _kl_bench(rng, dtype, quick=False):
    def c(shape, quick=False):
        z = rng.standard_normal(shape)
        t = rng.standard_normal(shape)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        q = np.exp(t) / np.exp(t).sum(axis=-1, keepdims=True)
        return Case(_id(shape) + "_batchmean", dict(input=logp.astype(dtype), target=q.astype(dtype),
                                                   reduction="batchmean"), tags=("quick",) if quick else ())

    return [c((1024, 1000), quick=True)] + ([] if quick else [c((8192, 1000))])


@defop(family="loss", differentiable=("input", "target"), out_shape=_out_shape, flops=_n(3), tol=TOL,
       cases=_mse_cases, bad_cases=_mse_bad,
       torch=lambda torch, F, a: F.mse_loss(a["input"], a["target"], reduction=a["reduction"]),
       bench=_pair_bench(lambda rng, dt, s: dict(input=_randn32(rng, s, dt, 2.0), target=_randn32(rng, s, dt))))
def mse_loss(input, target, reduction="mean"):
    """(input - target)^2, reduced."""
    input, target = _input_target(input, target)
    return dict(input=input, target=target, reduction=_reduction(reduction))


# -- l1_loss -----------------------------------------------------------------------------


def _l1_cases(rng, dtype):
    def c(shape, reduction, ties=False):
        x, t = _randn(rng, shape, dtype, 2.0), _randn(rng, shape, dtype)
        if ties:  # input == target: the gradient there is sign(0) = 0, as torch's
            t.flat[::3] = x.flat[::3]
        return Case(f"{_id(shape)}_{reduction}{'_ties' if ties else ''}",
                    dict(input=x, target=t, reduction=reduction))

    return [c((5,), "none"), c((3, 4, 2), "mean"), c((7, 3), "sum"), c((), "mean"), c((1,), "sum"),
            c((4, 6), "mean", ties=True), c((2, 3, 5), "none", ties=True),
            c((0, 3), "mean"), c((0, 3), "sum"), c((0, 3), "none")]


@defop(family="loss", differentiable=("input", "target"), out_shape=_out_shape, flops=_n(3), tol=TOL,
       cases=_l1_cases, bad_cases=_mse_bad,
       torch=lambda torch, F, a: F.l1_loss(a["input"], a["target"], reduction=a["reduction"]),
       bench=_pair_bench(lambda rng, dt, s: dict(input=_randn32(rng, s, dt, 2.0), target=_randn32(rng, s, dt))))
def l1_loss(input, target, reduction="mean"):
    """|input - target|, reduced. The gradient at input == target is 0 (torch's sign)."""
    input, target = _input_target(input, target)
    return dict(input=input, target=target, reduction=_reduction(reduction))


# -- cross_entropy -----------------------------------------------------------------------


def _ce_cases(rng, dtype):
    def idx(shape):
        """Class indices for input (N, C, *spatial)."""
        return rng.integers(0, shape[1], (shape[0],) + shape[2:])

    def c(shape, target, weight=False, **kw):
        C = shape[1]
        kind = "prob" if target.dtype.kind == "f" else ("idx" if target.dtype == np.int64 else target.dtype.name)
        return Case(f"{_id(shape)}_{kind}{'_w' if weight else ''}" + _tag(**kw),
                    dict(input=_randn(rng, shape, dtype, 2.0), target=target,
                         weight=_uniform(rng, 0.2, 2.0, (C,), dtype) if weight else None, **kw))

    def prob(shape):
        e = np.exp(rng.standard_normal(shape))
        return (e / e.sum(axis=1, keepdims=True)).astype(dtype)

    def ignored(shape, value, fraction=0.3):
        t = idx(shape)
        t[rng.random(t.shape) < fraction] = value
        t.flat[0] = value
        return t

    return [
        c((5, 4), idx((5, 4)), reduction="mean"),
        c((5, 4), idx((5, 4)), True, reduction="sum"),
        c((3, 5, 2, 3), ignored((3, 5, 2, 3), 1), True, ignore_index=1, reduction="mean"),
        c((6, 3), ignored((6, 3), -100), True, reduction="mean", label_smoothing=0.2),
        c((4, 7), idx((4, 7)), reduction="none", label_smoothing=0.1),
        c((7, 3, 4), ignored((7, 3, 4), 5), ignore_index=5, reduction="sum", label_smoothing=0.3),
        c((2, 3), np.full(2, -100), True, reduction="mean", label_smoothing=0.1),  # all ignored: NaN
        c((1, 1), idx((1, 1)), reduction="mean"),
        c((4, 5, 3), prob((4, 5, 3)), True, reduction="mean", label_smoothing=0.15),
        c((4, 5), prob((4, 5)), reduction="sum"),
        c((3, 4, 2), prob((3, 4, 2)), True, reduction="none"),
        c((0, 3), idx((0, 3)), reduction="mean"),
        c((0, 3, 2), idx((0, 3, 2)), True, reduction="sum", label_smoothing=0.2),
        c((0, 4), prob((0, 4)), reduction="mean"),
        c((6, 5), idx((6, 5)).astype(np.int32), True, reduction="mean"),
        c((4, 3, 5), ignored((4, 3, 5), 255).astype(np.uint8), ignore_index=255, reduction="mean"),
    ]


def _ce_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = np.array([0, 3, 1])
    return _bad(dict(input=x, target=t),
                ("1-D input, 1-D target", dict(input=x[0], target=t[:1]), ValueError, "target"),
                ("target shape", dict(target=t[:2]), ValueError, "target"),
                ("prob target shape", dict(target=x[:, :3].copy()), ValueError, "target"),
                ("target bool", dict(target=t.astype(bool)), TypeError, "target"),
                ("target float16", dict(target=t.astype(np.float16)), TypeError, "target"),
                ("target >= C", dict(target=np.array([0, 4, 1])), ValueError, "target"),
                ("uint8 target >= C", dict(target=np.array([0, 4, 1], np.uint8)), ValueError, "target"),
                ("target < 0", dict(target=np.array([0, -1, 1])), ValueError, "target"),
                ("-100 not ignored", dict(target=np.array([0, -100, 1]), ignore_index=2), ValueError, "target"),
                ("weight shape", dict(weight=np.ones(3, np.float32)), ValueError, "weight"),
                ("weight dtype", dict(weight=np.ones(4, np.int64)), TypeError, "weight"),
                ("ignore_index float", dict(ignore_index=1.0), TypeError, "ignore_index"),
                ("label_smoothing", dict(label_smoothing=1.5), ValueError, "label_smoothing"),
                ("reduction", dict(reduction="batchmean"), ValueError, "reduction"))


def _class_indices(target, input, ignore_index):
    """Class indices (N, *spatial) of any integer dtype, in [0, C) or ignore_index, for input (N, C, *spatial)."""
    target = ck.array("target", target, dtypes=ck.INT_DTYPES)
    ck.shape("target", target, input.shape[:1] + input.shape[2:],
             "(class indices: the shape of input without its class dim 1)")
    return ck.indices("target", target, input.shape[1], "class indices", ignore_index)


def _class_weight(weight, input):
    """An optional (C,) array of input's dtype."""
    if weight is None:
        return None
    C = input.shape[1]
    weight = ck.optional_array("weight", weight, ndim=1, layout="(C,)")
    ck.same_dtype(input=input, weight=weight)
    return ck.shape("weight", weight, (C,), f"(C,) with C = {C} classes of input")


def _long(t):
    """torch's losses take int64 class indices: the oracle converts the others."""
    return t if t.is_floating_point() else t.long()


def _ce_out_shape(a):
    x = a["input"]
    return tuple(x.shape[:1] + x.shape[2:]) if a["reduction"] == "none" else ()


@defop(family="loss", differentiable=("input", "target"), out_shape=_ce_out_shape, flops=_n(6), tol=TOL,
       cases=_ce_cases, bad_cases=_ce_bad,
       # class-index targets have no gradient (None), which finite differences cannot skip per
       # case; probability targets' gradient is checked against torch autograd (tests/test_opinfo.py)
       fd_skip=("target",),
       torch=lambda torch, F, a: F.cross_entropy(a["input"], _long(a["target"]), a["weight"], ignore_index=a["ignore_index"],
                                                 reduction=a["reduction"], label_smoothing=a["label_smoothing"]),
       bench=_ce_bench)
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """-log_softmax(input, dim=1) weighted by the target, over input (N, C, *spatial).

    ``target`` is either class indices (N, *spatial) in [0, C) of any integer dtype, or
    ``ignore_index`` (those samples count for nothing, also not in the mean),
    or class probabilities of input's shape and dtype. With class indices a
    weighted mean divides by the summed weights of the targets that count; with
    probabilities the mean divides by the number of samples N * prod(spatial).
    ``label_smoothing`` mixes the target with the uniform distribution over
    the C classes. Probability targets are differentiated (as in torch), class
    indices are not (their gradient is None). An unbatched input (C,) takes a
    0-d class index or (C,) probabilities, as in torch.
    """
    input = ck.array("input", input, min_ndim=1)
    target = ck.array("target", target, dtypes=ck.INT_DTYPES + ck.FLOAT_DTYPES)
    ignore_index = ck.integer("ignore_index", ignore_index, min=-2 ** 63, max=2 ** 63 - 1)
    unbatched = input.ndim == 1
    if unbatched:
        input = input[None]
        if target.dtype.kind != "f" and target.ndim:
            raise ValueError(f"target: expected a 0-d class index (or (C,) probabilities) for an "
                             f"unbatched input (C,), got shape {tuple(target.shape)}")
        target = target[None] if target.dtype.kind == "f" else target.reshape(1)
    if target.dtype.kind == "f":
        ck.same_dtype(input=input, target=target)
        ck.shape("target", target, input.shape, "(class probabilities: the shape of input)")
    else:
        target = _class_indices(target, input, ignore_index)
    a = dict(input=input, target=target, weight=_class_weight(weight, input), ignore_index=ignore_index,
             reduction=_reduction(reduction),
             label_smoothing=ck.real("label_smoothing", label_smoothing, 0.0, 1.0))
    if not unbatched:
        return a
    a = ck.unbatched_views(a, 1)  # the kernel's loss per sample is (1,)
    if a["reduction"] != "none":
        a.out = a.grad = None
    squeeze = a.grads
    a.grads = lambda res: squeeze((res[0], None if res[1] is None else res[1][0]))
    return a


# -- nll_loss ---------------------------------------------------------------------------------


def _nll_cases(rng, dtype):
    def c(shape, weight=False, ignore=None, dtype_t=np.int64, fraction=0.3, **kw):
        """input (N, C, *spatial) of log-probabilities; a fraction of the targets set to ``ignore``."""
        z = rng.standard_normal(shape) * 2
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True)) if shape[0] else z
        t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
        if ignore is not None and t.size:
            t[rng.random(t.shape) < fraction] = ignore
            t.flat[0] = ignore
        if ignore not in (None, -100):
            kw["ignore_index"] = ignore
        return Case(f"{_id(shape)}{'_w' if weight else ''}"
                    + ("" if dtype_t is np.int64 else f"_{np.dtype(dtype_t).name}") + _tag(**kw),
                    dict(input=logp.astype(dtype), target=t.astype(dtype_t),
                         weight=_uniform(rng, 0.2, 2.0, (shape[1],), dtype) if weight else None, **kw))

    return [
        c((5, 4), reduction="mean"),
        c((5, 4), True, reduction="sum"),
        c((6, 3), True, ignore=-100, reduction="mean"),
        c((3, 5, 2, 3), True, ignore=1, reduction="mean"),
        c((4, 7), reduction="none"),
        c((7, 3, 4), ignore=2, reduction="sum"),
        c((2, 3, 4), True, ignore=2, reduction="none"),
        c((3, 3), True, ignore=-100, fraction=1.0, reduction="mean"),  # all ignored: NaN
        c((1, 1), reduction="mean"),
        c((6, 5), True, dtype_t=np.int32, reduction="mean"),
        c((4, 3, 5), ignore=255, dtype_t=np.uint8, reduction="mean"),
        c((0, 3), reduction="mean"),
        c((0, 3, 2), True, reduction="sum"),
        c((0, 4), reduction="none"),
    ]


def _nll_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = np.array([0, 3, 1])
    return _bad(dict(input=x, target=t),
                ("1-D input, 1-D target", dict(input=x[0], target=t[:1]), ValueError, "target"),
                ("target shape", dict(target=t[:2]), ValueError, "target"),
                ("target probabilities", dict(target=x.copy()), TypeError, "target"),
                ("target bool", dict(target=t.astype(bool)), TypeError, "target"),
                ("target >= C", dict(target=np.array([0, 4, 1], np.int16)), ValueError, "target"),
                ("target < 0", dict(target=np.array([0, -1, 1])), ValueError, "target"),
                ("-100 not ignored", dict(target=np.array([0, -100, 1]), ignore_index=2), ValueError, "target"),
                ("weight shape", dict(weight=np.ones(3, np.float32)), ValueError, "weight"),
                ("weight dtype", dict(weight=np.ones(4, np.float64)), TypeError, "weight"),
                ("ignore_index None", dict(ignore_index=None), TypeError, "ignore_index"),
                ("reduction", dict(reduction="batchmean"), ValueError, "reduction"))


def _nll_bytes(a):
    """The picked input elements, the targets and the output."""
    item = a["input"].itemsize
    return a["target"].size * item + a["target"].nbytes + int(np.prod(_ce_out_shape(a))) * item


@defop(family="loss", differentiable=("input",), out_shape=_ce_out_shape, flops=lambda a: 2 * a["target"].size,
       tol=TOL, cases=_nll_cases, bad_cases=_nll_bad, bytes=_nll_bytes,
       torch=lambda torch, F, a: F.nll_loss(a["input"], _long(a["target"]), a["weight"],
                                            ignore_index=a["ignore_index"], reduction=a["reduction"]),
       bench=_ce_bench)
def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-weight[t] * input[i, t] per sample i, t = target[i], over input (N, C, *spatial) of log-probabilities.

    ``target`` holds class indices (N, *spatial) of any integer dtype, in [0, C)
    or ``ignore_index`` (those samples count for nothing, also not in the mean).
    A weighted mean divides by the summed weights of the targets that count
    (NaN when none does). Only ``input`` is differentiated. An unbatched input (C,)
    takes a 0-d target, as in torch.
    """
    input = ck.array("input", input, min_ndim=1)
    ignore_index = ck.integer("ignore_index", ignore_index, min=-2 ** 63, max=2 ** 63 - 1)
    unbatched = input.ndim == 1
    if unbatched:
        input = input[None]
        target = ck.array("target", target, ndim=0, layout="(a class index for an unbatched input (C,))",
                          dtypes=ck.INT_DTYPES).reshape(1)
    a = dict(input=input, target=_class_indices(target, input, ignore_index),
             weight=_class_weight(weight, input), ignore_index=ignore_index, reduction=_reduction(reduction))
    if not unbatched:
        return a
    a = ck.unbatched_views(a, 1)  # the kernel's loss per sample is (1,)
    if a["reduction"] != "none":  # a 0-d loss: nothing to squeeze
        a.out = a.grad = None
    return a


# -- binary_cross_entropy ------------------------------------------------------------------


def _bce_cases(rng, dtype, logits=False):
    def c(shape, reduction, labels=False, weight=None, pos_weight=None):
        x = _randn(rng, shape, dtype, 3.0) if logits else _uniform(rng, 0.02, 0.98, shape, dtype)
        t = (rng.random(shape) < 0.5).astype(dtype) if labels else _uniform(rng, 0.0, 1.0, shape, dtype)
        args = dict(input=x, target=t, weight=None if weight is None else _uniform(rng, 0.2, 2.0, weight, dtype),
                    reduction=reduction)
        if logits:
            args["pos_weight"] = None if pos_weight is None else _uniform(rng, 0.2, 3.0, pos_weight, dtype)
        return Case(f"{_id(shape)}_{reduction}{'_labels' if labels else ''}"
                    + (f"_w{_id(weight)}" if weight else "") + (f"_pw{_id(pos_weight)}" if pos_weight else ""), args)

    cases = [c((6,), "mean", labels=True), c((4, 5), "sum", weight=(5,)), c((3, 2, 4), "none", weight=(3, 2, 4)),
             c((2, 3), "mean", weight=(2, 1)), c((0, 4), "mean"), c((0, 4), "sum", weight=(4,)), c((), "sum")]
    if logits:
        cases += [c((4, 5), "sum", labels=True, pos_weight=(5,)), c((3, 2, 4), "none", weight=(2, 4), pos_weight=(4,)),
                  c((5, 3), "mean", pos_weight=(5, 1))]
    return cases


def _bce_bad(rng, logits=False):
    x = rng.uniform(0.1, 0.9, (3, 4)).astype(np.float32)
    wrong = [("target shape", dict(target=x[:, :2]), ValueError, "target"),
             ("weight shape", dict(weight=np.ones(3, np.float32)), ValueError, "weight"),
             ("weight grows the output", dict(weight=np.ones((2, 3, 4), np.float32)), ValueError, "weight"),
             ("weight dtype", dict(weight=np.ones(4, np.float64)), TypeError, "weight"),
             ("reduction", dict(reduction=None), TypeError, "reduction")]
    if logits:
        wrong += [("pos_weight shape", dict(pos_weight=np.ones(3, np.float32)), ValueError, "pos_weight"),
                  ("pos_weight list", dict(pos_weight=[1.0] * 4), TypeError, "pos_weight")]
    else:
        wrong += [("input > 1", dict(input=x + 1), ValueError, "input"),
                  ("input < 0", dict(input=x - 1), ValueError, "input")]
    return _bad(dict(input=x, target=x.copy()), *wrong)


@defop(family="loss", differentiable=("input", "target"), out_shape=_out_shape, flops=_n(8), tol=TOL,
       cases=_bce_cases, bad_cases=_bce_bad,
       torch=lambda torch, F, a: F.binary_cross_entropy(a["input"], a["target"], a["weight"],
                                                        reduction=a["reduction"]),
       bench=_pair_bench(lambda rng, dt, s: dict(input=_uniform32(rng, 0.02, 0.98, s, dt), target=_uniform32(rng, 0.0, 1.0, s, dt))))
def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-weight * (target * log(input) + (1 - target) * log(1 - input)), logs clamped at -100.

    ``input`` holds probabilities: a value outside [0, 1] (NaN included)
    raises ValueError, as in torch. ``weight`` broadcasts to input's shape.
    """
    input, target = _input_target(input, target)
    weight = _broadcast_to_input("weight", weight, input)
    outside = ~((input >= 0) & (input <= 1))  # NaN is outside
    if bool(outside.any()):
        raise ValueError(f"input: expected probabilities in [0, 1] (binary_cross_entropy_with_logits takes "
                         f"logits), got {int(outside.sum())} values outside, the first {float(input[outside][0])!r}")
    return dict(input=input, target=target, weight=weight, reduction=_reduction(reduction))


@defop(family="loss", differentiable=("input", "target"), out_shape=_out_shape, flops=_n(10), tol=TOL,
       cases=lambda rng, dtype: _bce_cases(rng, dtype, logits=True),
       bad_cases=lambda rng: _bce_bad(rng, logits=True),
       torch=lambda torch, F, a: F.binary_cross_entropy_with_logits(
           a["input"], a["target"], a["weight"], reduction=a["reduction"], pos_weight=a["pos_weight"]),
       bench=_pair_bench(lambda rng, dt, s: dict(input=_randn32(rng, s, dt, 3.0), target=_uniform32(rng, 0.0, 1.0, s, dt))))
def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """binary_cross_entropy(sigmoid(input), target) computed from the logits without overflow:
    weight * ((1 - target) * input - (1 + (pos_weight - 1) * target) * log_sigmoid(input)).

    ``weight`` and ``pos_weight`` (the weight of the positive term, usually (C,)
    for input (N, C)) broadcast to input's shape.
    """
    input, target = _input_target(input, target)
    return dict(input=input, target=target, weight=_broadcast_to_input("weight", weight, input),
                reduction=_reduction(reduction), pos_weight=_broadcast_to_input("pos_weight", pos_weight, input))


# -- gaussian_nll_loss --------------------------------------------------------------------


def _gnll_cases(rng, dtype):
    def c(shape, var, reduction, var_range=(0.5, 1.5), **kw):
        v = var if isinstance(var, float) else _uniform(rng, *var_range, var, dtype)
        return Case(f"{_id(shape)}_var{v if isinstance(var, float) else _id(var)}_{reduction}" + _tag(**kw),
                    dict(input=_randn(rng, shape, dtype, 1.5), target=_randn(rng, shape, dtype), var=v,
                         reduction=reduction, **kw))

    # the var < eps case clamps: its gradient passes straight through the
    # clamp, as torch's does (the clamp runs under no_grad), so finite
    # differences skip var (fd_skip) and the torch oracle checks it
    return [c((5, 3), (5, 3), "mean"), c((5, 3), (5,), "sum"), c((5, 3), (5, 1), "none", full=True),
            c((4, 2, 3), (4, 1, 3), "mean"), c((3, 4), (3, 4), "sum", (0.0, 0.2), eps=0.1),
            c((2, 5), 0.7, "mean"), c((3,), (), "sum", full=True), c((0, 3), (0, 3), "mean"), c((0, 3), (0,), "none")]


def _gnll_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    v = np.ones((3, 4), np.float32)
    return _bad(dict(input=x, target=x.copy(), var=v),
                ("var shape", dict(var=v[:2]), ValueError, "var"),
                ("var two broadcast dims", dict(var=v[:1, :1]), ValueError, "var"),
                ("var 0-d for 2-D input", dict(var=np.ones((), np.float32)), ValueError, "var"),
                ("var < 0", dict(var=v - 2), ValueError, "var"),
                ("var float < 0", dict(var=-1.0), ValueError, "var"),
                ("var int", dict(var=np.ones((3, 4), np.int64)), TypeError, "var"),
                ("target shape", dict(target=x[:2]), ValueError, "target"),
                ("full", dict(full=None), TypeError, "full"),
                ("eps", dict(eps=-1.0), ValueError, "eps"),
                ("reduction", dict(reduction="batchmean"), ValueError, "reduction"))


def _var_shape_ok(var_shape, input_shape):
    """torch's rule: var has input's shape, or input's shape without its last
    dim, or input's shape with exactly one dim set to 1."""
    if var_shape == input_shape or var_shape == input_shape[:-1]:
        return True
    differ = [i for i, (n, v) in enumerate(zip(input_shape, var_shape)) if n != v]
    return len(var_shape) == len(input_shape) and len(differ) == 1 and var_shape[differ[0]] == 1


@defop(family="loss", differentiable=("input", "target", "var"), out_shape=_out_shape, flops=_n(6), tol=TOL,
       cases=_gnll_cases, bad_cases=_gnll_bad, fd_skip=("var",),
       torch=lambda torch, F, a: F.gaussian_nll_loss(a["input"], a["target"], a["var"], full=a["full"],
                                                     eps=a["eps"], reduction=a["reduction"]),
       bench=_pair_bench(lambda rng, dt, s: dict(input=_randn32(rng, s, dt, 1.5), target=_randn32(rng, s, dt), var=_uniform32(rng, 0.5, 1.5, s, dt))))
def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 * (log(max(var, eps)) + (input - target)^2 / max(var, eps)) (+ 0.5 * log(2 pi) if full).

    ``var`` (>= 0) has input's shape, or input's shape without its last dim,
    or input's shape with one dim of size 1 (shared variances), or is a float
    (normalized to an array of input's shape). As in torch the clamp at eps
    is not differentiated: the gradient of var is taken at max(var, eps) and
    passed through unchanged.
    """
    input = ck.array("input", input)
    target = ck.array("target", target)
    ck.same_dtype(input=input, target=target)
    if isinstance(var, numbers.Real) and not isinstance(var, (bool, np.bool_)):
        var = _array.module(input).full(input.shape, ck.real("var", var, min=0.0), dtype=input.dtype)
    var = ck.array("var", var)
    ck.same_dtype(input=input, var=var)
    if not _var_shape_ok(tuple(var.shape), tuple(input.shape)):
        raise ValueError(f"var: expected input's shape {tuple(input.shape)}, that shape without its last dim, "
                         f"or with one dim of size 1, got {tuple(var.shape)}")
    if bool((var < 0).any()):
        raise ValueError(f"var: expected variances >= 0, got {float(var[var < 0].ravel()[0])!r}")
    a = dict(input=input, target=target, var=var, full=ck.boolean("full", full),
             eps=ck.real("eps", eps, min=0.0), reduction=_reduction(reduction))
    if input.shape == target.shape:  # the kernels take every var form torch does
        return a
    return _gnll_broadcast(a)


def _gnll_broadcast(a):
    """torch's broadcasting of target against input (and of a var without input's last
    dim): input and target as broadcast views of one shape, var given its missing dims as
    size 1; the gradients summed back to the shapes given."""
    input, target, var = a["input"], a["target"], a["var"]
    shapes = tuple(x.shape for x in (input, target, var))
    if var.shape != input.shape and var.shape == input.shape[:-1]:
        var = var[..., None]
    try:
        full = np.broadcast_shapes(input.shape, target.shape, var.shape)
    except ValueError:
        raise ValueError(f"target: expected a shape that broadcasts with input's {shapes[0]} "
                         f"(and var's {shapes[2]}), got {shapes[1]}") from None
    xp = _array.module(input)
    a["input"], a["target"] = xp.broadcast_to(input, full), xp.broadcast_to(target, full)
    a["var"] = var.reshape((1,) * (len(full) - var.ndim) + var.shape)

    def grads(res):
        di, dt, dv = res
        return (ck.sum_to(di, shapes[0]), ck.sum_to(dt, shapes[1]),
                None if dv is None else dv.reshape(shapes[2]))

    return Viewed(a, grads=grads)


# -- kl_div ----------------------------------------------------------------------------------


def _kl_cases(rng, dtype):
    def log_softmax(shape):
        """Log-probabilities over the last dim (a 0-d one: the log of a probability)."""
        if not shape:
            return np.log(rng.uniform(0.2, 0.8))
        z = rng.standard_normal(shape) * 1.5
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    def c(shape, reduction, log_target=False):
        t = log_softmax(shape)
        return Case(f"{_id(shape)}_{reduction}{'_log_target' if log_target else ''}",
                    dict(input=np.asarray(log_softmax(shape), dtype), target=np.asarray(t if log_target else np.exp(t), dtype),
                         reduction=reduction, log_target=log_target))

    return [c((4, 5), "batchmean"), c((4, 5), "mean"), c((3, 7), "sum"), c((2, 6), "none"),
            c((3, 4, 2), "batchmean", True), c((5,), "sum", True), c((), "batchmean"),
            c((0, 5), "batchmean"), c((0, 5), "sum")]


def _kl_bad(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    return _bad(dict(input=x, target=x.copy()),
                ("target shape", dict(target=x[:1]), ValueError, "target"),
                ("reduction", dict(reduction="batch"), ValueError, "reduction"),
                ("log_target", dict(log_target=0), TypeError, "log_target"))


def _kl_torch(torch, F, a):
    with warnings.catch_warnings():  # torch warns that "mean" is not the KL divergence; we know
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(a["input"], a["target"], reduction=a["reduction"], log_target=a["log_target"])


@defop(family="loss", differentiable=("input", "target"), out_shape=_out_shape, flops=_n(4), tol=TOL,
       cases=_kl_cases, bad_cases=_kl_bad, torch=_kl_torch,
       bench=_kl_bench)
def kl_div(input, target, reduction="mean", log_target=False):
    """Pointwise KL divergence target * (log(target) - input), input being log-probabilities.

    ``log_target=True`` takes log-probabilities as the target:
    exp(target) * (target - input). A zero target contributes 0.
    "batchmean" divides the sum by input.shape[0] (by 1 for a 0-d input);
    "mean" by the number of elements, as torch.
    """
    input, target = _input_target(input, target)
    return dict(input=input, target=target, reduction=_reduction(reduction, REDUCTIONS + ("batchmean",)),
                log_target=ck.boolean("log_target", log_target))
