// 2-D pooling on the GPU (NCHW, contiguous), forward and backward, one pass each.
//
// Forward: one thread per output element (planes = N*C, then OH, OW), the
// output index fastest, so writes are coalesced and a warp's window reads
// are close together. Backward: the gather form, one thread per input
// element summing the outputs whose windows hold it: no atomics, every
// gradient element written once, deterministic.
//
// max_pool2d: NaN wins (the last NaN of a window, as the NumPy reference);
// otherwise the first position holding the maximum. `indices` are int64 flat
// h*W + w per plane, -1 for a window with no input position. Its backward
// adds g(o) to the input position whose index output o saved.
// avg_pool2d: torch's divisor (count_include_pad, divisor_override > 0).
// adaptive_avg_pool2d: output i averages [floor(i*H/OH), ceil((i+1)*H/OH)).
#include "cuda_helpers.cuh"

template <typename T>
__global__ void max_pool2d_fwd(const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ idx,
                               long long planes, int H, int W, int OH, int OW, int kh, int kw, int sh, int sw,
                               int ph, int pw, int dh, int dw, unsigned mOW, unsigned mOH) {
  const long long total = planes * OH * OW;
  const pydl::DivMod dOW{OW, mOW}, dOH{OH, mOH};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int ow = dOW.pop(t), oh = dOH.pop(t);
    const long long p = t;
    const T* xp = x + p * H * W;
    T m = pydl::neg_inf<T>();
    long long at = -1;
    for (int r = 0; r < kh; ++r) {
      const int ih = oh * sh - ph + r * dh;
      if (ih < 0 || ih >= H) continue;
      for (int s = 0; s < kw; ++s) {
        const int iw = ow * sw - pw + s * dw;
        if (iw < 0 || iw >= W) continue;
        const T v = xp[ih * W + iw];
        // the first position, a NaN (each later NaN replaces it), or a strictly larger value
        if (at < 0 || v != v || v > m) {
          m = v;
          at = (long long)ih * W + iw;
        }
      }
    }
    y[i] = m;
    idx[i] = at;
  });
}

// Outputs o along one dimension whose window (start o*s - p, taps r*d) holds
// input position h: o = (h + p - r*d) / s for each tap r that divides evenly.
template <typename T>
__global__ void max_pool2d_bwd(const T* __restrict__ g, const long long* __restrict__ idx, T* __restrict__ dx,
                               long long planes, int H, int W, int OH, int OW, int kh, int kw, int sh, int sw,
                               int ph, int pw, int dh, int dw, unsigned mW, unsigned mH) {
  const long long total = planes * H * W;
  const pydl::DivMod dW{W, mW}, dH{H, mH};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int w = dW.pop(t), h = dH.pop(t);
    const long long p = t;
    const long long self = (long long)h * W + w, base = p * OH * OW;
    T acc = T(0);
    pydl::for_each_tap_reaching(h, w, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, [&](int, int, int oh, int ow) {
      const long long o = base + (long long)oh * OW + ow;
      if (idx[o] == self) acc += g[o];
    });
    dx[i] = acc;
  });
}

// torch's avg_pool2d divisor for output (oh, ow).
__device__ __forceinline__ long long avg_divisor(int oh, int ow, int H, int W, int kh, int kw, int sh, int sw,
                                                 int ph, int pw, int count_include_pad, long long divisor_override) {
  if (divisor_override > 0) return divisor_override;
  const int hs = oh * sh - ph, ws = ow * sw - pw;
  const int he = min(hs + kh, H + ph), we = min(ws + kw, W + pw);
  if (count_include_pad) return (long long)(he - hs) * (we - ws);
  return (long long)(min(he, H) - max(hs, 0)) * (min(we, W) - max(ws, 0));
}

template <typename T>
__global__ void avg_pool2d_fwd(const T* __restrict__ x, T* __restrict__ y, long long planes, int H, int W,
                               int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw,
                               int count_include_pad, long long divisor_override, unsigned mOW,
                               unsigned mOH) {
  const long long total = planes * OH * OW;
  const pydl::DivMod dOW{OW, mOW}, dOH{OH, mOH};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int ow = dOW.pop(t), oh = dOH.pop(t);
    const long long p = t;
    const T* xp = x + p * H * W;
    const int h0 = max(oh * sh - ph, 0), h1 = min(oh * sh - ph + kh, H);
    const int w0 = max(ow * sw - pw, 0), w1 = min(ow * sw - pw + kw, W);
    T acc = T(0);
    for (int ih = h0; ih < h1; ++ih)
      for (int iw = w0; iw < w1; ++iw) acc += xp[ih * W + iw];
    y[i] = acc / T(avg_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override));
  });
}

