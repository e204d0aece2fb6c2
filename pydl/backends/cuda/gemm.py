"""cuda adapters for the gemm family: matmul and linear (packed GEMM of kernels/common/gemm.hpp)."""
