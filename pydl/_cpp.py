"""``pydl._cpp``: the cpp kernels built for the best SIMD level this CPU runs.

The compiled modules are ``pydl._cpp_avx512``, ``_cpp_avx2`` and ``_cpp_base``
(or ``_cpp_native`` in a PYDL_ARCH build); :func:`pydl.machine.load_native`
picks one at import (PYDL_SIMD lowers it) and this module becomes it.
"""
import sys

from pydl.machine import load_native

sys.modules[__name__] = load_native("cpp")
