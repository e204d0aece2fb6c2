"""The ``pydl`` command: ``pydl bench`` (the benchmark report), ``pydl check``
(the kernel developer's correctness + timing loop), ``pydl train`` (train a
classic model on a bundled data set), ``pydl info`` and ``pydl demo`` (a
ten-second smoke run)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pydl.machine import cpu_features, info  # noqa: F401  (pydl info's data: one module, below the CLI)
from pydl.machine import cpu_model as _cpu_model  # noqa: F401  (the old name)


def _print_info(d: dict) -> None:
    print(f"pydl {d['pydl']}  (Python {d['python']}, NumPy {d['numpy']}, Numba {d['numba'] or 'missing'})")
    print(f"platform   {d['platform']}")
    print(f"cpu        {d['cpu']}  ({d['cpu_count']} logical CPUs)")
    feats = d["cpu_features"]
    print("features   " + "  ".join(f"{k}:{'yes' if v else 'no'}" for k, v in feats.items()))
    if d.get("caches"):
        from pydl.machine import cache_line

        print("caches     " + "  ".join(cache_line(c) for c in d["caches"]))
    nat = d.get("native") or {}
    for fam in ("cpp", "cython"):
        c = nat.get(fam) or {}
        if "module" in c:
            print(f"path {fam:<7s}{c['level']} ({c['why']}): {c['module']}, {nat['build']} build")
    b = d["cpp_build"]
    if "error" in b:
        print(f"build      pydl._cpp missing: {b['error']}")
    else:
        print(f"build      {b.get('kind', 'native')}, this module -march={b['arch']}  gcc {b['compiler']}  OpenMP {b['openmp']}  "
              f"compiled SIMD: {b['compiled_simd']}  in use: {b['simd_in_use']}")
    t = d.get("tuning") or {}
    if t:
        from pydl.machine import human_bytes as kib

        blocks = "  ".join(f"{dt} {'/'.join(map(str, kmn))}" for dt, kmn in t.get("gemm_blocks", {}).items())
        level = ((d.get("native") or {}).get("cpp") or {}).get("level", "")
        table = ", ".join(f"{k}{tuple(v)}" for k, v in t["table"].get(level, {}).items()) or "none (cache-derived defaults)"
        print(f"tuning     {t['microarch']}; caches ({t['source']}) L1d {kib(t['l1d'])}, L2 {kib(t['l2'])}, "
              f"L3 {kib(t['l3'])} per CPU -> GEMM KC/MC/NC {blocks}; table: {table}")
    print(f"threads    {d['threads']}")
    nb = d.get("neighbours") or {}
    if nb:
        blas = ", ".join(p.rsplit("/", 1)[-1] for p in nb["libraries"]) or "no OpenBLAS loaded"
        print(f"neighbours OpenMP spin: {nb['openmp_spin']}; OpenBLAS parking "
              f"{'on' if nb['enabled'] else 'off'} before kernels of >= {nb['park_flops']:.0e} flops, one thread "
              f"beside a pool that may spin from {nb['solo_flops']:.0e} (a byte read = {nb['byte_flops']:g} flops; {blas})")
    print("backends")
    for name, s in d["backends"].items():
        state = "available" if s["available"] else "unavailable"
        print(f"  {name:7s} {state:11s} {s['ops']:3d} ops  {'' if s['available'] else s['reason']}")
    g = d["gpu"]
    if g.get("devices"):
        for dev in g["devices"]:
            print(f"gpu        {dev['name']} (sm {dev['cc']}, {dev['memory_gib']} GiB), CuPy {g['cupy']}")
    else:
        print(f"gpu        none: {g.get('reason')}")


DEMO_SIZE = 1 << 21


def demo(size: int = DEMO_SIZE, repeats: int = 7) -> list[dict]:
    """Run a few ops on every backend that has them; check against the
    reference and time them (median of ``repeats``, first call excluded)."""
    import numpy as np

    from pydl import registry, testing

    rng = np.random.default_rng(0)
    x = rng.standard_normal(size).astype(np.float32)
    rows = rng.standard_normal((size // 512, 512)).astype(np.float32)
    work = [("relu", dict(x=x)), ("gelu", dict(x=x)), ("sigmoid", dict(x=x)),
            ("softmax", dict(x=rows, dim=-1)), ("log_softmax", dict(x=rows, dim=-1))]
    results = []
    for name, args in work:
        spec = registry.SPECS[name]
        ref = spec.forward(**testing.copy_args(args, np.float64), backend="numpy")
        rtol, atol = spec.tol["float32"]
        base = None
        for backend in registry.CPU_ORDER[::-1]:
            if backend not in spec.implementations():
                continue
            fn = lambda: spec.forward(**args, backend=backend)  # noqa: E731
            out = fn()
            try:
                testing.assert_close(name, out, ref, rtol, atol)
                ok = "ok"
            except AssertionError as e:
                ok = "MISMATCH: " + str(e).splitlines()[0]
            t = _median_time(fn, repeats)
            base = t if backend == "numpy" else base
            nbytes = spec.nbytes(spec.bind((), args))
            results.append(dict(op=name, backend=backend, ms=t * 1e3, gbps=nbytes / t / 1e9,
                                speedup=(base / t) if base else float("nan"), check=ok))
        torch_row = _time_torch(spec, args, ref, repeats)
        if torch_row:
            results.append(dict(op=name, backend="torch", ms=torch_row[0] * 1e3, gbps=nbytes / torch_row[0] / 1e9,
                                speedup=base / torch_row[0], check=torch_row[1]))
    return results


def _time_torch(spec, args, ref, repeats):
    """(median seconds, check) of PyTorch CPU on the same op, if torch is installed."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    from pydl import testing

    targs = {k: (torch.from_numpy(v) if hasattr(v, "dtype") else v) for k, v in spec.bind((), args).items()}
    fn = lambda: spec.torch(torch, F, targs)  # noqa: E731
    try:
        testing.assert_close(spec.name, fn().numpy(), ref, *spec.tol["float32"])
        ok = "ok"
    except AssertionError as e:
        ok = "MISMATCH: " + str(e).splitlines()[0]
    return _median_time(fn, repeats), ok


