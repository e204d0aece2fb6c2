"""Dispatch rules of DESIGN.md: argument > context > PYDL_BACKEND > automatic;
no silent fallback; CuPy arrays never reach a CPU backend, NumPy arrays never
reach cuda; availability with reasons; thread control."""
import inspect
import json

import numpy as np
import pytest

import pydl
from pydl import backends, cli, registry


class FakeCupyArray:
    """Enough of a CuPy array to exercise dispatch without a GPU."""

    __module__ = "cupy._core.core"
    __cuda_array_interface__ = {}

    def __init__(self, shape=(3,)):
        self.shape, self.ndim, self.dtype = shape, len(shape), np.dtype(np.float32)


@pytest.fixture
def fake_relu(monkeypatch):
    """relu implemented by tagged fakes on cpp, numba and cuda (not cython)."""
    backends.load()
    impls = {b: (lambda b=b: (lambda x: b))() for b in ("cpp", "numba", "numpy", "cuda")}
    monkeypatch.setitem(registry.IMPLS, "relu", impls)
    monkeypatch.delenv("PYDL_BACKEND", raising=False)
    return np.ones(3, np.float32)


def test_precedence_argument_context_env_auto(fake_relu, monkeypatch):
    x = fake_relu
    assert pydl.ops.relu(x) == "cpp"                         # automatic: fastest CPU backend
    monkeypatch.setenv("PYDL_BACKEND", "numpy")
    assert pydl.ops.relu(x) == "numpy"                       # env beats automatic
    with pydl.use_backend("numba"):
        assert pydl.ops.relu(x) == "numba"                   # context beats env
        assert pydl.ops.relu(x, backend="cpp") == "cpp"      # argument beats context
        with pydl.use_backend(None):
            assert pydl.ops.relu(x) == "numpy"               # None: back to env/automatic
    assert pydl.ops.relu(x) == "numpy"                       # context restored


def test_auto_order_skips_missing(fake_relu, monkeypatch):
    del registry.IMPLS["relu"]["cpp"]
    assert pydl.ops.relu(fake_relu) == "numba"


def test_named_backend_without_op_raises(fake_relu):
    with pytest.raises(NotImplementedError, match=r"'cython' does not implement it.*; backends that do: cpp, numba, numpy, cuda"):
        pydl.ops.relu(fake_relu, backend="cython")
    with pydl.use_backend("cython"):
        with pytest.raises(NotImplementedError, match="cython"):
            pydl.ops.relu(fake_relu)


def test_env_backend_without_op_raises(fake_relu, monkeypatch):
    monkeypatch.setenv("PYDL_BACKEND", "cython")
    with pytest.raises(NotImplementedError, match="cython"):
        pydl.ops.relu(fake_relu)


def test_unknown_backend_names(fake_relu, monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        pydl.ops.relu(fake_relu, backend="gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        with pydl.use_backend("fast"):
            pass
    monkeypatch.setenv("PYDL_BACKEND", "fortran")
    with pytest.raises(ValueError, match="unknown backend 'fortran'"):
        pydl.ops.relu(fake_relu)
    with pytest.raises(ValueError, match="unknown backend"):
        registry.register("relu", "fortran")
    with pytest.raises(KeyError, match="no op named 'relu2'"):
        registry.register("relu2", "cpp")


def test_numpy_arrays_never_go_to_cuda(fake_relu, monkeypatch):
    with pytest.raises(TypeError, match="'cuda' takes CuPy arrays"):
        pydl.ops.relu(fake_relu, backend="cuda")
    monkeypatch.setenv("PYDL_BACKEND", "cuda")
    with pytest.raises(TypeError, match="never copies"):
        pydl.ops.relu(fake_relu)


def test_cupy_arrays_never_go_to_cpu(fake_relu):
    g = FakeCupyArray()
    assert registry.select("relu", {"x": g})[0] == "cuda"
    for b in registry.CPU_ORDER:
        with pytest.raises(TypeError, match="takes NumPy arrays, got CuPy"):
            registry.select("relu", {"x": g}, b)
    del registry.IMPLS["relu"]["cuda"]
    with pytest.raises(NotImplementedError, match="no 'cuda' implementation"):
        registry.select("relu", {"x": g})


def test_mixed_numpy_cupy_rejected():
    with pytest.raises(TypeError, match="both NumPy and CuPy"):
        registry.select("matmul",
                        {"a": np.ones((2, 2), np.float32), "b": FakeCupyArray((2, 2))})


def test_errors_name_op_and_argument():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"pydl.ops.relu: x: expected a NumPy or CuPy array, got builtins.list"):
        pydl.ops.relu([1.0, 2.0])
    with pytest.raises(ValueError, match=r"pydl.ops.softmax: dim: expected a dimension in \[-2, 2\), got 2"):
        pydl.ops.softmax(x, dim=2)
    with pytest.raises(TypeError, match=r"pydl.ops.relu: .*unexpected keyword argument 'alpha'"):
        pydl.ops.relu(x, alpha=True)
    with pytest.raises(ValueError, match=r"pydl.ops.relu: inplace: pydl's ops return a new array"):
        pydl.ops.relu(x, inplace=True)  # torch's keyword, False only
    with pytest.raises(ValueError, match=r"relu_backward: grad: expected the output's shape \(2, 3\), got \(3, 2\)"):
        pydl.ops.relu_backward(np.ones((3, 2), np.float32), x)


def test_every_op_has_public_forward_and_backward():
    assert len(registry.SPECS) >= 9
    for name, spec in registry.SPECS.items():
        f, b = getattr(pydl.ops, name), getattr(pydl.ops, name + "_backward")
        assert f.spec is spec and b.spec is spec
        assert f.__doc__ and f.__doc__.strip(), f"{name} has no docstring"
        assert "backend" in inspect.signature(f).parameters
        params = list(inspect.signature(b).parameters)
        assert params[0] == "grad" and "saved" in params and "backend" in params
        assert set(spec.differentiable) <= set(inspect.signature(f).parameters), name
        assert "numpy" in spec.implementations() and "numpy" in spec.implementations(backward=True), \
            f"{name} has no NumPy reference"
        assert set(spec.tol) >= set(spec.dtypes)
        assert spec.torch is not None, f"{name}: every op PyTorch has needs the torch oracle"


def test_available_reports_every_backend_with_reason():
    av = pydl.available()
    assert list(av) == list(registry.BACKENDS)
    assert av["numpy"]["available"] and av["numpy"]["ops"] == len(registry.SPECS)
    for name, s in av.items():
        assert isinstance(s["reason"], str) and s["reason"]
        assert s["available"] == (s["reason"] == "ok")


def test_set_num_threads(monkeypatch):
    seen = []
    monkeypatch.setattr(backends, "_THREAD_HOOKS", {"probe": seen.append})
    monkeypatch.setattr(backends, "_NUM_THREADS", None)
    pydl.set_num_threads(1)
    assert seen == [1] and pydl.get_num_threads() == 1
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_num_threads"):
            pydl.set_num_threads(bad)


def test_cli_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["backends"]) == set(registry.BACKENDS)
    assert d["cpu_features"].keys() >= {"avx512f", "avx2"}
    for b in ("cpp", "cython", "numba", "numpy"):
        assert d["backends"][b]["available"], d["backends"][b]
    assert cli.main(["info"]) == 0
    assert "backends" in capsys.readouterr().out


