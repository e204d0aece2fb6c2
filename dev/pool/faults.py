"""How much of a cpp pooling call is the kernel and how much is the first touch of its fresh
outputs (page faults + the kernel's zero-fill of every new 4 KB page; THP is madvise-only here and
NumPy does not madvise): each op timed through pydl (fresh outputs, as users call it) and as the
bare kernel writing into outputs allocated once, in one process, medians of alternating repeats.

    python dev/pool/faults.py [--repeat 11] [--batch 32]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import pydl  # noqa: E402
from pydl import _cpp, registry  # noqa: E402
from pydl.backends.cpp import pool as cpool  # noqa: E402
from pydl.ops.pool import avg_tables  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 64, 112, 112)).astype(np.float32)
    print(f"{'case':22s} {'fwd':>7s} {'fwd kern':>8s} {'bwd':>7s} {'bwd kern':>8s} {'fresh MB':>8s}  (ms)")
    for op, hp in [("max_pool2d", dict(kernel_size=2, stride=2)),
                   ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
                   ("avg_pool2d", dict(kernel_size=2, stride=2)),
                   ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1))]:
        spec = registry.SPECS[op]
        a = spec.normalize(x, **hp)
        fwd, bwd = getattr(pydl.ops, op), getattr(pydl.ops, op + "_backward")
        out, saved = fwd.with_saved(x, **hp, backend="cpp")
        g = rng.standard_normal(out.shape).astype(np.float32)
        gx = np.empty_like(x)
        k, s, p = a["kernel_size"], a["stride"], a["padding"]
        if op == "max_pool2d":
            (hs, hc), (ws, wc) = cpool._max_tables(x.shape[2:], k, s, p, a["dilation"], a["ceil_mode"])
            idx = saved["indices"]
            kf = lambda: _cpp.pool_max_f32(x, out, idx, hs, hc, ws, wc, k, s, p, a["dilation"])  # noqa: E731
            kb = lambda: _cpp.pool_max_backward_f32(g, idx, gx)  # noqa: E731
            fresh = out.nbytes + idx.nbytes + gx.nbytes
        else:
            (hs, hc), (ws, wc), hd, wd = avg_tables(x.shape, k, s, p, a["ceil_mode"], a["count_include_pad"],
                                                    a["divisor_override"], np.float32)
            kf = lambda: _cpp.pool_avg_f32(x, out, hs, hc, ws, wc, hd, wd, k, s, p)  # noqa: E731
            kb = lambda: _cpp.pool_avg_backward_f32(g, gx, hs, hc, ws, wc, hd, wd, k, s, p)  # noqa: E731
            fresh = out.nbytes + gx.nbytes
        fs = {"fwd": lambda: fwd(x, **hp, backend="cpp"), "fwd kern": kf,
              "bwd": lambda: bwd(g, x, **hp, saved=saved, backend="cpp"), "bwd kern": kb}
        ts = {n: [] for n in fs}
        for r in range(args.repeat + 1):
            for n, f in fs.items():
                t = time.perf_counter()
                f()
                if r:
                    ts[n].append(time.perf_counter() - t)
        label = f"{op[:3]} {k[0]}x{k[1]}/{s[0]}" + (f" p{p[0]}" if p[0] else "")
        print(f"{label:22s} " + " ".join(f"{1e3 * np.median(ts[n]):{max(7, len(n))}.2f}" for n in fs)
              + f" {fresh / 1e6:8.0f}")


if __name__ == "__main__":
    main()
