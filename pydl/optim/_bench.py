"""Cost of one optimizer ``step()``: pydl (fused and reference paths) against torch.optim.

    python -m pydl.optim._bench [--repeats 30] [--opt adam sgd adamw] [--sizes mlp 10m] [--torch-threads N]

Both libraries update the same float32 parameters (copies of one seeded draw)
with the same gradients, set once; each ``step()`` is timed alone with
``perf_counter`` after warm-up steps (Numba compilation outside the clock), and
the median and the lower quartile are printed in milliseconds. The runs
alternate between libraries inside one process so that a neighbour's load
hits both alike; the load average is printed before and after (on a shared
machine, torch's two threads suffer most from a busy neighbour). pydl's fused
loops run on one thread. Needs torch (the reference).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

SIZES = {
    # MLP 784-256-10: the weights and biases of two Linear layers (203,530 parameters)
    "mlp": [(256, 784), (256,), (10, 256), (10,)],
    # ~10M parameters in four arrays
    "10m": [(2048, 4096), (4096,), (1024, 1536), (1024,)],
}


def _make(opt_name, params, lib, fused=None):
    if lib == "torch":
        import torch

        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[opt_name]
        kw = dict(foreach=fused) if fused is not None else {}
    else:
        from pydl import optim

        cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}[opt_name]
        kw = dict(fused=fused) if fused is not None else {}
    if opt_name == "sgd":
        kw.update(lr=1e-3, momentum=0.9)
    return cls(params, **kw)


def _time(step, repeats):
    for _ in range(3):
        step()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def run(opts=("adam", "sgd"), sizes=("mlp", "10m"), repeats=30):
    import torch

    from pydl.nn import Parameter

    rows = []
    for size in sizes:
        shapes = SIZES[size]
        n = sum(int(np.prod(s)) for s in shapes)
        rng = np.random.default_rng(0)
        data = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for opt_name in opts:
            variants = {}
            for label, lib, fused in [("pydl fused", "pydl", None), ("pydl reference", "pydl", False),
                                      ("torch (default)", "torch", None), ("torch foreach", "torch", True)]:
                if lib == "torch":
                    ps = [torch.tensor(d, requires_grad=True) for d in data]
                    for p, g in zip(ps, grads):
                        p.grad = torch.tensor(g)
                else:
                    ps = [Parameter(d.copy()) for d in data]
                    for p, g in zip(ps, grads):
                        p.grad = g.copy()
                variants[label] = _make(opt_name, ps, lib, fused).step
            times = {label: [] for label in variants}
            for _ in range(3):  # interleave the libraries
                for label, step in variants.items():
                    times[label] += _time(step, max(1, repeats // 3))
            for label, ts in times.items():
                ms = np.array(ts) * 1e3
                rows.append((size, n, opt_name, label, float(np.median(ms)), float(np.percentile(ms, 25))))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--opt", nargs="+", default=["adam", "sgd"], choices=["adam", "adamw", "sgd"])
    ap.add_argument("--sizes", nargs="+", default=["mlp", "10m"], choices=list(SIZES))
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args(argv)
    import torch

    if a.torch_threads:
        torch.set_num_threads(a.torch_threads)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()}  numpy {np.__version__}  "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'params':>10} {'optimizer':<14} {'variant':<16} {'median ms':>10} {'p25 ms':>8}")
    for size, n, opt_name, label, med, p25 in run(a.opt, a.sizes, a.repeats):
        name = opt_name + (" (m=0.9)" if opt_name == "sgd" else "")
        print(f"{n:>10,} {name:<14} {label:<16} {med:>10.3f} {p25:>8.3f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
