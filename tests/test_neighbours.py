"""pydl beside NumPy and PyTorch in one process (pydl/backends/_neighbours.py): OpenBLAS's idle
workers parked before big native kernels, the short OpenMP spin set at import, the bench family."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import pydl
from pydl.backends import _neighbours

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _pool():
    st = _neighbours.status()
    if not st["libraries"]:
        pytest.skip("no OpenBLAS with a pthread pool is loaded (NumPy built against another BLAS)")
    return st


def _wake_openblas():
    a = np.random.default_rng(1).standard_normal((384, 384))
    a @ a  # a threaded OpenBLAS call: its workers exist afterwards


@pytest.fixture
def two_threads():
    before = pydl.get_num_threads()
    pydl.set_num_threads(2)
    yield
    pydl.set_num_threads(before)


def _big(rng):
    a = rng.standard_normal((512, 512), dtype=np.float32)
    b = rng.standard_normal((512, 256), dtype=np.float32)  # 1.3e8 flops >= PARK_FLOPS
    return a, b


def test_big_native_kernel_parks_openblas_and_numpy_still_works(two_threads):
    _pool()
    rng = np.random.default_rng(0)
    a, b = _big(rng)
    _wake_openblas()
    if not any(_neighbours.status()["workers_alive"]):
        pytest.skip("OpenBLAS runs one thread here (OPENBLAS_NUM_THREADS=1?): no pool to park")
    parks = _neighbours.status()["parks"]
    got = pydl.ops.matmul(a, b, backend="cpp")
    st = _neighbours.status()
    assert st["parks"] > parks and not any(st["workers_alive"])
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    # NumPy starts its threads again and computes the same as before
    x = rng.standard_normal((300, 300))
    assert np.array_equal(x @ x, x @ x)
    np.testing.assert_allclose(x @ x, np.einsum("ij,jk->ik", x, x), rtol=1e-12, atol=1e-10)
    assert any(_neighbours.status()["workers_alive"])


@pytest.mark.parametrize("why", ["disabled", "one pydl thread", "another Python thread"])
def test_no_park(why, two_threads):
    _pool()
    rng = np.random.default_rng(0)
    a, b = _big(rng)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait) if why == "another Python thread" else None
    if other:
        other.start()
    try:
        if why == "disabled":
            pydl.set_blas_parking(False)
        if why == "one pydl thread":
            pydl.set_num_threads(1)
        _wake_openblas()
        parks = _neighbours.status()["parks"]
        got = pydl.ops.matmul(a, b, backend="cpp")
        assert _neighbours.status()["parks"] == parks
        np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    finally:
        pydl.set_blas_parking(True)
        stop.set()
        if other:
            other.join()


def _cpp_threads():
    from pydl import _cpp
    return _cpp.get_num_threads()


def test_small_kernel_runs_on_one_thread_beside_a_fresh_pool(two_threads, monkeypatch):
    """Under PARK_FLOPS: no park (NumPy would pay for starting its threads again), the kernel runs
    on one thread beside the pool that may spin, and the thread count is back afterwards; a pool
    seen alive for longer than SPIN_WINDOW is parked at the next kernel."""
    _pool()
    rng = np.random.default_rng(0)
    pydl.ops.matmul(*_big(rng), backend="cpp")   # a park first (the load-time pool's park is done)
    a, b = rng.standard_normal((64, 784), dtype=np.float32), rng.standard_normal((784, 256), dtype=np.float32)
    assert _neighbours.SOLO_FLOPS <= 2 * 64 * 784 * 256 < _neighbours.PARK_FLOPS
    monkeypatch.setattr(_neighbours, "SPIN_WINDOW", 60.0)   # however slow this machine is right now
    _wake_openblas()
    if not any(_neighbours.status()["workers_alive"]):
        pytest.skip("OpenBLAS runs one thread here (OPENBLAS_NUM_THREADS=1?): no pool")
    st = _neighbours.status()
    seen = []
    from pydl.backends.cpp import gemm as cpp_gemm
    real = cpp_gemm._MATMUL_NEW["f"]
    monkeypatch.setitem(cpp_gemm._MATMUL_NEW, "f", lambda x, y: seen.append(_cpp_threads()) or real(x, y))
    got = pydl.ops.matmul(a, b, backend="cpp")
    after = _neighbours.status()
    assert seen == [1] and after["solo_kernels"] == st["solo_kernels"] + 1 and after["parks"] == st["parks"]
    assert any(after["workers_alive"]) and pydl.get_num_threads() == 2 and _cpp_threads() == 2
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    monkeypatch.setattr(_neighbours, "SPIN_WINDOW", 0.0)
    time.sleep(0.01)
    pydl.ops.matmul(a, b, backend="cpp")
    last = _neighbours.status()
    assert seen == [1, 2] and last["parks"] > after["parks"] and not any(last["workers_alive"])


def test_bandwidth_bound_kernel_counts_its_bytes(two_threads, monkeypatch):
    """A GEMV over a big matrix is few flops but a long kernel (it reads the matrix from memory):
    its bytes make it big enough to park the pool rather than run on one thread beside it."""
    _pool()
    rng = np.random.default_rng(0)
    pydl.ops.matmul(*_big(rng), backend="cpp")   # (the load-time pool's park is done)
    x = rng.standard_normal((1, 2048), dtype=np.float32)
    w = rng.standard_normal((2048, 2048), dtype=np.float32)   # 8.4 Mflop, 16 MB
    spec = pydl.ops.matmul.spec
    assert spec.flops({"a": x, "b": w}) < _neighbours.PARK_FLOPS <= _neighbours.work(spec, {"a": x, "b": w})
    small = {"a": x, "b": w[:, :64].copy()}   # 0.26 Mflop, 0.5 MB: still a one-thread kernel
    assert _neighbours.SOLO_FLOPS <= _neighbours.work(spec, small) < _neighbours.PARK_FLOPS
    monkeypatch.setattr(_neighbours, "SPIN_WINDOW", 60.0)
    _wake_openblas()
    if not any(_neighbours.status()["workers_alive"]):
        pytest.skip("OpenBLAS runs one thread here (OPENBLAS_NUM_THREADS=1?): no pool")
    st = _neighbours.status()
    got = pydl.ops.matmul(x, w, backend="cpp")
    after = _neighbours.status()
    assert after["parks"] > st["parks"] and after["solo_kernels"] == st["solo_kernels"]
    assert not any(after["workers_alive"])
    np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-4, atol=1e-3)


def test_thread_count_restored_when_the_kernel_raises(two_threads):
    from pydl import registry

    restored = []

    def boom():
        raise RuntimeError("kernel failed")
    with pytest.raises(RuntimeError, match="kernel failed"):
        registry._run(boom, lambda: restored.append(True))
    assert restored == [True]
    before = pydl.backends._NUM_THREADS
    undo = pydl.backends._solo_threads()
    assert pydl.get_num_threads() == 1 and _cpp_threads() == 1
    undo()
    assert pydl.backends._NUM_THREADS == before and pydl.get_num_threads() == 2 and _cpp_threads() == 2


def test_first_kernel_parks_the_pool_openblas_starts_at_load():
    code = ("import numpy as np, pydl; from pydl.backends import _neighbours as n; pydl.set_num_threads(2);"
            "st = n.status(); a = np.ones((64, 784), np.float32); b = np.ones((784, 256), np.float32);"
            "pydl.ops.matmul(a, b, backend='cpp'); print(st['workers_alive'], n.status()['parks'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if not out or out[0] != "[True]":
        pytest.skip("no OpenBLAS pool at load here")
    assert out[-1] == "1"


def test_set_blas_parking_wants_a_bool():
    with pytest.raises(TypeError, match="set_blas_parking"):
        pydl.set_blas_parking(1)


def _spin_in_child(env_extra, code="import pydl"):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                                                            "PYDL_GOMP_SPINCOUNT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code + "; import os, json; from pydl.backends import _neighbours as n;"
                          "print(json.dumps([os.environ.get('GOMP_SPINCOUNT'), n.status()['openmp_spin']]))"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sets_a_short_openmp_spin_only_when_it_is_ours_to_set():
    value, why = _spin_in_child({})
    assert value == _neighbours.SPINCOUNT and "set by pydl" in why
    assert _spin_in_child({"GOMP_SPINCOUNT": "777"})[0] == "777"
    assert _spin_in_child({"OMP_WAIT_POLICY": "passive"})[0] is None
    assert _spin_in_child({"PYDL_GOMP_SPINCOUNT": "default"})[0] is None
    assert _spin_in_child({"PYDL_GOMP_SPINCOUNT": "5000"})[0] == "5000"
    pytest.importorskip("torch")
    value, why = _spin_in_child({}, code="import torch, pydl")  # torch loaded libgomp first
    assert value is None and "loaded before pydl" in why


def test_bench_family_runs_and_reports():
    from pydl.bench import neighbours, report

    small = (("sgemm 384", True, "matmul", dict(m=384, k=384, n=384)),
             ("conv2d 3x3 c16 16x16 N2", True, "conv2d", dict(N=2, C=16, H=16, K=16, R=3, stride=1)))
    res = neighbours.run(rounds=1, per_round=1, cases=small)
    assert [r["case"] for r in res["rows"]] == [c[0] for c in small]
    for r in res["rows"]:
        for k in ("after_numpy", "after_numpy_no_parking", "numpy_after_pydl"):
            # a ratio of two measured times: positive and finite (how large depends on the
            # machine's load: 110 once, a 0.02 ms kernel beside a spinning pool on a busy host)
            assert 0 < r[k] < float("inf")
        assert r["isolated_ms"] > 0
    head, rows = neighbours.table(res)
    assert len(rows) == 2 and all(len(x) == len(head) for x in rows)
    md = "\n".join(neighbours.markdown(res))
    assert "after NumPy" in md and "sgemm 384" in md
    assert neighbours.split_ops(None) == (None, True)
    assert neighbours.split_ops(["gemm", "neighbours"]) == (["gemm"], True)
    assert neighbours.split_ops(["gemm"]) == (["gemm"], False)
    assert "sgemm 384" in neighbours.html(res)
    assert hasattr(report, "write")
