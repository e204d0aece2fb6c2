"""Memory soak (issue 14, item 5): every op with a native kernel, forward and backward, many
times on random shapes, with the process's resident memory measured before and after.

Each iteration picks a random case of the op's conformance cases (shapes with 1s, primes,
empty dimensions), draws fresh random values, and runs the forward (saving what the
backward needs) and the backward on one of the op's native backends (cpp, cython, numba,
round robin), dtype float32 or float64 at random. A leak in a native module, a workspace
that is never freed, a Numba cache that recompiles per shape or a registry cache that
grows per call shows up as resident memory that keeps growing after the warm-up (one pass
over every case on every backend, which loads and compiles everything).

``python tests/soak.py --iters 10000`` (``make soak``) is the long run; tests/test_soak.py
runs a short one.
"""
from __future__ import annotations

import gc
import sys
import time

import numpy as np

from pydl import backends, registry

NATIVE = ("cpp", "cython", "numba")


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def native_ops() -> dict[str, list[str]]:
    """op name -> the native backends implementing its forward and backward."""
    backends.load()
    out = {}
    for name in sorted(registry.SPECS):
        fwd, bwd = registry.IMPLS.get(name, {}), registry.IMPLS.get(name + "_backward", {})
        have = [b for b in NATIVE if b in fwd and b in bwd]
        if have:
            out[name] = have
    return out


def _fresh(args: dict, rng, dtype) -> dict:
    """The case's arguments with their float values shuffled into new arrays of ``dtype``: new
    data each step, but from the case's own values, so an argument with a domain (BCE's
    probabilities, a Gaussian NLL's variances) stays in it (targets and integer arrays kept)."""
    out = {}
    for k, v in args.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            v = v.astype(dtype) if k == "target" else rng.permutation(v.ravel()).reshape(v.shape).astype(dtype)
        out[k] = v
    return out


def _step(spec, args, backend, rng, dtype):
    a = _fresh(args, rng, dtype)
    with np.errstate(all="ignore"):
        out, saved = spec.with_saved(**a, backend=backend)
        outs = out if spec.outputs > 1 else (out,)
        g = tuple(rng.standard_normal(o.shape).astype(dtype) for o in outs)
        spec.backward(g if spec.outputs > 1 else g[0], **a, saved=saved, backend=backend)


def soak(iters: int, seed: int = 0, ops=None, log=None, max_cases=None) -> dict:
    """Warm up (every case of every op on every native backend, both dtypes), then
    ``iters`` random forward+backward steps per op. ``max_cases`` keeps each op's first
    cases only (the short run). Returns the RSS figures in bytes and the step count."""
    rng = np.random.default_rng(seed)
    table = native_ops()
    if ops is not None:
        table = {k: v for k, v in table.items() if k in ops}
    cases = {(name, dt): registry.SPECS[name].cases(np.random.default_rng(1), np.dtype(dt))[:max_cases]
             for name in table for dt in ("float32", "float64")}
    for (name, dt), cs in cases.items():
        for b in table[name]:
            for c in cs:
                _step(registry.SPECS[name], c.args, b, rng, dt)
    gc.collect()
    start = rss_bytes()
    t0, steps = time.perf_counter(), 0
    for name, bs in table.items():
        spec = registry.SPECS[name]
        for i in range(iters):
            dt = ("float32", "float64")[int(rng.integers(2))]
            cs = cases[(name, dt)]
            _step(spec, cs[int(rng.integers(len(cs)))].args, bs[i % len(bs)], rng, dt)
            steps += 1
        if log:
            gc.collect()
            log(f"{name:>22} {iters} steps on {','.join(bs)}: RSS {rss_bytes() / 2 ** 20:.1f} MiB")
    gc.collect()
    end = rss_bytes()
    return dict(start=start, end=end, growth=(end - start) / start, steps=steps,
                seconds=time.perf_counter() - t0, ops=len(table))


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="pydl memory soak: every native op forward+backward")
    ap.add_argument("--iters", type=int, default=10000, help="random steps per op after the warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth after warm-up")
    opts = ap.parse_args(argv)
    r = soak(opts.iters, opts.seed, log=lambda s: print(s, flush=True))
    print(f"{r['steps']} steps over {r['ops']} ops in {r['seconds']:.0f} s: RSS "
          f"{r['start'] / 2 ** 20:.1f} -> {r['end'] / 2 ** 20:.1f} MiB after warm-up "
          f"({100 * r['growth']:+.2f}%, limit {100 * opts.max_growth:.0f}%)")
    return 0 if r["growth"] < opts.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