def _median_time(fn, repeats):
    """Median seconds of ``repeats`` calls. A pause first lets the OpenMP
    threads of whatever ran before (ours or PyTorch's) stop spinning, so one
    runtime's idle threads do not steal the cores from the next."""
    time.sleep(0.05)
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _print_demo(rows: list[dict], size: int) -> None:
    print(f"\nop demo: float32, {size} elements ({size * 4 / 2**20:g} MiB: fits in L3, so GB/s can pass DRAM bandwidth), "
          f"median wall-clock, every result checked against the float64 reference; torch = PyTorch CPU")
    print(f"{'op':12s} {'backend':8s} {'ms':>8s} {'GB/s':>7s} {'x numpy':>8s}  check")
    for r in rows:
        print(f"{r['op']:12s} {r['backend']:8s} {r['ms']:8.3f} {r['gbps']:7.2f} {r['speedup']:8.2f}  {r['check']}")


def _add_bench(sub) -> None:
    pb = sub.add_parser("bench", help="measure peaks, time every op on every backend, write the report",
                        description="Benchmark every op (registry bench cases) on every available backend, "
                                    "beside NumPy and PyTorch; check every result; write report.md, "
                                    "report.html and results.json.")
    mode = pb.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the quick cases only (default)")
    mode.add_argument("--full", action="store_true", help="every bench case (minutes to hours)")
    pb.add_argument("--ops", help="comma-separated op names or families (default: all); the families "
                                  "'train' (training steps against torch) and 'neighbours' (GEMM and conv in "
                                  "one process beside NumPy and PyTorch) run alone when named alone")
    pb.add_argument("--backends", help="comma-separated: cpp,cython,numba,cuda,numpy,torch or backend:variant")
    pb.add_argument("--no-variants", action="store_true", help="skip the named variants")
    pb.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    pb.add_argument("--budget", type=float, help="seconds of timed calls per job (default 0.05 quick, 1.0 full)")
    pb.add_argument("--forward-only", action="store_true", help="skip forward+backward")
    pb.add_argument("--out", default="bench-report", help="report directory (default ./bench-report)")
    pb.add_argument("--merge", nargs="+", default=[], metavar="RESULTS_JSON",
                    help="results.json files of other machines to put on the same page")
    pb.add_argument("--no-run", action="store_true", help="only merge the --merge files into a report")
    pb.add_argument("--refresh-peaks", action="store_true", help="measure the machine peaks again")
    pb.add_argument("--in-process", action="store_true",
                    help="run every runtime in this process (faster start; timings may suffer "
                         "from other runtimes' spinning threads)")
    pb.add_argument("--wait-policy", choices=("auto", "active", "passive", "inherit"), default="auto",
                    help="OMP_WAIT_POLICY of the timing processes; auto: passive when the load average "
                         "exceeds the core count (spinning threads on a busy machine turn every parallel "
                         "region into a time-slice wait), else inherited")
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument("--threads", type=int, help="threads of the train family, pydl and torch alike "
                                                "(default: pydl's current); --ops train runs it alone")


