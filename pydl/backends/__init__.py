"""Backends: ``numpy`` (the reference), ``cpp``, ``cython``, ``numba``, ``cuda``.

Each backend is a package ``pydl.backends.<name>`` with one module per op
family; importing it registers its implementations. A backend loads when
dispatch first looks at it, not at ``import pydl``, so optional
dependencies (Numba, CuPy) cost nothing until used. A backend that fails to load is recorded
with the reason, which :func:`available` reports.
"""
from __future__ import annotations

import importlib
import os
import threading

from ..registry import BACKENDS
from . import _neighbours

_neighbours.quiet_openmp()  # before any backend loads libgomp

# backend name -> package under pydl.backends
_PACKAGES = {"numpy": "reference", "cpp": "cpp", "cython": "cython", "numba": "numba", "cuda": "cuda"}
_LOCK = threading.RLock()
_LOADED: set[str] = set()
_ERRORS: dict[str, str] = {}
_THREAD_HOOKS: dict[str, callable] = {}
_NUM_THREADS: int | None = None


def load(name: str | None = None) -> None:
    """Import backend ``name`` (every backend when None) once; remember why one failed.

    Dispatch loads only the backends it looks at, so ``backend="numpy"`` never
    imports Numba and CuPy is imported only for CuPy arrays.
    """
    for b in BACKENDS if name is None else (name,):
        if b in _LOADED:
            continue
        with _LOCK:
            if b in _LOADED:
                continue
            try:
                importlib.import_module(f"{__name__}.{_PACKAGES[b]}")
            except Exception as e:  # an optional backend must never break import
                _ERRORS[b] = f"{type(e).__name__}: {e}"
            _LOADED.add(b)


def _cuda_reason() -> str | None:
    try:
        import cupy
    except Exception as e:
        return f"CuPy is not installed ({type(e).__name__}: {e}); pip install 'pydl[cuda]'"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"no usable CUDA device ({type(e).__name__}: {e})"
    return None if n > 0 else "no CUDA device found"


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None if it can."""
    load(name)
    if name in _ERRORS:
        return _ERRORS[name]
    if name == "cuda":
        return _cuda_reason()
    return None


def available() -> dict[str, dict]:
    """Every backend: ``{"available": bool, "reason": str, "ops": int}``."""
    from ..registry import IMPLS

    load()
    out = {}
    for name in BACKENDS:
        why = unavailable_reason(name)
        n_ops = sum(1 for key, impls in IMPLS.items() if name in impls and not key.endswith("_backward"))
        out[name] = {"available": why is None, "reason": why or "ok", "ops": n_ops}
    return out


def register_thread_hook(backend: str, hook) -> None:
    """``hook(n)`` sets the thread count of ``backend``'s runtime."""
    _THREAD_HOOKS[backend] = hook
    if _NUM_THREADS is not None:
        hook(_NUM_THREADS)


def set_num_threads(n: int) -> None:
    """Threads for every CPU backend (OpenMP in cpp/cython, Numba's pool)."""
    global _NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected an int >= 1, got {n!r}")
    _NUM_THREADS = n
    for hook in list(_THREAD_HOOKS.values()):
        hook(n)


def _solo_threads():
    """pydl's thread count set to 1 for one kernel (every backend's runtime), and the function
    that puts it back as it was (None included: the defaults again). For _neighbours, which
    uses it only when the calling thread is the only Python thread."""
    global _NUM_THREADS
    before, n = _NUM_THREADS, get_num_threads()
    _NUM_THREADS = 1
    for hook in list(_THREAD_HOOKS.values()):
        hook(1)

    def restore():
        global _NUM_THREADS
        _NUM_THREADS = before
        for hook in list(_THREAD_HOOKS.values()):
            hook(n)
    return restore


def get_num_threads() -> int:
    """The thread count set by :func:`set_num_threads`, else OMP_NUM_THREADS, else the CPU count."""
    if _NUM_THREADS is not None:
        return _NUM_THREADS
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
