# cython: language_level=3
"""pydl._cython: Cython kernels (private; use pydl.ops). One included file per op family."""
from cython.parallel cimport prange
cimport openmp

# Process-wide thread count (0: OpenMP's default). omp_set_num_threads would
# only bind the calling thread; every prange passes num_threads=_threads().
cdef int _NUM_THREADS = 0

cdef inline int _threads() noexcept nogil:
    return _NUM_THREADS if _NUM_THREADS > 0 else openmp.omp_get_max_threads()

def set_num_threads(int n):
    global _NUM_THREADS
    if n < 1:
        raise ValueError(f"set_num_threads: expected n >= 1, got {n}")
    _NUM_THREADS = n

def get_num_threads():
    return _threads()

include "elementwise.pyx"
include "gemm.pyx"
include "conv.pyx"
include "pool.pyx"
