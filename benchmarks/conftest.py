"""pytest-benchmark suites generated from the op registry's bench cases.

    pytest benchmarks/                      # the quick cases
    pytest benchmarks/ --bench-all          # every bench case
    pytest benchmarks/ -k "gelu and cpp"    # a selection
    pytest benchmarks/ --benchmark-autosave; pytest benchmarks/ --benchmark-compare

One test per op x backend (and variant) x case, plus the NumPy reference and
PyTorch (when installed); ``extra_info`` holds flops, bytes and the rates, so
``--benchmark-compare`` between commits shows regressions. Every test checks
its output against the float64 reference after timing (runner.check_job:
the spec's tolerance, or at most 2x the float32 NumPy reference's own error).
Not part of ``make test`` (pyproject's testpaths is tests/ only).

All tests share one process, so PyTorch's OpenMP pool and pydl's sit side by
side (see pydl.bench.runner on why that slows both). For clean comparisons run
the runtimes separately, e.g. ``-k "not torch"`` then ``-k torch``, or use
``pydl bench``, which isolates each runtime in its own process.
"""
from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("pydl")
    group.addoption("--bench-all", action="store_true", default=False,
                    help="every bench case, not only those tagged quick")
    group.addoption("--bench-backward", action="store_true", default=False,
                    help="time forward+backward too")
    group.addoption("--bench-no-torch", action="store_true", default=False, help="skip PyTorch")


def pytest_generate_tests(metafunc):
    if "job" not in metafunc.fixturenames:
        return
    from pydl.bench import runner

    cfg = metafunc.config
    modes = runner.MODES if cfg.getoption("--bench-backward") else ("forward",)
    settings = runner.Settings(quick=not cfg.getoption("--bench-all"), modes=modes, isolate=False)
    jobs = runner.plan(settings)
    if cfg.getoption("--bench-no-torch"):
        jobs = [j for j in jobs if j["backend"] != "torch"]
    ids = [f"{j['op']}-{j['backend']}-{j['case']}" + ("-fwdbwd" if j["mode"] != "forward" else "") for j in jobs]
    metafunc.parametrize("job", jobs, ids=ids)
