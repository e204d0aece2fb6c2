"""Builds pydl's native modules; metadata lives in pyproject.toml.

- ``pydl._cpp``    (pybind11) from kernels/cpp/*.cpp: OpenMP, -O3.
- ``pydl._cython`` from kernels/cython/_cython.pyx, which includes one
  .pyx per op family: OpenMP, -O3, -fno-trapping-math (CYTHON_FLAGS).
- kernels/cuda/*.cu and kernels/common/*.cuh ship inside the package
  (pydl/kernels/...), for CuPy to compile at run time.

One portable build (the default): each native module is compiled once per
x86-64 level, as its own extension module, and ``pydl/_cpp.py`` /
``pydl/_cython.py`` import the best one the CPU runs (pydl/machine.py)::

    _cpp_avx512, _cython_avx512   -march=x86-64-v4   AVX-512, AVX2 and scalar paths
    _cpp_avx2,   _cython_avx2     -march=x86-64-v3   AVX2+FMA and scalar paths
    _cpp_base,   _cython_base     -march=x86-64-v2   scalar paths (SSE4.2)

Nothing is shared between the modules, so no code built for one level can
run on a CPU that only has a lower one. A wheel built on any x86-64 machine
runs at full speed on every other.

Environment:
- ``PYDL_ARCH``: unset (or ``portable``) for the portable build. Any -march
  value (``native``, ``x86-64-v3``, ``znver4``, ...) builds one module per
  family for that target only (``_cpp_native``, ``_cython_native``): the old
  single-target build, for this machine.
- ``PYDL_TUNE``: -mtune of the portable modules, default ``generic``.
- ``PYDL_LEVELS``: which levels a portable build compiles, default
  ``avx512,avx2,base`` (fewer: a quicker developer build; the dispatcher then
  fails to import on a CPU whose best level is missing).
- ``PYDL_EXTENSIONS``: which native modules to build, default ``cpp,cython``.
- ``PYDL_BUILD_JOBS``: C++ files compiled at once within a module (default:
  the CPU count); setup.cfg's ``[build_ext] parallel`` builds modules at once.
- ``PYDL_SANITIZE``: sanitizers to compile the native modules with, e.g.
  ``address,undefined`` (-O1 -g, frame pointers, every finding fatal). For
  ``make sanitize``, which builds a separate copy and runs the tests under it
  with the sanitizer runtimes preloaded; never for a build users run.
"""
import os
import shutil
from pathlib import Path

from Cython.Build import cythonize
from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
ARCH = os.environ.get("PYDL_ARCH", "portable").strip() or "portable"
KIND = "portable" if ARCH == "portable" else "native"
TUNE = os.environ.get("PYDL_TUNE", "generic")
HEADERS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels" / "common").glob("*.h*"))
WANT = {e.strip() for e in os.environ.get("PYDL_EXTENSIONS", "cpp,cython").split(",") if e.strip()}
MARCH = {"avx512": "x86-64-v4", "avx2": "x86-64-v3", "base": "x86-64-v2"}
if KIND == "portable":
    LEVELS = [lv.strip() for lv in os.environ.get("PYDL_LEVELS", "avx512,avx2,base").split(",") if lv.strip()]
    unknown = set(LEVELS) - set(MARCH)
    if unknown:
        raise SystemExit(f"PYDL_LEVELS: unknown level(s) {sorted(unknown)}; expected some of {list(MARCH)}")
    TARGETS = {lv: [f"-march={MARCH[lv]}", f"-mtune={TUNE}"] for lv in LEVELS}
else:
    TARGETS = {"native": [f"-march={ARCH}"]}
FLAGS = ["-O3", "-fopenmp", "-fno-math-errno"]
LINK = ["-fopenmp"]
# The Cython kernels are plain loops left to GCC's vectorizer. With trapping math (GCC's default)
# it may not evaluate an FP operation that the source runs under a condition, so a loop like
# `y = v if v > 0 else v * p` vectorizes only where masked instructions exist (AVX-512): at
# x86-64-v3 every activation and softmax loop stayed scalar, 6-26x slower than at AVX-512 on
# the same CPU. pydl never unmasks FP exceptions, and the flag changes no result (no reassociation).
CYTHON_FLAGS = ["-fno-trapping-math"]
SANITIZE = os.environ.get("PYDL_SANITIZE", "").strip()
if SANITIZE:
    san = [f"-fsanitize={SANITIZE}", "-fno-sanitize-recover=all"]
    FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp", "-fno-math-errno"] + san
    LINK = ["-fopenmp"] + san
