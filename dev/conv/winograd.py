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

import numpy as np
import torch

import pydl
from pydl import ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _probe import best_of, case  # noqa: E402

torch.set_num_threads(2)
pydl.set_num_threads(2)
F = torch.nn.functional
R = int(os.environ.get("REPS", "7"))
bwd = os.environ.get("BWD") == "1"
paths = os.environ.get("PATHS", "cpp cpp:smallk cpp:winograd").split()
rng = np.random.default_rng(0)
for sh in sys.argv[1:]:
    a = case(sh, rng)

    def mk(be, a=a):
        if bwd:
            return lambda: ops.conv2d_backward(a.dy, a.x, a.w, a.b, stride=a.st, padding=a.pd, backend=be)
        return lambda: ops.conv2d(a.x, a.w, a.b, stride=a.st, padding=a.pd, backend=be)

    def tf(a=a):
        if bwd:
            torch.autograd.grad(F.conv2d(a.tx, a.tw, a.tb, a.st, a.pd), (a.tx, a.tw, a.tb), a.tdy)
        else:
            with torch.no_grad():
                F.conv2d(a.tx, a.tw, a.tb, a.st, a.pd)
    fs = {p: mk(p) for p in paths}
    fs["torch"] = tf
    m = best_of(fs, R)
    print(f"{sh:22s} " + "  ".join(f"{kk} {v:7.3f}" for kk, v in m.items()), flush=True)
