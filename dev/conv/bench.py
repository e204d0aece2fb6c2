"""conv2d benchmark table: every cpp path, cython, numba, PyTorch CPU and a NumPy
im2col+matmul reference, side by side in one process (medians of repeats).

    python dev/conv/bench.py [--batch-div 4] [--repeat 3] [--shapes lenet_c1,resnet_3x3_c64] [--bwd]
                             [--backends cpp,cpp:im2col,...]

GFLOP/s per entry; ratios to torch and to the NumPy reference. The forward flop
count is 2*N*K*OH*OW*C/G*R*S; forward+backward counts 3x that (dx and dW each
cost one forward; db is free).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np
import torch
import torch.nn.functional as F

import pydl
from pydl.ops.conv import BENCH_SHAPES
from pydl.backends.reference.conv import conv2d as np_conv, conv2d_backward as np_conv_bwd

# id -> (N, C, H, W, K, R, stride, padding, groups): the spec's benchmark shapes
SHAPES = BENCH_SHAPES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-div", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--bwd", action="store_true", help="time forward+backward instead of forward")
    ap.add_argument("--backends", default="cpp,cpp:im2col,cpp:implicit,cpp:direct,cython,numba")
    ap.add_argument("--no-numpy", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(pydl.get_num_threads() if hasattr(pydl, "get_num_threads") else 2)
    pydl.backends.load()
    rng = np.random.default_rng(0)
    names = args.backends.split(",")
    print(f"{'shape':10s} {'mode':7s} " + " ".join(f"{n:>13s}" for n in names)
          + f" {'torch':>8s} {'numpy':>8s}   (GFLOP/s; best pydl / torch, / numpy)")
    for sid in args.shapes.split(","):
        n, c, h, w, k, r, st, p, g = SHAPES[sid]
        n = max(1, n // args.batch_div)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((k, c // g, r, r)) / np.sqrt(c // g * r * r)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        hp = dict(stride=st, padding=p, dilation=1, groups=g)
        oh = (h + 2 * p - r) // st + 1
        flops = 2 * n * k * oh * oh * (c // g) * r * r * (3 if args.bwd else 1)
        dy = rng.standard_normal((n, k, oh, oh)).astype(np.float32)
        nhp = dict(stride=(st, st), padding=(p, p), dilation=(1, 1), groups=g)
        fns = {}
        for name in names:
            if args.bwd:
                fns[name] = lambda name=name: (pydl.ops.conv2d(x, wt, b, backend=name, **hp),
                                               pydl.ops.conv2d_backward(dy, x, wt, b, backend=name, **hp))
            else:
                fns[name] = lambda name=name: pydl.ops.conv2d(x, wt, b, backend=name, **hp)
        tx, tw, tb = (torch.from_numpy(a) for a in (x, wt, b))
        if args.bwd:
            tx.requires_grad_(); tw.requires_grad_(); tb.requires_grad_()
            tdy = torch.from_numpy(dy)
            fns["torch"] = lambda: F.conv2d(tx, tw, tb, st, p, 1, g).backward(tdy)
            if not args.no_numpy:
                fns["numpy"] = lambda: (np_conv(x, wt, b, **nhp), np_conv_bwd(dy, x, wt, b, **nhp))
        else:
            def tf():
                with torch.no_grad():
                    F.conv2d(tx, tw, tb, st, p, 1, g)
            fns["torch"] = tf
            if not args.no_numpy:
                fns["numpy"] = lambda: np_conv(x, wt, b, **nhp)
        times = {kk: [] for kk in fns}
        for kk, f in list(fns.items()):  # warm-up (JIT compile, first-touch)
            try:
                f()
            except NotImplementedError as e:
                print(f"  {kk}: {e}")
                del fns[kk]
        for _ in range(args.repeat):  # round-robin: every entry sees the same load swings
            for kk, f in fns.items():
                t = time.perf_counter()
                f()
                times[kk].append(time.perf_counter() - t)
        res = {kk: (flops / statistics.median(v) / 1e9 if v else float("nan")) for kk, v in times.items()}
        res.setdefault("numpy", float("nan"))
        best = max(v for kk, v in res.items() if kk.startswith("cpp") and v == v) if any(
            kk.startswith("cpp") for kk in res) else float("nan")
        auto = res.get("cpp", float("nan"))
        print(f"{sid:10s} {'fwd+bwd' if args.bwd else 'fwd':7s} "
              + " ".join(f"{res[nm]:13.1f}" for nm in names)
              + f" {res['torch']:8.1f} {res['numpy']:8.1f}   cpp {auto / res['torch']:.2f}x torch,"
              f" {auto / res['numpy']:.1f}x numpy (best cpp path {best / res['torch']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
