"""Thread safety of the native ops (issue 14, item 3).

Four Python threads call every native op (every native backend, both dtypes, the three
largest conformance cases: different shapes at once), forward and backward, while the
results are compared with the same calls made serially before:

- rounds with a fixed thread count: bitwise identical to the serial result, for every
  job whose serial result is itself reproducible (two serial runs agree bitwise: all of
  them on this machine; a job that were not would be compared within the spec's
  tolerance and counted);
- rounds where a fifth thread keeps changing ``pydl.set_num_threads`` (1, 2, 3) while the
  others compute: bitwise equal to the serial result at 1 or at 2 threads, or within the
  op's tolerance (a reduction split differently may round differently; the count of such
  results is reported).

A hang fails instead of hanging CI: every join has a timeout and ``faulthandler`` ends the
process (with every thread's stack) past a hard limit. ``THREAD_ROUNDS`` sets the rounds
(20 in the suite; ``make threads`` runs 1,000).

Numba: pydl keeps Numba's default threading layer (``omp`` here, ``tbb`` where installed;
both thread-safe); under ``workqueue``, which aborts the process on concurrent launches,
pydl serializes its numba implementations (``pydl/backends/numba/__init__.py``), checked
by :func:`test_numba_workqueue_layer_serialized` in a subprocess.
"""
import faulthandler
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import zlib

import numpy as np
import pytest

import pydl
from pydl import backends, registry, testing
from pydl.testing_fuzz import NATIVE

backends.load()
SPECS = registry.SPECS
ROUNDS = int(os.environ.get("THREAD_ROUNDS", "20"))
WORKERS = 4
JOIN_TIMEOUT = 120.0   # seconds a round may take before it counts as a hang


def _tuple(x):
    return tuple(x) if isinstance(x, tuple) else (x,)


def _jobs():
    """(id, op, backend, args, upstream grad) for every native op x backend x dtype x case."""
    out = []
    for op in sorted(SPECS):
        spec = SPECS[op]
        for dtype in spec.dtypes:
            rng = np.random.default_rng(zlib.crc32(f"{op}/{dtype}".encode()))
            cases = [c for c in spec.cases(np.random.default_rng(1), np.dtype(dtype))
                     if all(v.size for v in c.args.values() if isinstance(v, np.ndarray))]
            size = lambda c: sum(v.size for v in c.args.values() if isinstance(v, np.ndarray))  # noqa: E731
            for case in sorted(cases, key=size)[-3:]:
                a = spec.bind((), testing.copy_args(case.args))
                g = testing.upstream_grads(spec, a, rng, np.dtype(dtype))
                for b in NATIVE:
                    if b in registry.IMPLS.get(op, {}):
                        out.append((f"{op}[{case.id}]-{b}-{dtype}", op, b, case.args, g))
    return out


def _run(job):
    """(outputs..., gradients...) of one job: forward, then backward from its saved tensors."""
    _, op, b, args, g = job
    spec = SPECS[op]
    out, saved = spec.with_saved(**args, backend=b)
    res = list(_tuple(out))
    if b in registry.IMPLS.get(op + "_backward", {}):
        res += list(spec.backward(g, **args, saved=saved, backend=b))
    return res


