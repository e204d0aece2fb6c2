// Shared CUDA helpers for pydl kernels. Compiled by NVRTC at run time (CuPy
// RawModule, -I to this folder) and by plain nvcc in CI, so only headers that
// NVRTC provides are used.
#pragma once

namespace pydl {

// Grid-stride loop: any launch size covers any n.
#define PYDL_GRID_STRIDE(i, n)                                                     \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);     \
       i += (long long)blockDim.x * gridDim.x)

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = (w > v || w != w) ? w : v;  // NaN wins, so it propagates
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace pydl
