"""Good neighbours: pydl's and OpenBLAS's idle threads kept from spinning on each other's cores.

A NumPy program that adopts pydl alternates NumPy's BLAS (OpenBLAS) calls with pydl's. After
every threaded OpenBLAS call its worker threads busy-wait for the next job (a ``sched_yield``
loop of about 2^28 cycles, ~0.1 s, before they sleep); a 2-thread pydl kernel started in that
window shares its two cores with the spinner, and the thread that loses the core holds up the
other at every barrier. Measured on the 2-vCPU Zen 4 (dev/build/neighbours.md): cpp sgemm 1024
and a ResNet 3x3 conv ran at 0.76-0.77x of their isolated speed right after a NumPy matmul.

OpenBLAS cannot be asked to stop spinning: ``openblas_set_num_threads`` (what threadpoolctl
calls) only changes how many threads its *next* call uses - the idle ones keep spinning (0.77x
with it too) - and the spin time is read once, when the library loads. What it exports is
``blas_thread_shutdown_`` (its fork handler): the workers are woken, told to exit and joined;
its next threaded call creates them again (``blas_server_avail`` says whether they exist).
pydl calls it before a native kernel when

- the kernel is big enough to gain more than the re-creation costs the next NumPy call
  (``PARK_FLOPS``: 1e8 flops, ~1 ms of work on two cores, gains ~0.25 ms when OpenBLAS spins;
  the next threaded NumPy call pays ~0.1-0.4 ms to start its threads again; a bandwidth-bound
  kernel counts the bytes it moves, ``work``: a GEMV over a 64 MB matrix is 34 Mflop but 1.5 ms),
- pydl itself runs more than one thread (one pydl thread and one spinner fit two cores),
- the worker threads exist (``blas_server_avail``; a read, no call), and
- the calling thread is the only Python thread: shutting the pool down while another thread
  is inside an OpenBLAS call would leave that call's workers unjoinable, so a multi-threaded
  program keeps its OpenBLAS pool as it is.

With it the same kernels run at 0.93-1.03x of isolated speed after NumPy. ``pydl.set_blas_parking
(False)`` or ``PYDL_PARK_BLAS=0`` turns it off; ``status()`` says what was found.

Smaller kernels suffer more, not less: a 64 x 784 x 256 GEMM (26 Mflop, 0.09-0.12 ms on two
threads) took a median 0.9-1.0 ms right after a NumPy call, a 4 Mflop one 0.79 ms against 0.02
(the thread that lost its core waits for the spinner's time slice, whatever the kernel's size;
Zen 5, dev/build/neighbours.md). Parking them costs NumPy more than it saves: its next call
starts its threads again (0.14 -> 0.42 ms for a 256 x 256 ``a @ b``). So a kernel under
``PARK_FLOPS`` (down to ``SOLO_FLOPS``, below which pydl's kernels run one thread anyway) runs
on ONE thread while OpenBLAS's workers may be spinning, beside them: 0.03 ms and 0.15 ms for those
two, NumPy's next call unharmed. "May be spinning" is "the workers came back (NumPy called its
BLAS since pydl last parked them) less than ``SPIN_WINDOW`` ago, as far as pydl has seen": a pool
found alive longer than that is parked at the next kernel, as is the pool OpenBLAS starts when
it loads (pydl's first kernel parks it), so a program that stopped calling NumPy's BLAS gets
its two threads back within ``SPIN_WINDOW``.

The other way round, pydl's own OpenMP threads (libgomp, shared in one process with PyTorch and
Numba's omp layer) spin ``GOMP_SPINCOUNT`` rounds after each parallel region before they sleep:
300,000 by default (a round is one ``pause``, ~64 ns on the Zen 4: ~20 ms), during which a NumPy call that must start OpenBLAS's
threads again waits for a core (0.31 -> 1.87 ms for a 256 x 256 ``a @ b`` after a parked pydl
GEMM). libgomp reads the count once, when it loads, so ``import pydl`` sets
``GOMP_SPINCOUNT=SPINCOUNT`` when neither it nor ``OMP_WAIT_POLICY`` is set and no libgomp is
loaded yet (``PYDL_GOMP_SPINCOUNT`` picks another value, ``default`` leaves libgomp's): 10,000
rounds, ~0.6 ms, still long enough that the back-to-back ops of a training step (tens of
microseconds of Python between them) find the threads awake.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

#: kernels of at least this much work (``work``: flops, or bytes read in flop terms) park the pool first
PARK_FLOPS = 1e8
#: smaller kernels down to this much work run on one thread beside a pool that may spin
SOLO_FLOPS = 1e5
#: flops that take as long as moving one byte from memory on two cores (~240 GFLOP/s against
#: ~30 GB/s): a kernel's work is the larger of its flops and the bytes it moves times this
BYTE_FLOPS = 8.0
#: seconds a pool found alive may still be spinning (OpenBLAS spins ~0.1 s after a job)
SPIN_WINDOW = 0.2
#: libgomp's spin rounds that ``import pydl`` asks for (see above)
SPINCOUNT = "10000"

_state = {"enabled": os.environ.get("PYDL_PARK_BLAS", "1") not in ("0", "false", "no", "off"),
          "scanned_modules": -1, "libs": [], "parks": 0, "solos": 0, "alive_since": None,
          "gomp": "not looked at"}


def _loaded(word: str) -> list[str]:
    """Paths of the loaded shared libraries whose name contains ``word`` (Linux; [] elsewhere)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(" ")[-1]
                if word in path.rsplit("/", 1)[-1].lower() and ".so" in path and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def quiet_openmp() -> None:
    """At ``import pydl``: the short libgomp spin (see the module's docstring), when it is ours to set."""
    want = os.environ.get("PYDL_GOMP_SPINCOUNT", SPINCOUNT)
    if want == "default":
        _state["gomp"] = "libgomp's default spin (PYDL_GOMP_SPINCOUNT=default)"
    elif "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        _state["gomp"] = "the environment's GOMP_SPINCOUNT / OMP_WAIT_POLICY"
    elif _loaded("libgomp"):
        _state["gomp"] = "libgomp's default spin (libgomp was loaded before pydl, e.g. by torch)"
    else:
        os.environ["GOMP_SPINCOUNT"] = want
        _state["gomp"] = f"GOMP_SPINCOUNT={want}, set by pydl"


