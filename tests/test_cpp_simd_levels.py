"""The C++ kernels at every SIMD level this build contains.

A build with -march=native on an AVX-512 machine only runs its AVX-512 paths
by default; here each level that ``pydl._cpp.compiled_simd()`` allows is
forced in turn and the conformance checks (forward, backward, NaN/inf
propagation) run again on the ``cpp`` backend, calling the bodies in
tests/test_conformance.py rather than copying them. The vector math under the
float32 kernels is also checked on dense grids far wider than the op cases.
"""
import math

import numpy as np
import pytest

import pydl  # noqa: E402
from pydl import _cpp  # noqa: E402  (make test always builds it)

import test_conformance as conformance  # noqa: E402  (module import: pytest must not collect its tests twice)
from pydl import registry  # noqa: E402
from pydl.testing import assert_close, copy_args, run_backward, run_forward  # noqa: E402

ORDER = ("scalar", "avx2", "avx512")
LEVELS = ORDER[: ORDER.index(_cpp.compiled_simd()) + 1]


@pytest.fixture(params=LEVELS)
def simd_level(request):
    before = _cpp.simd_level()
    _cpp.set_simd_level(request.param)
    assert _cpp.simd_level() == request.param
    yield request.param
    _cpp.set_simd_level(before)


def _cpp_params(direction="", family=None):
    return [
        pytest.param(name, dtype, id=f"{name}-{dtype}")
        for name, spec in sorted(registry.SPECS.items())
        if "cpp" in registry.IMPLS.get(name + direction, {})
        and (family is None or spec.family == family)
        for dtype in spec.dtypes
    ]


@pytest.mark.parametrize("name,dtype", _cpp_params())
def test_forward(simd_level, name, dtype):
    conformance.test_forward(name, "cpp", dtype)


@pytest.mark.parametrize("name,dtype", _cpp_params("_backward"))
def test_backward(simd_level, name, dtype):
    conformance.test_backward(name, "cpp", dtype)


@pytest.mark.parametrize("name,dtype", _cpp_params())
def test_nan_inf_propagate(simd_level, name, dtype):
    conformance.test_nan_inf_propagate(name, "cpp", dtype)


def _large_cases(name, rng, dtype):
    """Sizes the conformance cases do not reach: several threads, several slabs of columns."""
    if "softmax" in name:
        shapes = [((2, 70, 1100), 1), ((2, 70, 1100), 0), ((150, 1001), -1)]  # slabs of 512 columns
        return [dict(x=(rng.standard_normal(s) * 3).astype(dtype), dim=d) for s, d in shapes]
    params = {"leaky_relu": dict(negative_slope=0.1), "elu": dict(alpha=1.3), "gelu": dict(approximate="none"),
              "dropout": dict(p=0.3, seed=5)}
    x = (rng.standard_normal(140_001) * 3).astype(dtype)                   # 9 chunks, the last partial
    return [dict(x=x, **params.get(name, {}))] + (
        [dict(x=x, approximate="tanh")] if name == "gelu" else [])


# Other families test their large, threaded and tiled cases in tests/test_<family>.py.
@pytest.mark.parametrize("name,dtype", _cpp_params("_backward", family="elementwise"))
def test_threaded_and_slabbed(simd_level, name, dtype):
    spec, rng = registry.SPECS[name], np.random.default_rng(11)
    rtol, atol = spec.tol[dtype]
    for args in _large_cases(name, rng, dtype):
        g = rng.standard_normal(args["x"].shape).astype(dtype)
        out = run_forward(spec, args, "cpp")  # outputs NaN-poisoned: every element must be written
        ref = spec.forward(**copy_args(args, np.float64), backend="numpy")
        assert_close(f"{name} {args['x'].shape}", out, ref, rtol, atol)
        (dx,) = run_backward(spec, g, args, "cpp")
        (ref,) = spec.backward(g.astype(np.float64), **copy_args(args, np.float64), backend="numpy")
        assert_close(f"{name}_backward {args['x'].shape}", dx, ref, *spec.grad_tolerance(dtype))


# -- vector math ---------------------------------------------------------------------------

def _erfc(x):
    return np.vectorize(math.erfc, otypes=[np.float64])(x)


# fn: (float64 truth, grid, largest relative error allowed). The design target is ~1e-7
# (a few float32 ulp); normal_cdf's one fit of erfc over [0, 10] (no subtraction anywhere in
# its lower tail) measured 3.8e-7 at every level.
VMATH = {
    "exp": (np.exp, (-110.0, 95.0), 2e-7),
    "expm1": (np.expm1, (-40.0, 95.0), 2e-7),
    "tanh": (np.tanh, (-12.0, 12.0), 3e-7),
    "sigmoid": (lambda x: np.exp(-np.logaddexp(0.0, -x)), (-110.0, 110.0), 3e-7),
    "erf": (np.vectorize(math.erf, otypes=[np.float64]), (-6.0, 6.0), 3e-7),
    "normal_cdf": (lambda x: 0.5 * _erfc(-x / math.sqrt(2.0)), (-14.0, 9.0), 6e-7),
}


