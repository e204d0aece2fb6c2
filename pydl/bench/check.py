"""``pydl check OP``: the loop a kernel engineer runs after each edit.

1. Correctness sweep: ``--cases N`` rounds of the op's conformance cases with
   fresh random data (seed ``--seed``), in every dtype the op supports, on
   each selected backend/variant: forward (outputs poisoned first) and
   backward against the float64 NumPy reference, with the spec's tolerances.
   The first mismatches are printed with their index, value and expected value.
2. Timing: every registered variant of the op side by side with the default
   backends and the references (NumPy, PyTorch), on its bench cases, through
   the same runner as ``pydl bench`` (which checks the outputs again).

Returns a non-zero exit status on any mismatch or error.
"""
from __future__ import annotations

import sys

import numpy as np


def targets(spec, backend: str | None, variant: str | None) -> list[str]:
    """The backends (``name`` or ``name:variant``) to check."""
    from pydl import backends as B
    from pydl import registry

    if variant and not backend:
        raise ValueError("--variant needs --backend (a variant belongs to one backend)")
    if backend:
        base, v = registry.split_backend(backend)
        v = variant or v
        if v is None:
            if base not in spec.implementations():
                raise ValueError(f"--backend {base}: does not implement {spec.name} "
                                 f"(implemented by: {', '.join(sorted(spec.implementations()))})")
            return [base]
        if v not in registry.variants(spec.name, base):
            raise ValueError(f"--variant {v}: {base} has no such variant of {spec.name} "
                             f"(variants: {', '.join(registry.variants(spec.name, base)) or 'none'})")
        return [f"{base}:{v}"]
    out = []
    for b in registry.BACKENDS:
        if b == "cuda" or B.unavailable_reason(b) is not None:
            continue
        if b in spec.implementations():
            out.append(b)
        out += [f"{b}:{v}" for v in registry.variants(spec.name, b)]
    return out


def _has_backward(spec, backend):
    from .runner import has_backward

    return has_backward(spec, backend)


def sweep(spec, backends: list[str], rounds: int, seed: int, out=None) -> int:
    """Forward and backward of every case, ``rounds`` times; returns the mismatch count."""
    out = out or sys.stdout
    from pydl import testing

    bad = 0
    for b in backends:
        n_ok = n_bad = 0
        for dtype in spec.dtypes:
            rtol, atol = spec.tol[dtype]
            grtol, gatol = spec.grad_tolerance(dtype)
            for i in range(rounds):
                rng = np.random.default_rng([seed, i])
                for case in spec.cases(rng, np.dtype(dtype)):
                    label = f"{spec.name}[{b}] {dtype} case {case.id} (round {i})"
                    try:
                        a64 = testing.copy_args(case.args, np.float64)
                        ref, ref_saved = testing.run_forward(spec, a64, "numpy", saved=True)
                        got, saved = testing.run_forward(spec, case.args, b, saved=True)
                        refs = ref if spec.outputs > 1 else (ref,)
                        gots = got if spec.outputs > 1 else (got,)
                        for j, (g, r) in enumerate(zip(gots, refs)):
                            testing.assert_close(f"{label} forward output[{j}]", g, r, rtol, atol)
                        if spec.differentiable and _has_backward(spec, b):
                            bound = spec.bind((), testing.copy_args(case.args))
                            grad = testing.upstream_grads(spec, bound, rng, np.dtype(dtype))
                            g64 = (tuple(None if x is None else x.astype(np.float64) for x in grad)
                                   if isinstance(grad, tuple) else grad.astype(np.float64))
                            rg = testing.run_backward(spec, g64, a64, "numpy", saved=ref_saved)
                            gg = testing.run_backward(spec, grad, case.args, b, saved=saved)
                            for name, g, r in zip(spec.differentiable, gg, rg):
                                testing.assert_close(f"{label} backward d{name}", g, r, grtol, gatol)
                        n_ok += 1
                    except AssertionError as e:
                        n_bad += 1
                        if n_bad <= 3:
                            print(f"MISMATCH {e}", file=out)
                    except Exception as e:  # a crash is a failure too, reported the same way
                        n_bad += 1
                        if n_bad <= 3:
                            print(f"ERROR {label}: {type(e).__name__}: {e}", file=out)
        bad += n_bad
        print(f"{spec.name} {b:16s} {n_ok} cases ok, {n_bad} mismatched "
              f"(forward{' and backward' if _has_backward(spec, b) else ''}; dtypes {', '.join(spec.dtypes)})",
              file=out)
    return bad


def timing_table(result, out=None) -> None:
    """The runner's records of one op as a text table, references last."""
    out = out or sys.stdout
    from . import analysis

    rows = analysis.derive({"records": result.records, "peaks": None})
    rows.sort(key=lambda r: (r["case"], r["mode"], r["backend"] in ("numpy", "torch"), r["median_s"]))
    print(f"\n{'case':26s} {'mode':17s} {'backend':18s} {'median ms':>10s} {'IQR ms':>8s} "
          f"{'GFLOP/s':>8s} {'GB/s':>7s} {'x numpy':>8s} {'x torch':>8s}  check", file=out)
    for r in rows:
        f = lambda v, s=".2f": "-" if v is None else format(v, s)  # noqa: E731
        print(f"{r['case'][:26]:26s} {r['mode']:17s} {r['backend']:18s} {r['median_s'] * 1e3:10.4g} "
              f"{r['iqr_s'] * 1e3:8.3g} {f(r['gflops'], '.3g'):>8s} {f(r['gbps'], '.3g'):>7s} "
              f"{f(r['x_numpy']):>8s} {f(r['x_torch']):>8s}  {r['check']}", file=out)


def main(op: str, backend=None, variant=None, rounds=3, seed=0, time_it=True, quick=True,
         budget=0.3, isolate=True, out=None) -> int:
    from pydl import registry

    from . import runner

    if op not in registry.SPECS:
        print(f"pydl check: unknown op {op!r}; known: {', '.join(sorted(registry.SPECS))}", file=sys.stderr)
        return 2
    out = out or sys.stdout
    spec = registry.SPECS[op]
    try:
        chosen = targets(spec, backend, variant)
    except ValueError as e:
        print(f"pydl check: {e}", file=sys.stderr)
        return 2
    print(f"checking {op} on {', '.join(chosen) or 'no backend'} against the float64 NumPy reference "
          f"({rounds} rounds of {len(spec.cases(np.random.default_rng(0), np.dtype('float32')))} cases, seed {seed})",
          file=out)
    bad = sweep(spec, chosen, rounds, seed, out)
    if time_it:
        wanted = sorted(set(chosen) | ({b.split(":")[0] for b in chosen}) | {"numpy", "torch"})
        settings = runner.Settings(quick=quick, budget=budget, ops=[op], backends=wanted, variants=not backend,
                                   isolate=isolate)
        if backend:  # exactly the requested target(s) plus the references
            settings.backends = sorted(set(chosen) | {"numpy", "torch"})
            settings.variants = any(":" in b for b in chosen)
        res = runner.run(settings, progress=True)
        timing_table(res, out)
        bad += len(res.failures)
        for f in res.failures:
            print(f"FAILED in timing run: {f['op']} on {f['backend']} ({f['mode']}): "
                  f"{f.get('error') or f.get('check_detail')}", file=out)
    print(f"\n{'FAIL' if bad else 'OK'}: {bad} mismatch(es)", file=out)
    return 1 if bad else 0
