"""The ``neighbours`` family of ``pydl bench``: pydl's speed in one process beside NumPy and PyTorch.

``pydl bench`` times every runtime in its own process (pydl/bench/runner.py), which is the
speed of a program that uses pydl alone. A NumPy or PyTorch program that adopts pydl calls
them in turn, in one process, and sees something else: the thread pool that has just finished
keeps spinning while the next one starts (see pydl/backends/_neighbours.py). This family
measures that, for small and big GEMM and conv cases, in one process:

- ``isolated``: the pydl op back to back, OpenBLAS's threads parked first (a program that
  does not call NumPy's BLAS);
- ``after NumPy``: each pydl call right after a NumPy ``a @ b`` (256 x 256, float32: OpenBLAS
  wakes its threads), with pydl's OpenBLAS parking on (the default) and off;
- ``after PyTorch``: each pydl call right after the same op in PyTorch (``torch.mm`` /
  ``F.conv2d``);
- and the other way round, NumPy's ``a @ b`` and PyTorch's op right after pydl's against
  their own back-to-back speed, so a reader sees what pydl costs its neighbours.

Every scenario is timed in every round, rounds interleaved; a figure is the median call of its
scenario (what a program sees: the best call hides a collision that most calls meet); ratios
are to the isolated figure of the same library (1.0: no slowdown).
``python -m pydl.bench.neighbours`` prints the table; ``pydl bench --ops neighbours`` runs it
in a child process (the bench's own process has NumPy and every backend loaded) and puts it in
the report.
"""
from __future__ import annotations

import time

import numpy as np

METHOD = (
    "One process, 2 threads (pydl, OpenBLAS and PyTorch alike), float32. Each scenario is timed in "
    "every round (at least ~5 ms of pydl's calls), rounds interleaved; a figure is the median call of its scenario. 'after NumPy': each "
    "pydl call follows a NumPy 256x256 a @ b (OpenBLAS's threads then spin ~0.1 s waiting for work); "
    "'parking off': the same with pydl.set_blas_parking(False) (no parking, no one-thread kernels); 'after PyTorch': each call follows the "
    "same op in PyTorch. The last two columns time NumPy's a @ b and PyTorch's op right after pydl's "
    "against their own back-to-back speed. Ratios are to isolated speed (1.00 = no slowdown)."
)

#: NumPy's ``a @ b`` between pydl's calls: n x n float32. After a 256 x 256 product a small pydl
#: kernel on two threads met OpenBLAS's spinning worker in most calls (0.9-1.0 ms for a 0.1 ms
#: GEMM); after 384 or 512 in few (dev/build/neighbours.md): the bench shows the common case.
NUMPY_N = 256

#: (label, quick?, op, shapes): small and big cases of the GEMM and conv families (the small
#: ones run on one thread beside a pool that may spin, the big ones park it)
CASES = (
    ("sgemm 64x784x256 (an MLP layer)", True, "matmul", dict(m=64, k=784, n=256)),
    ("conv2d ResNet 3x3 c64 28x28 N1", True, "conv2d", dict(N=1, C=64, H=28, K=64, R=3, stride=1)),
    ("sgemm 1024", True, "matmul", dict(m=1024, k=1024, n=1024)),
    ("sgemm 2048", False, "matmul", dict(m=2048, k=2048, n=2048)),
    ("conv2d ResNet 3x3 c64 56x56 N8", True, "conv2d", dict(N=8, C=64, H=56, K=64, R=3, stride=1)),
    ("conv2d ResNet 3x3 c128 28x28 s2 N8", False, "conv2d", dict(N=8, C=128, H=28, K=128, R=3, stride=2)),
    ("conv2d ResNet 3x3 c256 14x14 N8", False, "conv2d", dict(N=8, C=256, H=14, K=256, R=3, stride=1)),
)


