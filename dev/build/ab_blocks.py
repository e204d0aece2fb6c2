"""A/B of GEMM cache blocks in one process: the old constants (argv[1] "kc,mc,nc") against the blocks
derived from this machine's caches; argv[2] rounds, argv[3] dtype. OMP_NUM_THREADS sets the threads.
    PYTHONPATH=. python dev/build/ab_blocks.py 256,168,4096 8
    PYDL_SIMD=avx2 PYTHONPATH=. python dev/build/ab_blocks.py 256,144,4096 8
"""
import os, sys, time, numpy as np
from pydl import _cpp
nt = int(os.environ.get("OMP_NUM_THREADS", "1")); _cpp.set_num_threads(nt)
old = tuple(int(x) for x in sys.argv[1].split(","))
reps = int(sys.argv[2]); dt = np.dtype(sys.argv[3] if len(sys.argv) > 3 else "float32")
new = _cpp.gemm_blocks(dt.name)
print("level", _cpp.simd_level(), dt.name, "threads", nt, "old", old, "new", new, flush=True)
rng = np.random.default_rng(0)
fn = getattr(_cpp, "gemm_matmul_" + ("f32" if dt == np.float32 else "f64"))
for (m, k, n) in [(1024,)*3, (2048,)*3, (4096,)*3, (2048, 768, 3072), (256, 4608, 512), (64, 784, 256)]:
    if m == 4096 and nt == 1: continue
    a = rng.standard_normal((m, k)).astype(dt); b = rng.standard_normal((k, n)).astype(dt); out = np.empty((m, n), dt)
    f = 2.0 * m * n * k
    inner = max(1, int(0.1 / (f / 80e9 / nt)))
    res = {"old": [], "new": []}
    for r in range(reps):
        for key, t in (("old", old), ("new", (0, 0, 0))) if r % 2 == 0 else (("new", (0, 0, 0)), ("old", old)):
            _cpp.gemm_tuning(*t)
            fn(a, b, out, "", "")
            t0 = time.perf_counter()
            for _ in range(inner): fn(a, b, out, "", "")
            res[key].append((time.perf_counter() - t0) / inner)
    o, nw = np.array(res["old"]), np.array(res["new"])
    print(f"{m}x{k}x{n}: old {f/o.min()/1e9:6.1f} (med {f/np.median(o)/1e9:6.1f})  new {f/nw.min()/1e9:6.1f} (med {f/np.median(nw)/1e9:6.1f})  "
          f"new/old best {o.min()/nw.min():.3f} med {np.median(o)/np.median(nw):.3f}", flush=True)
