"""The machine pydl runs on, and which build of the native modules it uses.

One place for what ``pydl info`` prints and ``pydl bench`` records: the CPU
model, its SIMD features, its caches (from sysfs), and the native code path
chosen at import.

The default (portable) build compiles each native module once per x86-64
level, as separate extension modules (setup.py)::

    pydl._cpp_avx512  / pydl._cython_avx512   -march=x86-64-v4 (AVX-512 F/BW/CD/DQ/VL)
    pydl._cpp_avx2    / pydl._cython_avx2     -march=x86-64-v3 (AVX2, FMA, BMI2, F16C)
    pydl._cpp_base    / pydl._cython_base     -march=x86-64-v2 (SSE4.2, no AVX)

``pydl._cpp`` and ``pydl._cython`` are small shims that import the best
module the CPU can run (:func:`choose_level`); each module is whole, so no
code built for one level is ever inlined into, or shared with, another (the
ODR trap of mixing ``-m`` flags inside one .so). ``PYDL_SIMD=avx2|scalar``,
set before import, lowers the choice, so an AVX-512 machine stands in for an
AVX2 or a baseline one. A ``PYDL_ARCH=native`` build has one module per
family (``_cpp_native``, ``_cython_native``) for the build machine only.

Only the standard library is imported here: the shims run this at import.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import platform

#: the levels of a portable build, best first
LEVELS = ("avx512", "avx2", "base")

#: the CPU flags (Linux /proc/cpuinfo names) each level's -march may use: the
#: x86-64 psABI levels v4, v3 and v2 (``abm`` is Linux's name for LZCNT)
REQUIRES = {
    "base": frozenset({"sse4_1", "sse4_2", "ssse3", "popcnt", "cx16"}),
    "avx2": frozenset({"sse4_1", "sse4_2", "ssse3", "popcnt", "cx16",
                       "avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}),
    "avx512": frozenset({"sse4_1", "sse4_2", "ssse3", "popcnt", "cx16",
                         "avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm",
                         "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
}

#: the C++ kernels' run-time level (``_cpp.simd_level()``) each module tops out at
SIMD_OF_LEVEL = {"avx512": "avx512", "avx2": "avx2", "base": "scalar"}

#: ``PYDL_SIMD`` values -> the level they ask for
_REQUEST = {"avx512": "avx512", "avx2": "avx2", "scalar": "base", "base": "base"}

#: the features ``pydl info`` lists
SHOWN_FEATURES = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma")


@functools.lru_cache(maxsize=1)
def _cpuinfo_fields() -> dict:
    """The fields of the first CPU in /proc/cpuinfo ("model name", "flags", "vendor_id", "cpu
    family", "model", ...), read once; {} where there is none."""
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    return _cpuinfo_fields().get("model name") or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The feature flags this CPU (and OS) reports: /proc/cpuinfo on Linux,
    else NumPy's own run-time detection, mapped to the Linux names."""
    flags = _cpuinfo_fields().get("flags")
    return frozenset(flags.split()) if flags is not None else _numpy_flags()


def _numpy_flags() -> frozenset:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            return frozenset()
    names = {"SSSE3": "ssse3", "SSE41": "sse4_1", "SSE42": "sse4_2", "POPCNT": "popcnt",
             "AVX": "avx", "AVX2": "avx2", "FMA3": "fma", "F16C": "f16c", "AVX512F": "avx512f",
             "AVX512CD": "avx512cd", "AVX512BW": "avx512bw", "AVX512DQ": "avx512dq", "AVX512VL": "avx512vl"}
    out = {linux for np_name, linux in names.items() if feats.get(np_name)}
    if "avx2" in out:  # NumPy does not list these; every AVX2 CPU has them
        out |= {"cx16", "bmi1", "bmi2", "movbe", "abm"}
    elif "sse4_2" in out:
        out.add("cx16")
    return frozenset(out)


def cpu_features(flags=None) -> dict:
    """The SIMD features ``pydl info`` shows, as name -> bool."""
    flags = cpu_flags() if flags is None else flags
    return {name: name in flags for name in SHOWN_FEATURES}


def _short(missing) -> str:
    return "/".join(sorted(m.replace("avx512", "") if m.startswith("avx512") else m for m in missing))


def choose_level(flags, requested: str | None = None) -> tuple[str, str]:
    """(level, why): the best of :data:`LEVELS` the CPU flags allow, lowered
    to ``requested`` (a ``PYDL_SIMD`` value) when that is lower."""
    flags = frozenset(flags)
    best = next((lv for lv in LEVELS if REQUIRES[lv] <= flags), None)
    if best is None:
        best, why = "base", ("cpu reports no x86-64-v2 flags (missing " + _short(REQUIRES["base"] - flags)
                             + "): trying base")
    elif best == "avx512":
        why = "cpu has avx512f/bw/vl/dq"
    elif best == "avx2":
        why = "cpu has avx2+fma, lacks " + _short(REQUIRES["avx512"] - flags)
    else:
        why = "cpu lacks " + _short(REQUIRES["avx2"] - flags)
    if requested:
        want = _REQUEST.get(requested.strip().lower())
        if want is None:
            why += f"; PYDL_SIMD={requested!r} ignored (expected avx512, avx2 or scalar)"
        elif LEVELS.index(want) > LEVELS.index(best):
            best, why = want, f"PYDL_SIMD={requested}"
        elif want != best:
            why += f"; PYDL_SIMD={requested} is above what the cpu has"
    return best, why


def build_kind() -> str:
    """'portable' (one module per level) or 'native' (PYDL_ARCH=...: one module for the build machine)."""
    try:
        from pydl import _build_config

        return _build_config.KIND
    except ImportError:  # a tree where setup.py has not run: whichever modules are there
        return "native" if importlib.util.find_spec("pydl._cpp_native") else "portable"


_CHOSEN: dict = {}


def load_native(family: str):
    """Import and return the module behind ``pydl._<family>`` (``cpp`` or ``cython``)."""
    kind = build_kind()
    if kind == "native":
        try:
            from pydl._build_config import ARCH as arch
        except ImportError:
            arch = "?"
        level, why = "native", f"PYDL_ARCH={arch} build: one module, for the build machine only"
    else:
        level, why = choose_level(cpu_flags(), os.environ.get("PYDL_SIMD"))
    name = f"pydl._{family}_{level}"
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"pydl._{family}: {name} ({why}) did not import: {e}. "
                          f"Build it: python setup.py build_ext --inplace") from e
    _CHOSEN[family] = {"module": name, "level": level, "why": why}
    if family == "cpp" and hasattr(mod, "set_cache_sizes"):
        t = tuning()
        mod.set_cache_sizes(t["l1d"], t["l2"], t["l3"])
        for hook, value in t["table"].get(level, {}).items():
            getattr(mod, hook)(*value)
    return mod


