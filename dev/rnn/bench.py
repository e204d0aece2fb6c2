"""RNN family benchmark: LSTM / GRU / RNN sequences and cells, forward (inference) and
forward+backward, pydl's backends against PyTorch CPU, interleaved in one process
(each round times every contender once, in turn; best of the rounds).

    python dev/rnn/bench.py [--threads 2] [--rounds 7] [--backends cpp,numba] [--only lstm] [--quick]

GFLOP/s: forward = the spec's flop count (two GEMMs per step + the pointwise work);
forward+backward = 3x the forward's (the backward's three GEMMs per step: dh, dW_ih, dW_hh
... dx, the same count as the forward's two plus one), the usual convention.
PyTorch: torch.nn.LSTM/GRU/RNN (oneDNN's fused LSTM/GRU on CPU where it applies) and
torch's cells; inference forward under torch.no_grad(); forward+backward with every
input requiring a gradient (x, h0, c0, the weights), backward from random upstream
gradients of every output.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import pydl  # noqa: E402
from pydl import _cpp, registry  # noqa: E402

G = {"rnn": 1, "lstm": 4, "gru": 3}


def args_for(op, T, B, I, H, rng):
    kind = op.replace("_cell", "")
    g = G[kind]
    s = 1 / np.sqrt(H)
    f = lambda *shape, sc=1.0: (rng.standard_normal(shape) * sc).astype(np.float32)  # noqa: E731
    a = dict(w_ih=f(g * H, I, sc=s), w_hh=f(g * H, H, sc=s), b_ih=f(g * H, sc=s), b_hh=f(g * H, sc=s))
    if op.endswith("_cell"):
        a["x"] = f(B, I)
        a["h"] = f(B, H)
        if kind == "lstm":
            a["c"] = f(B, H)
    else:
        a["x"] = f(T, B, I)
        a["h0"] = f(B, H)
        if kind == "lstm":
            a["c0"] = f(B, H)
    if kind == "rnn":
        a["nonlinearity"] = "tanh"
    return a


def torch_runner(torch, op, a, backward):
    kind = op.replace("_cell", "")
    T = lambda v: torch.tensor(v, requires_grad=backward)  # noqa: E731
    if op.endswith("_cell"):
        I, H = a["x"].shape[1], a["w_hh"].shape[1]
        m = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](I, H)
        x, h = T(a["x"]), T(a["h"])
        st = (h, T(a["c"])) if kind == "lstm" else h
    else:
        I, H = a["x"].shape[2], a["w_hh"].shape[1]
        m = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H)
        x, h = T(a["x"]), T(a["h0"][None])
        st = (h, T(a["c0"][None])) if kind == "lstm" else h
    with torch.no_grad():
        for n, k in (("weight_ih", "w_ih"), ("weight_hh", "w_hh"), ("bias_ih", "b_ih"), ("bias_hh", "b_hh")):
            getattr(m, n if op.endswith("_cell") else n + "_l0").copy_(torch.tensor(a[k]))
    for p in m.parameters():
        p.requires_grad_(backward)
    if not backward:
        def run():
            with torch.no_grad():
                return m(x, st)
        return run
    rng = np.random.default_rng(1)
    probe = m(x, st)
    flat = lambda o: [o] if torch.is_tensor(o) else [t for p in o for t in flat(p)]  # noqa: E731
    gs = [torch.tensor(rng.standard_normal(tuple(o.shape)).astype(np.float32)) for o in flat(probe)]

    def run():
        outs = flat(m(x, st))
        torch.autograd.backward(outs, gs)
        for p in [x, h] + list(m.parameters()):
            p.grad = None
    return run


def pydl_runner(op, a, backend, backward):
    spec = registry.SPECS[op]
    fwd = getattr(pydl.ops, op)
    if not backward:
        return lambda: fwd(**a, backend=backend)
    out = spec.with_saved(**a, backend=backend) if spec.saves else (fwd(**a, backend=backend), None)
    outs = out[0] if isinstance(out[0], tuple) else (out[0],)
    rng = np.random.default_rng(1)
    gs = tuple(rng.standard_normal(o.shape).astype(np.float32) for o in outs)
    g = gs if len(gs) > 1 else gs[0]
    bwd = getattr(pydl.ops, op + "_backward")

    def run():
        if spec.saves:
            o, saved = spec.with_saved(**a, backend=backend)
        else:
            fwd(**a, backend=backend)
            saved = None
        return bwd(g, **a, saved=saved, backend=backend)
    return run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--backends", default="cpp,numba")
    p.add_argument("--only", default="")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--quick", action="store_true", help="only the T50 B64 I256 H256 sequences")
    o = p.parse_args()
    torch = None
    if not o.no_torch:
        import torch
        torch.set_num_threads(o.threads)
    pydl.set_num_threads(o.threads)
    backends = [b for b in o.backends.split(",") if b]
    shapes = [("lstm", 50, 64, 256, 256), ("gru", 50, 64, 256, 256), ("rnn", 50, 64, 256, 256),
              ("lstm", 200, 16, 128, 512), ("gru", 200, 16, 128, 512), ("rnn", 200, 16, 128, 512),
              ("lstm_cell", 1, 1, 512, 512), ("lstm_cell", 1, 64, 512, 512),
              ("gru_cell", 1, 1, 512, 512), ("gru_cell", 1, 64, 512, 512),
              ("rnn_cell", 1, 1, 512, 512), ("rnn_cell", 1, 64, 512, 512)]
    rng = np.random.default_rng(0)
    print(f"threads {o.threads}, float32, best of {o.rounds} interleaved rounds; cpu simd "
          f"{_cpp.simd_level() if 'cpp' in backends else '-'}")
    print(f"{'case':34s} {'mode':8s} " + " ".join(f"{b + ' ms':>10s} {'GF/s':>6s}" for b in backends + ["torch"])
          + "  " + " ".join(f"{b + '/torch':>11s}" for b in backends))
    for op, T, B, I, H in shapes:
        if (o.only and not op.startswith(o.only)) or (o.quick and (T, B) != (50, 64)):
            continue
        a = args_for(op, T, B, I, H, rng)
        spec = registry.SPECS[op]
        flops = spec.flops(spec.bind((), dict(a)))
        for backward in (False, True):
            runs = {b: pydl_runner(op, a, b, backward) for b in backends}
            if torch is not None:
                runs["torch"] = torch_runner(torch, op, a, backward)
            best = {k: float("inf") for k in runs}
            for f in runs.values():
                f()
            for _ in range(o.rounds):
                for k, f in runs.items():
                    t = time.perf_counter()
                    f()
                    best[k] = min(best[k], time.perf_counter() - t)
            fl = flops * (3 if backward else 1)
            name = f"{op} T{T} B{B} I{I} H{H}" if not op.endswith("_cell") else f"{op} B{B} I{I} H{H}"
            cols = " ".join(f"{best[k] * 1e3:10.3f} {fl / best[k] / 1e9:6.1f}" for k in runs)
            ratios = " ".join(f"{best['torch'] / best[b]:11.2f}" for b in backends) if "torch" in runs else ""
            print(f"{name:34s} {'fwd+bwd' if backward else 'fwd':8s} {cols}  {ratios}", flush=True)


if __name__ == "__main__":
    main()
