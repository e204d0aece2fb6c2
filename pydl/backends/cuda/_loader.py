"""Loads pydl's CUDA kernels through CuPy.

``kernels/cuda/<family>.cu`` is compiled by NVRTC once per (device, family)
for the device's own architecture (``sm_90a`` on Hopper, so wgmma code can
build) and cached; :func:`launch` runs a kernel on CuPy's current stream and
turns a CUDA failure into an exception that names the kernel.

Template kernels are reached by name expressions: a family declares all of
its instances once (:func:`declare`), so one NVRTC compile per device builds
them all, and ``launch("gemm", "gemm_simt<float, false, false, false, true>", ...)``
finds the mangled name. ``extern "C"`` kernels need no declaration.
Pointers with an element offset are passed as :func:`ptr` (a 64-bit address).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

_PKG = Path(__file__).resolve().parents[2]          # .../pydl
_CACHE: dict[tuple, object] = {}       # (device, family, name expressions) -> RawModule
_FUNCTIONS: dict[tuple, object] = {}   # (device, family, kernel) -> RawKernel
_LOCK = threading.Lock()
_SMEM_SET: dict[tuple, int] = {}  # (device, family, kernel) -> dynamic shared memory limit set
_READY = False
_SYNC = os.environ.get("PYDL_CUDA_SYNC", "") not in ("", "0")
_NAMES: dict[str, tuple[str, ...]] = {}  # family -> its template instances (name expressions)


def cupy_or_raise():
    """CuPy, or a RuntimeError saying why the cuda backend cannot run here."""
    global _READY
    if not _READY:
        from .. import unavailable_reason

        why = unavailable_reason("cuda")
        if why:
            raise RuntimeError(f"pydl's cuda backend cannot run here: {why}")
        _READY = True
    import cupy

    return cupy


def declare(family: str, names) -> None:
    """Declare the template instances (name expressions) ``family``'s kernels use."""
    _NAMES[family] = tuple(dict.fromkeys(_NAMES.get(family, ()) + tuple(names)))


def ptr(a, offset: int = 0):
    """Device address of element ``offset`` of CuPy array ``a`` (or 0 for None), as a kernel argument.
    The caller keeps ``a`` alive until the launch is queued (CuPy frees stream-ordered)."""
    import numpy as np

    return np.uint64(0 if a is None else a.data.ptr + offset * a.itemsize)


def kernel_dir(sub: str = "cuda") -> Path:
    """Where the .cu sources are: inside the installed package (wheels carry
    them as pydl/kernels/...), else the source checkout's kernels/."""
    for root in (_PKG / "kernels", _PKG.parent / "kernels"):
        if (root / sub).is_dir():
            return root / sub
    raise FileNotFoundError(f"pydl CUDA sources not found under {_PKG / 'kernels'} or {_PKG.parent / 'kernels'}")


def arch_option(cc: str) -> str:
    """NVRTC target for compute capability ``cc`` ("90" -> sm_90a)."""
    return f"--gpu-architecture=sm_{cc}{'a' if cc == '90' else ''}"


def nvrtc_options(cc: str) -> tuple[str, ...]:
    """NVRTC options for compute capability ``cc``. ``-default-device``: NVRTC takes the
    call operator of a generic lambda inside a kernel (``[&](auto i) {...}``, how
    ``for_each_index`` picks 32- or 64-bit indices) for a host function without it;
    nvcc needs nothing. dev/cuda/nvrtc_check.py compiles every family with these."""
    return ("-std=c++17", arch_option(cc), "-default-device", f"-I{kernel_dir('common')}")


def module(family: str, name_expressions: tuple[str, ...] | None = None):
    """The compiled ``RawModule`` of ``family`` on the current device (with
    the family's declared name expressions unless others are given)."""
    cupy = cupy_or_raise()
    if name_expressions is None:
        name_expressions = _NAMES.get(family, ())
    dev = cupy.cuda.Device()
    key = (dev.id, family, name_expressions)
    mod = _CACHE.get(key)
    if mod is None:
        with _LOCK:
            mod = _CACHE.get(key)
            if mod is None:
                src = (kernel_dir() / f"{family}.cu").read_text()
                mod = cupy.RawModule(code=src, options=nvrtc_options(dev.compute_capability), name_expressions=name_expressions or None)
                _CACHE[key] = mod
    return mod


def launch(family: str, kernel: str, grid, block, args, shared_mem: int = 0) -> None:
    """Run ``kernel`` (a name or a declared template instance) from ``family``
    on CuPy's current stream, with ``shared_mem`` bytes of dynamic shared
    memory (the kernel's limit is raised past 48 KiB when asked for).
    CUDA errors (compile, launch) become RuntimeError naming the kernel;
    set ``PYDL_CUDA_SYNC=1`` to synchronize after every launch, so that an
    error inside the kernel is reported against it too."""
    cupy = cupy_or_raise()
    try:
        key = (cupy.cuda.Device().id, family, kernel)
        fn = _FUNCTIONS.get(key)
        if fn is None:
            fn = module(family).get_function(kernel)
            _FUNCTIONS[key] = fn
        if shared_mem > 48 * 1024 and _SMEM_SET.get(key, 0) < shared_mem:
            _raise_smem_limit(cupy, fn, shared_mem)
            _SMEM_SET[key] = shared_mem
        fn(tuple(int(g) for g in grid), tuple(int(b) for b in block), tuple(args), shared_mem=shared_mem)
        if _SYNC:
            cupy.cuda.get_current_stream().synchronize()
    except (cupy.cuda.driver.CUDADriverError, cupy.cuda.runtime.CUDARuntimeError,
            cupy.cuda.compiler.CompileException) as e:
        raise RuntimeError(f"CUDA kernel {family}.{kernel} failed: {e}") from e


def _raise_smem_limit(cupy, fn, nbytes: int) -> None:
    """Let ``fn`` use ``nbytes`` of dynamic shared memory (past the default 48 KiB)."""
    try:
        fn.max_dynamic_shared_size_bytes = nbytes
    except AttributeError:  # an older CuPy: set the attribute through the driver
        attr = cupy.cuda.driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        cupy.cuda.driver.funcSetAttribute(fn.kernel.ptr, attr, nbytes)


_SMS: dict[int, int] = {}


def sm_count() -> int:
    """Multiprocessors of the current device (cached per device)."""
    cupy = cupy_or_raise()
    dev = cupy.cuda.Device()
    n = _SMS.get(dev.id)
    if n is None:
        n = _SMS[dev.id] = int(dev.attributes["MultiProcessorCount"])
    return n


def fastdiv_magic(d: int) -> int:
    """The multiplier m of cuda_helpers.cuh DivMod for divisor ``d`` (n / d = umulhi(n, m) >> (l - 1)
    for 0 <= n < 2^31, l = ceil(log2 d)); 0 for d == 1 (no division)."""
    d = int(d)
    if d < 1 or d >= 1 << 31:
        raise ValueError(f"fastdiv_magic: divisor {d} outside [1, 2^31)")
    if d == 1:
        return 0
    l = (d - 1).bit_length()
    return -(-(1 << (31 + l)) // d)


def magic(*divisors):
    """The DivMod multipliers of ``divisors``, as kernel arguments (uint32)."""
    import numpy as np

    return tuple(np.uint32(fastdiv_magic(d)) for d in divisors)


def blocks_for(n: int, threads: int = 256, per_thread: int = 4) -> int:
    """Blocks for a grid-stride loop over ``n`` items (at least 1, at most 65535*32)."""
    return max(1, min((n + threads * per_thread - 1) // (threads * per_thread), 65535 * 32))
