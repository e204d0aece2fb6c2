"""The benchmark runner: every op's bench cases, on every available pydl
backend (and its named variants), beside the NumPy reference and PyTorch.

Cases come from the registry: ``spec.bench(rng, float32)`` (``--quick`` keeps
those tagged "quick"); an op without ``bench=`` runs its largest conformance
case, marked ``source="conformance"`` in the results. Each (op, case,
backend, mode) is one *job*; mode is "forward" or "forward+backward" (the
forward with ``spec.call`` keeping what it saves, then ``spec.call_backward``).
PyTorch runs the spec's ``torch`` oracle on float32 tensors: under
``no_grad`` for the forward, with ``torch.autograd.grad`` for
forward+backward.

Each job: inputs bound once, copied enough times to exceed the last-level
cache when small (timing.rotation_copies), warm-up calls outside the clock,
timed calls until the time budget, then the output of a fresh call (poisoned
output buffers) checked against the float64 NumPy reference with the spec's
tolerances. A wrong result is recorded as ``check="mismatch"`` and fails the
run (``RunResult.failures``).

**One process per runtime.** Thread pools that share the cores slow each
other down: a pool that has just finished keeps spinning (OpenBLAS's
pthreads busy-wait after every call; libgomp spins GOMP_SPINCOUNT rounds),
and a 2-thread parallel region whose second thread has no core waits at its
barrier for a whole scheduler time slice (4-8 ms here, which is why a
microsecond kernel can read 8 ms on a busy machine). In one process pydl's
kernels, Numba's omp layer and PyTorch all share ONE libgomp (same soname:
whichever loads first serves all; checked with /proc/self/maps), so there
is no second OpenMP pool to fight, but OpenBLAS (NumPy, and the float64
reference checks), the NumPy reference and whatever ran just before still
are. ``OMP_WAIT_POLICY=passive`` would hide the spinning but also changes how
our kernels run (every parallel region then pays a futex wake-up), so it
would time a configuration nobody uses. Instead ``isolate=True`` (the default
of ``pydl bench``) runs the jobs of each runtime - numpy, cpp, cython, numba,
torch, cuda - in its own child process (``python -m pydl.bench._worker``),
and outside the numpy process OpenBLAS gets one thread
(``OPENBLAS_NUM_THREADS=1``: there it only computes the float64 reference,
off the clock), so no idle pool spins beside the timed one. Cases are
regenerated from the same seed in each child, so every runtime times
identical inputs.

**Busy machines.** Measured here (2 vCPUs, load average 6-8 from other
processes): with libgomp's default spin-waiting, a 2-thread PyTorch
``13x64 @ 64x11`` matmul took either 0.005 ms or 30-50 ms depending on the
process (batch_norm 0.3 ms or 70 ms); with ``OMP_WAIT_POLICY=PASSIVE`` it was
0.02 ms every time (batch_norm 0.7-1.8 ms). A spinning thread burns the time
slice its partner needs to reach the barrier, so every parallel region
becomes a scheduling lottery; that, not PyTorch itself, is the "7x slower"
seen before. ``wait_policy="auto"`` (the default) therefore gives every
worker ``OMP_WAIT_POLICY=PASSIVE`` when the load average exceeds the core
count, and leaves the environment alone on a quiet machine (where spinning
is what users run and costs nothing). The policy used and the load average
are recorded in the results; ``pydl bench --wait-policy`` overrides.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ..backends import _neighbours
from . import timing

MODES = ("forward", "forward+backward")


@dataclass
class Settings:
    quick: bool = True
    budget: float = 0.25          # seconds of timed calls per job
    min_repeats: int = 3
    ops: list | None = None       # op names or families; None: all
    backends: list | None = None  # e.g. ["cpp", "numpy", "torch"]; None: all available
    variants: bool = True         # time named variants too
    device: str = "cpu"
    modes: tuple = MODES
    seed: int = 0
    isolate: bool = True          # one child process per runtime (see module docstring)
    max_copies: int = 64
    ref_dir: str | None = None    # float64 references shared between the runtime processes
    wait_policy: str = "auto"     # OMP_WAIT_POLICY of the workers: auto, active, passive or inherit


@dataclass
class RunResult:
    records: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def failures(self) -> list:
        return [r for r in self.records if r["check"] == "mismatch"] + \
               [e for e in self.errors if e.get("fatal")]


# -- cases ---------------------------------------------------------------------


def case_rng(seed: int, op: str, case_id: str = "") -> np.random.Generator:
    """The same generator in every process: seeded from the op's name."""
    return np.random.default_rng([seed, zlib.crc32(op.encode()), zlib.crc32(case_id.encode())])


