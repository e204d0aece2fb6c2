# cython: language_level=3
"""pydl._cython: Cython kernels (private; use pydl.ops). One included file per op family."""
from cython.parallel cimport prange
cimport openmp

def set_num_threads(int n):
    if n < 1:
        raise ValueError(f"set_num_threads: expected n >= 1, got {n}")
    openmp.omp_set_num_threads(n)

def get_num_threads():
    return openmp.omp_get_max_threads()

include "elementwise.pyx"
