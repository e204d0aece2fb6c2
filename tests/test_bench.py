"""pydl bench / pydl check on a tiny case set: the JSON schema, a wrong
variant failing the run loudly, the report files, merging, the peaks cache
and check's exit codes. No timing is asserted."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pydl import cli, registry, testing
from pydl.bench import analysis, check, peaks, report, runner

OPS = ["relu", "sigmoid"]


def _settings(**kw):
    kw.setdefault("ops", OPS)
    kw.setdefault("backends", ["cpp", "numpy"])
    return runner.Settings(quick=True, budget=0.002, min_repeats=2, isolate=False, max_copies=2, **kw)


@pytest.fixture(scope="module")
def small_bench(monkeypatch_module):
    """relu and sigmoid on small inputs (bench cases replaced for the test)."""
    for name in OPS:
        spec = registry.SPECS[name]

        def bench(rng, dtype, scale=6.0 if name == "sigmoid" else 3.0):
            return [registry.Case("x4099", dict(x=(rng.standard_normal(4099) * scale).astype(dtype)), tags=("quick",))]

        monkeypatch_module.setattr(spec, "bench", bench)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture
def wrong_variant():
    """A cpp variant of relu that returns x + 1: the run must fail on it."""
    key = "relu"
    registry.register(key, "cpp", variant="wrong_for_test")(lambda x: x + 1)
    yield "cpp:wrong_for_test"
    del registry.VARIANTS[key]["cpp"]["wrong_for_test"]


@pytest.fixture(scope="module")
def fake_peaks():
    return {"key": {}, "cpu": {"threads": 2, "copy_gbps": 30.0, "fma_gflops": {"avx512_2t": 400.0},
                              "fma_best_simd": "avx512", "compute_gflops": 400.0}, "gpu": None}


def _run(fake_peaks, tmp_path, **kw):
    s = _settings(**kw)
    res = runner.run(s, progress=False)
    env = {"cpu": "test cpu", "cpu_count": 2, "threads": {}, "git_commit": None}
    return res, report.make_run(res, s, fake_peaks, env, 1.0)


def test_plan_and_schema(small_bench, fake_peaks, tmp_path):
    s = _settings(torch=False) if False else _settings()
    jobs = runner.plan(s)
    assert {(j["op"], j["backend"], j["mode"]) for j in jobs} == {
        (o, b, m) for o in OPS for b in ("cpp", "numpy") for m in runner.MODES}
    res, run = _run(fake_peaks, tmp_path)
    assert not res.failures and not res.errors
    for r in res.records:
        for k in ("op", "family", "case", "source", "backend", "mode", "device", "flops", "bytes",
                  "times_s", "median_s", "q1_s", "q3_s", "iqr_s", "repeats", "copies", "check", "threads", "shapes"):
            assert k in r, k
        assert r["check"] == "ok" and r["source"] == "bench" and len(r["times_s"]) == r["repeats"] >= 2
        assert r["median_s"] == pytest.approx(float(np.median(r["times_s"])))
    rows = {(r["op"], r["backend"], r["mode"]): r for r in run["rows"]}
    cpp = rows[("relu", "cpp", "forward")]
    rec = next(r for r in res.records if (r["op"], r["backend"], r["mode"]) == ("relu", "cpp", "forward"))
    ref = next(r for r in res.records if (r["op"], r["backend"], r["mode"]) == ("relu", "numpy", "forward"))
    # every derived figure recomputes from the raw record and the peaks
    assert cpp["gbps"] == pytest.approx(rec["bytes"] / rec["median_s"] / 1e9)
    assert cpp["bound"] == "memory" and cpp["pct_peak"] == pytest.approx(100 * cpp["gbps"] / 30.0)
    assert cpp["x_numpy"] == pytest.approx(ref["median_s"] / rec["median_s"])
    json.dumps(run)  # serializable


def test_conformance_case_used_without_bench():
    spec = registry.SPECS["tanh"]
    if spec.bench is None:
        (case, source), = runner.op_cases(spec, quick=True)
        assert source == "conformance"
    spec = registry.SPECS["matmul"]
    cases = runner.op_cases(spec, quick=True)
    assert all(src in ("bench", "conformance") for _, src in cases)


def test_wrong_variant_fails_loudly(small_bench, fake_peaks, tmp_path, wrong_variant, capsys):
    res, run = _run(fake_peaks, tmp_path, ops=["relu"], backends=["cpp", wrong_variant, "numpy"])
    bad = [r for r in res.failures]
    assert bad and all(r["backend"] == wrong_variant for r in bad)
    assert "relu" in capsys.readouterr().err
    paths = report.write([run], tmp_path / "rep")
    assert "MISMATCH" in paths["md"].read_text() and "FAILURES" in paths["html"].read_text()


def test_report_files_and_merge(small_bench, fake_peaks, tmp_path):
    _, run = _run(fake_peaks, tmp_path)
    paths = report.write([run], tmp_path / "a")
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert "### elementwise" in md and "| relu |" in md and "x numpy" in md
    assert "<table>" in page and page.count("data:image/png;base64,") >= 2  # roofline + speedup bars
    assert list((tmp_path / "a").glob("*.png"))
    d = json.loads(paths["json"].read_text())
    assert d["schema"] == report.SCHEMA and d["runs"][0]["records"] and d["runs"][0]["peaks"]["cpu"]
    # merge: a second machine's results on the same page
    other = json.loads(paths["json"].read_text())
    other["runs"][0]["environment"]["cpu"] = "other machine"
    (tmp_path / "other.json").write_text(json.dumps(other))
    merged = report.load_runs([tmp_path / "other.json"])
    paths2 = report.write([run] + merged, tmp_path / "b")
    assert "other machine" in paths2["html"].read_text() and "test cpu" in paths2["md"].read_text()
    assert len(json.loads(paths2["json"].read_text())["runs"]) == 2
    with pytest.raises(ValueError, match="not a pydl bench"):
        (tmp_path / "bad.json").write_text("{}")
        report.load_runs([tmp_path / "bad.json"])


def test_cli_merge_only(small_bench, fake_peaks, tmp_path, capsys):
    _, run = _run(fake_peaks, tmp_path)
    paths = report.write([run], tmp_path / "a")
    out = tmp_path / "merged"
    assert cli.main(["bench", "--no-run", "--merge", str(paths["json"]), "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and str(out / "report.html") in capsys.readouterr().out


def test_peaks_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDL_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(peaks, "measure_cpu", lambda: calls.append(1) or {"copy_gbps": 1.0, "fma_gflops": {}})
    a = peaks.peaks(verbose=False, gpu=False)
    b = peaks.peaks(verbose=False, gpu=False)
    assert len(calls) == 1 and b["cached"] and b["cpu"] == a["cpu"]
    assert peaks.cache_path().parent == tmp_path and "peaks-" in peaks.cache_path().name
    peaks.peaks(refresh=True, verbose=False, gpu=False)
    assert len(calls) == 2
    # another machine (or pydl version) gets its own entry
    assert peaks.cache_path(dict(peaks.machine_key(), cpu="other")) != peaks.cache_path()
    # so does another SIMD level or thread count of this one: a run held to AVX2 (PYDL_SIMD) on an
    # AVX-512 CPU measures its own roof instead of reusing the unheld run's
    import pydl
    from pydl import _cpp

    assert peaks.machine_key()["simd"] == _cpp.compiled_simd()
    before = pydl.get_num_threads()
    mine = peaks.cache_path()
    try:
        pydl.set_num_threads(1 if before != 1 else 2)
        assert peaks.cache_path() != mine
        peaks.peaks(verbose=False, gpu=False)
        assert len(calls) == 3  # measured again for the other thread count
    finally:
        pydl.set_num_threads(before)


def test_fma_probe_runs():
    _cpp = pytest.importorskip("pydl._cpp")
    simd = _cpp.compiled_simd()
    if simd == "scalar":
        pytest.skip("no AVX2 in this build")
    flops, seconds, checksum = _cpp.fma_peak(simd, 1000, 1)
    assert flops == 2 * 12 * (16 if simd == "avx512" else 8) * 1000 and seconds > 0 and np.isfinite(checksum)
    with pytest.raises(ValueError, match="simd"):
        _cpp.fma_peak("scalar", 10, 1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_read_probe_sums_every_element(threads):
    _cpp = pytest.importorskip("pydl._cpp")
    x = np.random.default_rng(0).random(100_003, dtype=np.float32)  # not a multiple of any width
    nbytes, seconds, checksum = _cpp.read_peak(x, threads)
    assert nbytes == 4 * x.size and seconds > 0
    assert abs(checksum - x.astype(np.float64).sum()) <= 1e-4 * x.size
    with pytest.raises(ValueError, match="threads"):
        _cpp.read_peak(x, 0)
    with pytest.raises(ValueError, match="1-D contiguous"):
        _cpp.read_peak(x[::2], 1)


def test_gpu_peaks_absent_without_cupy():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy present")
    except Exception:
        assert peaks.measure_gpu() is None


def test_check_exit_codes(wrong_variant, capsys):
    assert check.main("relu", backend="cpp", rounds=1, time_it=False) == 0
    assert check.main("relu", backend="cpp", variant="wrong_for_test", rounds=1, time_it=False) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "got" in out and "expected" in out
    assert check.main("no_such_op", time_it=False) == 2
    assert check.main("relu", backend="cpp", variant="nope", time_it=False) == 2


def test_check_with_timing(small_bench, capsys):
    assert check.main("relu", backend="cpp", rounds=1, budget=0.002, isolate=False) == 0
    out = capsys.readouterr().out
    assert "x numpy" in out and "cpp" in out and "OK" in out


def test_gpu_runs_use_gpu_roofs():
    """A run on the GPU is placed under the GPU's measured roofs (no GPU needed)."""
    pk = {"cpu": {"compute_gflops": 400.0, "copy_gbps": 30.0},
          "gpu": {"name": "H100", "copy_gbps": 3000.0, "gemm_gflops": {"fp32": 50000.0}}}
    rec = dict(op="relu", family="elementwise", case="c", source="bench", backend="cuda", mode="forward",
               device="cuda", median_s=1e-3, iqr_s=0.0, repeats=3, check="ok", flops=1e6, bytes=2e9)
    ref = dict(rec, backend="torch", median_s=2e-3)
    rows = {r["backend"]: r for r in analysis.derive({"records": [rec, ref], "peaks": pk})}
    assert analysis.roofs(pk, "cuda")["gbps"] == 3000.0
    assert rows["cuda"]["bound"] == "memory" and rows["cuda"]["pct_peak"] == pytest.approx(100 * 2000 / 3000)
    assert rows["cuda"]["x_torch"] == pytest.approx(2.0) and rows["cuda"]["x_numpy"] is None


