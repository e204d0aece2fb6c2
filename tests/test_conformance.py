"""Conformance, generated from the registry: every op x backend x dtype x case.

One test body for every backend (tinygrad/CuPy style): a new backend or op
adds no test code. Outputs are poisoned with NaN before each run, so an
element a kernel forgets to write fails the comparison.
"""
import re
import zlib

import numpy as np
import pytest

from pydl import backends, registry, testing
from pydl.testing import assert_close, copy_args, run_backward, run_forward

backends.load()
SPECS = registry.SPECS


def _rng(*key):
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def _xp(backend):
    if backend != "cuda":
        return np
    why = backends.unavailable_reason("cuda")
    if why:
        pytest.skip(f"no GPU: {why}")
    import cupy

    return cupy


def _params(direction="", dtypes=True):
    out = []
    for name, spec in sorted(SPECS.items()):
        impls = registry.IMPLS.get(name + direction, {})
        for b in registry.BACKENDS:
            if b not in impls:
                continue
            marks = [pytest.mark.gpu] if b == "cuda" else []
            # the backend's default and each named CPU variant (cpp:unpacked, cpp:smallk, ...): every
            # path a user can select meets the same contract (the GPU's cuda:bf16 has its own
            # tolerances: tests/test_cuda.py)
            names = [b] + ([] if b == "cuda" else
                           [f"{b}:{v}" for v in sorted(registry.VARIANTS.get(name + direction, {}).get(b, {}))])
            for bv in names:
                for dt in spec.dtypes if dtypes else (None,):
                    pid = f"{name}-{bv}" + (f"-{dt}" if dt else "")
                    out.append(pytest.param(name, bv, dt, id=pid, marks=marks))
    return out


def _tuple(out, n):
    return tuple(out) if n > 1 else (out,)


def _nonempty_case(spec, rng, dtype=np.float64):
    for case in spec.cases(rng, np.dtype(dtype)):
        arrays = [v for v in case.args.values() if hasattr(v, "dtype") and v.dtype.kind == "f"]
        if arrays and all(v.size for v in arrays):
            return case
    raise AssertionError(f"{spec.name}: every case is empty")


@pytest.mark.parametrize("name,backend,dtype", _params())
def test_forward(name, backend, dtype):
    spec, xp, rng = SPECS[name], _xp(backend), _rng("fwd", name, dtype)
    rtol, atol = spec.tol[dtype]
    for case in spec.cases(rng, np.dtype(dtype)):
        with np.errstate(all="ignore"):
            ref = _tuple(spec.forward(**copy_args(case.args, np.float64), backend="numpy"), spec.outputs)
        out = _tuple(run_forward(spec, case.args, backend, xp=xp), spec.outputs)
        for i, (o, r) in enumerate(zip(out, ref)):
            assert type(o) is xp.ndarray, f"{name}[{case.id}] output {i} is {type(o)}"
            assert o.dtype == np.dtype(dtype), f"{name}[{case.id}] output {i} dtype {o.dtype}"
            assert_close(f"{name}[{case.id}] output {i}", o, r, rtol, atol)


@pytest.mark.parametrize("name,backend,dtype", _params("_backward"))
def test_backward(name, backend, dtype):
    spec, xp, rng = SPECS[name], _xp(backend), _rng("bwd", name, dtype)
    rtol, atol = spec.grad_tolerance(dtype)
    for case in spec.cases(rng, np.dtype(dtype)):
        a = spec.bind((), copy_args(case.args))
        g = testing.upstream_grads(spec, a, rng, np.dtype(dtype))
        g64 = tuple(x.astype(np.float64) for x in _tuple(g, spec.outputs))
        with np.errstate(all="ignore"):
            ref = spec.backward(g64 if spec.outputs > 1 else g64[0],
                                **copy_args(case.args, np.float64), backend="numpy")
        gx = tuple(xp.asarray(x) for x in _tuple(g, spec.outputs))
        gx = gx if spec.outputs > 1 else gx[0]
        _, saved = run_forward(spec, case.args, backend, xp=xp, saved=True) if backend in spec.implementations() else (None, None)
        for label, sv in (("saved", saved), ("recomputed", None)):
            out = run_backward(spec, gx, case.args, backend, xp=xp, saved=sv)
            assert len(out) == len(spec.differentiable)
            for wrt, o, r in zip(spec.differentiable, out, ref):
                what = f"{name}[{case.id}] d{wrt} ({label})"
                if r is None:
                    assert o is None, f"{what}: expected None (input was None)"
                    continue
                assert o.dtype == np.dtype(dtype), f"{what}: dtype {o.dtype}"
                assert o.shape == a[wrt].shape, f"{what}: shape {o.shape}"
                assert_close(what, o, r, rtol, atol)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_reference_backward_vs_finite_differences(name):
    spec = SPECS[name]
    rng = _rng("fd", name)
    for case in spec.cases(rng, np.dtype(np.float64)):
        testing.finite_difference_check(spec, case.args, rng)