def _add_check(sub) -> None:
    pc = sub.add_parser("check", help="check one op against the reference, then time its variants",
                        description="Random-case sweep of OP vs the float64 reference (forward and backward), "
                                    "then timing of every registered variant beside NumPy and PyTorch.")
    pc.add_argument("op")
    pc.add_argument("--backend", help="check only this backend (default: every available one and its variants)")
    pc.add_argument("--variant", help="check only this variant of --backend")
    pc.add_argument("--cases", type=int, default=3, help="rounds of random conformance cases (default 3)")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--no-time", action="store_true", help="correctness only")
    pc.add_argument("--full", action="store_true", help="time every bench case, not only the quick ones")
    pc.add_argument("--budget", type=float, default=0.3, help="seconds of timed calls per job")


def bench(args) -> int:
    """``pydl bench``: returns the exit status (1 if any result was wrong)."""
    from pydl.bench import env as benv
    from pydl.bench import peaks as bpeaks
    from pydl.bench import report, runner

    try:
        runs = report.load_runs(args.merge) if args.merge else []
    except (OSError, ValueError) as e:
        print(f"pydl bench: {e}", file=sys.stderr)
        return 2
    failures = []
    if not args.no_run:
        from pydl.bench import neighbours, train_step

        split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
        ops, with_train = train_step.split_ops(split(args.ops), args.full)
        ops, with_neighbours = neighbours.split_ops(ops)
        with_neighbours = with_neighbours and args.device == "cpu"
        settings = runner.Settings(
            quick=not args.full, budget=args.budget or (1.0 if args.full else 0.05),
            ops=ops, backends=split(args.backends), variants=not args.no_variants,
            device=args.device, seed=args.seed, isolate=not args.in_process,
            modes=("forward",) if args.forward_only else runner.MODES, wait_policy=args.wait_policy)
        if args.device == "cuda":
            reason = __import__("pydl.backends", fromlist=["x"]).unavailable_reason("cuda")
            if reason:
                print(f"pydl bench --device cuda: {reason}", file=sys.stderr)
                return 2
        t0 = time.perf_counter()
        environment = benv.environment()
        environment["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        environment["omp_wait_policy_workers"] = runner.effective_wait_policy(settings.wait_policy)
        settings.wait_policy = environment["omp_wait_policy_workers"]  # resolved once for every worker
        if environment["loadavg"][0] > (os.cpu_count() or 1):
            print(f"pydl bench: load average {environment['loadavg'][0]} on {os.cpu_count()} CPUs: other "
                  f"processes share the cores, timings will be noisy (the report says so); workers use "
                  f"OMP_WAIT_POLICY={environment['omp_wait_policy_workers']}", file=sys.stderr)
        try:
            jobs = runner.plan(settings) if ops != [] else []
        except ValueError as e:
            print(f"pydl bench: {e}", file=sys.stderr)
            return 2
        pk = bpeaks.peaks(refresh=args.refresh_peaks, gpu=args.device == "cuda")
        print(f"pydl bench: {len(jobs)} jobs ({'quick' if settings.quick else 'full'}, {settings.device}, "
              f"{settings.budget:g} s each), one process per runtime", file=sys.stderr)
        result = runner.run(settings) if ops != [] else runner.RunResult()
        runs.insert(0, report.make_run(result, settings, pk, environment, time.perf_counter() - t0))
        if with_train:
            print("pydl bench: the train family (one training step of five models against torch)", file=sys.stderr)
            runs[0]["train"] = train_step.run_isolated(threads=args.threads,
                                                       backend=train_step.pydl_backend(settings.backends),
                                                       wait_policy=settings.wait_policy)
            train_step.print_result(runs[0]["train"])
        if with_neighbours:
            print("pydl bench: the neighbours family (GEMM and conv in one process beside NumPy and PyTorch)",
                  file=sys.stderr)
            runs[0]["neighbours"] = neighbours.run_isolated(
                quick=settings.quick, backend=train_step.pydl_backend(settings.backends) or "cpp",
                threads=args.threads)
            neighbours.print_result(runs[0]["neighbours"])
        failures = result.failures
    if not runs:
        print("pydl bench: nothing to report (--no-run without --merge)", file=sys.stderr)
        return 2
    paths = report.write(runs, args.out)
    print(f"\nreport: {paths['html'].resolve()}\n        {paths['md'].resolve()}\n"
          f"raw:    {paths['json'].resolve()}")
    if failures:
        print(f"\nFAILED: {len(failures)} wrong result(s) or error(s):", file=sys.stderr)
        for f in failures:
            print(f"  {f['op']} on {f['backend']} ({f['mode']}, case {f['case']}): "
                  f"{(f.get('error') or f.get('check_detail', '')).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0

# pydl train's defaults per (model, data set), then per model: they reach the
# accuracy targets of the README's table (cosine schedule: epoch e of E at
# lr * (1 + cos(pi (e-1) / E)) / 2; augment: random 2-pixel shifts). Flags override them.
TRAIN_DEFAULTS = {
    ("mlp", "mnist5k"): dict(optimizer="adam", lr=1e-3, batch_size=64, epochs=20, schedule="cosine"),
    ("mlp", "fashion-mnist"): dict(optimizer="adam", lr=1e-3, batch_size=128, epochs=15, schedule="cosine"),
    ("lenet5", "mnist5k"): dict(optimizer="adam", lr=2e-3, batch_size=64, epochs=15, schedule="cosine",
                                augment=True),
    ("lenet5", "fashion-mnist"): dict(optimizer="adam", lr=2e-3, batch_size=128, epochs=12, schedule="cosine"),
}
TRAIN_FALLBACK = dict(optimizer="adam", lr=1e-3, batch_size=64, epochs=10, schedule="cosine", augment=False)


def train_defaults(model: str, data: str) -> dict:
    """The hyper-parameters ``pydl train`` uses for ``model`` on ``data`` unless flags say otherwise."""
    return dict(TRAIN_FALLBACK, **TRAIN_DEFAULTS.get((model, data), {}))


def _add_train(sub) -> None:
    from pydl.train import OPTIMIZERS

    pt = sub.add_parser("train", help="train a classic model on a bundled data set (curves, checkpoint, test accuracy)",
                        description="Train an image classifier (pydl.models) on a bundled data set (pydl.data): "
                                    "per-epoch train/validation loss and accuracy, early stopping, the best "
                                    "checkpoint, curves.csv and curves.png in --out, then the test accuracy. "
                                    "--kfold K cross-validates; --search grid|random tries --param values.")
    pt.add_argument("--model", default="lenet5", help="a registered model (pydl.models.names(); default lenet5)")
    pt.add_argument("--data", default="mnist5k", help="mnist5k (default), fashion-mnist or digits")
    pt.add_argument("--epochs", type=int, help="epochs (default: per model and data set, e.g. lenet5 on mnist5k 15)")
    pt.add_argument("--batch-size", type=int, help="batch size (default: per model and data set)")
    pt.add_argument("--lr", type=float, help="learning rate (default: per model and data set)")
    pt.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam")
    pt.add_argument("--schedule", choices=("cosine", "none"), help="learning-rate schedule (default cosine)")
    pt.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                    help="random shifts of up to 2 pixels (default: on for lenet5 on mnist5k)")
    pt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    pt.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default 0)")
    pt.add_argument("--clip", type=float, help="clip the gradients' total 2-norm to this")
    pt.add_argument("--patience", type=int, help="early stopping: epochs without a validation improvement")
    pt.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shuffle (default 0)")
    pt.add_argument("--backend", default="cpp",
                    help="backend first in the order (default cpp; ops it lacks run on the next fastest), "
                         "numpy for the reference alone, or an order such as cpp,numpy")
    pt.add_argument("--threads", type=int, help="kernel threads (default: pydl's current)")
    pt.add_argument("--out", help="output directory (default runs/MODEL-DATA)")
    pt.add_argument("--resume", metavar="PATH", help="continue from a run's last.safetensors")
    pt.add_argument("--val-fraction", type=float, default=0.1,
                    help="stratified share of the training set held out for validation (default 0.1; 0: none)")
    pt.add_argument("--search", choices=("grid", "random"), help="hyper-parameter search over the --param values")
    pt.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2",
                    help="values to search (lr, batch_size, optimizer, weight_decay, epochs, ... or a model "
                         "option such as hidden); repeat for more names")
    pt.add_argument("--trials", type=int, help="random search: the number of draws")
    pt.add_argument("--kfold", type=int, help="stratified K-fold cross-validation (mean and std of val accuracy)")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)


