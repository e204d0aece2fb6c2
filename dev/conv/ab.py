"""conv2d A/B of two builds in one process: this checkout's module (pydl._cpp_<level>) against a
second build of the same level loaded from a file, alternated call by call (a busy machine slows
both alike), best of REPS (default 15); outputs of the forward compared.

    PYTHONPATH=. python dev/conv/ab.py OTHER.so LEVEL "N C H K R stride pad" [...]
    BWD=1 ...      conv2d_backward (dx, dW, db) instead of the forward
    PATH_ID=0 ...  the automatic path (default 5: smallk; CONV_PATHS names them)
    TH=1 ...       threads (default 2)

B/A speed > 1: the other build is faster. A control run with OTHER.so a copy of this checkout's
module reads 1.00 (session 14).
"""
import os
import sys
import time

import numpy as np

import pydl

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.join(here, "..", "build")]
from _probe import case  # noqa: E402
from two_builds import pair  # noqa: E402

pydl.backends.load()
other, lv = sys.argv[1], sys.argv[2]
A, B = pair(other, lv, int(os.environ.get("TH", "2")))
for m in (A, B):
    m.set_cache_sizes(48 * 1024, 1 << 20, 16 << 20)  # the same blocks for both
path_id = int(os.environ.get("PATH_ID", "5"))
bwd = os.environ.get("BWD") == "1"
reps = int(os.environ.get("REPS", "15"))
rng = np.random.default_rng(0)
for sh in sys.argv[3:]:
    a = case(sh, rng, tensors=False)
    x, w, b, dy, st, pd, oh = a.x, a.w, a.b, a.dy, a.st, a.pd, a.oh
    n, c, k, r = a.n, a.c, a.k, a.r
    outs = {"A": np.full((n, k, oh, oh), np.nan, np.float32), "B": np.full((n, k, oh, oh), np.nan, np.float32)}

    def run(m, o):
        if bwd:
            return m.conv_conv2d_backward_f32(dy, x, w, np.empty_like(x), np.empty_like(w), np.empty_like(b),
                                              st, st, pd, pd, 1, 1, 1, path_id)
        return m.conv_conv2d_f32(x, w, b, o, st, st, pd, pd, 1, 1, 1, path_id)
    pa, pb = run(A, outs["A"]), run(B, outs["B"])
    if not bwd and not np.allclose(outs["A"], outs["B"], rtol=1e-4, atol=1e-4):
        sys.exit(f"{sh}: the two builds disagree")
    ts = {"A": [], "B": []}
    for _ in range(reps):
        for nm, m in (("A", A), ("B", B)):
            t = time.perf_counter()
            run(m, outs[nm])
            ts[nm].append(time.perf_counter() - t)
    fl = 2 * n * k * c * r * r * oh * oh * (2 if bwd else 1)
    ta, tb = min(ts["A"]), min(ts["B"])
    print(f"{sh:22s} paths {pa}/{pb}  A {ta * 1e3:7.3f} ms {fl / ta / 1e9:5.0f} GF   "
          f"B {tb * 1e3:7.3f} ms {fl / tb / 1e9:5.0f} GF   B/A speed {ta / tb:.2f}", flush=True)