def op_cases(spec, quick: bool, seed: int = 0, dtype=np.float32) -> list[tuple]:
    """[(Case, source)] for one op: its bench cases ("quick" ones when
    ``quick``), else its largest conformance case. Built once per process
    (callers copy the arrays before use)."""
    return _op_cases(spec, spec.bench, spec.cases, bool(quick), int(seed), np.dtype(dtype).name)


@functools.lru_cache(maxsize=None)
def _op_cases(spec, bench, conformance, quick, seed, dtype):
    """The cache key holds the generators, so replacing spec.bench (tests) rebuilds."""
    if spec.bench is not None:
        # a generator may take ``quick=True`` to skip building its big cases
        kw = {"quick": True} if quick and "quick" in inspect.signature(spec.bench).parameters else {}
        cases = spec.bench(case_rng(seed, spec.name), np.dtype(dtype), **kw)
        if quick:
            cases = [c for c in cases if "quick" in c.tags]
        if cases:
            return [(c, "bench") for c in cases]
    cases = spec.cases(case_rng(seed, spec.name), np.dtype(dtype))
    best = max(cases, key=lambda c: spec.nbytes(spec.bind((), c.args)))
    return [(best, "conformance")]


def select_specs(ops) -> list:
    from pydl import registry

    specs = list(registry.SPECS.values())
    if not ops:
        return specs
    known = {s.name for s in specs} | {s.family for s in specs}
    unknown = [o for o in ops if o not in known]
    if unknown:
        raise ValueError(f"--ops: unknown op or family {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    return [s for s in specs if s.name in ops or s.family in ops]


# -- which runtimes time which backends ------------------------------------------


def runtime_of(backend: str) -> str:
    """The process group a backend runs in: its own runtime."""
    return backend.split(":")[0]


def backends_for(spec, settings: Settings) -> list[str]:
    """pydl backends (with variants) and references that time ``spec`` here."""
    from pydl import backends as B
    from pydl import registry

    want = settings.backends
    out = []
    if settings.device == "cuda":
        cands = ["cuda"]
    else:
        cands = [b for b in registry.CPU_ORDER if b != "numpy"]
    for b in cands:
        if want and b not in want and not any(w.startswith(b + ":") for w in want):
            continue
        if B.unavailable_reason(b) is not None:
            continue
        if b in spec.implementations() and (not want or b in want):
            out.append(b)
        if settings.variants:
            for v in registry.variants(spec.name, b):
                name = f"{b}:{v}"
                if not want or b in want or name in want:
                    out.append(name)
    if settings.device == "cpu" and (not want or "numpy" in want):
        out.append("numpy")
    if spec.torch is not None and (not want or "torch" in want) and _have_torch():
        out.append("torch")
    return out


def _have_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def has_backward(spec, backend: str) -> bool:
    from pydl import registry

    if backend == "torch":
        return bool(spec.differentiable)
    from pydl import backends as B

    base, variant = registry.split_backend(backend)
    B.load(base)  # only this backend: importing Numba for a cpp question costs seconds
    key = spec.name + "_backward"
    if variant is None:
        return base in registry.IMPLS.get(key, {})
    return variant in registry.VARIANTS.get(key, {}).get(base, {})


def plan(settings: Settings) -> list[dict]:
    """Every job: {op, case, source, backend, mode}."""
    jobs = []
    for spec in select_specs(settings.ops):
        cases = op_cases(spec, settings.quick, settings.seed)
        for b in backends_for(spec, settings):
            for case, source in cases:
                for mode in settings.modes:
                    if mode == "forward+backward" and not has_backward(spec, b):
                        continue
                    jobs.append(dict(op=spec.name, case=case.id, source=source, backend=b, mode=mode))
    return jobs


# -- progress ------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr (plain lines when not a terminal)."""

    def __init__(self, total: int, offset: int = 0, stream=None, width: int = 28, started: float | None = None):
        self.total, self.done, self.width = max(total, 1), offset, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.time() if started is None else started
        self._last = 0.0

    def step(self, label: str) -> None:
        self.done += 1
        frac = self.done / self.total
        bar = "#" * int(frac * self.width)
        line = (f"[{bar:<{self.width}s}] {self.done:4d}/{self.total} "
                f"{time.time() - self.t0:5.0f}s  {label}")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:150])
            if self.done >= self.total:
                self.stream.write("\n")
        elif time.perf_counter() - self._last > 2 or self.done >= self.total:
            self.stream.write(line + "\n")
            self._last = time.perf_counter()
        self.stream.flush()


