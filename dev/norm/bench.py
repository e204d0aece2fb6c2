"""Norms, losses and dropout: forward+backward GB/s of the cpp kernels against the copy
bandwidth (pydl.bench.peaks.copy_bandwidth: np.copyto of 256 MiB, read + write counted) and
against PyTorch CPU, timed interleaved in one process, best of --repeat.

    PYTHONPATH=. python dev/norm/bench.py [--threads 2] [--repeat 15] [--only layer_norm,...]

Bytes (the fewest a fused forward + backward must move, the same for both libraries):
norms: forward reads x, writes y; backward reads grad and x, writes dx: 5 |x|.
cross_entropy: forward reads x; backward reads x, writes dx: 3 |x| (targets are small).
pointwise losses (mse, bce): forward reads input and target; backward reads both, writes
dinput and dtarget: 6 |x|. dropout: forward reads x, writes y; backward reads g, writes dx: 4 |x|.
pydl runs the registry's forward and backward on pre-validated arguments (spec.call /
call_backward: what autograd calls); torch runs y = f(x); y.backward(g) with x.requires_grad.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import pydl  # noqa: E402
from pydl import _cpp, registry  # noqa: E402
from pydl.bench.peaks import copy_bandwidth  # noqa: E402


def cases(rng):
    f32 = np.float32
    r = lambda *s: rng.standard_normal(s, dtype=f32)  # noqa: E731
    u = lambda *s: rng.uniform(0.02, 0.98, s).astype(f32)  # noqa: E731
    aff = lambda C: dict(weight=(1 + 0.1 * r(C)), bias=0.1 * r(C))  # noqa: E731
    out = []

    def add(name, op, args, torch_fn, nbytes, grad_shape=None, tensors=("x",)):
        out.append((name, op, args, torch_fn, nbytes, grad_shape, tensors))

    x = r(8192, 768)
    add("layer_norm 8192x768", "layer_norm", dict(x=x, normalized_shape=(768,), **aff(768)),
        lambda F, t, a: F.layer_norm(t["x"], (768,), t["weight"], t["bias"]), 5 * x.nbytes,
        tensors=("x", "weight", "bias"))
    x = r(32, 64, 56, 56)
    add("batch_norm N32 C64 56x56 train", "batch_norm",
        dict(x=x, running_mean=np.zeros(64, f32), running_var=np.ones(64, f32), training=True, **aff(64)),
        lambda F, t, a: F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["weight"], t["bias"], True),
        5 * x.nbytes, tensors=("x", "weight", "bias", "running_mean", "running_var"))
    add("group_norm N32 C64 56x56 G32", "group_norm", dict(x=x, num_groups=32, **aff(64)),
        lambda F, t, a: F.group_norm(t["x"], 32, t["weight"], t["bias"]), 5 * x.nbytes,
        tensors=("x", "weight", "bias"))
    add("instance_norm N32 C64 56x56", "instance_norm", dict(x=x, **aff(64)),
        lambda F, t, a: F.instance_norm(t["x"], weight=t["weight"], bias=t["bias"]), 5 * x.nbytes,
        tensors=("x", "weight", "bias"))
    x = r(4096, 1000)
    t = rng.integers(0, 1000, 4096)
    add("cross_entropy 4096x1000", "cross_entropy", dict(input=x, target=t),
        lambda F, tt, a: F.cross_entropy(tt["input"], tt["target"]), 3 * x.nbytes, grad_shape=(),
        tensors=("input", "target"))
    x, y = r(4096, 1024), r(4096, 1024)
    add("mse_loss 4096x1024", "mse_loss", dict(input=x, target=y),
        lambda F, tt, a: F.mse_loss(tt["input"], tt["target"]), 6 * x.nbytes, grad_shape=(),
        tensors=("input", "target"))
    p, q = u(4096, 1024), u(4096, 1024)
    add("binary_cross_entropy 4096x1024", "binary_cross_entropy", dict(input=p, target=q),
        lambda F, tt, a: F.binary_cross_entropy(tt["input"], tt["target"]), 6 * x.nbytes, grad_shape=(),
        tensors=("input", "target"))
    add("bce_with_logits 4096x1024", "binary_cross_entropy_with_logits", dict(input=x, target=q),
        lambda F, tt, a: F.binary_cross_entropy_with_logits(tt["input"], tt["target"]), 6 * x.nbytes,
        grad_shape=(), tensors=("input", "target"))
    add("dropout 4096x1024 p0.1", "dropout", dict(x=x, p=0.1, seed=7),
        lambda F, tt, a: F.dropout(tt["x"], 0.1, True), 4 * x.nbytes)
    return out


def best(f, repeat):
    f()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--only", default="")
    ap.add_argument("--backend", default="cpp")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    pydl.set_num_threads(args.threads)
    copy = copy_bandwidth()
    print(f"threads {args.threads}, copy bandwidth {copy:.1f} GB/s, load {os.getloadavg()[0]:.1f}, "
          f"simd {_cpp.simd_level()}, best of {args.repeat}, interleaved")
    print(f"| case | pydl {args.backend} ms | GB/s | % copy | torch ms | torch GB/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    only = set(filter(None, args.only.split(",")))
    for name, op, a, tfn, nbytes, gshape, tensors in cases(rng):
        if only and op not in only:
            continue
        spec = registry.SPECS[op]
        bound = spec.bind((), dict(a))
        out_shape = spec.out_shape(bound)
        g = rng.standard_normal(gshape if gshape is not None else out_shape).astype(np.float32)

        def run_pydl():
            out, saved = spec.call(bound, args.backend)
            spec.call_backward(g, bound, saved, args.backend)

        ta = {}
        for k in tensors:
            v = a[k]
            tv = torch.from_numpy(v.copy())
            if v.dtype.kind == "f" and not k.startswith("running") and not (k == "target" and op != "mse_loss"):
                tv.requires_grad_(True)
            ta[k] = tv
        tg = torch.from_numpy(g)

        def run_torch():
            for v in ta.values():
                v.grad = None
            y = tfn(F, ta, a)
            y.backward(tg)

        tp = tt = float("inf")
        for _ in range(3):  # interleaved rounds: each library's best over all
            tp = min(tp, best(run_pydl, args.repeat // 3 + 1))
            tt = min(tt, best(run_torch, args.repeat // 3 + 1))
        gp, gt = nbytes / tp / 1e9, nbytes / tt / 1e9
        print(f"| {name} | {tp * 1e3:.2f} | {gp:.1f} | {100 * gp / copy:.0f}% | {tt * 1e3:.2f} | {gt:.1f} | "
              f"{tt / tp:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