def _parse_params(items) -> dict:
    space = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not values.strip():
            raise ValueError(f"--param: expected NAME=V1,V2,..., got {item!r}")
        space[name] = [_parse_value(v.strip()) for v in values.split(",") if v.strip()]
    return space


def train(args) -> int:
    """``pydl train``: returns the exit status (2 for bad arguments or data)."""
    from pydl import data, models
    from pydl import train as T

    err = lambda msg: (print(f"pydl train: {msg}", file=sys.stderr), 2)[1]  # noqa: E731
    if args.model not in models.names():
        return err(f"unknown model {args.model!r}; expected one of {', '.join(models.names())}")
    if not 0.0 <= args.val_fraction < 1.0:
        return err(f"--val-fraction must lie in [0, 1), got {args.val_fraction}")
    if (args.search is None) != (not args.param):
        return err("--search grid|random and --param NAME=V1,V2 go together")
    if args.trials is not None and args.search != "random":
        return err("--trials is for --search random")
    if args.kfold is not None and args.resume:
        return err("--resume continues one run; it does not combine with --kfold")
    d = train_defaults(args.model, args.data)
    schedule = args.schedule or d["schedule"]
    cfg = T.Config(model=args.model, optimizer=args.optimizer or d["optimizer"], lr=args.lr or d["lr"],
                   batch_size=args.batch_size or d["batch_size"], epochs=args.epochs or d["epochs"],
                   weight_decay=args.weight_decay, momentum=args.momentum, clip=args.clip,
                   patience=args.patience, schedule=None if schedule == "none" else schedule,
                   augment=d["augment"] if args.augment is None else args.augment, seed=args.seed)
    try:
        space = _parse_params(args.param)
        t0 = time.perf_counter()
        ds = data.load(args.data, seed=args.seed)
        print(f"data       {args.data}: {len(ds.y_train)} train, {len(ds.y_test)} test, {ds.in_shape} "
              f"({time.perf_counter() - t0:.1f} s to read)")
        run_kw = dict(backend=args.backend, threads=args.threads, progress=not args.no_progress)
        T.backend_order(args.backend)  # a bad --backend fails here, before any training
        if args.search:
            return _train_search(args, cfg, ds, space, run_kw)
        if args.kfold is not None:
            print(f"cross-validation: {args.kfold} stratified folds of the {len(ds.y_train)} training samples "
                  f"({cfg.model}, {cfg.epochs} epochs)")
            t0 = time.perf_counter()
            cv = T.cross_validate(cfg, ds.x_train, ds.y_train, args.kfold, log=print, **run_kw)
            print(f"{args.kfold}-fold val accuracy {cv.mean * 100:.2f}% +- {cv.std * 100:.2f}% (std)  "
                  f"[{', '.join(f'{s * 100:.2f}' for s in cv.scores)}]  {time.perf_counter() - t0:.1f} s")
            return 0
        return _train_once(args, cfg, ds, run_kw)
    except (ValueError, TypeError, FileNotFoundError, NotImplementedError) as e:
        return err(str(e))