@pytest.mark.parametrize("fn", sorted(VMATH))
def test_vector_math(simd_level, fn):
    truth, (lo, hi), rtol = VMATH[fn]
    rng = np.random.default_rng(7)
    x = np.concatenate([
        np.linspace(lo, hi, 200_003),                          # odd length: masked tails
        rng.standard_normal(20_000) * 1e-3,                     # near 0, where cancellation would show
        np.geomspace(1e-30, 1.0, 500), -np.geomspace(1e-30, 1.0, 500),
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 88.7, 88.73, -103.9, -104.5, 1e-40],
    ]).astype(np.float32)
    out = np.full_like(x, np.nan)
    _cpp.vmath_f32(fn, x, out)
    with np.errstate(all="ignore"):
        ref = truth(x.astype(np.float64))
        ref32 = ref.astype(np.float32)
    # NaN, +-inf and overflow land exactly where float32 puts them
    special = ~np.isfinite(ref32)
    np.testing.assert_array_equal(out[special], ref32[special])
    # relative error where float32 has normal numbers; absolute 2^-149 * 4 in the subnormal range
    normal = ~special & (np.abs(ref) >= np.finfo(np.float32).tiny)
    rel = np.abs(out[normal] - ref[normal]) / np.abs(ref[normal])
    worst = int(np.argmax(rel))
    assert rel[worst] <= rtol, f"{fn}({x[normal][worst]!r}) = {out[normal][worst]!r}, expected {ref[normal][worst]!r}"
    small = ~special & ~normal
    assert np.all(np.abs(out[small] - ref[small]) <= 6e-45), fn


def _every_16th(x, v):
    """x with every 16th element (one lane of each AVX-512 vector, of every other AVX2 one) set to v."""
    y = x.copy()
    y[::16] = v
    return y


def _assert_same_bits_off_the_16th(fast, slow):
    keep = np.arange(fast.size) % 16 != 0
    np.testing.assert_array_equal(fast[keep].view(np.uint32), slow[keep].view(np.uint32))


# exp and expm1 (so tanh and sigmoid) take a short path on AVX2 when every lane of a vector is
# in range (simd_math.hpp, kNormalFastPaths). One lane out of range in each group of 16 sends every
# vector down the general path: the other lanes must come out with the same bits.
@pytest.mark.parametrize("fn,far", [("exp", -100.0), ("expm1", -40.0), ("tanh", 20.0), ("sigmoid", 100.0)])
def test_vector_math_paths_agree(simd_level, fn, far):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(16 * 1000) * {"tanh": 4.0, "expm1": 8.0}.get(fn, 25.0)).astype(np.float32)
    x = np.clip(x, -29.0, 87.0)
    fast, slow = np.full_like(x, np.nan), np.full_like(x, np.nan)
    _cpp.vmath_f32(fn, x, fast)
    _cpp.vmath_f32(fn, _every_16th(x, far), slow)
    _assert_same_bits_off_the_16th(fast, slow)


# The pointwise losses' vector log takes a short path on AVX2 when every lane is a positive
# normal float (loss.cpp, vlog). A zero input (log 0 = -inf, clamped to -100) in each group of 16
# sends every vector of binary_cross_entropy down the general path; kl_div's target the same.
def test_loss_log_paths_agree(simd_level):
    rng = np.random.default_rng(13)
    p = rng.uniform(1e-6, 1 - 1e-6, 16 * 1000).astype(np.float32)
    t = rng.uniform(1e-6, 1.0, p.size).astype(np.float32)
    for op, args in (("binary_cross_entropy", [(a, t) for a in (p, _every_16th(p, 0.0))]),
                     ("kl_div", [(np.log(p), b) for b in (t, _every_16th(t, 0.0))])):
        fast, slow = (getattr(pydl.ops, op)(*a, reduction="none", backend="cpp") for a in args)
        _assert_same_bits_off_the_16th(fast, slow)
        ref = getattr(pydl.ops, op)(*args[1], reduction="none", backend="numpy")
        np.testing.assert_allclose(slow, ref, rtol=2e-5, atol=1e-6)  # the zeros too (log 0 clamped)


def test_vector_math_rejects_unknown_name():
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="fn"):
        _cpp.vmath_f32("log", x, x.copy())


# -- the native entry points guard their raw pointers ----------------------------------------

def test_native_argument_checks():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="out: expected shape"):
        _cpp.elementwise_relu_f32(x, np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _cpp.elementwise_relu_f32(np.asfortranarray(x), np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        _cpp.elementwise_softmax_backward_f32(x, x.copy(), x, dim=1)
    with pytest.raises(ValueError, match="writeable"):
        ro = np.empty((3, 4), np.float32)
        ro.flags.writeable = False
        _cpp.elementwise_relu_f32(x, ro)
    with pytest.raises(ValueError, match="dim"):
        _cpp.elementwise_softmax_f32(x, np.empty_like(x), dim=2)
    with pytest.raises(ValueError, match="approximate"):
        _cpp.elementwise_gelu_f32(x, np.empty_like(x), approximate="erf")
    with pytest.raises(TypeError):  # no silent cast (a copy would drop the output)
        _cpp.elementwise_relu_f32(x, np.empty((3, 4), np.float64))
