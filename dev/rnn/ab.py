"""rnn A/B in one process: this checkout's pydl._cpp_<level> (and optionally another build of the
same level, dev/build/two_builds.py) beside torch.nn.LSTM / GRU / RNN, interleaved rounds, the best
median of 5 calls per contender (session 17's figures, dev/rnn/README.md).

    PYTHONPATH=. python dev/rnn/ab.py [OTHER.so]
    KIND=lstm|gru|rnn (lstm)  SHAPE="T B I H" ("64 32 64 256": the LSTM LM of pydl bench --ops train)
    LVL=avx512|avx2 (avx512)  T=threads (2; PyTorch gets the same)  R=rounds (7)
    Held to AVX2 for PyTorch too: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2

The forward is rnn_forward_f32; the backward rnn_backward_f32 from the forward's saved states,
the weight and bias gradients wanted and dx not (DX=1 adds it, as an LM over an embedding wants).
PyTorch: the module's forward under no_grad, and forward + backward from random upstream
gradients of the output (the weights' gradients; x does not require one).
"""
import importlib
import os
import sys
import time

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(here, "..", "build")]

KIND = os.environ.get("KIND", "lstm")
T, B, I, H = (int(v) for v in os.environ.get("SHAPE", "64 32 64 256").split())
NT = int(os.environ.get("T", "2"))
LVL = os.environ.get("LVL", "avx512")
R = int(os.environ.get("R", "7"))
DX = os.environ.get("DX") == "1"
G = {"rnn": 1, "lstm": 4, "gru": 3}[KIND]
CODE = {"rnn": 0, "lstm": 1, "gru": 2}[KIND]
torch.set_num_threads(NT)

rng = np.random.default_rng(0)
s = 1 / np.sqrt(H)
f = lambda *shape, sc=1.0: (rng.standard_normal(shape) * sc).astype(np.float32)  # noqa: E731
x, w_ih, w_hh, b_ih, b_hh = f(T, B, I), f(G * H, I, sc=s), f(G * H, H, sc=s), f(G * H, sc=s), f(G * H, sc=s)
h0, c0 = f(B, H), (f(B, H) if KIND == "lstm" else None)
gout = f(T, B, H)

if len(sys.argv) > 1:
    from two_builds import pair

    mods = dict(zip(("new", "old"), pair(sys.argv[1], LVL, NT)))
else:
    mods = {"new": importlib.import_module(f"pydl._cpp_{LVL}")}
    mods["new"].set_simd_level(LVL)
    mods["new"].set_num_threads(NT)


def forward(mod):
    hs = np.empty((T + 1, B, H), np.float32)
    cs = np.empty_like(hs) if KIND == "lstm" else None
    gates = np.empty((T, B, 4 * H), np.float32) if KIND != "rnn" else None
    mod.rnn_forward_f32(CODE, False, x, w_ih, w_hh, b_ih, b_hh, h0, c0, hs, cs, gates)
    return hs, cs, gates


def backward(mod):
    hs, cs, gates = forward(mod)
    e = lambda *shape: np.empty(shape, np.float32)  # noqa: E731
    return lambda: mod.rnn_backward_f32(CODE, False, x, w_ih, w_hh, hs, cs, gates, gout, None, None,
                                        e(T, B, I) if DX else None, e(G * H, I), e(G * H, H), e(G * H), e(G * H),
                                        None, None)


m = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[KIND](I, H)
xt, gt = torch.tensor(x), torch.tensor(gout)
st = (torch.tensor(h0)[None], torch.tensor(c0)[None]) if KIND == "lstm" else torch.tensor(h0)[None]


def torch_forward():
    with torch.no_grad():
        m(xt, st)


def torch_both():
    out, _ = m(xt, st)
    out.backward(gt)


fns = {}
for name, mod in mods.items():
    fns[f"{name} fwd"] = lambda mod=mod: forward(mod)
    fns[f"{name} bwd"] = backward(mod)
fns["torch fwd"], fns["torch fwd+bwd"] = torch_forward, torch_both
best = {k: float("inf") for k in fns}
for _ in range(R):
    for k, fn in fns.items():
        fn()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        best[k] = min(best[k], float(np.median(ts)))
print(f"{KIND} T{T} B{B} I{I} H{H}, {NT} threads, pydl at {LVL}")
for k, v in best.items():
    print(f"  {k:14s} {v * 1e3:8.3f} ms")
both = best["new fwd"] + best["new bwd"]
print(f"  x torch: forward {best['torch fwd'] / best['new fwd']:.2f}, forward+backward {best['torch fwd+bwd'] / both:.2f}")
if "old fwd" in best:
    print(f"  new / old speed: forward {best['old fwd'] / best['new fwd']:.3f}, backward {best['old bwd'] / best['new bwd']:.3f}")
