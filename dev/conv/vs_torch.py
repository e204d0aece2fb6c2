"""conv2d forward and forward+backward, pydl (cpp, automatic path) against PyTorch in one process,
interleaved, best of REPS (default 10), two threads each; times in ms and ratio (PyTorch / pydl).

    PYTHONPATH=. python dev/conv/vs_torch.py "N C H K R stride pad" [...]
    held to AVX2: PYDL_SIMD=avx2 ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=. python dev/conv/vs_torch.py ...

Beside PyTorch, glibc may return freed memory to the system between calls, and each new output is
then faulted in again (both libraries pay it; README, "Beside NumPy and PyTorch"). The session-14
figures were taken with MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000.
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
rng = np.random.default_rng(0)
R = int(os.environ.get("REPS", "10"))
F = torch.nn.functional
for sh in sys.argv[1:]:
    n, c, h, k, r, st, pd = map(int, sh.split())
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((k, c, r, r)) / 10).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    oh = (h + 2 * pd - r) // st + 1
    dy = rng.standard_normal((n, k, oh, oh)).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    tdy = torch.from_numpy(dy)

    def pf():
        ops.conv2d(x, w, b, stride=st, padding=pd, backend="cpp")

    def pfb():
        ops.conv2d(x, w, b, stride=st, padding=pd, backend="cpp")
        ops.conv2d_backward(dy, x, w, b, stride=st, padding=pd, backend="cpp")

    def tf():
        with torch.no_grad():
            F.conv2d(tx, tw, tb, st, pd)

    def tfb():
        torch.autograd.grad(F.conv2d(tx, tw, tb, st, pd), (tx, tw, tb), tdy)
    fs = {"pf": pf, "tf": tf, "pfb": pfb, "tfb": tfb}
    for f in fs.values():
        f()
    ts = {kk: [] for kk in fs}
    for _ in range(R):
        for kk, f in fs.items():
            t = time.perf_counter()
            f()
            ts[kk].append(time.perf_counter() - t)
    m = {kk: min(v) * 1e3 for kk, v in ts.items()}
    print(f"{sh:22s} fwd {m['pf']:7.3f} / torch {m['tf']:7.3f} = {m['tf'] / m['pf']:.2f}x   "
          f"fwd+bwd {m['pfb']:7.3f} / torch {m['tfb']:7.3f} = {m['tfb'] / m['pfb']:.2f}x", flush=True)
