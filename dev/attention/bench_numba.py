"""SDPA and MHA: pydl numba vs PyTorch CPU (and the NumPy reference), float32, interleaved in
one process, best of N. Prints a Markdown table (GFLOP/s on the spec's flop count, ratios).

    PYTHONPATH=. python dev/attention/bench_numba.py [--threads 2] [--reps 3] [--numpy] [--variants]

A causal case is counted with the full (non-causal) flops, as `pydl bench` does: its GFLOP/s is
an "effective" rate, so causal vs non-causal rates compare times directly.
"""
import argparse
import time

import numpy as np
import torch

import pydl
from pydl import ops

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--numpy", action="store_true", help="also time the NumPy reference (slow at S=8192)")
p.add_argument("--variants", action="store_true", help="also time numba:loops (slow)")
p.add_argument("--only", default="", help="substring of the case names to run")
args = p.parse_args()
pydl.set_num_threads(args.threads)
torch.set_num_threads(args.threads)
F = torch.nn.functional
rng = np.random.default_rng(0)


def best(fns, reps):
    """Interleaved: each rep runs every function once; the best time of each."""
    t = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            t[k] = min(t[k], time.perf_counter() - t0)
    return t


rows = []


def report(name, flops, t):
    base = t.get("torch")
    cells = []
    for k, v in t.items():
        cells.append(f"{k} {flops / v / 1e9:.0f}" + ("" if k == "torch" else f" ({base / v:.2f}x)"))
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def sdpa_case(B, H, S, D, causal):
    q, k, v, g = (rng.standard_normal((B, H, S, D)).astype(np.float32) for _ in range(4))
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    tg = torch.from_numpy(g)
    flops = 4 * B * H * S * S * D + 5 * B * H * S * S
    backends = ["numba"] + (["numba:loops"] if args.variants else []) + (["numpy"] if args.numpy else [])
    fwd = {"torch": lambda: F.scaled_dot_product_attention(tq.detach(), tk.detach(), tv.detach(), is_causal=causal)}
    both = {}

    def tfb():
        F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).backward(tg)
    both["torch"] = tfb
    for b in backends:
        fwd[b] = lambda b=b: ops.scaled_dot_product_attention(q, k, v, is_causal=causal, backend=b)

        def fb(b=b):
            out, saved = ops.scaled_dot_product_attention.with_saved(q, k, v, is_causal=causal, backend=b)
            ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=causal, saved=saved, backend=b)
        both[b] = fb
    for f in list(fwd.values()) + list(both.values()):  # warm-up (compile)
        f()
    name = f"B{B} H{H} S{S} D{D}" + (" causal" if causal else "")
    report(name + " fwd", flops, best(fwd, args.reps))
    report(name + " fwd+bwd", 3.5 * flops, best(both, args.reps))  # bwd: 2.5x the forward's GEMMs


def mha_case(B, L, E, nh):
    f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(np.float32)  # noqa: E731
    x = f(B, L, E)
    w, wo, bi, bo = f(3 * E, E, sc=E ** -0.5), f(E, E, sc=E ** -0.5), f(3 * E), f(E)
    g = f(B, L, E)
    m = torch.nn.MultiheadAttention(E, nh, batch_first=True)
    with torch.no_grad():
        m.in_proj_weight.copy_(torch.from_numpy(w))
        m.in_proj_bias.copy_(torch.from_numpy(bi))
        m.out_proj.weight.copy_(torch.from_numpy(wo))
        m.out_proj.bias.copy_(torch.from_numpy(bo))
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(g)
    flops = 8 * B * L * E * E + 4 * B * L * L * E + 5 * B * nh * L * L

    def tf():
        with torch.no_grad():
            m(tx, tx, tx, need_weights=False)

    def tfb():
        m(tx, tx, tx, need_weights=False)[0].backward(tg)

    def nf():
        ops.multi_head_attention(x, x, x, nh, w, wo, bi, bo, backend="numba")

    def nfb():
        out, saved = ops.multi_head_attention.with_saved(x, x, x, nh, w, wo, bi, bo, backend="numba")
        ops.multi_head_attention_backward(g, x, x, x, nh, w, wo, bi, bo, saved=saved, backend="numba")
    for fn in (tf, tfb, nf, nfb):
        fn()
    name = f"MHA self B{B} L{L} E{E} h{nh}"
    report(name + " fwd", flops, best({"torch": tf, "numba": nf}, args.reps))
    report(name + " fwd+bwd", 3 * flops, best({"torch": tfb, "numba": nfb}, args.reps))


print(f"threads {args.threads}, best of {args.reps}, float32; GFLOP/s (ratio to torch)")
for B, H, S, D in ((4, 8, 512, 64), (1, 8, 2048, 64), (1, 4, 8192, 64)):
    for causal in (False, True):
        if args.only in f"sdpa B{B} S{S}" + (" causal" if causal else ""):
            sdpa_case(B, H, S, D, causal)
for B, L, E, nh in ((2, 128, 256, 4), (4, 512, 768, 12)):
    if args.only in f"mha L{L}":
        mha_case(B, L, E, nh)
