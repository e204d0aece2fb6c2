"""Pooling edge cases beyond the registry's conformance cases: a seeded random sweep of
shapes and hyper-parameters wide enough to run the SIMD interiors (the conformance cases
are at most 9 wide), ties, NaN and -inf inputs, every cpp SIMD level, 1 and 2 threads.

Each native backend is checked against the NumPy reference: max values and indices
exactly (same dtype input), averages and gradients within the spec's tolerances against
the float64 reference; outputs are poisoned first (pydl.testing.run_forward/run_backward).
"""
import numpy as np
import pytest

import pydl
from pydl import registry
from pydl.testing import assert_close, run_backward, run_forward

BACKENDS = [b for b in ("cpp", "cython", "numba") if b in registry.SPECS["max_pool2d"].implementations()]
DTYPES = (np.float32, np.float64)


def _sweep(op, n, seed):
    """n valid random hyper-parameter sets for op (torch's rules, checked by the normalizer)."""
    rng = np.random.default_rng(seed)
    spec = registry.SPECS[op]
    out = []
    while len(out) < n:
        h, w = int(rng.integers(1, 24)), int(rng.integers(1, 48))
        if op == "adaptive_avg_pool2d":
            hp = dict(output_size=(int(rng.integers(1, 9)), int(rng.integers(1, 12))))
        else:
            k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
            hp = dict(kernel_size=k, stride=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                      padding=(int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))),
                      ceil_mode=bool(rng.integers(2)))
            if op == "max_pool2d":
                hp["dilation"] = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            else:
                hp["count_include_pad"] = bool(rng.integers(2))
                hp["divisor_override"] = int(rng.integers(1, 7)) if rng.integers(4) == 0 else None
        try:
            spec.normalize(np.zeros((1, 1, h, w), np.float32), **hp)
        except ValueError:
            continue
        out.append(((int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w), hp))
    return out


COMMON = [  # the benchmark geometries, at small sizes
    ((2, 3, 20, 37), dict(kernel_size=2, stride=2)),
    ((2, 3, 21, 40), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 9, 35), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 11, 50), dict(kernel_size=3, stride=1, padding=1)),
]
ADAPTIVE = [((2, 5, 7, 7), dict(output_size=1)), ((1, 3, 56, 56), dict(output_size=7)),
            ((1, 2, 5, 33), dict(output_size=(9, 40)))]


def _cases(op, seed):
    fixed = ADAPTIVE if op == "adaptive_avg_pool2d" else COMMON
    return fixed + _sweep(op, 10, seed)


