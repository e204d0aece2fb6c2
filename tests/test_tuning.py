"""Per-machine tuning: the cpp kernels' cache blocks come from the caches of the CPU they run on
(pydl.machine.tuning -> _cpp.set_cache_sizes at import), a per-microarchitecture table can
override the native hooks, and results stay right under any blocking."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pydl
from pydl import _cpp, machine

ROOT = Path(pydl.__file__).resolve().parents[1]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), **env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("vendor,family,model,arch", [
    ("AuthenticAMD", 25, 0x01, "zen3"), ("AuthenticAMD", 25, 0x21, "zen3"), ("AuthenticAMD", 25, 0x50, "zen3"),
    ("AuthenticAMD", 25, 0x11, "zen4"), ("AuthenticAMD", 25, 0x61, "zen4"), ("AuthenticAMD", 25, 0xA0, "zen4"),
    ("AuthenticAMD", 26, 0x02, "zen5"), ("AuthenticAMD", 23, 0x31, "zen2"),
    ("GenuineIntel", 6, 0x8F, "intel"), ("AuthenticAMD", 21, 0x02, "unknown"), ("CentaurHauls", 7, 1, "unknown"),
])
def test_microarch_from_vendor_family_model(vendor, family, model, arch):
    assert machine.microarch({"vendor_id": vendor, "cpu family": str(family), "model": str(model)}) == arch


def test_microarch_without_cpuinfo_is_unknown():
    assert machine.microarch({}) == "unknown"
    assert machine.microarch({"vendor_id": "AuthenticAMD", "cpu family": "x", "model": "1"}) == "unknown"


def test_cache_bytes_per_cpu():
    cs = [{"level": 1, "type": "Data", "size": 32768, "shared_cpus": "0,8"},
          {"level": 1, "type": "Instruction", "size": 65536, "shared_cpus": "0,8"},
          {"level": 2, "type": "Unified", "size": 1 << 20, "shared_cpus": "0,8"},
          {"level": 3, "type": "Unified", "size": 32 << 20, "shared_cpus": "0-7,16-23"}]
    assert machine._cache_bytes(cs, 1, False) == 32768       # the data cache, not the instruction one
    assert machine._cache_bytes(cs, 2, False) == 1 << 20
    assert machine._cache_bytes(cs, 3, True) == (32 << 20) // 16
    assert machine._cache_bytes(cs, 4, True) == 0
    assert machine._count_cpus("0-3,8-11") == 8 and machine._count_cpus(None) == 1


def test_this_machine_tuning_is_applied():
    t = machine.tuning()
    assert t["microarch"] in ("zen2", "zen3", "zen4", "zen5", "intel", "unknown")
    if t["source"] == "sysfs":  # Linux: the caches were read, and the module was told
        assert t["l1d"] > 0 and t["l2"] > 0
        assert _cpp.set_cache_sizes(t["l1d"], t["l2"], t["l3"]) == (t["l1d"], t["l2"], t["l3"])
    kc, mc, nc = _cpp.gemm_blocks("float32")
    assert 128 <= kc <= 384 and mc > 0 and nc > 0


# (l1d, l2, l3 per CPU) -> float32 blocks at AVX-512 (MR 14, NR 32) and AVX2 (MR 6, NR 16)
CASES = {
    "zen4": ((32 << 10, 1 << 20, 4 << 20), {"avx512": (256, 252, 1024), "avx2": (256, 252, 1024)}),
    "zen5": ((48 << 10, 1 << 20, 4 << 20), {"avx512": (256, 252, 1024), "avx2": (256, 252, 1024)}),
    "zen3": ((32 << 10, 512 << 10, 4 << 20), {"avx2": (256, 126, 1024)}),
    "small-l1": ((16 << 10, 512 << 10, 2 << 20), {"avx512": (128, 252, 1024), "avx2": (256, 126, 512)}),
    "tiny": ((4 << 10, 16 << 10, 64 << 10), {"avx512": (128, 56, 512), "avx2": (128, 24, 256)}),
}
COMPILED = {"avx512": ("avx512", "avx2"), "avx2": ("avx2",), "scalar": ()}[_cpp.compiled_simd()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_blocks_follow_the_caches(case):
    (l1d, l2, l3), want = CASES[case]
    levels = [lv for lv in want if lv in COMPILED]
    if not levels:
        pytest.skip(f"this module ({_cpp.compiled_simd()}) has none of the levels {sorted(want)}")
    old = _cpp.set_cache_sizes(l1d, l2, l3)
    try:
        for lv in levels:
            assert _cpp.gemm_blocks("float32", lv) == want[lv], lv
    finally:
        _cpp.set_cache_sizes(*old)


def test_unknown_caches_keep_the_levels_constants():
    old = _cpp.set_cache_sizes(0, 0, 0)
    try:
        assert _cpp.gemm_blocks("float32", "scalar") == (256, 64, 1024)
    finally:
        _cpp.set_cache_sizes(*old)


def test_gemm_tuning_overrides_the_derived_blocks():
    kc, mc, nc = _cpp.gemm_blocks("float64")
    _cpp.gemm_tuning(160, 0, 0)
    try:
        assert _cpp.gemm_blocks("float64") == (160, mc, nc)
    finally:
        _cpp.gemm_tuning()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="set_cache_sizes"):
        _cpp.set_cache_sizes(-1, 0, 0)
    with pytest.raises(ValueError, match="dtype"):
        _cpp.gemm_blocks("float16")
    with pytest.raises(ValueError):
        _cpp.gemm_blocks("float32", "sse9")


@pytest.mark.parametrize("caches", ["4096,16384,65536", "49152,2097152,33554432"])
def test_results_right_under_other_machines_blocks(caches):
    """PYDL_CACHES stands in for another machine's caches: tiny ones give the smallest blocks (many
    KC, MC and NC blocks in one product), big ones the largest; the products stay right."""
    code = (
        "import numpy as np, pydl\n"
        "from pydl import _cpp\n"
        "rng = np.random.default_rng(1)\n"
        "for (m, k, n) in [(700, 530, 1100), (61, 1000, 300), (1025, 97, 33)]:\n"
        "    a = rng.standard_normal((m, k)).astype(np.float32); b = rng.standard_normal((k, n)).astype(np.float32)\n"
        "    out = np.full((m, n), np.nan, np.float32)\n"
        "    for algo in ('packed', ''):\n"
        "        _cpp.gemm_matmul_f32(a, b, out, '', algo)\n"
        "        ref = a.astype(np.float64) @ b.astype(np.float64)\n"
        "        err = np.abs(out - ref).max() / np.abs(ref).max()\n"
        "        assert err < 1e-5, (m, k, n, algo, err)\n"
        "print(_cpp.gemm_blocks('float32'))\n")
    out = _run(code, PYDL_CACHES=caches)
    assert out.returncode == 0, out.stderr[-2000:]
    kc = int(out.stdout.strip("()\n").split(",")[0])
    assert kc == (128 if caches.startswith("4096") else 256)


def test_bad_pydl_caches_is_a_clear_error():
    out = _run("from pydl import _cpp", PYDL_CACHES="32k,1m")
    assert out.returncode != 0 and "PYDL_CACHES" in out.stderr


def test_info_shows_the_tuning():
    out = _run("from pydl.cli import main; main(['info'])")
    assert out.returncode == 0, out.stderr
    assert "tuning" in out.stdout and "GEMM KC/MC/NC" in out.stdout
