"""Loads pydl's CUDA kernels through CuPy.

``kernels/cuda/<family>.cu`` is compiled by NVRTC once per (device, family)
for the device's own architecture (``sm_90a`` on Hopper, so wgmma code can
build) and cached; :func:`launch` runs a kernel on CuPy's current stream and
turns a CUDA failure into an exception that names the kernel.
"""
from __future__ import annotations

import threading
from pathlib import Path

_PKG = Path(__file__).resolve().parents[2]          # .../pydl
_CACHE: dict[tuple, object] = {}       # (device, family, name expressions) -> RawModule
_FUNCTIONS: dict[tuple, object] = {}   # (device, family, kernel) -> RawKernel
_LOCK = threading.Lock()


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


def module(family: str, name_expressions: tuple[str, ...] = ()):
    """The compiled ``RawModule`` of ``family`` on the current device."""
    import cupy

    dev = cupy.cuda.Device()
    key = (dev.id, family, name_expressions)
    mod = _CACHE.get(key)
    if mod is None:
        with _LOCK:
            mod = _CACHE.get(key)
            if mod is None:
                src = (kernel_dir() / f"{family}.cu").read_text()
                opts = ("-std=c++17", arch_option(dev.compute_capability), f"-I{kernel_dir('common')}")
                mod = cupy.RawModule(code=src, options=opts, name_expressions=name_expressions or None)
                _CACHE[key] = mod
    return mod


def launch(family: str, kernel: str, grid, block, args, shared_mem: int = 0) -> None:
    """Run ``kernel`` from ``family`` on CuPy's current stream."""
    import cupy

    try:
        key = (cupy.cuda.Device().id, family, kernel)
        fn = _FUNCTIONS.get(key)
        if fn is None:
            fn = _FUNCTIONS[key] = module(family).get_function(kernel)
        fn(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)
    except (cupy.cuda.driver.CUDADriverError, cupy.cuda.runtime.CUDARuntimeError,
            cupy.cuda.compiler.CompileException) as e:
        raise RuntimeError(f"CUDA kernel {family}.{kernel} failed: {e}") from e


def blocks_for(n: int, threads: int = 256, per_thread: int = 4) -> int:
    """Blocks for a grid-stride loop over ``n`` items (at least 1, at most 65535*32)."""
    return max(1, min((n + threads * per_thread - 1) // (threads * per_thread), 65535 * 32))
