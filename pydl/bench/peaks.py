"""Measured machine peaks: the roofs every kernel is compared with.

CPU: the FP32 FMA rate (``pydl._cpp.fma_peak``: independent FMA chains in
zmm and ymm registers, one thread and all threads), the copy bandwidth
(``np.copyto`` of 256 MiB, read + write bytes counted, best of several) and the
read bandwidth (a native streaming sum of 256 MiB on all threads).
GPU (CuPy and a device present): device copy bandwidth and the cuBLAS GEMM
rate (CuPy ``@``, fp32 and bf16 when CuPy can make bf16), timed with CUDA
events.

Peaks are cached per machine in ``~/.cache/pydl/peaks-<key>.json``; the key
hashes the CPU model, the core count and the pydl and NumPy versions, so a
new machine or release measures again. ``refresh=True`` (``pydl bench
--refresh-peaks``) measures regardless.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

COPY_BYTES = 256 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("PYDL_CACHE_DIR") or Path.home() / ".cache" / "pydl")


def machine_key() -> dict:
    """What the cached peaks depend on: the CPU, the pydl and NumPy versions, and how this process
    runs it: the SIMD level of the native module in use (PYDL_SIMD=avx2 on an AVX-512 CPU has the
    AVX2 roof; a cache of the unheld run would give it the AVX-512 one) and pydl's thread count."""
    import pydl
    from pydl import backends
    from pydl.machine import cpu_model

    try:
        from pydl import _cpp

        simd = _cpp.compiled_simd()
    except ImportError:
        simd = None
    return {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "pydl": pydl.__version__, "numpy": np.__version__, "simd": simd,
            "threads": backends.get_num_threads()}


def cache_path(key: dict | None = None) -> Path:
    key = key or machine_key()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"peaks-{digest}.json"


def fma_peak(simd: str, threads: int, seconds: float = 0.2) -> float:
    """GFLOP/s of the FMA probe: best of 3 runs of about ``seconds`` each."""
    from pydl import _cpp

    iters = 1 << 16
    flops, t, _ = _cpp.fma_peak(simd, iters, threads)
    while t < seconds / 4:  # scale the work up to the wanted duration
        iters = int(iters * max(2.0, seconds / max(t, 1e-6)))
        flops, t, _ = _cpp.fma_peak(simd, iters, threads)
    best = flops / t
    for _ in range(2):
        flops, t, _ = _cpp.fma_peak(simd, iters, threads)
        best = max(best, flops / t)
    return best / 1e9


def copy_bandwidth(nbytes: int = COPY_BYTES, repeats: int = 5) -> float:
    """GB/s of ``np.copyto`` (bytes read + bytes written), best of ``repeats``."""
    src = np.random.default_rng(0).standard_normal(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def read_bandwidth(threads: int, nbytes: int = COPY_BYTES, repeats: int = 5) -> float:
    """GB/s of a streaming sum over ``nbytes`` split between ``threads`` threads, best of
    ``repeats``: the roof of read-only kernels (a GEMV reads its matrix once, writes ~nothing)."""
    from pydl import _cpp

    x = np.random.default_rng(0).standard_normal(nbytes // 4, dtype=np.float32)
    best = np.inf
    for _ in range(repeats):
        nb, t, _ = _cpp.read_peak(x, threads)
        best = min(best, t)
    return nb / best / 1e9


def measure_cpu() -> dict:
    from pydl import backends

    threads = backends.get_num_threads()
    out = {"threads": threads, "copy_gbps": copy_bandwidth(), "fma_gflops": {}}
    try:
        from pydl import _cpp

        compiled = _cpp.compiled_simd()
    except ImportError as e:
        out["fma_error"] = f"pydl._cpp missing ({e}): no FMA peak"
        return out
    out["read_gbps"] = read_bandwidth(threads)
    levels = {"avx512": ["avx512", "avx2"], "avx2": ["avx2"]}.get(compiled, [])
    for simd in levels:
        for n in sorted({1, threads}):
            out["fma_gflops"][f"{simd}_{n}t"] = fma_peak(simd, n)
    if levels:
        out["fma_best_simd"] = levels[0]
        # all threads can do no less than one: on a busy machine the all-thread
        # probe can lose its second core, and the roof must not drop under it
        out["compute_gflops"] = max(out["fma_gflops"][f"{levels[0]}_{n}t"] for n in {1, threads})
    return out


def _cuda_time(fn, repeats: int) -> float:
    """Median seconds of ``fn`` on the current stream, CUDA events around each call."""
    import cupy as cp

    fn()
    cp.cuda.get_current_stream().synchronize()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def measure_gpu(copy_bytes: int = 1 << 30, gemm_n: int = 4096, repeats: int = 10) -> dict | None:
    """Device copy bandwidth and cuBLAS GEMM rates; None without CuPy or a device."""
    try:
        import cupy as cp

        if cp.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    props = cp.cuda.runtime.getDeviceProperties(0)
    out = {"name": props["name"].decode(), "cc": f"{props['major']}.{props['minor']}",
           "sms": props["multiProcessorCount"], "gemm_n": gemm_n}
    src = cp.ones(copy_bytes // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    t = _cuda_time(lambda: cp.copyto(dst, src), repeats)
    out["copy_gbps"] = 2 * copy_bytes / t / 1e9
    del src, dst
    rates = {}
    dtypes = [("fp32", cp.float32)]
    try:
        import ml_dtypes  # CuPy's bf16 arrays come through ml_dtypes' numpy dtype

        dtypes.append(("bf16", ml_dtypes.bfloat16))
    except ImportError:
        out["bf16_error"] = "ml_dtypes missing: no bf16 GEMM rate"
    for name, dt in dtypes:
        try:
            a = cp.random.standard_normal((gemm_n, gemm_n), dtype=cp.float32).astype(dt)
            b = cp.random.standard_normal((gemm_n, gemm_n), dtype=cp.float32).astype(dt)
            t = _cuda_time(lambda: a @ b, repeats)
            rates[name] = 2 * gemm_n**3 / t / 1e9
        except Exception as e:  # e.g. a CuPy without bf16 matmul
            out[f"{name}_error"] = f"{type(e).__name__}: {e}"
    out["gemm_gflops"] = rates
    return out


def peaks(refresh: bool = False, gpu: bool = True, verbose: bool = True) -> dict:
    """The cached peaks of this machine, measured first when missing or ``refresh``."""
    key = machine_key()
    path = cache_path(key)
    if not refresh and path.is_file():
        try:
            d = json.loads(path.read_text())
            if d.get("key") == key:
                if gpu and d.get("gpu") is None:  # cached by a CPU-only run: add the GPU's peaks
                    d["gpu"] = measure_gpu()
                    if d["gpu"] is not None:
                        path.write_text(json.dumps(d, indent=2))
                d["cached"] = str(path)
                return d
        except (OSError, ValueError):
            pass
    if verbose:
        import sys

        print("measuring machine peaks (FMA rate, copy bandwidth; cached in "
              f"{path})...", file=sys.stderr, flush=True)
    d = {"key": key, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         # a load average above the core count means other processes shared the cores:
         # the peaks are then low; measure again on a quiet machine (--refresh-peaks)
         "loadavg": [round(x, 2) for x in os.getloadavg()],
         "cpu": measure_cpu(), "gpu": measure_gpu() if gpu else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=2))
    tmp.replace(path)
    d["cached"] = None
    return d