def test_plan_without_torch(small_bench, monkeypatch):
    """Without PyTorch the plan (and the pytest-benchmark suite built from it) just has no torch jobs."""
    monkeypatch.setattr(runner, "_have_torch", lambda: False)
    jobs = runner.plan(_settings(backends=None))
    assert jobs and not any(j["backend"] == "torch" for j in jobs)
    monkeypatch.undo()
    assert any(j["backend"] == "torch" for j in runner.plan(_settings(backends=None))) == runner._have_torch()


def test_quick_bench_cases_are_valid():
    """Every op's quick bench cases bind (the normalizer accepts them) and are tagged quick."""
    for spec in registry.SPECS.values():
        for case, source in runner.op_cases(spec, quick=True):
            spec.bind((), case.args)
            assert source == "conformance" or "quick" in case.tags, (spec.name, case.id)


def test_wait_policy(monkeypatch):
    monkeypatch.setattr(runner, "busy", lambda: True)
    assert runner.effective_wait_policy("auto") == "passive"
    monkeypatch.setattr(runner, "busy", lambda: False)
    assert runner.effective_wait_policy("auto") == "inherit"
    assert runner.effective_wait_policy("active") == "active"
    with pytest.raises(ValueError, match="wait_policy"):
        runner.effective_wait_policy("spin")


