"""One benchmark per op x backend x case (see conftest.py)."""
import itertools

from pydl import registry
from pydl.bench import runner

_CASES: dict = {}


def _case(job, quick):
    key = (job["op"], job["case"])
    if key not in _CASES:
        _CASES.clear()  # one case's copies in memory at a time
        spec = registry.SPECS[job["op"]]
        case = next(c for c, _ in runner.op_cases(spec, quick) if c.id == job["case"])
        _CASES[key] = runner._Case(spec, case, job["source"], runner.Settings(quick=quick))
    return _CASES[key]


def test_op(benchmark, job, request):
    pc = _case(job, not request.config.getoption("--bench-all"))
    if job["backend"] == "torch":
        fn, _ = runner._torch_setup(pc, job["mode"])
    else:
        fn = runner._pydl_fns(pc, job["backend"], job["mode"])
    k = itertools.count()
    fn(0)  # JIT and first-touch outside the measurement
    benchmark.group = f"{job['op']} {job['case']} {job['mode']}"
    benchmark(lambda: fn(next(k) % pc.copies))
    spec = pc.spec
    flops, nbytes = float(spec.flops(pc.a)), float(spec.nbytes(pc.a))
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(op=job["op"], case=job["case"], backend=job["backend"], mode=job["mode"],
                                source=job["source"], flops=flops, bytes=nbytes, copies=pc.copies)
    if job["mode"] == "forward" and med > 0:
        benchmark.extra_info.update(gflops=flops / med / 1e9, gbps=nbytes / med / 1e9)
    check, detail = runner.check_job(pc, job["backend"], job["mode"])
    assert check == "ok", detail