def set_spincount() -> bool:
    """Whether ``GOMP_SPINCOUNT`` in this process's environment was set by pydl."""
    return _state["gomp"].endswith("set by pydl")


def _scan() -> None:
    """The loaded OpenBLAS libraries that export the pool controls (from /proc/self/maps; none
    found, e.g. off Linux or with MKL, means nothing to do). Rescanned when modules were
    imported since the last look (a new import may have loaded another OpenBLAS)."""
    _state["scanned_modules"] = len(sys.modules)
    libs = []
    for path in _loaded("openblas"):
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | os.RTLD_LOCAL)
            shutdown = lib.blas_thread_shutdown_
            avail = ctypes.c_int.in_dll(lib, "blas_server_avail")
        except (OSError, AttributeError, ValueError):
            continue  # another build of OpenBLAS (e.g. the OpenMP one has no pthread pool)
        shutdown.restype, shutdown.argtypes = ctypes.c_int, []
        libs.append((path, shutdown, avail))
    _state["libs"] = libs


def _threads() -> int:
    """pydl's thread count, cheaply (``get_num_threads`` reads the environment and the CPU
    affinity each time; this runs before every native kernel)."""
    pkg = sys.modules[__package__]
    if pkg._NUM_THREADS is not None:
        return pkg._NUM_THREADS
    if "default_threads" not in _state:
        _state["default_threads"] = pkg.get_num_threads()
    return _state["default_threads"]


def before_native(spec, backend: str, a):
    """Called by dispatch before a native CPU backend (cpp, cython, numba) runs ``spec``: parks
    OpenBLAS's workers, or sets pydl to one thread for this kernel (then returns the function
    that restores the thread count, which dispatch calls after the kernel), or does nothing
    (None). The cheap tests come first (most kernels are small): about a microsecond."""
    if not _state["enabled"] or _threads() < 2 or threading.active_count() != 1:
        return None
    if _state["scanned_modules"] != len(sys.modules):
        _scan()
    alive = [shutdown for _, shutdown, avail in _state["libs"] if avail.value]
    if not alive:  # (pydl alone, or OpenBLAS parked: no size to work out)
        _state["alive_since"] = None
        return None
    try:
        flops = work(spec, a)
    except Exception:  # a count that cannot be made here (e.g. viewed arguments) decides nothing
        return None
    if flops < SOLO_FLOPS:
        return None
    now = time.monotonic()
    since = _state["alive_since"]
    if since is None:
        since = _state["alive_since"] = now
    if flops >= PARK_FLOPS or _state["parks"] == 0 or now - since > SPIN_WINDOW:
        _shut_down(alive)
        return None
    # a small kernel beside a pool that came back less than SPIN_WINDOW ago
    _state["solos"] += 1
    return sys.modules[__package__]._solo_threads()


def work(spec, a) -> float:
    """A kernel's size in flops for the decisions above: its flop count, or, for a bandwidth-bound
    one, the bytes it moves (the spec's ``nbytes``: inputs read, outputs written) times
    ``BYTE_FLOPS`` when that is more (a 1 x 4096 @ 4096 x 4096 GEMV is 34 Mflop but reads 64 MB:
    ~1.5 ms on two threads, ~3 ms on one)."""
    return max(float(spec.flops(a)), BYTE_FLOPS * spec.nbytes(a))


def _shut_down(shutdowns) -> None:
    for shutdown in shutdowns:
        shutdown()
        _state["parks"] += 1
    _state["alive_since"] = None


def park() -> None:
    """Park OpenBLAS's worker threads now, whatever the kernel (``pydl bench``'s isolated figures:
    the speed of a program that does not call NumPy's BLAS)."""
    _scan()
    _shut_down([shutdown for _, shutdown, avail in _state["libs"] if avail.value])


def set_blas_parking(enabled: bool) -> None:
    """Whether pydl parks OpenBLAS's idle worker threads before its big multi-threaded kernels
    and runs the smaller ones on one thread beside a pool that may spin (default on;
    ``PYDL_PARK_BLAS=0`` starts with it off). See :mod:`pydl.backends._neighbours`."""
    if not isinstance(enabled, bool):
        raise TypeError(f"set_blas_parking: expected a bool, got {type(enabled).__name__}")
    _state["enabled"] = enabled


def status() -> dict:
    """What parking found: enabled, the OpenBLAS libraries it controls, the parks made so far."""
    _scan()
    return {"enabled": _state["enabled"], "libraries": [p for p, _, _ in _state["libs"]],
            "workers_alive": [bool(avail.value) for _, _, avail in _state["libs"]],
            "parks": _state["parks"], "solo_kernels": _state["solos"], "park_flops": PARK_FLOPS,
            "solo_flops": SOLO_FLOPS, "byte_flops": BYTE_FLOPS, "openmp_spin": _state["gomp"]}
