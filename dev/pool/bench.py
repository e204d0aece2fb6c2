"""Pooling benchmark: GB/s forward and forward+backward per backend, % of copy bandwidth, ratio
to PyTorch CPU, side by side in one process (medians of repeats).

    python dev/pool/bench.py [--backends cpp,cython,numba] [--batch 32] [--repeat 7]

Bytes, the same rule for every row and for both columns: forward = input read + output written
(+ int64 indices written, max); backward = grad read + gx written (+ indices read, max);
fwd+bwd GB/s = (forward + backward bytes) / (forward + backward time).

Two copy references: "copy" is np.copyto into an array written before (no page faults);
"fresh copy" is np.copy, whose destination is new memory: the kernel maps and zero-fills each
4 KB page on first touch (THP is madvise-only and NumPy does not madvise). Every pooling call,
pydl's and torch's, returns fresh arrays and pays that too (dev/pool/faults.py measures how
much); "%fcopy" is the f+b rate against the fresh copy.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import pydl  # noqa: E402  (this checkout's pydl, not an installed one)
from pydl import registry  # noqa: E402


STAT = np.median


def median_time(f, repeat):
    """STAT (median; --best: min) of repeat timings after a warm-up call."""
    f()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(STAT(ts))


def copy_gbps(repeat):
    """(copy into a warm destination, copy into a fresh one), GB/s read + write, 256 MiB"""
    a = np.random.default_rng(0).standard_normal(2 ** 26).astype(np.float32)
    b = np.empty_like(a)
    t = median_time(lambda: np.copyto(b, a), repeat)
    tf = median_time(lambda: np.copy(a), repeat)
    return 2 * a.nbytes / t / 1e9, 2 * a.nbytes / tf / 1e9


def shapes(batch):
    return [
        ("max_pool2d", "N%d C64 112 2x2/2" % batch, (batch, 64, 112, 112), dict(kernel_size=2, stride=2)),
        ("max_pool2d", "N%d C64 112 3x3/2 p1" % batch, (batch, 64, 112, 112),
         dict(kernel_size=3, stride=2, padding=1)),
        ("avg_pool2d", "N%d C64 112 2x2/2" % batch, (batch, 64, 112, 112), dict(kernel_size=2, stride=2)),
        ("avg_pool2d", "N%d C64 112 3x3/2 p1" % batch, (batch, 64, 112, 112),
         dict(kernel_size=3, stride=2, padding=1)),
        ("adaptive_avg_pool2d", "N%d C512 7 -> 1" % batch, (batch, 512, 7, 7), dict(output_size=1)),
        ("adaptive_avg_pool2d", "N%d C64 56 -> 7" % batch, (batch, 64, 56, 56), dict(output_size=7)),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="cpp,cython,numba")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", type=int, default=0, help="pydl and torch threads (0: pydl's default)")
    ap.add_argument("--best", action="store_true",
                    help="report the fastest repeat instead of the median (a loaded, shared machine)")
    args = ap.parse_args()
    global STAT
    STAT = np.min if args.best else np.median
    import torch
    import torch.nn.functional as F
    if args.threads:
        pydl.set_num_threads(args.threads)
    torch.set_num_threads(pydl.get_num_threads())
    copy, fcopy = copy_gbps(args.repeat)
    print(f"copy bandwidth (256 MiB, 1 thread): np.copyto {copy:.1f} GB/s, into fresh memory (np.copy) "
          f"{fcopy:.1f} GB/s   torch threads {torch.get_num_threads()}")
    print(f"{'op':20s} {'shape':24s} {'backend':8s} {'fwd ms':>8s} {'GB/s':>6s} {'%copy':>6s} {'xtorch':>6s}"
          f" {'f+b ms':>8s} {'GB/s':>6s} {'%copy':>6s} {'%fcopy':>6s} {'xtorch':>6s}")
    rng = np.random.default_rng(0)
    for op, label, xs, hp in shapes(args.batch):
        if args.only and args.only not in op:
            continue
        spec = registry.SPECS[op]
        x = rng.standard_normal(xs).astype(np.float32)
        a = spec.normalize(x, **hp)
        fwd_bytes = spec.nbytes(a)
        out_n = int(np.prod(spec.out_shape(a)))
        # backward: read grad (+ indices for max), write gx
        bwd_bytes = out_n * 4 + x.nbytes + (out_n * 8 if op == "max_pool2d" else 0)
        g = rng.standard_normal(spec.out_shape(a)).astype(np.float32)
        fwd = getattr(pydl.ops, op)
        bwd = getattr(pydl.ops, op + "_backward")
        tx = torch.from_numpy(x).requires_grad_(True)
        tg = torch.from_numpy(g)
        tf = {"max_pool2d": lambda: F.max_pool2d(tx, **hp), "avg_pool2d": lambda: F.avg_pool2d(tx, **hp),
              "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(tx, **hp)}[op]
        with torch.no_grad():
            t_fwd = median_time(tf, args.repeat)

        def tfb():
            tx.grad = None
            tf().backward(tg)
        t_fb = median_time(tfb, args.repeat)
        rows = [("torch", t_fwd, t_fb)]
        for b in args.backends.split(","):
            def f():
                return fwd(x, **hp, backend=b)

            def fb():
                out, saved = fwd.with_saved(x, **hp, backend=b)
                return bwd(g, x, **hp, saved=saved, backend=b)
            rows.append((b, median_time(f, args.repeat), median_time(fb, args.repeat)))
        for b, tf_, tfb_ in rows:
            gf = fwd_bytes / tf_ / 1e9
            gfb = (fwd_bytes + bwd_bytes) / tfb_ / 1e9
            print(f"{op:20s} {label:24s} {b:8s} {tf_*1e3:8.2f} {gf:6.1f} {100*gf/copy:5.0f}% {t_fwd/tf_:6.2f}"
                  f" {tfb_*1e3:8.2f} {gfb:6.1f} {100*gfb/copy:5.0f}% {100*gfb/fcopy:5.0f}% {t_fb/tfb_:6.2f}")


if __name__ == "__main__":
    main()
