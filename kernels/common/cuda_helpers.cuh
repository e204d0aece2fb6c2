// Shared CUDA helpers for pydl kernels. Compiled by NVRTC at run time (CuPy
// RawModule, -I to this folder) and by plain nvcc in CI, so only headers that
// NVRTC provides are used.
#pragma once

namespace pydl {

// Grid-stride loop: any launch size covers any n.
#define PYDL_GRID_STRIDE(i, n)                                                     \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);     \
       i += (long long)blockDim.x * gridDim.x)

// f(r, s, oh, ow) for every tap (r, s) and output (oh, ow) whose window reads input (h, w) at
// this stride, padding and dilation: the gather form of a scatter-add backward (col2im,
// max_pool2d_bwd), so each input element is written once, by one thread, without atomics.
template <class F>
__device__ __forceinline__ void for_each_tap_reaching(int h, int w, int OH, int OW, int kh, int kw, int sh,
                                                      int sw, int ph, int pw, int dh, int dw, F&& f) {
  for (int r = 0; r < kh; ++r) {
    const int th = h + ph - r * dh;
    if (th < 0 || th % sh) continue;
    const int oh = th / sh;
    if (oh >= OH) continue;
    for (int s = 0; s < kw; ++s) {
      const int tw = w + pw - s * dw;
      if (tw < 0 || tw % sw) continue;
      const int ow = tw / sw;
      if (ow >= OW) continue;
      f(r, s, oh, ow);
    }
  }
}

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
