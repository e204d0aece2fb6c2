"""Builds pydl's native modules; metadata lives in pyproject.toml.

- ``pydl._cpp``    (pybind11) from kernels/cpp/*.cpp: OpenMP, -O3.
- ``pydl._cython`` from kernels/cython/_cython.pyx, which includes one
  .pyx per op family: OpenMP, -O3.
- kernels/cuda/*.cu and kernels/common/*.cuh ship inside the package
  (pydl/kernels/...), for CuPy to compile at run time.

Environment:
- ``PYDL_ARCH``: the -march target, default ``native`` (this CPU: AVX-512
  where it has it). ``x86-64-v3`` gives a portable AVX2 build, ``x86-64-v2``
  a build with no AVX at all (the scalar paths).
- ``PYDL_EXTENSIONS``: which native modules to build, default ``cpp,cython``.
"""
import os
import shutil
from pathlib import Path

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
ARCH = os.environ.get("PYDL_ARCH", "native")
HEADERS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels" / "common").glob("*.h*"))
WANT = {e.strip() for e in os.environ.get("PYDL_EXTENSIONS", "cpp,cython").split(",") if e.strip()}
FLAGS = ["-O3", f"-march={ARCH}", "-fopenmp", "-fno-math-errno"]


class BuildPyWithKernels(build_py):
    """Copy the CUDA sources into the package, so wheels carry them."""

    def run(self):
        super().run()
        for sub, pattern in (("cuda", "*.cu"), ("common", "*.cuh")):
            dst = Path(self.build_lib) / "pydl" / "kernels" / sub
            dst.mkdir(parents=True, exist_ok=True)
            for src in sorted((ROOT / "kernels" / sub).glob(pattern)):
                shutil.copy2(src, dst / src.name)


ext_modules = []
if "cpp" in WANT:
    ext_modules.append(
        Pybind11Extension(
            "pydl._cpp",
            sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels" / "cpp").glob("*.cpp")),
            include_dirs=["kernels/common"],
            depends=HEADERS,  # a header edit rebuilds
            cxx_std=17,
            extra_compile_args=FLAGS + [f'-DPYDL_ARCH="{ARCH}"'],
            extra_link_args=["-fopenmp"],
        )
    )
if "cython" in WANT:
    ext_modules += cythonize(
        [
            Extension(
                "pydl._cython",
                ["kernels/cython/_cython.pyx"],
                depends=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels" / "cython").glob("*.pyx")),
                extra_compile_args=FLAGS,
                extra_link_args=["-fopenmp"],
            )
        ],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
        include_path=["kernels/cython"],
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext, "build_py": BuildPyWithKernels})