def test_cli_demo_checks_every_backend():
    rows = cli.demo(size=4096, repeats=1)
    assert rows and all(r["check"] == "ok" for r in rows)
    assert {r["backend"] for r in rows} >= {"cpp", "cython", "numba", "numpy"}


def test_set_num_threads_reaches_every_cpu_runtime():
    import numba

    from pydl import _cpp, _cython

    backends.load()
    runtimes = {"cpp": _cpp.get_num_threads, "cython": _cython.get_num_threads, "numba": numba.get_num_threads}
    before = pydl.get_num_threads()
    try:
        pydl.set_num_threads(1)
        assert {k: f() for k, f in runtimes.items()} == {k: 1 for k in runtimes}
    finally:
        pydl.set_num_threads(before)


def test_omp_num_threads_honoured_by_every_cpu_runtime():
    import os
    import subprocess
    import sys

    code = ("import numpy as np, pydl, numba; from pydl import _cpp, _cython; "
            "pydl.ops.relu(np.ones(3, np.float32), backend='numba'); pydl.ops.relu(np.ones(3, np.float32)); "
            "print(_cpp.get_num_threads(), _cython.get_num_threads(), numba.get_num_threads(), pydl.get_num_threads())")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1", "1"]


def test_set_num_threads_reaches_other_python_threads():
    """OpenMP and Numba bind thread counts per calling thread; pydl's is process-wide."""
    import threading

    import numba

    from pydl import _cpp, _cython

    backends.load()
    before, seen = pydl.get_num_threads(), {}

    def worker():
        pydl.ops.relu(np.ones(3, np.float32), backend="numba")
        seen.update(cpp=_cpp.get_num_threads(), cython=_cython.get_num_threads(), numba=numba.get_num_threads())

    try:
        pydl.set_num_threads(1)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen == {"cpp": 1, "cython": 1, "numba": 1}
    finally:
        pydl.set_num_threads(before)


# -- variants ------------------------------------------------------------------

def test_variant_registration_and_selection():
    calls = []

    @registry.register("relu", "numpy", variant="test-variant")
    def relu_variant(x):
        calls.append(x.shape)
        return np.maximum(x, 0)

    try:
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        assert "test-variant" in registry.variants("relu", "numpy")
        out = pydl.ops.relu(x, backend="numpy:test-variant")
        assert calls == [(3, 4)]
        np.testing.assert_array_equal(out, np.maximum(x, 0))
        with registry.use_backend("numpy:test-variant"):
            pydl.ops.relu(x)
        assert len(calls) == 2
        pydl.ops.relu(x, backend="numpy")          # the default is untouched
        assert len(calls) == 2
        with pytest.raises(NotImplementedError, match="no variant 'nope'.*test-variant"):
            pydl.ops.relu(x, backend="numpy:nope")
        with pytest.raises(NotImplementedError, match="no variant 'test-variant'"):
            pydl.ops.relu_backward(x, x, backend="numpy:test-variant")   # no backward variant
    finally:
        del registry.VARIANTS["relu"]["numpy"]["test-variant"]


def test_variant_names_are_checked():
    with pytest.raises(ValueError, match="variant"):
        registry.register("relu", "numpy", variant="a:b")
    with pytest.raises(ValueError, match="unknown backend 'cpq:x'"):
        pydl.ops.relu(np.ones(3, np.float32), backend="cpq:x")
    with pytest.raises(ValueError, match="use_backend"):
        with registry.use_backend("nope:x"):
            pass
