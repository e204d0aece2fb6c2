"""The numba SDPA's design choices, measured side by side (float32, interleaved, best of N):
block sizes of the forward, the backward's key-block groups (dQ partials) against one task per
head, SciPy's OpenBLAS held to one thread or not, and the peak memory at S=8192.

    PYTHONPATH=. python dev/attention/numba_variants.py blocks|groups|blas|memory
"""
import resource
import subprocess
import sys
import time

import numpy as np

import pydl
from pydl.backends.numba import attention as A

pydl.set_num_threads(2)
rng = np.random.default_rng(0)
what = sys.argv[1]


def best(fns, reps=3):
    t = {k: float("inf") for k in fns}
    for f in fns.values():
        f()
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            t[k] = min(t[k], time.perf_counter() - t0)
    return t


def qkv(B, H, S, D=64):
    return [rng.standard_normal((B, H, S, D)).astype(np.float32) for _ in range(4)]


def fwd(q, k, v, causal):
    return A._sdpa(q, k, v, None, causal, 0.125, 0.0, None, True)


def fwd_bwd(q, k, v, g, causal):
    _, sv = fwd(q, k, v, causal)
    A._sdpa_backward(g, q, k, v, None, causal, 0.125, 0.0, None, sv, True)


if what == "blocks":  # forward (BR, BC)
    for B, H, S in ((4, 8, 512), (1, 8, 2048)):
        q, k, v, g = qkv(B, H, S)
        for causal in (False, True):
            fns = {}
            for br, bc in ((32, 128), (64, 64), (64, 128), (64, 256), (128, 128)):
                def f(br=br, bc=bc):
                    A._BLK[:] = [br, bc]
                    fwd(q, k, v, causal)
                fns[f"{br}x{bc}"] = f
            t = best(fns)
            fl = 4 * B * H * S * S * 64
            print(f"B{B} H{H} S{S} causal={causal}: " + ", ".join(f"{k} {fl / x / 1e9:.0f}" for k, x in t.items()))
    A._BLK[:] = [A.BR, A.BC]
elif what == "groups":  # backward tasks: G groups of key blocks per head vs G = 1
    real = A._groups
    for B, H, S in ((1, 4, 4096), (1, 2, 4096), (1, 1, 4096), (4, 8, 512)):
        q, k, v, g = qkv(B, H, S)
        for causal in (False, True):
            fns = {}
            for name, gf in (("G=1", lambda bh, nkb, nt: 1), ("auto", real)):
                def f(gf=gf):
                    A._groups = gf
                    fwd_bwd(q, k, v, g, causal)
                fns[name] = f
            t = best(fns, 2)
            A._groups = real
            fl = 3.5 * 4 * B * H * S * S * 64
            print(f"B{B} H{H} S{S} causal={causal} (auto G={real(B * H, -(-S // A.BCB), 2)}): "
                  + ", ".join(f"{k} {fl / x / 1e9:.0f}" for k, x in t.items()))
elif what == "blas":  # OpenBLAS held to one thread inside the kernels, or left alone
    real = A._one_blas_thread
    for B, H, S in ((4, 8, 512), (1, 8, 2048)):
        q, k, v, g = qkv(B, H, S)
        fns = {}
        for name, ctx in (("limited", real), ("free", lambda blas: A._NoLimit())):
            def f(ctx=ctx):
                A._one_blas_thread = ctx
                fwd_bwd(q, k, v, g, False)
            fns[name] = f
        t = best(fns)
        A._one_blas_thread = real
        fl = 3.5 * 4 * B * H * S * S * 64
        print(f"B{B} H{H} S{S} fwd+bwd: " + ", ".join(f"{k} {fl / x / 1e9:.0f}" for k, x in t.items()))
elif what == "memory":  # peak RSS growth of one call, each in a fresh process
    if len(sys.argv) == 2:
        for mode in ("numba-fwd", "numba-fwd+bwd", "materialized"):
            print(subprocess.run([sys.executable, __file__, "memory", mode], capture_output=True, text=True).stdout,
                  end="")
    else:
        mode = sys.argv[2]
        q, k, v, g = qkv(1, 4, 8192)
        small = qkv(1, 1, 256)
        fwd_bwd(*small, False)  # compile / load before measuring
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if mode == "numba-fwd":
            fwd(q, k, v, False)
        elif mode == "numba-fwd+bwd":
            fwd_bwd(q, k, v, g, False)
        else:  # the scores and probabilities a materialized forward holds (NumPy reference)
            from pydl.backends.reference import attention as R
            R.scaled_dot_product_attention(q, k, v, None, False, 0.125)
        grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(f"B1 H4 S8192 D64 float32 {mode}: peak RSS +{grow / 1024:.0f} MiB "
              f"(inputs 4 x {q.nbytes / 2**20:.0f} MiB; one (B,H,S,S) float32 matrix {4 * 8192 * 8192 * 4 / 2**20:.0f} MiB)")