@pytest.mark.parametrize("wrong", [False, True])
def test_bf16_variant_checked_at_its_precision(fake_peaks, tmp_path, monkeypatch, wrong):
    """A bf16 variant passes with bf16 rounding errors (at most 2x those of the NumPy reference on
    bf16-rounded inputs, STYLE.md's rule) and fails with an error beyond them."""
    spec = registry.SPECS["matmul"]
    monkeypatch.setattr(spec, "bench", lambda rng, dtype: [registry.Case(
        "96x200@200x64", dict(a=rng.standard_normal((96, 200)).astype(dtype),
                              b=rng.standard_normal((200, 64)).astype(dtype)), tags=("quick",))])

    def matmul_bf16(a, b):  # what the cuda:bf16 variant computes, plus a wrong offset
        y = testing.round_bf16(a) @ testing.round_bf16(b)
        return y + np.float32(0.5) if wrong else y

    registry.register("matmul", "cpp", variant="bf16")(matmul_bf16)
    try:
        res, _ = _run(fake_peaks, tmp_path, ops=["matmul"], backends=["cpp:bf16"], modes=("forward",))
    finally:
        del registry.VARIANTS["matmul"]["cpp"]["bf16"]
    (rec,) = [r for r in res.records if r["backend"] == "cpp:bf16"]
    assert rec["check"] == ("mismatch" if wrong else "ok"), rec
    if not wrong:  # passed by the bf16 rule: the float32 tolerance alone rejects bf16 rounding
        assert "bf16 max error" in rec["check_detail"], rec["check_detail"]


def test_wrong_torch_row_is_a_mismatch(small_bench, fake_peaks, tmp_path, monkeypatch):
    """A reference row that misses the tolerance is recorded as a mismatch (not an error of the harness)."""
    pytest.importorskip("torch")
    spec = registry.SPECS["relu"]
    monkeypatch.setattr(spec, "torch", lambda torch, F, a: F.relu(a["x"]) + 0.5)
    res, _ = _run(fake_peaks, tmp_path, ops=["relu"], backends=["torch"], modes=("forward",))
    (rec,) = [r for r in res.records if r["backend"] == "torch"]
    assert rec["check"] == "mismatch" and not res.errors, (rec["check_detail"], res.errors)
