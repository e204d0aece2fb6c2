// im2col / col2im on the GPU (NCHW), the column buffer layout of the NumPy
// reference: cols (N, C*KH*KW, OH*OW), row (c*KH + r)*KW + s, column oh*OW + ow.
//
// - im2col<T>: one thread per column element, the column index fastest, so
//   writes are coalesced and reads are too for stride 1; padding reads as 0.
// - col2im<T>: the gather form, one thread per input element, summing the
//   (at most KH*KW) column entries that came from it: no atomics, every
//   output written exactly once, deterministic.
// conv2d forward / backward are im2col + GEMM (gemm.cu) + col2im, composed in
// pydl/backends/cuda/conv.py.
#include "cuda_helpers.cuh"


template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols, long long planes, int H, int W,
                       int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                       unsigned mOW, unsigned mOH, unsigned mkw, unsigned mkh) {
  // planes = N*C; element (p, r, s, oh, ow) with p = n*C + c -> cols[n, (c*KH + r)*KW + s, oh*OW + ow],
  // which is the flat index of (p, r, s, oh, ow) in that order.
  const long long L = (long long)OH * OW, total = planes * kh * kw * L;
  const pydl::DivMod dOW{OW, mOW}, dOH{OH, mOH}, dkw{kw, mkw}, dkh{kh, mkh};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int ow = dOW.pop(t), oh = dOH.pop(t), s = dkw.pop(t), r = dkh.pop(t);
    const long long p = t;
    const int ih = oh * sh - ph + r * dh, iw = ow * sw - pw + s * dw;
    cols[i] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[(p * H + ih) * W + iw] : T(0);
  });
}

template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ x, long long planes, int H, int W,
                       int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                       unsigned mW, unsigned mH) {
  const long long total = planes * H * W, L = (long long)OH * OW;
  const pydl::DivMod dW{W, mW}, dH{H, mH};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int w = dW.pop(t), h = dH.pop(t);
    const long long p = t;
    const T* base = cols + p * kh * kw * L;
    T acc = T(0);
    pydl::for_each_tap_reaching(h, w, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, [&](int r, int s, int oh, int ow) {
      acc += base[((long long)r * kw + s) * L + (long long)oh * OW + ow];
    });
    x[i] = acc;
  });
}

#define PYDL_CONV_INST(T)                                                                           \
  template __global__ void im2col<T>(const T*, T*, long long, int, int, int, int, int, int, int, int, int, \
                                     int, int, int, unsigned, unsigned, unsigned, unsigned);           \
  template __global__ void col2im<T>(const T*, T*, long long, int, int, int, int, int, int, int, int, int, \
                                     int, int, int, unsigned, unsigned);
PYDL_CONV_INST(float)
PYDL_CONV_INST(double)