def path_in_use() -> dict:
    """The build kind and, per native family imported so far, the module chosen and why."""
    out = {"build": build_kind()}
    for family in ("cpp", "cython"):
        try:
            importlib.import_module(f"pydl._{family}")
        except ImportError as e:
            out[family] = {"error": str(e)}
            continue
        out[family] = dict(_CHOSEN.get(family, {}))
    cpp = out.get("cpp", {})
    if "module" in cpp:
        mod = importlib.import_module(cpp["module"])
        cpp["simd_in_use"] = mod.simd_level()
        cpp["compiled_simd"] = mod.compiled_simd()
    return out


def caches(cpu: int = 0) -> list[dict]:
    """The caches CPU ``cpu`` sees (Linux sysfs): level, type, size in bytes, line size, sharing CPUs."""
    base = f"/sys/devices/system/cpu/cpu{cpu}/cache"
    try:  # os.listdir: Path.glob's first call costs ~4 ms, and this runs at import (tuning)
        entries = sorted(e for e in os.listdir(base) if e.startswith("index"))
    except OSError:
        entries = []
    out = []
    for e in entries:
        def read(name, d=os.path.join(base, e)):
            try:
                with open(os.path.join(d, name)) as f:
                    return f.read().strip()
            except OSError:
                return None

        size = read("size")
        nbytes = None
        if size:
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1].upper(), 1)
            nbytes = int(size.rstrip("KkMmGg")) * mult
        out.append({"level": int(read("level") or 0), "type": read("type"), "size": nbytes,
                    "line": int(read("coherency_line_size") or 0) or None,
                    "shared_cpus": read("shared_cpu_list")})
    return out


def microarch(fields: dict | None = None) -> str:
    """The CPU's microarchitecture family from its vendor, family and model numbers:
    'zen2', 'zen3', 'zen4', 'zen5', 'intel', or 'unknown'."""
    f = _cpuinfo_fields() if fields is None else fields
    try:
        family, model = int(f.get("cpu family", "")), int(f.get("model", ""))
    except ValueError:
        return "unknown"
    vendor = f.get("vendor_id", "")
    if vendor == "AuthenticAMD":
        if family == 23:
            return "zen2"
        if family == 25:  # Zen 3: models 0x00-0x0f, 0x20-0x5f; Zen 4: 0x10-0x1f, 0x60-0xaf
            return "zen4" if 0x10 <= model <= 0x1F or 0x60 <= model <= 0xAF else "zen3"
        if family == 26:
            return "zen5"
    if vendor == "GenuineIntel":
        return "intel"
    return "unknown"


