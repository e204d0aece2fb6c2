"""What the probes of this folder share: the inputs of a "N C H K R stride pad" shape (NumPy arrays,
and PyTorch tensors over the same memory) and interleaved best-of timing."""
import time
from types import SimpleNamespace

import numpy as np


def case(sh, rng, tensors=True):
    """x, w, b, dy (float32 NumPy), stride st, padding pd, output side oh, the shape's n, c, h, k, r;
    with `tensors` also tx, tw, tb (leaf tensors) and tdy (PyTorch imported only then: ab.py times
    two pydl builds without it in the process)."""
    n, c, h, k, r, st, pd = map(int, sh.split())
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((k, c, r, r)) / 10).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    oh = (h + 2 * pd - r) // st + 1
    dy = rng.standard_normal((n, k, oh, oh)).astype(np.float32)
    a = SimpleNamespace(x=x, w=w, b=b, dy=dy, st=st, pd=pd, oh=oh, n=n, c=c, h=h, k=k, r=r)
    if tensors:
        import torch

        a.tx, a.tw, a.tb = (torch.from_numpy(v).requires_grad_() for v in (x, w, b))
        a.tdy = torch.from_numpy(dy)
    return a


def best_of(fs, reps):
    """{name: best time in ms} of the callables in fs, called in turn reps times (after one warm-up
    call each): a busy machine slows them alike."""
    for f in fs.values():
        f()
    ts = {k: [] for k in fs}
    for _ in range(reps):
        for k, f in fs.items():
            t = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t)
    return {k: min(v) * 1e3 for k, v in ts.items()}
