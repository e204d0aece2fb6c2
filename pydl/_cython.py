"""``pydl._cython``: the cython kernels built for the best SIMD level this CPU runs.

The compiled modules are ``pydl._cython_avx512``, ``_cython_avx2`` and ``_cython_base``
(or ``_cython_native`` in a PYDL_ARCH build); :func:`pydl.machine.load_native`
picks one at import (PYDL_SIMD lowers it) and this module becomes it.
"""
import sys

from pydl.machine import load_native

sys.modules[__name__] = load_native("cython")