def _make(op, p, rng):
    if op == "matmul":
        a = rng.standard_normal((p["m"], p["k"]), dtype=np.float32)
        b = rng.standard_normal((p["k"], p["n"]), dtype=np.float32)
        return (a, b), {}
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["H"]), dtype=np.float32)
    w = rng.standard_normal((p["K"], p["C"], p["R"], p["R"]), dtype=np.float32) * 0.05
    return (x, w), dict(stride=p["stride"], padding=p["R"] // 2)


def _median(ts):
    return float(np.median(ts)) if ts else float("nan")


def run(quick: bool = True, backend: str = "cpp", threads: int = 2, rounds: int = 5, per_round: int = 3,
        progress=None, cases=CASES) -> dict:
    """The table's figures, measured in this process. Needs PyTorch for the PyTorch columns
    (they are None without it)."""
    import pydl
    from pydl.backends import _neighbours

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = F = None
    pydl.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(threads, user_api="blas")
    except ImportError:  # OpenBLAS keeps its default thread count (one per core)
        limit = None
    rng = np.random.default_rng(0)
    na = rng.standard_normal((NUMPY_N, NUMPY_N), dtype=np.float32)
    numpy_op = lambda: na @ na  # noqa: E731
    rows = []
    parking_before = _neighbours._state["enabled"]
    try:
        for label, is_quick, op, p in cases:
            if quick and not is_quick:
                continue
            if progress:
                progress(label)
            args, kw = _make(op, p, rng)
            fn = getattr(pydl.ops, op)
            mine = lambda: fn(*args, backend=backend, **kw)  # noqa: E731
            if torch is not None:
                targs = [torch.from_numpy(x) for x in args]
                theirs = ((lambda: torch.mm(*targs)) if op == "matmul"
                          else (lambda: F.conv2d(*targs, **kw)))
            else:
                theirs = None
            # pydl against the expected result once (the figures are of a right answer)
            got = mine()
            want = (args[0].astype(np.float64) @ args[1].astype(np.float64) if op == "matmul"
                    else pydl.ops.conv2d(*(x.astype(np.float64) for x in args), backend="numpy", **kw))
            err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))
            if not err < 1e-4:
                raise RuntimeError(f"neighbours: {label} on {backend} is wrong (relative error {err:.3g})")
            # (call before each timed call, the timed call, pydl's neighbour handling on, whether the
            # scenario starts with OpenBLAS's threads parked: those without a NumPy call, so that
            # a pool still spinning from the scenario before does not collide with them)
            scen = {
                "isolated": (None, mine, True, True),
                "after NumPy": (numpy_op, mine, True, False),
                "after NumPy, parking off": (numpy_op, mine, False, False),
                "NumPy isolated": (None, numpy_op, True, False),
                "NumPy after pydl": (mine, numpy_op, True, False),
            }
            if theirs is not None:
                scen.update({"after PyTorch": (theirs, mine, True, True),
                             "PyTorch isolated": (None, theirs, True, True),
                             "PyTorch after pydl": (mine, theirs, True, True)})
            for _, f, _, _ in scen.values():
                f()
            # calls per scenario and round: at least per_round, and ~5 ms of pydl's calls (a
            # program's loop alternates many times; a few calls of a 0.1 ms kernel do not show
            # what most of them meet)
            t0 = time.perf_counter()
            mine()
            reps = max(per_round, min(50, int(0.005 / max(time.perf_counter() - t0, 1e-6))))
            if theirs is not None:
                theirs()
            times = {k: [] for k in scen}
            for _ in range(rounds):
                for k, (before, f, park, fresh) in scen.items():
                    if fresh:
                        _neighbours.park()
                    _neighbours.set_blas_parking(park)
                    for _ in range(reps):
                        if before is not None:
                            before()
                        t0 = time.perf_counter()
                        f()
                        times[k].append(time.perf_counter() - t0)
                    _neighbours.set_blas_parking(parking_before)
            best = {k: _median(v) * 1e3 for k, v in times.items()}
            iso, np_iso, t_iso = best["isolated"], best["NumPy isolated"], best.get("PyTorch isolated")
            rows.append({
                "case": label, "op": op, "isolated_ms": iso,
                "ms": best,
                "after_numpy": iso / best["after NumPy"],
                "after_numpy_no_parking": iso / best["after NumPy, parking off"],
                "after_torch": iso / best["after PyTorch"] if theirs is not None else None,
                "numpy_after_pydl": np_iso / best["NumPy after pydl"],
                "torch_after_pydl": t_iso / best["PyTorch after pydl"] if theirs is not None else None,
            })
    finally:
        _neighbours.set_blas_parking(parking_before)
        if limit is not None:
            limit.restore_original_limits()
    return {"backend": backend, "threads": threads, "rows": rows, "quick": quick,
            "torch": getattr(torch, "__version__", None), "numpy": np.__version__,
            "blas": _neighbours.status()["libraries"]}


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    head = ["case", "pydl isolated ms", "after NumPy", "after NumPy, parking off", "after PyTorch",
            "NumPy after pydl", "PyTorch after pydl"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
    return head, [[r["case"], f"{r['isolated_ms']:.3g}", fmt(r["after_numpy"]), fmt(r["after_numpy_no_parking"]),
                   fmt(r["after_torch"]), fmt(r["numpy_after_pydl"]), fmt(r["torch_after_pydl"])]
                  for r in result["rows"]]


def _title(result: dict) -> str:
    return (f"neighbours: pydl ({result['backend']}) in one process beside NumPy {result['numpy']} and "
            f"PyTorch {result['torch'] or '(absent)'}, {result['threads']} threads")


def markdown(result: dict) -> list[str]:
    head, rows = table(result)
    return ([f"### {_title(result)}\n", METHOD + "\n", "| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(head) - 1)] + ["| " + " | ".join(r) + " |" for r in rows] + [""])


def html(result: dict) -> str:
    import html as _html

    from .report import _html_table

    head, rows = table(result)
    return (f"<h3>{_html.escape(_title(result))}</h3><p class='method'>{_html.escape(METHOD)}</p>"
            + _html_table(head, rows))


def print_result(result: dict, stream=None) -> None:
    import sys

    stream = stream or sys.stdout
    head, rows = table(result)
    widths = [max(len(head[j]), *(len(r[j]) for r in rows)) for j in range(len(head))]
    print(_title(result), file=stream)
    for r in [head] + rows:
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))),
              file=stream)


