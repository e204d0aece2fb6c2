"""Compile every CUDA kernel family the way the loader does on a GPU, without a GPU.

    python dev/cuda/nvrtc_check.py [--arch sm_90a] [--lib /path/to/libnvrtc.so.13]

pydl's cuda backend compiles ``kernels/cuda/<family>.cu`` at run time with NVRTC
(CuPy's RawModule), with the options of ``_loader.module`` and the template
instances the adapters declare. ``nvcc -c`` (``make cuda-check``) is not the same
compiler front end: it defines what the CUDA headers define (``INFINITY``, for
one, which NVRTC does not: the first GPU run found three such uses) and it
instantiates no template the adapters name. This script runs NVRTC itself
through ctypes (the ``nvidia-cuda-nvrtc`` wheel, no driver and no device
needed) on each family with those options and name expressions, and fails
with NVRTC's log if any family does not compile or any name does not resolve.
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def find_nvrtc(explicit: str | None) -> str:
    """libnvrtc: --lib, $PYDL_NVRTC, the nvidia-cuda-nvrtc wheel, or the system's."""
    cands = [explicit, os.environ.get("PYDL_NVRTC")]
    try:
        import nvidia  # the namespace package of NVIDIA's CUDA wheels

        for d in nvidia.__path__:
            cands += sorted(glob.glob(os.path.join(d, "cu*", "lib", "libnvrtc.so*")))
            cands += sorted(glob.glob(os.path.join(d, "cuda_nvrtc", "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    cands += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    for c in cands:
        if not c or "builtins" in c or ".alt." in c:
            continue
        try:
            ctypes.CDLL(c)
            return c
        except OSError:
            continue
    raise SystemExit("nvrtc_check: no libnvrtc found (pip install nvidia-cuda-nvrtc, or pass --lib)")


class NVRTC:
    def __init__(self, path: str):
        # NVRTC opens its builtins library by name at compile time: load the one beside it first
        for b in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))):
            if ".alt." not in b:
                ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def _ok(self, rc: int, what: str):
        if rc != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(rc).decode()}")

    def version(self) -> str:
        a, b = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b)), "nvrtcVersion")
        return f"{a.value}.{b.value}"

    def compile(self, src: str, name: str, options: list[str], names: list[str]):
        """(ok, log, {name expression: lowered name})."""
        prog = ctypes.c_void_p()
        self._ok(self.lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None),
                 "nvrtcCreateProgram")
        try:
            for n in names:
                self._ok(self.lib.nvrtcAddNameExpression(prog, n.encode()), f"nvrtcAddNameExpression({n})")
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            rc = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._ok(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
            buf = ctypes.create_string_buffer(size.value)
            self._ok(self.lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
            log = buf.value.decode(errors="replace")
            lowered = {}
            if rc == 0:
                for n in names:
                    out = ctypes.c_char_p()
                    self._ok(self.lib.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(out)),
                             f"nvrtcGetLoweredName({n})")
                    lowered[n] = out.value.decode()
            return rc == 0, log, lowered
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="90", help="compute capability as the loader sees it (default 90)")
    ap.add_argument("--lib", default=None, help="path to libnvrtc.so")
    args = ap.parse_args(argv)
    from pydl.backends.cuda import _loader
    from pydl.backends.cuda import conv, elementwise, gemm, pool  # noqa: F401  (they declare their instances)

    nv = NVRTC(find_nvrtc(args.lib))
    print(f"NVRTC {nv.version()}")
    bad = 0
    for cu in sorted(_loader.kernel_dir().glob("*.cu")):
        family = cu.stem
        names = list(_loader._NAMES.get(family, ()))
        opts = list(_loader.nvrtc_options(args.arch))
        ok, log, lowered = nv.compile(cu.read_text(), str(cu), opts, names)
        print(f"{'ok  ' if ok else 'FAIL'} {family}: {len(lowered)}/{len(names)} template instances; "
              f"options {' '.join(opts[:3])}")
        if not ok or log.strip():
            print(log.rstrip())
        bad += not ok or (bool(log.strip()) and "warning" in log)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
