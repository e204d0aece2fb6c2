"""SDPA and MHA, pydl cpp against PyTorch CPU: interleaved in one process, best of N.

    PYTHONPATH=. python dev/attention/bench.py [--reps 3] [--threads 2] [--only sdpa|mha|mem]
          [--tuning bq,bk,bq_bwd,bk_bwd,tile_gemm] [--lib both|pydl|torch]

Prints one Markdown table row per case: ms (best of N), GFLOP/s and the ratio torch / pydl
(> 1: pydl faster). Flops: forward 4*B*H*L*S*D (the two products; causal: half),
forward+backward 3.5x that (the backward's five products: S, dP, dV, dK, dQ).
``--only mem`` runs each SDPA forward+backward at B1 H1 S8192 D64 in a subprocess and
prints its peak resident memory growth (VmHWM after resetting it, over VmRSS before), cpp against the materialized
NumPy reference.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

import pydl
from pydl import _cpp

SDPA_CASES = [(4, 8, 512, 64), (1, 8, 2048, 64), (1, 4, 8192, 64)]
MHA_CASES = [(2, 128, 256, 4), (4, 512, 768, 12)]


LIB = "both"  # --lib: time one library only (run twice, each in its own process)


def best(fn, reps):
    if fn is None:
        return float("nan")
    fn()  # warm
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def sdpa(reps):
    import torch
    F = torch.nn.functional
    op = pydl.ops.scaled_dot_product_attention
    print("| case | pass | pydl ms | torch ms | pydl GFLOP/s | torch GFLOP/s | torch/pydl |")
    print("|---|---|---|---|---|---|---|")
    for B, H, S, D in SDPA_CASES:
        rng = np.random.default_rng(0)
        q, k, v, g = (rng.standard_normal((B, H, S, D)).astype(np.float32) for _ in range(4))
        tq, tk, tv, tg = (torch.from_numpy(x) for x in (q, k, v, g))
        for causal in (False, True):
            fl = 4 * B * H * S * S * D / (2 if causal else 1)

            def p_fwd():
                op(q, k, v, is_causal=causal, backend="cpp")

            def p_both():
                out, sv = op.with_saved(q, k, v, is_causal=causal, backend="cpp")
                pydl.ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=causal, saved=sv,
                                                               backend="cpp")

            def t_fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

            a, b, c = (x.detach().requires_grad_() for x in (tq, tk, tv))

            def t_both():
                for x in (a, b, c):
                    x.grad = None
                F.scaled_dot_product_attention(a, b, c, is_causal=causal).backward(tg)

            for name, pf, tf, f in (("fwd", p_fwd, t_fwd, fl), ("fwd+bwd", p_both, t_both, 3.5 * fl)):
                tp, tt = [], []
                for _ in range(reps):  # interleaved
                    tp.append(best(pf if LIB != "torch" else None, 1))
                    tt.append(best(tf if LIB != "pydl" else None, 1))
                tp, tt = min(tp), min(tt)
                cid = f"B{B} H{H} S{S} D{D}" + (" causal" if causal else "")
                print(f"| {cid} | {name} | {tp * 1e3:.1f} | {tt * 1e3:.1f} | {f / tp / 1e9:.0f} | "
                      f"{f / tt / 1e9:.0f} | {tt / tp:.2f} |", flush=True)


def mha(reps):
    import torch
    op = pydl.ops.multi_head_attention
    print("| case | pass | pydl ms | torch ms | torch/pydl |")
    print("|---|---|---|---|---|")
    for B, L, E, nh in MHA_CASES:
        rng = np.random.default_rng(0)
        f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(np.float32)  # noqa: E731
        x, g = f(B, L, E), f(B, L, E)
        w_in, w_out, b_in, b_out = f(3 * E, E, sc=E ** -0.5), f(E, E, sc=E ** -0.5), f(3 * E), f(E)
        m = torch.nn.MultiheadAttention(E, nh, batch_first=True)
        with torch.no_grad():
            m.in_proj_weight.copy_(torch.from_numpy(w_in))
            m.in_proj_bias.copy_(torch.from_numpy(b_in))
            m.out_proj.weight.copy_(torch.from_numpy(w_out))
            m.out_proj.bias.copy_(torch.from_numpy(b_out))
        tx, tg = torch.from_numpy(x), torch.from_numpy(g)
        args = (x, x, x, nh, w_in, w_out, b_in, b_out)

        def p_fwd():
            op(*args, backend="cpp")

        def p_both():
            out, sv = op.with_saved(*args, backend="cpp")
            pydl.ops.multi_head_attention_backward(g, *args, saved=sv, backend="cpp")

        def t_fwd():
            with torch.no_grad():
                m(tx, tx, tx, need_weights=False)

        xr = tx.detach().requires_grad_()

        def t_both():
            m.zero_grad()
            xr.grad = None
            m(xr, xr, xr, need_weights=False)[0].backward(tg)

        for name, pf, tf in (("fwd", p_fwd, t_fwd), ("fwd+bwd", p_both, t_both)):
            tp, tt = [], []
            for _ in range(reps):
                tp.append(best(pf if LIB != "torch" else None, 1))
                tt.append(best(tf if LIB != "pydl" else None, 1))
            tp, tt = min(tp), min(tt)
            print(f"| B{B} L{L} E{E} h{nh} | {name} | {tp * 1e3:.1f} | {tt * 1e3:.1f} | {tt / tp:.2f} |",
                  flush=True)


_MEM = """
import sys
import numpy as np
import pydl
S, D, backend = int(sys.argv[1]), 64, sys.argv[2]
op = pydl.ops.scaled_dot_product_attention
rng = np.random.default_rng(0)
q, k, v, g = (rng.standard_normal((1, 1, S, D)).astype(np.float32) for _ in range(4))
w = [x[:, :, :64].copy() for x in (q, k, v, g)]
o, sv = op.with_saved(*w[:3], backend=backend)
pydl.ops.scaled_dot_product_attention_backward(w[3], *w[:3], saved=sv, backend=backend)
def kib(key):  # /proc/self/status, KiB
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
base = kib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
o, sv = op.with_saved(q, k, v, backend=backend)
pydl.ops.scaled_dot_product_attention_backward(g, q, k, v, saved=sv, backend=backend)
print(kib("VmHWM") - base)
"""


def mem():
    S = 8192
    print(f"peak RSS growth, SDPA forward+backward B1 H1 S{S} D64 float32 "
          f"(inputs {4 * S * 64 * 4 / 2**20:.0f} MiB, one S x S matrix {S * S * 4 / 2**20:.0f} MiB)")
    for backend in ("cpp", "numpy"):
        r = subprocess.run([sys.executable, "-c", _MEM, str(S), backend], capture_output=True, text=True)
        print(f"  {backend}: {int(r.stdout.split()[-1]) / 1024:.1f} MiB" if r.returncode == 0 else r.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("sdpa", "mha", "mem"))
    ap.add_argument("--tuning", default="")
    ap.add_argument("--lib", choices=("both", "pydl", "torch"), default="both",
                    help="time one library only (each library in its own process)")
    a = ap.parse_args()
    global LIB
    LIB = a.lib
    import torch
    torch.set_num_threads(a.threads)
    pydl.set_num_threads(a.threads)
    if a.tuning:
        _cpp.attention_tuning(*(int(t) for t in a.tuning.split(",")))
    if a.only in (None, "sdpa"):
        sdpa(a.reps)
    if a.only in (None, "mha"):
        mha(a.reps)
    if a.only in (None, "mem"):
        mem()


if __name__ == "__main__":
    main()
