"""conv2d paths side by side in one process, against PyTorch: forward, or dx + dW + db with BWD=1,
best of REPS (default 7), two threads each; times in ms. Behind session 15's Winograd figures
(dev/conv/README.md): the sweep of C = K from 32 to 512 on 7x7 to 56x56 planes that set
`winograd_pays`, and the 384-1024-filter layers that moved smallk's limit.

    PYTHONPATH=. python dev/conv/winograd.py "N C H K R stride pad" [...]
    PATHS="cpp:smallk cpp:winograd" ...   the pydl backends to time (default: cpp cpp:smallk cpp:winograd)
    held to AVX2: PYDL_SIMD=avx2 ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=. python dev/conv/winograd.py ...

Run with MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 (README, "Beside
NumPy and PyTorch": fresh outputs otherwise pay page faults beside PyTorch).
"""
import os
import sys
import time

import numpy as np
import torch

import pydl
from pydl import ops

torch.set_num_threads(2)
pydl.set_num_threads(2)
F = torch.nn.functional
R = int(os.environ.get("REPS", "7"))
bwd = os.environ.get("BWD") == "1"
paths = os.environ.get("PATHS", "cpp cpp:smallk cpp:winograd").split()
rng = np.random.default_rng(0)
for sh in sys.argv[1:]:
    n, c, h, k, r, st, pd = map(int, sh.split())
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((k, c, r, r)) / 10).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    oh = (h + 2 * pd - r) // st + 1
    dy = rng.standard_normal((n, k, oh, oh)).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    tdy = torch.from_numpy(dy)

    def mk(be):
        if bwd:
            return lambda: ops.conv2d_backward(dy, x, w, b, stride=st, padding=pd, backend=be)
        return lambda: ops.conv2d(x, w, b, stride=st, padding=pd, backend=be)

    def tf():
        if bwd:
            torch.autograd.grad(F.conv2d(tx, tw, tb, st, pd), (tx, tw, tb), tdy)
        else:
            with torch.no_grad():
                F.conv2d(tx, tw, tb, st, pd)
    fs = {p: mk(p) for p in paths}
    fs["torch"] = tf
    for f in fs.values():
        f()
    ts = {kk: [] for kk in fs}
    for _ in range(R):
        for kk, f in fs.items():
            t = time.perf_counter()
            f()
            ts[kk].append(time.perf_counter() - t)
    m = {kk: min(v) * 1e3 for kk, v in ts.items()}
    print(f"{sh:22s} " + "  ".join(f"{kk} {v:7.3f}" for kk, v in m.items()), flush=True)