def _check(op, backend, xs, hp, dtype, rng, x=None):
    spec = registry.SPECS[op]
    x = rng.standard_normal(xs).astype(dtype) if x is None else x.astype(dtype)
    args = dict(x=x, **hp)
    a = spec.normalize(**args)
    rtol, atol = spec.tol[np.dtype(dtype).name]
    out, saved = run_forward(spec, args, backend, saved=True)
    ref, ref_saved = run_forward(spec, args, "numpy", saved=True)
    ref64 = run_forward(spec, args, "numpy", dtype=np.float64)
    assert out.dtype == dtype
    if op == "max_pool2d":   # a max is exact: same values and argmax as the reference, same dtype
        assert_close(f"{op} {xs} {hp}", out, ref, 0, 0)
        np.testing.assert_array_equal(saved["indices"], ref_saved["indices"])
    else:
        assert_close(f"{op} {xs} {hp}", out, ref64, rtol, atol)
    g = rng.standard_normal(spec.out_shape(a)).astype(dtype)
    grtol, gatol = spec.grad_tolerance(dtype)
    gref = run_backward(spec, g, args, "numpy", saved=ref_saved)[0]
    for sv in (saved, None):
        gx = run_backward(spec, g, args, backend, saved=sv)[0]
        assert gx.dtype == dtype
        assert_close(f"{op} backward {xs} {hp}", gx, gref, grtol, gatol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
def test_sweep(op, backend):
    rng = np.random.default_rng(1)
    for xs, hp in _cases(op, seed=len(op)):
        for dtype in DTYPES:
            _check(op, backend, xs, hp, dtype, rng)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_ties_and_infinities(backend):
    """Integer data (many ties: the first max in row-major tap order wins), -inf inputs
    (an input -inf still beats the padding), NaN (the last NaN of a window wins)."""
    rng = np.random.default_rng(2)
    for xs, hp in COMMON + [((1, 1, 6, 19), dict(kernel_size=3, stride=3, padding=1, dilation=2,
                                                  ceil_mode=True))]:
        for dtype in DTYPES:
            _check("max_pool2d", backend, xs, hp, dtype, rng, x=rng.integers(-2, 2, xs))
            x = rng.standard_normal(xs)
            x[rng.random(xs) < 0.3] = -np.inf
            _check("max_pool2d", backend, xs, hp, dtype, rng, x=x)
            x = rng.integers(-2, 2, xs).astype(np.float64)
            x[rng.random(xs) < 0.1] = np.nan
            _check("max_pool2d", backend, xs, hp, dtype, rng, x=x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["avg_pool2d", "adaptive_avg_pool2d"])
def test_avg_nan_inf(op, backend):
    rng = np.random.default_rng(3)
    for xs, hp in (ADAPTIVE if op == "adaptive_avg_pool2d" else COMMON):
        x = rng.standard_normal(xs)
        x[rng.random(xs) < 0.03] = np.nan
        x[rng.random(xs) < 0.03] = np.inf
        for dtype in DTYPES:
            _check(op, backend, xs, hp, dtype, rng, x=x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads(backend, threads):
    rng = np.random.default_rng(4)
    for op, (xs, hp) in [("max_pool2d", COMMON[1]), ("avg_pool2d", COMMON[1]),
                         ("adaptive_avg_pool2d", ADAPTIVE[1])]:
        _check(op, backend, (3, 5) + xs[2:], hp, np.float32, rng)


def test_cpp_simd_levels(simd_level):
    rng = np.random.default_rng(5)
    for op in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"):
        for xs, hp in _cases(op, seed=7 + len(op))[:8]:
            _check(op, "cpp", xs, hp, np.float32, rng)
    for xs, hp in COMMON:
        x = rng.integers(-2, 2, xs).astype(np.float64)
        x[rng.random(xs) < 0.1] = np.nan
        _check("max_pool2d", "cpp", xs, hp, np.float32, rng, x=x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpp_global_average(simd_level, dtype, threads):
    """adaptive_avg_pool2d to 1x1 (the whole-plane sum): planes shorter than a vector, a whole
    number of vector pairs, pairs plus a vector plus a tail; enough planes for the threaded loop."""
    rng = np.random.default_rng(12)
    for xs in [(2, 3, 1, 1), (2, 3, 3, 5), (1, 4, 9, 13), (3, 2, 16, 16), (2, 3, 8, 8), (4, 512, 7, 7)]:
        _check("adaptive_avg_pool2d", "cpp", xs, dict(output_size=1), dtype, rng)


WIDE = [  # rows long enough for the cpp shifted-load avg backward (stride 1 and 2) at 16 lanes
    ((1, 2, 7, 101), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 6, 70), dict(kernel_size=2, stride=2)),
    ((1, 2, 5, 67), dict(kernel_size=4, stride=2, padding=2, ceil_mode=True)),
    ((1, 2, 5, 80), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ((1, 2, 4, 75), dict(kernel_size=(1, 1), stride=(1, 2))),
    ((1, 2, 6, 66), dict(kernel_size=(2, 5), stride=(1, 2), padding=(0, 2), divisor_override=3)),
]


def test_cpp_wide(simd_level):
    """The cpp vector interiors (the shifted-load avg backward at stride 1 and 2 included) at
    every SIMD level, on rows wide enough for several vectors plus a scalar border."""
    rng = np.random.default_rng(6)
    for op in ("max_pool2d", "avg_pool2d"):
        for xs, hp in WIDE:
            if op == "max_pool2d":
                hp = {k: v for k, v in hp.items() if k not in ("count_include_pad", "divisor_override")}
            for dtype in DTYPES:
                _check(op, "cpp", xs, hp, dtype, rng)


SMALL = [  # planes narrower than a vector: the cpp group path (several planes as one flat list)
    ("max_pool2d", dict(kernel_size=2, stride=2)),                       # exact tiling on even sizes
    ("max_pool2d", dict(kernel_size=3, stride=3)),
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", dict(kernel_size=3, stride=1, padding=1)),
    ("max_pool2d", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), ceil_mode=True)),
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),  # empty windows
    ("max_pool2d", dict(kernel_size=(1, 2), stride=(3, 2), dilation=(1, 2))),
    ("avg_pool2d", dict(kernel_size=2, stride=2)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ("avg_pool2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True, divisor_override=5)),
    ("avg_pool2d", dict(kernel_size=(2, 4), stride=(2, 4))),
    ("adaptive_avg_pool2d", dict(output_size=2)),
    ("adaptive_avg_pool2d", dict(output_size=(3, 5))),
]


def _small_inputs(rng, xs):
    """random normal, integer ties (the first max wins), -inf (beats the padding), NaN (last wins)"""
    x = rng.standard_normal(xs)
    ties = rng.integers(-2, 2, xs).astype(np.float64)
    inf = rng.standard_normal(xs)
    inf[rng.random(xs) < 0.4] = -np.inf
    nan = rng.integers(-2, 2, xs).astype(np.float64)
    nan[rng.random(xs) < 0.1] = np.nan
    return x, ties, inf, nan


def test_cpp_small_planes(simd_level):
    """The cpp group path at every SIMD level, float32 and float64: plane sizes 1..12, plane
    counts that leave a short last group (37 planes of 8x8 and of 12x12: groups of 32 and 15),
    every geometry kind; for max, each data kind in turn: normal, ties, -inf, NaN."""
    rng = np.random.default_rng(8)
    for i, (op, hp) in enumerate(SMALL):
        for k, (h, w, planes) in enumerate(((4, 4, 20), (8, 8, 37), (12, 12, 37), (5, 7, 11),
                                            (1, 3, 20), (6, 11, 3), (9, 9, 1))):
            xs = (1, planes, h, w)
            try:
                registry.SPECS[op].normalize(np.zeros(xs, np.float32), **hp)
            except ValueError:   # kernel larger than the padded plane
                continue
            kinds = _small_inputs(rng, xs) if op == "max_pool2d" else _small_inputs(rng, xs)[:1]
            _check(op, "cpp", xs, hp, DTYPES[(i + k) % 2], rng, x=kinds[(i + k) % len(kinds)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_planes_threads(backend, threads):
    rng = np.random.default_rng(9)
    for op, hp in (SMALL[2], SMALL[8], SMALL[12]):
        for dtype in DTYPES:
            _check(op, backend, (3, 70, 8, 8), hp, dtype, rng)


# The fourth pass's cpp paths (dev/pool/README.md): kernel == stride 4 or 8 summed as trees of
# pair sums (group path, row path, and the half-width row path at AVX-512), the gather-free
# shifted backward over zero-padded q segments (stride 1 and 2 on small planes, borders and
# ceil_mode included), the permuted (not gathered) backward of windows that do not overlap on wide
# rows (gaps between windows included), the group path's flat sums by permutes where a vector's
# taps fit one load (adaptive windows that overlap), vertical sums of 1..9 rows, and the row
# paths' prefetch streams carried across planes (many planes of one call, max with ties, -inf
# and NaN).
THIRD = [
    ("adaptive_avg_pool2d", (1, 5, 56, 56), dict(output_size=7)),          # runs of 8
    ("adaptive_avg_pool2d", (1, 3, 56, 40), dict(output_size=(7, 5))),
    ("adaptive_avg_pool2d", (2, 3, 64, 64), dict(output_size=8)),
    ("adaptive_avg_pool2d", (1, 6, 32, 32), dict(output_size=8)),          # runs of 4
    ("adaptive_avg_pool2d", (1, 40, 8, 8), dict(output_size=2)),
    ("adaptive_avg_pool2d", (1, 21, 16, 16), dict(output_size=4)),
    ("avg_pool2d", (1, 3, 9, 72), dict(kernel_size=(1, 8), stride=(1, 8))),
    ("avg_pool2d", (1, 4, 9, 64), dict(kernel_size=4, stride=4, ceil_mode=True)),
    ("avg_pool2d", (1, 37, 12, 12), dict(kernel_size=3, stride=2, padding=1)),   # shifted groups
    ("avg_pool2d", (1, 37, 8, 8), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ("avg_pool2d", (1, 23, 7, 9), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), ceil_mode=True)),
    ("avg_pool2d", (1, 19, 10, 11), dict(kernel_size=4, stride=2, padding=2, ceil_mode=True)),
    ("avg_pool2d", (1, 50, 12, 12), dict(kernel_size=2, stride=2)),
    ("avg_pool2d", (1, 29, 13, 13), dict(kernel_size=2, stride=2, ceil_mode=True, divisor_override=3)),
    ("avg_pool2d", (1, 33, 2, 1), dict(kernel_size=(3, 21), stride=1, padding=(1, 10))),  # long lead/trail
    ("avg_pool2d", (1, 2, 6, 60), dict(kernel_size=3, stride=3)),                # permuted backward
    ("avg_pool2d", (1, 2, 5, 70), dict(kernel_size=1, stride=3)),
    ("avg_pool2d", (1, 2, 8, 67), dict(kernel_size=(2, 3), stride=(2, 4))),
    ("adaptive_avg_pool2d", (1, 37, 11, 11), dict(output_size=2)),        # permuted flat sums,
    ("adaptive_avg_pool2d", (1, 23, 9, 10), dict(output_size=(4, 3))),    # gx rows as sums of t rows
    ("avg_pool2d", (1, 2, 20, 40), dict(kernel_size=(5, 3), stride=(1, 2))),    # 1..9 rows summed
    ("avg_pool2d", (1, 2, 20, 40), dict(kernel_size=(7, 3), stride=(3, 2), padding=(3, 1))),
    ("avg_pool2d", (1, 2, 20, 40), dict(kernel_size=(9, 2), stride=(2, 2), padding=(4, 0))),
    ("avg_pool2d", (1, 2, 20, 40), dict(kernel_size=(6, 1), stride=(1, 1))),
]
THIRD_MAX = [((1, 70, 9, 40), dict(kernel_size=3, stride=2, padding=1)),
             ((1, 70, 6, 36), dict(kernel_size=2, stride=2))]


def test_cpp_third_pass(simd_level):
    rng = np.random.default_rng(10)
    for op, xs, hp in THIRD:
        for dtype in DTYPES:
            _check(op, "cpp", xs, hp, dtype, rng)
    for xs, hp in THIRD_MAX:
        for i, x in enumerate(_small_inputs(rng, xs)):
            _check("max_pool2d", "cpp", xs, hp, DTYPES[i % 2], rng, x=x)


def test_cpp_third_pass_threads(threads):
    if "cpp" not in BACKENDS:
        pytest.skip("the cpp backend is not built")
    rng = np.random.default_rng(11)
    for op, xs, hp in (THIRD[0], THIRD[4], THIRD[8], THIRD[14]):
        for dtype in DTYPES:
            _check(op, "cpp", (3,) + xs[1:], hp, dtype, rng)


def test_adaptive_window_total():
    """The flop count's window total (plain ints, run before every native call) is the sum of
    adaptive_bounds' windows."""
    from pydl.ops.pool import _window_total, adaptive_bounds
    for n in range(1, 40):
        for out in range(1, 45):
            start, end = adaptive_bounds(n, out)
            assert _window_total(n, out) == int((end - start).sum()), (n, out)