def _bitwise(x, y):
    if len(x) != len(y):
        return False
    for a, b in zip(x, y):
        if (a is None) != (b is None):
            return False
        if a is not None and (a.dtype != b.dtype or a.shape != b.shape
                              or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f")):
            return False
    return True


def _close(job, got, want):
    _, op, _, args, _ = job
    spec = SPECS[op]
    a = spec.bind((), testing.copy_args(args))
    dt = spec.dtype_of(a)
    n_out = spec.outputs
    for i, (o, r) in enumerate(zip(got, want)):
        if r is None:
            assert o is None, f"{job[0]}: result {i} should be None"
            continue
        exact = r.dtype.kind != "f"
        tol = (0, 0) if exact else spec.tolerance(dt, a, grad=i >= n_out)
        testing.assert_close(f"{job[0]} result {i}", o, r, *tol)


def _serial(jobs, threads):
    before = pydl.get_num_threads()
    pydl.set_num_threads(threads)
    try:
        with np.errstate(all="ignore"):
            return [_run(j) for j in jobs]
    finally:
        pydl.set_num_threads(before)


class _Round:
    """One round: the jobs shuffled and dealt to WORKERS threads; results and errors kept."""

    def __init__(self, jobs, seed):
        order = list(range(len(jobs)))
        random.Random(seed).shuffle(order)
        self.parts = [order[i::WORKERS] for i in range(WORKERS)]
        self.jobs = jobs
        self.results = [None] * len(jobs)
        self.errors = []

    def work(self, part):
        try:
            with np.errstate(all="ignore"):
                for i in part:
                    self.results[i] = _run(self.jobs[i])
        except BaseException as e:  # noqa: BLE001  (reported by the main thread)
            self.errors.append((self.jobs[i][0], repr(e)))

    def run(self, toggle=False):
        stop = threading.Event()
        threads = [threading.Thread(target=self.work, args=(p,), daemon=True) for p in self.parts]
        toggler = None
        if toggle:
            def flip():
                n = 0
                while not stop.is_set():
                    pydl.set_num_threads((1, 2, 3)[n % 3])
                    n += 1
                    time.sleep(0.0005)
            toggler = threading.Thread(target=flip, daemon=True)
            toggler.start()
        for t in threads:
            t.start()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stop.set()
        if toggler is not None:
            toggler.join(10)
        hung = [i for i, t in enumerate(threads) if t.is_alive()]
        assert not hung, f"threads {hung} still running after {JOIN_TIMEOUT:.0f} s: a deadlock"


@pytest.fixture(scope="module")
def serial():
    jobs = _jobs()
    before = pydl.get_num_threads()
    one, two, again = _serial(jobs, 1), _serial(jobs, 2), _serial(jobs, 2)
    pydl.set_num_threads(2)
    reproducible = [_bitwise(x, y) for x, y in zip(two, again)]
    yield jobs, one, two, reproducible
    pydl.set_num_threads(before)


def test_concurrent_calls_match_serial(serial):
    jobs, one, two, reproducible = serial
    assert len(jobs) > 100 and {j[1] for j in jobs} >= {"matmul", "conv2d", "lstm", "cross_entropy"}
    faulthandler.dump_traceback_later(JOIN_TIMEOUT * ROUNDS + 300, exit=True)
    stats = dict(rounds=0, bitwise=0, tolerance=0, calls=0)
    try:
        for r in range(ROUNDS):
            toggle = r % 2 == 1
            pydl.set_num_threads(2)
            rd = _Round(jobs, seed=r)
            rd.run(toggle=toggle)
            assert not rd.errors, f"round {r}: {len(rd.errors)} calls raised, first: {rd.errors[0]}"
            for i, job in enumerate(jobs):
                got = rd.results[i]
                if _bitwise(got, two[i]) or (toggle and _bitwise(got, one[i])):
                    stats["bitwise"] += 1
                else:
                    assert toggle or not reproducible[i], (
                        f"round {r}: {job[0]} differs from its serial result at a fixed thread count")
                    _close(job, got, two[i])
                    stats["tolerance"] += 1
            stats["rounds"] += 1
            stats["calls"] += len(jobs)
    finally:
        faulthandler.cancel_dump_traceback_later()
        pydl.set_num_threads(2)
    print(f"\nthreads: {stats['rounds']} rounds x {len(jobs)} jobs ({WORKERS} threads, thread count "
          f"changed during odd rounds): {stats['bitwise']} results bitwise equal to a serial run, "
          f"{stats['tolerance']} within tolerance, {sum(not r for r in reproducible)} jobs not "
          f"reproducible serially")


def test_set_num_threads_from_another_thread_reaches_every_backend():
    """The thread count is process-wide: set in one Python thread, seen by the kernels and
    by the other threads (OpenMP's own setting would bind the calling thread only)."""
    before = pydl.get_num_threads()
    seen = {}

    def setter():
        pydl.set_num_threads(3)

    def reader():
        from pydl import _cpp, _cython

        seen["cpp"], seen["cython"] = _cpp.get_num_threads(), _cython.get_num_threads()
        seen["pydl"] = pydl.get_num_threads()

    try:
        t = threading.Thread(target=setter)
        t.start()
        t.join(10)
        t = threading.Thread(target=reader)
        t.start()
        t.join(10)
        assert seen == {"cpp": 3, "cython": 3, "pydl": 3}
    finally:
        pydl.set_num_threads(before)


def test_numba_workqueue_layer_serialized():
    """Regression: under Numba's workqueue threading layer, numba ops called from four
    threads at once terminated the process ("Concurrent access has been detected");
    pydl now serializes its numba implementations there."""
    code = textwrap.dedent("""
        import threading, numpy as np, numba, pydl
        from pydl import backends
        backends.load("numba")
        assert numba.threading_layer() == "workqueue", numba.threading_layer()
        x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        errors = []
        def work():
            try:
                for _ in range(20):
                    pydl.ops.softmax(x, backend="numba")
                    pydl.ops.relu_backward(x, x, backend="numba")
                    pydl.ops.matmul(x[:16], x.T[:, :16].copy(), backend="numba")
            except Exception as e:
                errors.append(e)
        ts = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in ts]
        [t.join(120) for t in ts]
        assert not errors and not any(t.is_alive() for t in ts), errors
        print("ok")
    """)
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    root = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout[-2000:] + p.stderr[-2000:]
