"""Depthwise conv2d (the cpp direct path) against PyTorch in one process: forward, dx alone,
dW alone (the cpp backward with ``needs``) and PyTorch's forward and whole backward.

    python dev/conv/depthwise.py [N C H stride]        (default 4 128 56 1; 3x3, padding 1)

Every call is timed in turn, 30 rounds; best call per entry, ms. Hold everything to AVX2 with
PYDL_SIMD=avx2 ONEDNN_MAX_CPU_ISA=AVX2.
"""
import sys
import time

import numpy as np
import torch

import pydl
from pydl import registry


def main():
    n, c, h, st = [int(v) for v in (sys.argv[1:5] or "4 128 56 1".split())]
    pydl.backends.load()
    torch.set_num_threads(pydl.get_num_threads())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    fwd, bwd = registry.IMPLS["conv2d"]["cpp"], registry.IMPLS["conv2d_backward"]["cpp"]
    kw = dict(stride=(st, st), padding=(1, 1), dilation=(1, 1), groups=c)
    dy = rng.standard_normal(fwd(x, w, b, **kw).shape).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, st, 1, 1, c)
    calls = {
        "fwd": lambda: fwd(x, w, b, **kw),
        "dx": lambda: bwd(dy, x, w, b, needs=(True, False, False), **kw),
        "dw": lambda: bwd(dy, x, w, b, needs=(False, True, False), **kw),
        "torch fwd": lambda: torch.nn.functional.conv2d(tx.detach(), tw.detach(), tb.detach(), st, 1, 1, c),
        "torch bwd": lambda: torch.autograd.grad(ty, (tx, tw, tb), torch.from_numpy(dy), retain_graph=True),
    }
    for f in calls.values():
        f()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(30):
        for k, f in calls.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    print(f"depthwise N{n} C{c} {h}x{h} 3x3 stride {st}: " + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in best.items()) + " ms")


if __name__ == "__main__":
    main()