#: per-microarchitecture settings of the cpp kernels where a measurement showed that the
#: cache-derived defaults are not the best (dev/build/tuning.md has the figures):
#: family -> module level -> {native hook name: its arguments}. Families and levels without an
#: entry run the defaults.
MICROARCH_TABLE: dict[str, dict[str, dict[str, tuple]]] = {}


def _cache_bytes(cs: list[dict], level: int, per_cpu: bool) -> int:
    """Bytes of the level-``level`` data or unified cache (0 when unknown); ``per_cpu``: divided
    among the logical CPUs sharing it."""
    for c in cs:
        if c.get("level") == level and c.get("type") in ("Data", "Unified") and c.get("size"):
            return c["size"] // (_count_cpus(c.get("shared_cpus")) if per_cpu else 1)
    return 0


def _count_cpus(cpu_list: str | None) -> int:
    """How many CPUs a sysfs list such as '0-3,8-11' names (1 when unknown)."""
    n = 0
    for part in (cpu_list or "").split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            n += (int(hi) - int(lo) + 1) if hi.isdigit() else 1
    return max(n, 1)


@functools.lru_cache(maxsize=1)
def tuning() -> dict:
    """What the cpp kernels are tuned from on this CPU: the caches per logical CPU (L1d and L2
    whole, the L3 divided among the CPUs sharing it), the microarchitecture family, and that
    family's entries of :data:`MICROARCH_TABLE`. ``PYDL_CACHES=l1d,l2,l3`` (bytes) overrides the
    caches (to try another machine's blocks)."""
    env = os.environ.get("PYDL_CACHES")
    if env:
        try:
            l1d, l2, l3 = (int(x) for x in env.split(","))
        except ValueError:
            raise ValueError(f"PYDL_CACHES: expected three byte counts 'l1d,l2,l3', got {env!r}") from None
        source = "PYDL_CACHES"
    else:
        cs = caches()  # L1d and L2 are a core's own (sysfs lists its SMT siblings as sharers)
        l1d, l2, l3 = _cache_bytes(cs, 1, False), _cache_bytes(cs, 2, False), _cache_bytes(cs, 3, True)
        source = "sysfs" if (l1d or l2 or l3) else "unknown (the levels' constants)"
    arch = microarch()
    return {"l1d": l1d, "l2": l2, "l3": l3, "source": source, "microarch": arch,
            "table": dict(MICROARCH_TABLE.get(arch, {}))}


def describe() -> dict:
    """CPU model, logical CPUs, SIMD features, caches, and the native path in use."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_features": cpu_features(),
        "caches": caches(),
        "native": path_in_use(),
    }


def cache_line(c: dict) -> str:
    kind = {"Data": "d", "Instruction": "i", "Unified": ""}.get(c.get("type"), "")
    return f"L{c['level']}{kind} {human_bytes(c.get('size') or 0)}"


def human_bytes(n: int) -> str:
    """'32 KiB', '1 MiB' ('?' for 0: unknown)."""
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n else "?"


def info() -> dict:
    """Everything ``pydl info`` prints (and ``pydl bench`` records), as a dict: versions,
    the machine (:func:`describe`), threads, backends, the C++ build, the GPU."""
    import sys

    import numpy as np

    import pydl
    from pydl import backends

    m = describe()
    out = {
        "pydl": pydl.__version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": m["cpu"],
        "cpu_count": m["cpu_count"],
        "cpu_features": m["cpu_features"],
        "caches": m["caches"],
        "native": m["native"],
        "threads": backends.get_num_threads(),
        "neighbours": backends._neighbours.status(),
        "backends": backends.available(),
    }
    try:
        from pydl import _cpp

        out["cpp_build"] = dict(_cpp.build_info())
        out["cpp_build"]["simd_in_use"] = _cpp.simd_level()
        out["tuning"] = dict(tuning(), gemm_blocks={dt: _cpp.gemm_blocks(dt) for dt in ("float32", "float64")})
    except ImportError as e:
        out["cpp_build"] = {"error": str(e)}
    try:
        import numba

        out["numba"] = numba.__version__
    except ImportError:
        out["numba"] = None
    out["gpu"] = _gpu_info()
    return out


def _gpu_info() -> dict:
    try:
        import cupy
    except Exception as e:
        return {"cupy": None, "reason": f"CuPy not installed ({type(e).__name__})"}
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        devs = []
        for i in range(n):
            p = cupy.cuda.runtime.getDeviceProperties(i)
            devs.append({"name": p["name"].decode(), "cc": f"{p['major']}.{p['minor']}",
                         "memory_gib": round(p["totalGlobalMem"] / 2**30, 1)})
        return {"cupy": cupy.__version__, "devices": devs}
    except Exception as e:
        return {"cupy": cupy.__version__, "reason": f"no usable GPU ({type(e).__name__}: {e})"}