def _holdout(args, ds):
    """(x_tr, y_tr, x_val, y_val): the stratified --val-fraction of the training set held out."""
    from pydl.data import stratified_split

    if args.val_fraction == 0:
        return ds.x_train, ds.y_train, None, None
    tr, va = stratified_split(ds.y_train, args.val_fraction, seed=args.seed)
    return ds.x_train[tr], ds.y_train[tr], ds.x_train[va], ds.y_train[va]


def _train_once(args, cfg, ds, run_kw) -> int:
    from pydl import data
    from pydl import train as T

    out = args.out or os.path.join("runs", f"{cfg.model}-{args.data}")
    x_tr, y_tr, x_va, y_va = _holdout(args, ds)
    order = T.backend_order(args.backend)
    print(f"model      {cfg.model}  optimizer {cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule or 'constant'})  "
          f"batch {cfg.batch_size}  epochs {cfg.epochs}  weight decay {cfg.weight_decay:g}  "
          f"augment {'yes' if cfg.augment else 'no'}  seed {cfg.seed}")
    print(f"backend    {order or 'automatic'}  threads {args.threads or __import__('pydl').get_num_threads()}  "
          f"train {len(y_tr)}  validation {0 if y_va is None else len(y_va)}")
    t0 = time.perf_counter()
    model, res = T.run(cfg, x_tr, y_tr, x_va, y_va, num_classes=ds.num_classes, out=out, resume=args.resume,
                       **run_kw)
    train_s = time.perf_counter() - t0
    test = data.DataLoader(data.TensorDataset(ds.x_test, ds.y_test), batch_size=500)
    with T._settings(args.backend, args.threads):
        test_loss, test_acc = T.evaluate(model, test)
    best = f"best epoch {res.best_epoch}" + (" (early stop)" if res.stopped_early else "")
    print(f"test accuracy {test_acc * 100:.2f}%  (loss {test_loss:.4f}, {len(ds.y_test)} samples, {best})  "
          f"train time {train_s:.1f} s")
    print(f"files      {res.files.get('best')}  {res.files.get('csv')}  {res.files.get('png')}")
    return 0


