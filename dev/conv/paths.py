"""Per-path conv2d timing on ONE thread (pydl and torch both), min of 5 round-robin repeats:
    python dev/conv/paths.py <batch divisor> <fwd|bwd> <backends,comma-separated> [shapes]
bwd times conv2d_backward alone, counted as 2x the forward flops (dx, dW); torch's
autograd.grad of one conv2d includes its forward and is counted as 3x."""
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import time, numpy as np, pydl, torch, torch.nn.functional as F, sys
pydl.backends.load(); pydl.set_num_threads(1); torch.set_num_threads(1)
from pydl.ops.conv import BENCH_SHAPES as S  # id -> (N, C, H, W, K, R, stride, padding, groups)
div = int(sys.argv[1]); bwd = sys.argv[2] == "bwd"; names = sys.argv[3].split(","); shapes = sys.argv[4].split(",") if len(sys.argv) > 4 else list(S)
rng = np.random.default_rng(0)
for sid in shapes:
    n, c, h, w, k, r, st, p, g = S[sid]; n = max(1, n // div)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32); wt = rng.standard_normal((k, c // g, r, r)).astype(np.float32); b = rng.standard_normal(k).astype(np.float32)
    oh = (h + 2 * p - r) // st + 1; dy = rng.standard_normal((n, k, oh, oh)).astype(np.float32)
    fl = 2 * n * k * oh * oh * (c // g) * r * r * (3 if bwd else 1)
    fns = {}
    for nm in names:
        fns[nm] = (lambda nm=nm: pydl.ops.conv2d_backward(dy, x, wt, b, stride=st, padding=p, groups=g, backend=nm)) if bwd else (lambda nm=nm: pydl.ops.conv2d(x, wt, b, stride=st, padding=p, groups=g, backend=nm))
    tx, tw, tb = (torch.from_numpy(a).requires_grad_(bwd) for a in (x, wt, b))
    if bwd:
        fns["torch"] = lambda: torch.autograd.grad(F.conv2d(tx, tw, tb, st, p, 1, g), (tx, tw, tb), torch.from_numpy(dy))
    else:
        def tf():
            with torch.no_grad(): F.conv2d(tx, tw, tb, st, p, 1, g)
        fns["torch"] = tf
    ts = {kk: [] for kk in fns}
    for f in fns.values(): f()
    for _ in range(5):
        for kk, f in fns.items():
            t = time.perf_counter(); f(); ts[kk].append(time.perf_counter() - t)
    # pydl bwd = dx + dW (2x the forward flops); torch's autograd.grad runs forward + backward (3x)
    work = {kk: (fl if (not bwd or kk == "torch") else fl * 2 / 3) for kk in ts}
    print(f"{sid:10s} n{n:<3d} " + "  ".join(f"{kk}={work[kk] / min(v) / 1e9:6.1f}" for kk, v in ts.items()), flush=True)
