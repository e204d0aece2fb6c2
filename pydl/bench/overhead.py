"""``pydl overhead``: what the layer API costs over the raw ops, and small-batch training
steps against PyTorch eager, measured side by side in one process.

1. Per op: the raw ``pydl.ops.<op>`` forward (and forward + ``<op>_backward`` with the
   forward's ``saved``) against the same call on Tensors through ``pydl.nn.functional``
   (forward, and forward + ``backward()``), in chains of 8 and of 1 so that the per-op
   figure excludes the fixed cost of a ``backward()`` call (reported once). The
   difference is autograd's cost: argument unwrapping, the node, the graph walk,
   gradient accumulation into the leaves.
2. A 3-layer MLP (64-128-128-10 and 784-256-256-10, ReLU, cross-entropy), forward +
   backward, at batch 1 and 64, pydl against torch eager on the same weights and inputs. Rounds alternate
   between the two libraries; each round's time is the best of a few calls, and the
   ratio reported is the median of the per-round ratios (robust to a noisy neighbour).
"""
from __future__ import annotations

import statistics
import time

import numpy as np


def _best(fn, n):
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _rounds(fns: dict, n: int, rounds: int):
    """{name: [per-round best seconds]}, the functions alternating round by round."""
    for f in fns.values():  # warm-up (JIT, caches, allocator)
        for _ in range(max(3, n // 10)):
            f()
    out = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            out[k].append(_best(f, n))
    return out


def op_overhead(rounds: int = 7, n: int = 200, depth: int = 8):
    """Rows of (op, raw fwd us, Tensor fwd us, raw fwd+bwd us, Tensor fwd+bwd us), each per op.

    Each op runs as a chain of ``depth`` calls on its own output (raw: ``f`` then
    ``f_backward`` with ``saved`` in reverse order; Tensor: the chain, then one
    ``backward()``), and as a chain of one: the per-op figure is the difference divided
    by ``depth - 1``, so the fixed cost of starting a backward (walking the graph, the
    seed gradient) is not charged to every op. It is returned separately, as the second
    value: (rows, fixed backward() cost in us).
    """
    import pydl
    from pydl import Tensor
    from pydl.nn import functional as F

    rng = np.random.default_rng(0)

    def r(*s):
        return (rng.standard_normal(s) * 0.3).astype(np.float32)

    # ops whose output can feed the next call (same shape); params: arrays after the first argument
    cases = {
        "relu 1x64": ("relu", r(1, 64), (), {}),
        "linear 1x64 @ 64x64 +b": ("linear", r(1, 64), (r(64, 64), r(64)), {}),
        "conv2d 1x4x8x8, 4x4x3x3 p1": ("conv2d", r(1, 4, 8, 8), (r(4, 4, 3, 3), r(4)), {"padding": 1}),
        "layer_norm 1x64": ("layer_norm", r(1, 64), ((64,), r(64), r(64)), {}),
        "softmax 1x64": ("softmax", r(1, 64), (), {}),
    }
    rows, fixed = [], []
    for label, (name, x0, params, kw) in cases.items():
        fwd = getattr(pydl.ops, name)
        bwd = getattr(pydl.ops, name + "_backward")
        op = getattr(F, name)
        tparams = tuple(Tensor(p, requires_grad=True) if isinstance(p, np.ndarray) else p for p in params)
        tx = Tensor(x0, requires_grad=True)
        g = np.ones_like(x0)

        def raw_chain(k, backward):
            def run():
                xs, saves, x = [], [], x0
                for _ in range(k):
                    xs.append(x)
                    x, sv = fwd.with_saved(x, *params, **kw)
                    saves.append(sv)
                if backward:
                    gx = g
                    for xi, sv in zip(reversed(xs), reversed(saves)):
                        gx = bwd(gx, xi, *params, saved=sv, **kw)[0]
            return run

        def ten_chain(k, backward):
            def run():
                x = tx
                for _ in range(k):
                    x = op(x, *tparams, **kw)
                if backward:
                    for t in (tx,) + tparams:
                        if isinstance(t, Tensor):
                            t.grad = None
                    x.backward(g)
            return run

        fns = {f"{kind}{k}{'b' if b else 'f'}": (raw_chain if kind == "raw" else ten_chain)(k, b)
               for kind in ("raw", "ten") for k in (1, depth) for b in (False, True)}
        res = _rounds(fns, n, rounds)
        med = {k: statistics.median(v) * 1e6 for k, v in res.items()}

        def per_op(kind, b):
            tag = "b" if b else "f"
            return (med[f"{kind}{depth}{tag}"] - med[f"{kind}1{tag}"]) / (depth - 1)

        rows.append((label, per_op("raw", False), per_op("ten", False), per_op("raw", True), per_op("ten", True)))
        # what a one-op graph costs beyond one op's share: the backward() call itself
        fixed.append((med["ten1b"] - med["raw1b"]) - (per_op("ten", True) - per_op("raw", True)))
    return rows, statistics.median(fixed)


def mlp_vs_torch(batch: int, rounds: int = 9, n: int = 100, sizes=(784, 256, 256, 10)):
    """(pydl us, torch us, median per-round ratio torch/pydl) for one training step's
    forward + backward of a 3-layer MLP of ``sizes`` (ReLU, cross-entropy)."""
    import torch

    import pydl
    from pydl import nn

    rng = np.random.default_rng(1)
    a, b, c, d = sizes
    ours = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))
    theirs = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Linear(b, c),
                                 torch.nn.ReLU(), torch.nn.Linear(c, d))
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((batch, a)).astype(np.float32)
    t = rng.integers(0, d, batch)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    tx = pydl.Tensor(x)
    loss_p, loss_t = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()

    def step_pydl():
        ours.zero_grad()
        loss_p(ours(tx), t).backward()

    def step_torch():
        theirs.zero_grad()
        loss_t(theirs(xt), tt).backward()

    step_pydl()
    step_torch()
    for (k, p), q in zip(ours.named_parameters(), theirs.parameters()):  # same step, same gradients
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=2e-3, atol=2e-5, err_msg=k)
    res = _rounds({"pydl": step_pydl, "torch": step_torch}, n, rounds)
    ratio = statistics.median(b / a for a, b in zip(res["pydl"], res["torch"]))
    return statistics.median(res["pydl"]) * 1e6, statistics.median(res["torch"]) * 1e6, ratio