def _train_search(args, cfg, ds, space, run_kw) -> int:
    from pydl import train as T

    print(f"search     {args.search} over {space}" + (f", {args.trials} trials" if args.trials else "")
          + (f", {args.kfold}-fold CV each" if args.kfold else f", {args.val_fraction:g} held out"))
    t0 = time.perf_counter()
    res = T.search(cfg, ds.x_train, ds.y_train, space, args.search, trials=args.trials, kfold=args.kfold,
                   val_fraction=args.val_fraction or 0.1, log=print, **run_kw)
    print(f"{'rank':>4s}  {'val acc':>8s}  {'std':>6s}  params")
    for i, r in enumerate(res.trials):
        print(f"{i + 1:4d}  {r['mean'] * 100:7.2f}%  {r['std'] * 100:5.2f}%  {r['params']}")
    print(f"search took {time.perf_counter() - t0:.1f} s; training the best {res.best_params} on the training set")
    args.resume = None
    return _train_once(args, res.best_config, ds, run_kw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pydl", description="pydl: fast deep-learning kernels for NumPy/CuPy")
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_bench(sub)
    _add_check(sub)
    _add_train(sub)
    pi = sub.add_parser("info", help="version, build, CPU features, threads, backends, GPU")
    pi.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("demo", help="run a few ops on every backend, checked and timed (seconds)")
    po = sub.add_parser("overhead", help="autograd's cost over the raw ops, and a 3-layer MLP "
                                         "training step at batch 1 and 64 against PyTorch eager")
    po.add_argument("--threads", type=int, help="threads for pydl and torch (default: pydl's current)")
    po.add_argument("--rounds", type=int, default=9, help="alternating timing rounds (default 9)")
    args = p.parse_args(argv)
    if args.cmd == "overhead":
        from pydl.bench import overhead

        return overhead.main(args)
    if args.cmd == "bench":
        return bench(args)
    if args.cmd == "train":
        return train(args)
    if args.cmd == "check":
        from pydl.bench import check

        return check.main(args.op, backend=args.backend, variant=args.variant, rounds=args.cases,
                          seed=args.seed, time_it=not args.no_time, quick=not args.full, budget=args.budget)
    if args.cmd == "info":
        d = info()
        print(json.dumps(d, indent=2)) if args.json else _print_info(d)
        return 0
    if args.cmd == "demo":
        rows = demo()
        _print_demo(rows, DEMO_SIZE)
        return 0 if all(r["check"] == "ok" for r in rows) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
