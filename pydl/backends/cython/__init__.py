"""The Cython backend: kernels/cython/*.pyx, built into ``pydl._cython``.

Unavailable (the reason is recorded by ``pydl.backends.load``) when the
extension was not built. OpenMP threads follow ``pydl.set_num_threads``.
"""
from ... import _cython
from .. import register_thread_hook

register_thread_hook("cython", _cython.set_num_threads)

from . import conv, elementwise, gemm, pool  # noqa: E402,F401  (each registers its family's ops)
