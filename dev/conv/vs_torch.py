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

import numpy as np
import torch

import pydl
from pydl import ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _probe import best_of, case  # noqa: E402

torch.set_num_threads(2)
pydl.set_num_threads(2)
rng = np.random.default_rng(0)
R = int(os.environ.get("REPS", "10"))
F = torch.nn.functional
for sh in sys.argv[1:]:
    a = case(sh, rng)

    def pf(a=a):
        ops.conv2d(a.x, a.w, a.b, stride=a.st, padding=a.pd, backend="cpp")

    def pfb(a=a):
        ops.conv2d(a.x, a.w, a.b, stride=a.st, padding=a.pd, backend="cpp")
        ops.conv2d_backward(a.dy, a.x, a.w, a.b, stride=a.st, padding=a.pd, backend="cpp")

    def tf(a=a):
        with torch.no_grad():
            F.conv2d(a.tx, a.tw, a.tb, a.st, a.pd)

    def tfb(a=a):
        torch.autograd.grad(F.conv2d(a.tx, a.tw, a.tb, a.st, a.pd), (a.tx, a.tw, a.tb), a.tdy)
    m = best_of({"pf": pf, "tf": tf, "pfb": pfb, "tfb": tfb}, R)
    print(f"{sh:22s} fwd {m['pf']:7.3f} / torch {m['tf']:7.3f} = {m['tf'] / m['pf']:.2f}x   "
          f"fwd+bwd {m['pfb']:7.3f} / torch {m['tfb']:7.3f} = {m['tfb'] / m['pfb']:.2f}x", flush=True)
