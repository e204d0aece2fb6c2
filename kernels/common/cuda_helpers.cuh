// Shared CUDA helpers for pydl kernels. Compiled by NVRTC at run time (CuPy
// RawModule, -I to this folder) and by plain nvcc in CI, so only headers that
// NVRTC provides are used.
#pragma once

namespace pydl {

// Grid-stride loop: any launch size covers any n.
#define PYDL_GRID_STRIDE(i, n)                                                     \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);     \
       i += (long long)blockDim.x * gridDim.x)

// f(i) for every i in [0, n) over the grid (grid-stride). i is an unsigned int when n < 2^31, else a
// long long: 32-bit index arithmetic where it fits (a 64-bit division is a ~70-instruction
// subroutine, a 32-bit multiply one instruction). Write the body as a generic lambda (`auto i`;
// NVRTC needs -default-device for it, _loader.nvrtc_options) and split i with DivMod below.
template <class F>
__device__ __forceinline__ void for_each_index(long long n, F&& f) {
  if (n < (1LL << 31)) {  // i + stride < 2^31 + 2^31: no unsigned wrap
    const unsigned m = (unsigned)n, step = blockDim.x * gridDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < m; i += step) f(i);
  } else {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
      f(i);
  }
}

// Division by a kernel-invariant divisor d without a divide instruction: 32-bit n / d is a ~20
// instruction sequence on the GPU (64-bit ~70), and the index-bound kernels (pooling, im2col) split
// every flat index by two to four such divisors. For 0 <= n < 2^31, q = floor(n / d) =
// floor(n * m / 2^(31 + l)) with l = ceil(log2 d) and m = ceil(2^(31 + l) / d) < 2^32 (Granlund &
// Montgomery, 1994, theorem 4.2 with N = 31): one __umulhi and a shift. The host computes m
// (pydl/backends/cuda/_loader.py fastdiv_magic; 0 for d == 1). The long long form divides.
struct DivMod {
  int d;
  unsigned m;
  __device__ __forceinline__ unsigned div(unsigned n) const {
    return m ? __umulhi(n, m) >> (31 - __clz(d - 1)) : n;
  }
  __device__ __forceinline__ long long div(long long n) const { return n / d; }
  // the digit t % d; t becomes t / d (a flat index taken apart from its fastest dimension on)
  template <typename I>
  __device__ __forceinline__ int pop(I& t) const {
    const I q = div(t);
    const int r = (int)(t - q * (I)d);
    t = q;
    return r;
  }
};

// f(r, s, oh, ow) for every tap (r, s) and output (oh, ow) whose window reads input (h, w) at
// this stride, padding and dilation: the gather form of a scatter-add backward (col2im,
// max_pool2d_bwd), so each input element is written once, by one thread, without atomics.
template <class F>
__device__ __forceinline__ void for_each_tap_reaching(int h, int w, int OH, int OW, int kh, int kw, int sh,
                                                      int sw, int ph, int pw, int dh, int dw, F&& f) {
  if (dh == 1 && dw == 1) {
    // undilated: the outputs reaching h are the range oh in [ceil((h + ph - kh + 1) / sh), (h + ph) / sh],
    // tap r = h + ph - oh*sh; four divisions instead of two per tap. Visited in the order of the general
    // loop below (r, then s, ascending: oh, ow descending), so sums round alike.
    const int hp = h + ph, wp = w + pw;
    const int oh0 = hp >= kh ? (hp - kh + sh) / sh : 0, oh1 = min(OH - 1, hp / sh);
    const int ow0 = wp >= kw ? (wp - kw + sw) / sw : 0, ow1 = min(OW - 1, wp / sw);
    for (int oh = oh1; oh >= oh0; --oh)
      for (int ow = ow1; ow >= ow0; --ow) f(hp - oh * sh, wp - ow * sw, oh, ow);
    return;
  }
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

// -inf of T from its bits: NVRTC defines no INFINITY (it has no <math.h>), nvcc does.
template <typename T>
__device__ __forceinline__ T neg_inf() {
  return T(-__int_as_float(0x7f800000));
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
