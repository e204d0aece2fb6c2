"""The Numba backend: ``@njit(parallel=True, cache=True)`` kernels, one module per op family.

Numba is imported here, when the backends load (the first op call), not at
``import pydl``. Compiled kernels are cached on disk (``__pycache__`` next to
the module, or ``NUMBA_CACHE_DIR``), so a signature compiles once per machine.
"""
import ctypes
import functools
import os
import threading

import numba

from .. import get_num_threads, register_thread_hook


def _start_pool_keeping_openmp():
    """Start Numba's thread pool now, leaving OpenMP's thread count as it was.

    Numba's 'omp' threading layer calls ``omp_set_num_threads(NUMBA_NUM_THREADS)``
    when its pool starts. The cpp and cython backends use the same libgomp, so
    that call would silently override ``OMP_NUM_THREADS`` and
    ``pydl.set_num_threads`` for them; put the value back.
    """
    try:  # only if libgomp is already in the process (RTLD_NOLOAD: never load it here)
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        before = gomp.omp_get_max_threads()
    except (OSError, AttributeError):
        gomp = None
    numba.get_num_threads()  # starts the pool
    if gomp is not None and numba.threading_layer() == "omp":
        gomp.omp_set_num_threads(before)


def _set_threads(n: int) -> None:
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def sync_threads() -> None:
    """Numba's thread count binds only the calling thread: every adapter calls
    this first, so a kernel launched from any Python thread uses
    ``pydl.get_num_threads()``."""
    want = min(get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)


_start_pool_keeping_openmp()
_set_threads(get_num_threads())  # OMP_NUM_THREADS applies to Numba's pool too
register_thread_hook("numba", _set_threads)

from . import conv, elementwise, gemm, loss, pool, rnn  # noqa: E402,F401  (each registers its family's ops)
from . import attention  # noqa: E402,F401  (scaled_dot_product_attention, multi_head_attention)


def _serialize_if_not_threadsafe() -> None:
    """Numba's ``workqueue`` threading layer (the one left when neither TBB nor a usable
    OpenMP is there: e.g. pip's Numba on macOS, or ``NUMBA_THREADING_LAYER=workqueue``)
    is not thread-safe: two Python threads launching ``parallel=True`` kernels at once
    terminate the process. The ``omp`` and ``tbb`` layers are. Under workqueue every
    numba implementation runs under one lock (a re-entrant one: an implementation may
    dispatch another), so concurrent calls wait instead of aborting."""
    if numba.threading_layer() != "workqueue":
        return
    from ...registry import IMPLS, VARIANTS, register

    lock = threading.RLock()

    def locked(fn):
        @functools.wraps(fn)   # keeps the signature (register looks for ``needs``)
        def call(*args, **kwargs):
            with lock:
                return fn(*args, **kwargs)

        return call

    for key, impls in list(IMPLS.items()):
        if "numba" in impls:
            register(key, "numba")(locked(impls["numba"]))
    for key, per_backend in list(VARIANTS.items()):
        for variant, fn in list(per_backend.get("numba", {}).items()):
            register(key, "numba", variant=variant)(locked(fn))


_serialize_if_not_threadsafe()