@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.torch is not None))
def test_reference_vs_torch(name):
    pytest.importorskip("torch")
    spec = SPECS[name]
    rng = _rng("torch", name)
    for case in spec.cases(rng, np.dtype(np.float64)):
        try:
            testing.torch_check(spec, case.args, rng)
        except AssertionError as e:
            raise AssertionError(f"case {case.id}: {e}") from None


def _generic_bad(spec, rng):
    """Bad inputs every op must reject: wrong dtype, a list, mixed float dtypes."""
    case = _nonempty_case(spec, rng, np.float32)
    floats = [k for k, v in case.args.items() if hasattr(v, "dtype") and v.dtype.kind == "f"]
    first = floats[0]
    yield f"{first} int32", dict(case.args, **{first: case.args[first].astype(np.int32)}), TypeError, first
    yield f"{first} list", dict(case.args, **{first: case.args[first].tolist()}), TypeError, first
    yield f"{first} float16", dict(case.args, **{first: case.args[first].astype(np.float16)}), TypeError, first
    yield f"{first} big-endian", dict(case.args, **{first: case.args[first].astype(">f4")}), TypeError, first
    for k in floats[1:]:
        yield f"{k} float64", dict(case.args, **{k: case.args[k].astype(np.float64)}), TypeError, k


@pytest.mark.parametrize("name,backend,dtype", _params(dtypes=False))
def test_bad_inputs(name, backend, dtype):
    spec, xp, rng = SPECS[name], _xp(backend), _rng("bad", name)
    bad = [(b.id, b.args, b.exc, b.match) for b in (spec.bad_cases(rng) if spec.bad_cases else [])]
    bad += list(_generic_bad(spec, rng))
    for bid, args, exc, match in bad:
        if xp is not np and any(isinstance(v, np.ndarray) and not v.dtype.isnative for v in args.values()):
            continue  # CuPy arrays are native-endian only (cupy.asarray swaps the bytes): no such input
        args = {k: (xp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
        with pytest.raises(exc, match=re.escape(match)) as info:
            spec.forward(**args, backend=backend)
        assert f"pydl.ops.{name}" in str(info.value), f"{bid}: message does not name the op: {info.value}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_bad_upstream_grad(name):
    spec, rng = SPECS[name], _rng("badgrad", name)
    case = _nonempty_case(spec, rng)
    a = spec.bind((), copy_args(case.args))
    g = _tuple(testing.upstream_grads(spec, a, rng, np.float64), spec.outputs)
    wrong_shape = tuple(x[..., None] for x in g)
    # a 0-d output (a loss) takes a gradient of either float dtype (converted): an int one is wrong
    wrong_dtype = tuple(x.astype(np.float32 if x.ndim else np.int64) for x in g)
    pack = (lambda t: t) if spec.outputs > 1 else (lambda t: t[0])
    with pytest.raises(ValueError, match="grad"):
        spec.backward(pack(wrong_shape), **copy_args(case.args))
    with pytest.raises(TypeError, match="grad"):
        spec.backward(pack(wrong_dtype), **copy_args(case.args))


@pytest.mark.parametrize("name,backend,dtype", _params())
def test_nan_inf_propagate(name, backend, dtype):
    """NaN and +-inf in the first input land where the reference puts them,
    forward and backward. The largest case is used, so vector bodies (not
    only scalar tails) see the special values."""
    spec, xp, rng = SPECS[name], _xp(backend), _rng("nan", name)
    k = spec.differentiable[0]
    case = max((c for c in spec.cases(rng, np.dtype(dtype)) if c.args[k].size),
               key=lambda c: c.args[k].size)
    x = case.args[k].copy()
    n = x.size
    for pos, val in ((0, np.nan), (n // 2, np.nan), (n // 3, -np.inf), (n - 1, np.inf)):
        x.flat[pos] = val
    args = dict(case.args, **{k: x})
    rtol, atol = spec.tol[dtype]
    with np.errstate(all="ignore"):
        try:
            ref = _tuple(spec.forward(**copy_args(args, np.float64), backend="numpy"), spec.outputs)
        except ValueError as e:  # nan/inf outside the op's domain (binary_cross_entropy, as torch):
            assert str(e).startswith(f"pydl.ops.{name}: {k}:"), e  # the spec rejects them, naming k
            with pytest.raises(ValueError, match=re.escape(f"{k}:")):
                run_forward(spec, args, backend, xp=xp)
            return
        out = _tuple(run_forward(spec, args, backend, xp=xp), spec.outputs)
        for i, (o, r) in enumerate(zip(out, ref)):
            assert_close(f"{name}[{case.id} with nan/inf] output {i}", o, r, rtol, atol)
        if backend not in spec.implementations(backward=True):
            return
        g = testing.upstream_grads(spec, spec.bind((), copy_args(args)), rng, np.dtype(dtype))
        g64 = tuple(t.astype(np.float64) for t in _tuple(g, spec.outputs))
        ref_g = spec.backward(g64 if spec.outputs > 1 else g64[0], **copy_args(args, np.float64), backend="numpy")
        gx = tuple(xp.asarray(t) for t in _tuple(g, spec.outputs))
        out_g = run_backward(spec, gx if spec.outputs > 1 else gx[0], args, backend, xp=xp)
    for wrt, o, r in zip(spec.differentiable, out_g, ref_g):
        assert_close(f"{name}[{case.id} with nan/inf] d{wrt}", o, r, *spec.grad_tolerance(dtype))


@pytest.mark.parametrize("name,backend,dtype", _params())
def test_strided_and_fortran_inputs(name, backend, dtype):
    spec, xp, rng = SPECS[name], _xp(backend), _rng("layout", name)
    rtol, atol = spec.tol[dtype]
    case = _nonempty_case(spec, rng, dtype)
    with np.errstate(all="ignore"):
        ref = _tuple(spec.forward(**copy_args(case.args, np.float64), backend="numpy"), spec.outputs)
    for layout, args in testing.layout_variants(copy_args(case.args, xp=xp)).items():
        out = _tuple(run_forward(spec, args, backend, fresh=False), spec.outputs)
        for i, (o, r) in enumerate(zip(out, ref)):
            assert_close(f"{name}[{case.id}, {layout}] output {i}", o, r, rtol, atol)
    if backend in spec.implementations(backward=True):
        a = spec.bind((), copy_args(case.args))
        g = testing.upstream_grads(spec, a, rng, np.dtype(dtype))
        g64 = tuple(t.astype(np.float64) for t in _tuple(g, spec.outputs))
        ref_g = spec.backward(g64 if spec.outputs > 1 else g64[0], **copy_args(case.args, np.float64), backend="numpy")
        gx = tuple(xp.asarray(t) for t in _tuple(g, spec.outputs))
        for layout, args in testing.layout_variants(copy_args(case.args, xp=xp)).items():
            out = run_backward(spec, gx if spec.outputs > 1 else gx[0], args, backend, fresh=False)
            for wrt, o, r in zip(spec.differentiable, out, ref_g):
                assert_close(f"{name}[{case.id}, {layout}] d{wrt}", o, r, *spec.grad_tolerance(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(n for n in SPECS if "cuda" in registry.IMPLS.get(n, {})))
def test_mixed_numpy_cupy_rejected(name):
    cupy = _xp("cuda")
    spec = SPECS[name]
    case = _nonempty_case(spec, _rng("mixed", name), np.float32)
    arrays = [k for k, v in case.args.items() if isinstance(v, np.ndarray)]
    with pytest.raises(TypeError, match="CuPy"):
        spec.forward(**case.args, backend="cuda")
    with pytest.raises(TypeError, match="CuPy"):
        spec.forward(**copy_args(case.args, xp=cupy), backend="numpy")
    if len(arrays) >= 2:
        mixed = dict(case.args, **{arrays[0]: cupy.asarray(case.args[arrays[0]])})
        with pytest.raises(TypeError, match="NumPy and CuPy"):
            spec.forward(**mixed)
