"""One timer for every runtime: warm-up outside the clock, repeats until a
time budget, inputs rotated among copies, median and quartiles.

CPU calls are timed with ``time.perf_counter`` around each call; GPU calls
with CUDA events recorded on the current stream around each call (the host
waits for the stop event, so queued work never leaks into the next sample).
"""
from __future__ import annotations

import time

import numpy as np


def l3_bytes() -> int:
    """The last-level cache size (Linux sysfs), 32 MiB when unknown."""
    try:
        for idx in range(5, -1, -1):
            base = f"/sys/devices/system/cpu/cpu0/cache/index{idx}/"
            with open(base + "level") as f:
                if f.read().strip() != "3":
                    continue
            with open(base + "size") as f:
                s = f.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1], 1)
            return int(s.rstrip("KMG")) * mult
    except (OSError, ValueError):
        pass
    return 32 << 20


def rotation_copies(input_bytes: int, cap: int = 64) -> int:
    """How many copies of a case's inputs to cycle through so that the set
    exceeds twice the last-level cache: a small case then reads from memory
    on every call, as it would inside a real network, not from a warm cache."""
    if input_bytes <= 0:
        return 1
    return int(max(1, min(cap, -(-2 * l3_bytes() // input_bytes))))


def summarize(times) -> dict:
    t = np.asarray(times, dtype=np.float64)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"median_s": float(med), "q1_s": float(q1), "q3_s": float(q3),
            "iqr_s": float(q3 - q1), "min_s": float(t.min()), "repeats": int(t.size)}


def time_calls(fn, copies: int, budget: float, min_repeats: int = 3, max_repeats: int = 2000,
               warmup: int = 1, device: str = "cpu") -> list[float]:
    """Seconds of each timed call ``fn(k)`` (k cycles over ``copies``).

    ``warmup`` calls first (JIT compiles, first-touch page faults, thread
    pool start) outside the clock; then calls until ``budget`` seconds of
    wall time have passed and at least ``min_repeats`` calls were timed."""
    for i in range(warmup):
        fn(i % copies)
    if device == "cuda":
        return _time_cuda(fn, copies, budget, min_repeats, max_repeats)
    times = []
    start = time.perf_counter()
    i = 0
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < budget):
        k = i % copies
        t0 = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t0)
        i += 1
    return times


def _time_cuda(fn, copies, budget, min_repeats, max_repeats):
    import cupy as cp

    stream = cp.cuda.get_current_stream()
    stream.synchronize()
    begin, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    start = time.perf_counter()
    i = 0
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < budget):
        begin.record(stream)
        fn(i % copies)
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(begin, end) / 1e3)
        i += 1
    return times
