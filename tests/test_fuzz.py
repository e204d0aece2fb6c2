"""Property-based fuzzing of every op with a native kernel (issue 14, item 2).

Hypothesis draws shapes (1s, primes, empty dimensions, sizes on both sides of the
kernels' tile/vector/thread boundaries), memory layouts (Fortran, slices, negative and
zero strides, misaligned views into a byte buffer), hyper-parameters (valid and not) and
dtypes; every native backend and named variant must agree with the reference forward and
backward, or refuse an invalid draw with the reference's exception type
(:mod:`pydl.testing_fuzz`).

Two profiles:

- the suite's (default): ``FUZZ_EXAMPLES`` unset, 12 examples per op, derandomized
  (the same examples on every run: CI is reproducible), about 30 s on 2 cores;
- the long one, ``make fuzz``: ``FUZZ_EXAMPLES=50000`` spread over the ops, random
  (``FUZZ_SEED`` fixes the seed), ``FUZZ_OPS=relu,conv2d`` picks ops, ``FUZZ_REPORT=path``
  writes the per-op counts as JSON.

Every failure the fuzzer found is a named regression test at the end of this file.
"""
import collections
import json
import os
import time

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as hseed  # noqa: E402

import pydl  # noqa: E402
from pydl import testing_fuzz as tf  # noqa: E402

OPS = tf.native_ops()
if os.environ.get("FUZZ_OPS"):
    OPS = [op for op in OPS if op in os.environ["FUZZ_OPS"].split(",")]
TOTAL = int(os.environ.get("FUZZ_EXAMPLES", "0") or 0)
PER_OP = max(1, TOTAL // max(len(OPS), 1)) if TOTAL else 12
LONG = TOTAL > 0
COUNTS: dict = collections.defaultdict(collections.Counter)

SETTINGS = settings(
    max_examples=PER_OP, deadline=None, database=None, derandomize=not LONG, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module", autouse=True)
def _report():
    t0 = time.time()
    yield
    total = {op: dict(c) for op, c in sorted(COUNTS.items())}
    n = sum(sum(c.values()) for c in COUNTS.values())
    line = f"fuzz: {n} examples over {len(total)} ops in {time.time() - t0:.0f} s"
    print("\n" + line)
    if os.environ.get("FUZZ_REPORT"):
        with open(os.environ["FUZZ_REPORT"], "w") as f:
            json.dump(dict(examples=n, seconds=round(time.time() - t0), per_op=total,
                           per_op_budget=PER_OP, seed=os.environ.get("FUZZ_SEED")), f, indent=1)


def _fuzz_test(op):
    @SETTINGS
    @given(tf.strategy(op))
    def run(d):
        COUNTS[op][tf.check(d)] += 1

    if os.environ.get("FUZZ_SEED"):
        run = hseed(int(os.environ["FUZZ_SEED"]))(run)
    return run


@pytest.mark.parametrize("op", OPS)
def test_fuzz(op):
    _fuzz_test(op)()


def test_every_native_op_has_a_strategy_or_the_generic_one():
    """New native ops are fuzzed without new code: the generic strategy runs on each spec's
    cases (checked here on every op, native or not, so it stays working)."""
    from pydl.registry import SPECS

    @settings(max_examples=2, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(hypothesis.strategies.sampled_from(sorted(SPECS)).flatmap(tf.generic))
    def run(d):
        assert isinstance(d, tf.Draw) and d.op in SPECS

    run()
    assert set(OPS) <= set(tf.native_ops())


def test_generic_strategy_on_a_native_op():
    """The generic strategy (renamed sizes, redrawn values and layouts) checks a native op too."""
    @settings(max_examples=6, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(tf.generic("conv2d"))
    def run(d):
        tf.check(d, variants=False)

    run()


@pytest.mark.parametrize("layout", tf.LAYOUTS[1:])
def test_relayout_keeps_values(layout):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3, 4, 5)).astype(np.float32)
    r = tf.relayout(v, layout, np.random.default_rng(1))
    assert r.shape == v.shape
    if layout == "broadcast":
        assert 0 in r.strides
    else:
        np.testing.assert_array_equal(r, v)
    if layout == "misaligned":
        assert not r.flags.aligned
    if layout == "negative":
        assert min(r.strides) < 0


# -- regressions: every failure the fuzzer found -----------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_regression_numba_matmul_backward_empty_batch_shared_a(dtype):
    """Found by ``make fuzz`` (matmul, ``(1, 1) @ (0, 1, 1)``): the numba backward took a
    batch of 0 for "not batched" and wrote da (M, K) from a GEMM over the 0-batch grad,
    reading past an empty buffer (garbage such as -6.9e36 instead of 0). A 2-D ``a``
    under an empty batch gets a zero gradient."""
    for _ in range(50):   # the stale memory it read was usually, not always, non-zero
        junk = [np.full(n, 7.0e30, dtype) for n in (1, 2, 4, 8, 16)]
        del junk
        a, b = np.full((1, 1), 0.5, dtype), np.ones((0, 1, 1), dtype)
        da, db = pydl.ops.matmul_backward(np.ones((0, 1, 1), dtype), a, b, backend="numba")
        assert da.shape == (1, 1) and da[0, 0] == 0 and db.shape == (0, 1, 1)
    for sa, sb in (((2, 3), (0, 3, 4)), ((0, 3), (0, 3, 4)), ((2, 0), (0, 0, 4))):
        tf.check(tf.Draw("matmul", dict(a=np.ones(sa, dtype), b=np.ones(sb, dtype)), np.dtype(dtype),
                         f"{sa}@{sb}"))


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid"])
@pytest.mark.parametrize("xs", [(3,), (2, 3), (2, 2, 3)])
def test_regression_cython_linear_backward_strided_grad(activation, xs):
    """Found by the fuzzer (linear, an upstream gradient with every other column): the
    cython GEMM's backward epilogue reads the upstream gradient by rows (``G[i*ldg + j]``)
    and was given a view whose columns are not adjacent: wrong dx and dweight (9e15 for
    -0.72), read past the gradient. Now it gets a copy with adjacent columns."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    g = rng.standard_normal(xs[:-1] + (5,)).astype(np.float32)
    big = np.full(xs[:-1] + (10,), np.nan, np.float32)
    big[..., ::2] = g
    for backend in ("cython", "cpp", "numba"):
        want = pydl.ops.linear_backward(g, x, w, None, activation, backend=backend)
        got = pydl.ops.linear_backward(big[..., ::2], x, w, None, activation, backend=backend)
        for p, q in zip(got, want):
            if q is not None:
                np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-6)