template <typename T>
__global__ void avg_pool2d_bwd(const T* __restrict__ g, T* __restrict__ dx, long long planes, int H, int W,
                               int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw,
                               int count_include_pad, long long divisor_override, unsigned mW,
                               unsigned mH) {
  const long long total = planes * H * W;
  const pydl::DivMod dW{W, mW}, dH{H, mH};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int w = dW.pop(t), h = dH.pop(t);
    const long long p = t;
    const T* gp = g + p * OH * OW;
    // windows [o*s - p, o*s - p + k) holding h: o in [ceil((h + p - k + 1) / s), floor((h + p) / s)]
    const int oh0 = max(0, (h + ph - kh + sh) / sh), oh1 = min(OH - 1, (h + ph) / sh);
    const int ow0 = max(0, (w + pw - kw + sw) / sw), ow1 = min(OW - 1, (w + pw) / sw);
    T acc = T(0);
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow)
        acc += gp[oh * OW + ow] /
               T(avg_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override));
    dx[i] = acc;
  });
}

template <typename T>
__global__ void adaptive_avg_pool2d_fwd(const T* __restrict__ x, T* __restrict__ y, long long planes, int H,
                                        int W, int OH, int OW, unsigned mOW, unsigned mOH) {
  const long long total = planes * OH * OW;
  const pydl::DivMod dOW{OW, mOW}, dOH{OH, mOH};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int ow = dOW.pop(t), oh = dOH.pop(t);
    const long long p = t;
    const T* xp = x + p * H * W;
    const int h0 = (int)(((long long)oh * H) / OH), h1 = (int)(((long long)(oh + 1) * H + OH - 1) / OH);
    const int w0 = (int)(((long long)ow * W) / OW), w1 = (int)(((long long)(ow + 1) * W + OW - 1) / OW);
    T acc = T(0);
    for (int ih = h0; ih < h1; ++ih)
      for (int iw = w0; iw < w1; ++iw) acc += xp[ih * W + iw];
    y[i] = acc / T((h1 - h0) * (w1 - w0));
  });
}

template <typename T>
__global__ void adaptive_avg_pool2d_bwd(const T* __restrict__ g, T* __restrict__ dx, long long planes, int H,
                                        int W, int OH, int OW, unsigned mW, unsigned mH) {
  const long long total = planes * H * W;
  const pydl::DivMod dW{W, mW}, dH{H, mH};
  pydl::for_each_index(total, [&](auto i) {
    auto t = i;
    const int w = dW.pop(t), h = dH.pop(t);
    const long long p = t;
    const T* gp = g + p * OH * OW;
    // outputs o with floor(o*H/OH) <= h < ceil((o+1)*H/OH): o in [h*OH/H, ceil((h+1)*OH/H) - 1]
    const int oh0 = (int)(((long long)h * OH) / H), oh1 = (int)min((long long)(OH - 1), ((long long)(h + 1) * OH + H - 1) / H - 1);
    const int ow0 = (int)(((long long)w * OW) / W), ow1 = (int)min((long long)(OW - 1), ((long long)(w + 1) * OW + W - 1) / W - 1);
    T acc = T(0);
    for (int oh = oh0; oh <= oh1; ++oh) {
      const int h0 = (int)(((long long)oh * H) / OH), h1 = (int)(((long long)(oh + 1) * H + OH - 1) / OH);
      if (h < h0 || h >= h1) continue;
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int w0 = (int)(((long long)ow * W) / OW), w1 = (int)(((long long)(ow + 1) * W + OW - 1) / OW);
        if (w < w0 || w >= w1) continue;
        acc += gp[oh * OW + ow] / T((h1 - h0) * (w1 - w0));
      }
    }
    dx[i] = acc;
  });
}

#define PYDL_POOL_INST(T)                                                                                    \
  template __global__ void max_pool2d_fwd<T>(const T*, T*, long long*, long long, int, int, int, int, int, int, \
                                             int, int, int, int, int, int, unsigned, unsigned);              \
  template __global__ void max_pool2d_bwd<T>(const T*, const long long*, T*, long long, int, int, int, int,   \
                                             int, int, int, int, int, int, int, int, unsigned, unsigned);    \
  template __global__ void avg_pool2d_fwd<T>(const T*, T*, long long, int, int, int, int, int, int, int, int, \
                                             int, int, int, long long, unsigned, unsigned);                  \
  template __global__ void avg_pool2d_bwd<T>(const T*, T*, long long, int, int, int, int, int, int, int, int, \
                                             int, int, int, long long, unsigned, unsigned);                  \
  template __global__ void adaptive_avg_pool2d_fwd<T>(const T*, T*, long long, int, int, int, int, unsigned,  \
                                                      unsigned);                                             \
  template __global__ void adaptive_avg_pool2d_bwd<T>(const T*, T*, long long, int, int, int, int, unsigned,  \
                                                      unsigned);
PYDL_POOL_INST(float)
PYDL_POOL_INST(double)