GEN = ROOT / "build" / "pydl-src"  # per-level wrapper sources: distinct object files per level

ParallelCompile("PYDL_BUILD_JOBS").install()


def _write(path: Path, text: str) -> str:
    """Write ``text`` unless already there (an unchanged mtime keeps the module up to date)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return str(path.relative_to(ROOT))


def _wrapper(level: str, src: Path) -> str:
    """build/pydl-src/<family>_<level>/<file>: ``#include``s the real source, so each
    level compiles it to its own object file (setuptools names objects by source path)."""
    dst = GEN / f"{src.parent.name}_{level}" / src.name
    rel = os.path.relpath(src, dst.parent)
    if src.suffix == ".pyx":
        dst = dst.with_name(f"_cython_{level}.pyx")
        return _write(dst, f'# cython: language_level=3\n# generated by setup.py\ninclude "{src.name}"\n')
    return _write(dst, f'// generated by setup.py: {src.name} for the {level} module\n#include "{rel}"\n')


def _clean_legacy():
    """Modules of the old single-module build (pydl/_cpp.*.so) would shadow the
    pydl/_cpp.py dispatcher: remove them from an in-place tree."""
    for fam in ("_cpp", "_cython"):
        for so in (ROOT / "pydl").glob(f"{fam}.*.so"):
            so.unlink()
    (ROOT / "kernels" / "cython" / "_cython.c").unlink(missing_ok=True)


_clean_legacy()
_write(ROOT / "pydl" / "_build_config.py",
       f'"""Written by setup.py: how the native modules were built."""\nKIND = {KIND!r}\nARCH = {ARCH!r}\n'
       f"LEVELS = {tuple(TARGETS)!r}\nTUNE = {TUNE if KIND == 'portable' else None!r}\n")


class BuildPyWithKernels(build_py):
    """Copy the CUDA sources into the package, so wheels carry them."""

    def run(self):
        super().run()
        for sub, pattern in (("cuda", "*.cu"), ("common", "*.cuh")):
            dst = Path(self.build_lib) / "pydl" / "kernels" / sub
            dst.mkdir(parents=True, exist_ok=True)
            for src in sorted((ROOT / "kernels" / sub).glob(pattern)):
                shutil.copy2(src, dst / src.name)


CPP_SOURCES = sorted((ROOT / "kernels" / "cpp").glob("*.cpp"))
PYX = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels" / "cython").glob("*.pyx"))
ext_modules, cython_exts = [], []
for level, target in TARGETS.items():
    march = target[0].split("=", 1)[1]
    if "cpp" in WANT:
        ext_modules.append(
            Pybind11Extension(
                f"pydl._cpp_{level}",
                [_wrapper(level, src) for src in CPP_SOURCES],
                include_dirs=["kernels/common", "kernels/cpp"],
                depends=HEADERS + [str(p.relative_to(ROOT)) for p in CPP_SOURCES],  # an edit rebuilds
                cxx_std=17,
                extra_compile_args=FLAGS + target + [f'-DPYDL_ARCH="{march}"', f"-DPYDL_MODULE=_cpp_{level}",
                                                     f'-DPYDL_BUILD_KIND="{KIND}"',
                                                     f'-DPYDL_SANITIZE_FLAGS="{SANITIZE}"'],
                extra_link_args=LINK,
            )
        )
    if "cython" in WANT:
        cython_exts.append(
            Extension(
                f"pydl._cython_{level}",
                [_wrapper(level, ROOT / "kernels" / "cython" / "_cython.pyx")],
                depends=PYX,
                extra_compile_args=FLAGS + CYTHON_FLAGS + target,
                extra_link_args=LINK,
            )
        )
if cython_exts:
    ext_modules += cythonize(
        cython_exts,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
        include_path=["kernels/cython"],
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext, "build_py": BuildPyWithKernels})