# -- running jobs --------------------------------------------------------------------


def _as_tuple(x, n):
    return tuple(x) if n > 1 else (x,)


def _shapes(a: dict) -> dict:
    from pydl import _array

    return {k: list(v.shape) for k, v in a.items() if _array.kind(v) is not None}


def _to_device(a: dict, device: str) -> dict:
    from pydl import testing

    if device != "cuda":
        return testing.copy_args(a)
    import cupy as cp

    return testing.copy_args(a, xp=cp)


def _sync(device):
    if device == "cuda":
        import cupy as cp

        cp.cuda.get_current_stream().synchronize()


class _Case:
    """One case prepared for timing: normalized args, rotated copies, grads,
    and the float64 reference (computed on first use, after timing)."""

    def __init__(self, spec, case, source, settings: Settings):
        from pydl import testing

        self.spec, self.case, self.source = spec, case, source
        self.a = spec.bind((), testing.copy_args(case.args))
        self.in_bytes = sum(v.nbytes for v in self.a.values() if hasattr(v, "nbytes"))
        self.copies = min(settings.max_copies, timing.rotation_copies(self.in_bytes, settings.max_copies))
        self.device = settings.device
        self.ref_dir = settings.ref_dir
        self.args = [_to_device(self.a, self.device) for _ in range(self.copies)]
        g = testing.upstream_grads(spec, self.a, case_rng(settings.seed, spec.name, case.id + "/grad"),
                                   np.float32)
        self.grad_np = g
        self.grad = g if self.device == "cpu" else _grad_to_device(g)
        self._ref = None

    def reference(self):
        """(outputs, grads) of the float64 NumPy reference (computed by the
        first process that needs it, read from ``ref_dir`` by the others)."""
        path = None
        if self._ref is None and self.ref_dir:
            path = os.path.join(self.ref_dir, f"{self.spec.name}--{zlib.crc32(self.case.id.encode()):08x}.pkl")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    self._ref = pickle.load(f)
        if self._ref is None:
            from pydl import testing

            spec = self.spec
            a64 = testing.copy_args(self.a, np.float64)
            out, saved = spec.call(a64, "numpy")
            grads = None
            if spec.differentiable:
                g64 = tuple(None if x is None else x.astype(np.float64) for x in _as_tuple(self.grad_np, spec.outputs))
                g64 = g64 if spec.outputs > 1 else g64[0]
                grads = spec.call_backward(g64, a64, saved, "numpy")
            self._ref = (_as_tuple(out, spec.outputs), grads)
            if path:
                with open(path + ".tmp", "wb") as f:
                    pickle.dump(self._ref, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(path + ".tmp", path)
        return self._ref

    def reference32(self, backward: bool, bf16: bool = False):
        """(outputs, grads) of the NumPy reference run in float32 (its own rounding error); with
        ``bf16``, on bf16-rounded float inputs and upstream gradient (the error a bf16 computation
        makes from its operands' rounding alone)."""
        cache = self.__dict__.setdefault("_ref32", {})
        if cache.get(bf16) is None or (backward and cache[bf16][1] is None):
            from pydl import testing

            spec = self.spec
            rnd = testing.round_bf16 if bf16 else (lambda v: v)
            a = {k: (rnd(v) if getattr(v, "dtype", None) is not None and v.dtype.kind == "f" else v)
                 for k, v in testing.copy_args(self.a).items()}
            out, saved = spec.call(a, "numpy")
            g = tuple(None if x is None else rnd(x) for x in _as_tuple(self.grad_np, spec.outputs))
            grads = spec.call_backward(g if spec.outputs > 1 else g[0], a, saved, "numpy") if backward else None
            cache[bf16] = (_as_tuple(out, spec.outputs), grads)
        return cache[bf16]


def _grad_to_device(g):
    import cupy as cp

    return tuple(cp.asarray(x) for x in g) if isinstance(g, tuple) else cp.asarray(g)


def _pydl_fns(pc: _Case, backend: str, mode: str):
    spec = pc.spec

    if mode == "forward":
        def fn(k):
            return spec.call(pc.args[k], backend)[0]
    else:
        def fn(k):
            a = pc.args[k]
            out, saved = spec.call(a, backend)
            return out, spec.call_backward(pc.grad, a, saved, backend)
    return fn


def _torch_setup(pc: _Case, mode: str):
    """Tensors for every copy (sharing memory with the NumPy copies) and the timed fn."""
    import torch
    import torch.nn.functional as F

    from pydl import _array

    spec = pc.spec
    dev = "cuda" if pc.device == "cuda" else "cpu"
    if dev == "cuda":  # a float32 comparison: PyTorch's GPU convolutions default to TF32 (10-bit mantissas)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def tensors(a, grad_on):
        t = {}
        for k, v in a.items():
            if _array.kind(v) is not None:
                x = torch.as_tensor(v, device=dev)
                if grad_on and k in spec.differentiable and v.dtype.kind == "f":
                    x.requires_grad_(True)
                t[k] = x
            else:
                t[k] = v
        return t

    bwd = mode == "forward+backward"
    targs = [tensors(a, bwd) for a in pc.args]
    grads = tuple(torch.as_tensor(_np(g), device=dev) for g in _as_tuple(pc.grad_np, spec.outputs))

    def call(t):
        if not bwd:
            with torch.no_grad():
                return _as_tuple(spec.torch(torch, F, t), spec.outputs), None
        outs = _as_tuple(spec.torch(torch, F, t), spec.outputs)
        inputs = [t[k] for k in spec.differentiable if isinstance(t.get(k), torch.Tensor) and t[k].requires_grad]
        pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
        gs = torch.autograd.grad([p[0] for p in pairs], inputs, [p[1] for p in pairs], allow_unused=True)
        return outs, dict(zip([k for k in spec.differentiable if isinstance(t.get(k), torch.Tensor)
                               and t[k].requires_grad], gs))

    def fn(k):
        return call(targs[k])

    def fresh():
        return call(tensors(_to_device(pc.a, pc.device), bwd))

    return fn, fresh


def _np(x):
    from pydl import testing

    return testing.to_numpy(x)


def check_job(pc: _Case, backend: str, mode: str) -> tuple[str, str]:
    """("ok"|"mismatch", note): a fresh call vs the float64 reference.

    Each output and gradient must meet the spec's float32 tolerance for these
    arguments (``spec.tolerance``: scaled by the op's accumulation length where
    the spec gives ``tol_scale``, e.g. K for a GEMM). The specs choose those for
    the small conformance cases; at benchmark sizes a long
    reduction (a softmax row of 1000, a bias gradient summed over 2048 rows)
    legitimately accumulates more float32 rounding. An output that misses the
    spec's tolerance still passes if its largest error is at most twice the
    largest error of the NumPy reference itself run in float32 (the
    flash-attention rule, STYLE.md); the note then says so, with both errors.
    A bf16 variant (``cuda:bf16``) is held to the same rule at its precision:
    at most twice the error of the reference run on bf16-rounded inputs.
    """
    from pydl import _array

    spec = pc.spec
    ref_out, ref_grads = pc.reference()
    try:
        if backend == "torch":
            _, fresh = _torch_setup(pc, mode)
            outs, gd = fresh()
            outs = tuple(o.detach().cpu().numpy() for o in outs)
            grads = None
            if gd is not None:
                grads = tuple(None if gd.get(k) is None else gd[k].detach().cpu().numpy()
                              for k in spec.differentiable)
                # torch gives None for an input that did not influence the output: that is a zero gradient
                grads = tuple(np.zeros_like(r) if (g is None and r is not None) else g
                              for g, r in zip(grads, ref_grads))
        else:
            a = _to_device(pc.a, pc.device)
            with _array.poisoned():
                out, saved = spec.call(a, backend)
            outs = tuple(_np(o) for o in _as_tuple(out, spec.outputs))
            grads = None
            if mode == "forward+backward":
                with _array.poisoned():
                    grads = tuple(_np(g) for g in spec.call_backward(pc.grad, a, saved, backend))
    except Exception as e:  # noqa: BLE001 - reported as a failed check, named
        return "mismatch", f"{spec.name}[{backend}] raised {type(e).__name__}: {e}"
    pairs = [(f"output[{i}]", ("out", i), o, r) for i, (o, r) in enumerate(zip(outs, ref_out))]
    if grads is not None and ref_grads is not None:
        pairs += [(f"d{n}", ("grad", j), g, r) for j, (n, g, r) in enumerate(zip(spec.differentiable, grads, ref_grads))
                  if r is not None]
    notes = []
    for label, which, got, ref in pairs:
        tol = spec.tolerance("float32", pc.a, grad=which[0] != "out")
        try:
            testing_assert_close(f"{spec.name}[{backend}] {label}", got, ref, *tol)
        except AssertionError as e:
            err = _max_err(got, ref)
            err32 = _max_err(pc.reference32(which[0] == "grad")[which[0] == "grad"][which[1]], ref)
            if np.isfinite(err) and err <= 2 * err32:
                notes.append(f"{label}: max error {err:.3g} misses the spec tolerance at this size but is within "
                             f"2x the float32 NumPy reference's own error {err32:.3g}")
                continue
            if backend.partition(":")[2] == "bf16":  # (torch is no pydl backend: no split_backend)
                err16 = _max_err(pc.reference32(which[0] == "grad", bf16=True)[which[0] == "grad"][which[1]], ref)
                if np.isfinite(err) and err <= 2 * err16:
                    notes.append(f"{label}: bf16 max error {err:.3g}, within 2x the NumPy reference's own on "
                                 f"bf16-rounded inputs {err16:.3g}")
                    continue
            return "mismatch", f"{e}\n  (max error {err:.3g}; the float32 NumPy reference's own: {err32:.3g})"
    return "ok", "; ".join(notes)


def testing_assert_close(*args):
    from pydl import testing

    testing.assert_close(*args)


def _max_err(got, ref) -> float:
    got, ref = _np(got).astype(np.float64), _np(ref).astype(np.float64)
    if got.shape != ref.shape:
        return float("inf")
    finite = np.isfinite(ref)
    if (np.isfinite(got) != finite).any():
        return float("inf")
    return float(np.max(np.abs(got - ref)[finite])) if finite.any() else 0.0


def run_jobs(jobs: list[dict], settings: Settings, progress: Progress | None = None) -> RunResult:
    """Run ``jobs`` in this process; checks after each case's timings."""
    from pydl import registry
    from pydl.bench.env import thread_settings

    res = RunResult()
    prepared: dict = {}
    for job in jobs:
        spec = registry.SPECS[job["op"]]
        key = (job["op"], job["case"])
        label = f"{job['op']} {job['case']} {job['backend']} {job['mode']}"
        try:
            if key not in prepared:
                prepared.clear()  # one case in memory at a time
                case = next(c for c, _ in op_cases(spec, settings.quick, settings.seed) if c.id == job["case"])
                prepared[key] = _Case(spec, case, job["source"], settings)
            pc = prepared[key]
            if job["backend"] == "torch":
                fn, _ = _torch_setup(pc, job["mode"])
            else:
                fn = _pydl_fns(pc, job["backend"], job["mode"])
            times = timing.time_calls(fn, pc.copies, settings.budget, settings.min_repeats,
                                      device=settings.device)
            check, detail = check_job(pc, job["backend"], job["mode"])
            flops = float(spec.flops(pc.a))
            nbytes = float(spec.nbytes(pc.a))
            rec = dict(job, family=spec.family, device=settings.device, dtype="float32",
                       shapes=_shapes(pc.a), params={k: _jsonable(v) for k, v in pc.a.items()
                                                     if not hasattr(v, "shape")},
                       flops=flops, bytes=nbytes, copies=pc.copies, times_s=times,
                       **timing.summarize(times), check=check, check_detail=detail,
                       threads=thread_settings())
            res.records.append(rec)
            if check == "mismatch":
                print(f"\nWRONG RESULT: {job['op']} on {job['backend']} ({job['mode']}, case "
                      f"{job['case']}):\n{detail}", file=sys.stderr, flush=True)
        except Exception as e:  # a crash in one kernel must not hide the others' figures
            res.errors.append(dict(job, error=f"{type(e).__name__}: {e}", fatal=True))
            print(f"\nERROR: {label}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if progress:
            progress.step(label)
    return res


def _jsonable(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return repr(v)


def run(settings: Settings, progress: bool = True) -> RunResult:
    """Plan and run every job; one child process per runtime when ``isolate``."""
    jobs = plan(settings)
    groups: dict[str, list] = {}
    for j in jobs:
        groups.setdefault(runtime_of(j["backend"]), []).append(j)
    bar = Progress(len(jobs)) if progress else None
    if not settings.isolate:
        return run_jobs(jobs, settings, bar)
    res = RunResult()
    done, started = 0, time.time()
    with tempfile.TemporaryDirectory(prefix="pydl-bench-refs-") as refs:
        shared = Settings(**{**asdict(settings), "ref_dir": refs})
        for runtime, gjobs in groups.items():
            child = _run_child(runtime, gjobs, shared, done, len(jobs), progress, started)
            res.records += child.records
            res.errors += child.errors
            done += len(gjobs)
    return res


def _run_child(runtime: str, jobs, settings: Settings, offset: int, total: int, progress: bool, started: float) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="pydl-bench-") as d:
        spec_path, out_path = os.path.join(d, "jobs.json"), os.path.join(d, "out.json")
        with open(spec_path, "w") as f:
            json.dump(dict(settings=asdict(settings), jobs=jobs, offset=offset, total=total,
                           progress=progress, started=started, out=out_path), f)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
        if runtime != "numpy":  # see the module docstring: no idle OpenBLAS pool beside the timed one
            env.setdefault("OPENBLAS_NUM_THREADS", "1")
        if runtime == "torch" and _neighbours.set_spincount():
            # PyTorch timed as a program without pydl runs it: libgomp's own spin, not pydl's choice
            env.pop("GOMP_SPINCOUNT", None)
            env["PYDL_GOMP_SPINCOUNT"] = "default"
        policy = effective_wait_policy(settings.wait_policy)
        if policy != "inherit":
            env["OMP_WAIT_POLICY"] = policy.upper()
        p = subprocess.run([sys.executable, "-m", "pydl.bench._worker", spec_path], env=env)
        if not os.path.exists(out_path):
            return RunResult(errors=[dict(job, error=f"worker process exited with {p.returncode}", fatal=True)
                                     for job in jobs])
        with open(out_path) as f:
            d = json.load(f)
        return RunResult(records=d["records"], errors=d["errors"])


def busy() -> bool:
    """More runnable processes than cores (1-minute load average): oversubscribed."""
    return os.getloadavg()[0] > (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else (os.cpu_count() or 1))


def effective_wait_policy(policy: str) -> str:
    """``auto``: PASSIVE on an oversubscribed machine, else what the environment says."""
    if policy not in ("auto", "active", "passive", "inherit"):
        raise ValueError(f"wait_policy: expected auto, active, passive or inherit, got {policy!r}")
    if policy == "auto":
        return "passive" if busy() else "inherit"
    return policy


def _worker(path: str) -> int:
    with open(path) as f:
        d = json.load(f)
    s = d["settings"]
    s["modes"] = tuple(s["modes"])
    settings = Settings(**s)
    bar = Progress(d["total"], d["offset"], started=d["started"]) if d["progress"] else None
    res = run_jobs(d["jobs"], settings, bar)
    with open(d["out"], "w") as f:
        json.dump(dict(records=res.records, errors=res.errors), f)
    return 0

