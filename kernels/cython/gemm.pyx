# gemm family (pydl._cython): matmul and linear (packed GEMM of kernels/common/gemm.hpp). Included by _cython.pyx.