#: a small MLP (framework overhead dominates: the target's case) and MNIST's (at batch 1 the
#: first layer's 800 KB weight gradient is written every step: memory-bound in both libraries)
MLP_SIZES = ((64, 128, 128, 10), (784, 256, 256, 10))


def main(args) -> int:
    import pydl
    from pydl.machine import info

    if args.threads:
        pydl.set_num_threads(args.threads)
    threads = pydl.get_num_threads()
    d = info()
    simd = d["cpp_build"].get("simd_in_use") if isinstance(d.get("cpp_build"), dict) else None
    print(f"pydl {d['pydl']}  cpu {d['cpu']} ({d['cpu_count']} logical)  SIMD in use {simd}  threads {threads}")
    print("\nautograd overhead per op: chains of 8 against chains of 1, per op (float32, medians of "
          "per-round bests, microseconds)")
    print(f"{'op':28s} {'raw fwd':>8s} {'Tensor':>8s} {'extra':>7s}   {'raw f+b':>8s} {'Tensor':>8s} {'extra':>7s}")
    rows, fixed = op_overhead(rounds=args.rounds)
    for label, rf, tf, rfb, tfb in rows:
        print(f"{label:28s} {rf:8.2f} {tf:8.2f} {tf - rf:7.2f}   {rfb:8.2f} {tfb:8.2f} {tfb - rfb:7.2f}")
    print(f"fixed cost of one backward() call (graph walk, seed gradient): {fixed:.1f} us")
    try:
        import torch
    except ImportError:
        print("\nPyTorch is not installed: the MLP comparison needs it (pip install 'pydl[torch]')")
        return 0
    torch.set_num_threads(threads)
    print(f"\n3-layer MLP + cross-entropy, forward+backward, float32 "
          f"(torch {torch.__version__}, {threads} threads, one process, rounds alternating)")
    print(f"{'sizes':>16s} {'batch':>6s} {'pydl us':>9s} {'torch us':>9s} {'torch/pydl':>11s}")
    for sizes in MLP_SIZES:
        for b in (1, 64):
            p, t, ratio = mlp_vs_torch(b, rounds=args.rounds, sizes=sizes)
            print(f"{'-'.join(map(str, sizes)):>16s} {b:6d} {p:9.1f} {t:9.1f} {ratio:10.2f}x")
    return 0
