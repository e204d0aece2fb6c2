"""smallk forward lane blocks A/B in one process: automatic vs 1..4 vectors of filters, beside torch.
    PYTHONPATH=. python dev/conv/lanes.py <batch divisor> [threads]     (PYDL_SIMD=avx2 for the AVX2 path)
"""
import sys, time, numpy as np, pydl, torch, torch.nn.functional as F
from pydl import _cpp
from pydl.ops.conv import BENCH_SHAPES as S
pydl.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1); torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
div = int(sys.argv[1]); rng = np.random.default_rng(0)
print("level", _cpp.simd_level())
for sid in ["lenet_c2", "resnet_3x3_c64", "resnet_3x3_c128_s2", "resnet_3x3_c256", "alexnet_c1"]:
    n, c, h, w, k, r, st, p, g = S[sid]; n = max(1, n // div)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32); wt = rng.standard_normal((k, c, r, r)).astype(np.float32); b = rng.standard_normal(k).astype(np.float32)
    oh = (h + 2 * p - r) // st + 1; fl = 2 * n * k * oh * oh * c * r * r
    tx, tw, tb = (torch.from_numpy(a) for a in (x, wt, b))
    cfg = {"auto": 0, "v1": 1, "v2": 2, "v3": 3, "v4": 4}
    ts = {kk: [] for kk in list(cfg) + ["torch"]}
    old = _cpp.conv_set_smallk_block(0)
    for _ in range(7):
        for kk in ts:
            if kk == "torch":
                with torch.no_grad():
                    F.conv2d(tx, tw, tb, st, p); t = time.perf_counter(); F.conv2d(tx, tw, tb, st, p)
            else:
                _cpp.conv_set_smallk_block(cfg[kk], old[1], old[2], old[3])
                pydl.ops.conv2d(x, wt, b, stride=st, padding=p, backend="cpp:smallk")
                t = time.perf_counter(); pydl.ops.conv2d(x, wt, b, stride=st, padding=p, backend="cpp:smallk")
            ts[kk].append(time.perf_counter() - t)
    _cpp.conv_set_smallk_block(*old)
    print(f"{sid:20s} " + "  ".join(f"{kk} {fl / min(v) / 1e9:6.1f}" for kk, v in ts.items()), flush=True)
