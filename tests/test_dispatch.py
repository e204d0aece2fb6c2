"""The portable build: ``pydl._cpp`` / ``pydl._cython`` import the best module
the CPU runs (pydl/machine.py), ``PYDL_SIMD`` lowers the choice, every level's
module runs the conformance checks, and no module holds instructions above its
level (so a wheel built on an AVX-512 machine cannot die with SIGILL on an
AVX2 or a baseline one).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pydl
from pydl import machine

ROOT = Path(pydl.__file__).resolve().parents[1]
PORTABLE = machine.build_kind() == "portable"
needs_portable = pytest.mark.skipif(not PORTABLE, reason="a PYDL_ARCH (native) build has one module per family")

V2 = {"sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm"}
V3 = V2 | {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave"}
V4 = V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


@pytest.mark.parametrize("flags,level", [
    (V4, "avx512"),
    (V4 | {"avx512_vnni", "avx512_bf16", "avx512vbmi"}, "avx512"),
    (V4 - {"avx512vl"}, "avx2"),            # AVX-512 without VL (Knights Landing): the AVX2 module
    (V4 - {"avx512bw", "avx512dq"}, "avx2"),
    (V3, "avx2"),                           # Zen 1-3, Haswell .. Alder Lake
    (V3 - {"fma"}, "base"),
    (V3 - {"bmi2"}, "base"),                # -march=x86-64-v3 code may use shlx/sarx
    (V2 | {"avx"}, "base"),                 # Sandy / Ivy Bridge
    (V2, "base"),
    (set(), "base"),                        # nothing known: the baseline, with the reason saying so
])
def test_choose_level_picks_the_best_the_cpu_has(flags, level):
    got, why = machine.choose_level(flags)
    assert got == level, why
    assert why


def test_choose_level_reasons_and_pydl_simd():
    assert machine.choose_level(V4) == ("avx512", "cpu has avx512f/bw/vl/dq")
    assert machine.choose_level(V4, "avx2") == ("avx2", "PYDL_SIMD=avx2")
    assert machine.choose_level(V4, "scalar") == ("base", "PYDL_SIMD=scalar")
    assert machine.choose_level(V3, "scalar") == ("base", "PYDL_SIMD=scalar")
    assert machine.choose_level(V4, "avx512")[0] == "avx512"
    level, why = machine.choose_level(V3, "avx512")  # PYDL_SIMD never raises the level
    assert level == "avx2" and "above what the cpu has" in why
    level, why = machine.choose_level(V3, "sse9")
    assert level == "avx2" and "ignored" in why
    assert "lacks" in machine.choose_level(V3)[1]


@needs_portable
def test_this_process_runs_the_best_level():
    from pydl import _cpp, _cython

    level, why = machine.choose_level(machine.cpu_flags(), os.environ.get("PYDL_SIMD"))
    assert _cpp.__name__ == f"pydl._cpp_{level}"
    assert _cython.__name__ == f"pydl._cython_{level}"
    assert _cpp.build_info()["kind"] == "portable"
    assert _cpp.compiled_simd() == machine.SIMD_OF_LEVEL[level]
    path = machine.path_in_use()
    assert path["build"] == "portable"
    assert path["cpp"]["level"] == level and path["cpp"]["why"] == why


def test_info_shows_the_path_and_the_caches(capsys):
    from pydl import cli

    d = machine.info()
    assert d["native"]["build"] in ("portable", "native")
    assert "module" in d["native"]["cpp"] and "why" in d["native"]["cpp"]
    assert all({"level", "type", "size"} <= c.keys() for c in d["caches"])
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"path cpp    {d['native']['cpp']['level']} (" in out


def _module_file(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        pytest.skip(f"{name} is not built")
    return spec.origin


def _levels_this_cpu_runs():
    best = machine.choose_level(machine.cpu_flags())[0]
    return list(machine.LEVELS[machine.LEVELS.index(best):])


# A few ops of every family, forward and backward, cpp (and its named variants) and cython.
SUBSET = " or ".join(f"{op}-{b}" for op in ("matmul", "conv2d", "max_pool2d", "relu") for b in ("cpp", "cython"))


@needs_portable
@pytest.mark.parametrize("level", machine.LEVELS)
def test_every_level_runs_the_conformance_subset(level):
    if level not in _levels_this_cpu_runs():
        pytest.skip(f"this CPU cannot run the {level} module")
    _module_file(f"pydl._cpp_{level}")
    simd = machine.SIMD_OF_LEVEL[level]
    env = dict(os.environ, PYDL_SIMD=simd, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    probe = ("from pydl import _cpp, _cython, machine; "
             "print(_cpp.__name__, _cython.__name__, _cpp.simd_level(), machine.path_in_use()['cpp']['why'])")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == [f"pydl._cpp_{level}", f"pydl._cython_{level}", simd], out.stdout
    if level != _levels_this_cpu_runs()[0]:  # below the CPU's best: the reason names PYDL_SIMD
        assert f"PYDL_SIMD={simd}" in out.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_conformance.py",
         "-k", f"(test_forward or test_backward) and ({SUBSET})"],
        env=env, capture_output=True, text=True, cwd=ROOT)
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 16, tail


# AVX-512 shows as zmm registers, the upper 16 xmm/ymm registers or opmask
# registers; AVX (VEX) as ymm registers or any FMA.
AVX512 = re.compile(r"%zmm\d|%[xy]mm(1[6-9]|2\d|3[01])\b|%k[1-7]\b")
AVX = re.compile(r"%ymm\d|\bvfn?m(add|sub)")


@needs_portable
@pytest.mark.parametrize("family", ["cpp", "cython"])
@pytest.mark.parametrize("level,forbidden", [("avx2", [AVX512]), ("base", [AVX512, AVX])])
def test_lower_modules_hold_no_higher_instructions(family, level, forbidden):
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed: cannot disassemble the modules")
    path = _module_file(f"pydl._{family}_{level}")
    asm = subprocess.run([objdump, "-d", "--no-show-raw-insn", path], capture_output=True, text=True, check=True).stdout
    assert len(asm) > 10_000, "objdump printed no code"
    for pattern in forbidden:
        hits = [line for line in asm.splitlines() if pattern.search(line)]
        assert not hits, f"{path}: {len(hits)} instructions above {level}, e.g.\n" + "\n".join(hits[:5])


@needs_portable
def test_the_avx512_module_has_avx512_code():
    """The check above can see AVX-512: the top module must show it."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    path = _module_file("pydl._cpp_avx512")
    asm = subprocess.run([objdump, "-d", "--no-show-raw-insn", path], capture_output=True, text=True, check=True).stdout
    assert AVX512.search(asm)


def test_no_legacy_module_shadows_the_dispatcher():
    """A pydl/_cpp.*.so of the old single-module build would be imported instead of pydl/_cpp.py."""
    pkg = Path(pydl.__file__).parent
    assert not [p.name for p in pkg.glob("_cpp.*.so")] + [p.name for p in pkg.glob("_cython.*.so")]
