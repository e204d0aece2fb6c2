"""The CUDA backend: pydl's own kernels (kernels/cuda/*.cu) on CuPy arrays.

Registering costs nothing without a GPU: CuPy is imported only when a kernel
first runs. Whether the backend can run here is decided by
``pydl.backends.unavailable_reason("cuda")``.
"""
from . import conv, elementwise, gemm, pool  # noqa: F401