def split_ops(ops):
    """``pydl bench --ops``: (the rest, whether to run this family): it runs when named, or when
    no ``--ops`` is given."""
    if ops is None:
        return None, True
    rest = [o for o in ops if o != "neighbours"]
    return rest, len(rest) < len(ops)


def run_isolated(quick: bool = True, backend: str | None = None, threads: int | None = None) -> dict:
    """:func:`run` in a child process (a clean process: only NumPy, PyTorch and pydl loaded)."""
    from .train_step import run_module

    args = ([] if quick else ["--full"]) + (["--backend", backend] if backend else [])
    args += ["--threads", str(threads)] if threads else []
    return run_module("pydl.bench.neighbours", args, what="the neighbours benchmark")


def _main(argv=None) -> int:
    import argparse
    import sys

    from .train_step import emit

    p = argparse.ArgumentParser(prog="python -m pydl.bench.neighbours",
                                description="pydl's GEMM and conv speed in one process beside NumPy and PyTorch")
    p.add_argument("--full", action="store_true", help="every case (default: the quick ones)")
    p.add_argument("--backend", default="cpp")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", help="write the result as JSON here (default: print the table)")
    a = p.parse_args(argv)
    res = run(quick=not a.full, backend=a.backend, threads=a.threads, rounds=a.rounds,
              progress=lambda c: print(f"  {c}", file=sys.stderr, flush=True))
    return emit(res, a.out, print_result)


if __name__ == "__main__":
    raise SystemExit(_main())
