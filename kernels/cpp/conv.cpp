// conv family (pydl._cpp): im2col, col2im, conv2d forward and backward.
//
// Layouts (as pydl/ops/conv.py): x (N, C, H, W), weight (K, C/G, R, S), out (N, K, OH, OW),
// cols (N, C*R*S, OH*OW) with row (c*R + r)*S + s and column oh*OW + ow. float32 and float64,
// C-contiguous arrays, outputs allocated by the Python adapter (pydl/backends/cpp/conv.py).
//
// Per image and group g, conv2d is one GEMM: out_g (Kg x L) = W_g (Kg x CgRS) @ cols_g (CgRS x L)
// + bias (per row), L = OH*OW, Kg = K/G, Cg = C/G. Paths (chosen by `choose_path`, forced by the
// `path` argument for tests and the named variants):
//   gemm1x1  - 1x1, stride 1, padding 0: cols_g IS x_g viewed (Cg x H*W); no copy at all.
//   im2col   - cols for a tile of output rows into a per-thread buffer of <= kTileBytes (stays in
//              L2), then the GEMM writes those L columns of out (ldc = L). Workspace reported.
//   implicit - gemm_packed_b with a pack_b that reads B panels straight from the image (no column
//              matrix of ours; the GEMM's own packing buffer is all there is).
//   direct   - per output plane: out[k] += w[k,c,r,s] * shifted rows of x[c], all taps summed in
//              registers along the width (x padded and split into its column phases: contiguous
//              at every stride). The depthwise path (Cg == Kg == 1: a GEMM of 1 x 9 x L is all
//              overhead).
//   smallk   - filters in the SIMD lanes, taps broadcast from padded, phase-split planes (below).
//   winograd - 3x3, stride 1, one group: F(2x2, 3x3) tiles, 16 GEMMs of (filters x channels) x
//              (channels x tiles) per chunk of tiles (winograd_conv); dx the same way as the
//              transposed convolution, dW by Winograd's products (winograd_dw) below AVX-512 and
//              by smallk at AVX-512. Chosen where it measured faster (winograd_pays).
// Threads: over images (GEMM with nthreads = 1 inside our parallel region) when N >= threads,
// else over the GEMM's own threads; direct: over (n, k) planes (dW: contiguous filter ranges,
// images outer). Loops over images that write
// disjoint outputs take images dynamically (a thread whose core is taken for a while - a shared
// VM - leaves its images to the other); those that sum per-thread dW partials stay static, so
// dW is the same bits from run to run.
// Backward (same paths): db = sum of dy; dW_g += dy_g @ cols_g^T (per-thread dW partials when
// threads run over images, summed at the end); dcols_g = W_g^T @ dy_g then col2im of the tile
// into dx (the 1x1 path writes dx_g directly). Direct: dx planes per (n, c) as a stride-1
// convolution of padded (for strides zero-inserted) dy with the flipped filter; dW per (k, c')
// filter with one register accumulator per tap over the forward's padded, phase-split planes
// (float64 and the scalar level: row loops, a scatter per tap for dx).
// smallk: dW^T (taps x Kg) by the smallk tiles with rows = taps and depth = pixels (B = dy^T of
// one image); dx at stride 1 with Cg >= 16 as a convolution of dy with the flipped, transposed
// weights through the smallk forward (smallk_dx), else by the 1x1 or im2col path's W^T @ dy
// (+ col2im) without their dW GEMM. Any of dx, dW and db may be skipped (a null pointer: the
// Python adapter's `needs`, e.g. no dx for a network's first layer); the others cost the same.
//
// Napkin math (Zen 5, 2 cores, ~460 GFLOP/s fp32 peak, 29 GB/s): ResNet N32 C64 56x56 K64 3x3 is
// 7.4 GFLOP -> 16 ms at peak; its im2col writes 9x the input (231 MB for the batch if it were
// materialized at once, 8 ms of bandwidth), hence the per-tile buffer that is consumed from cache.
// Depthwise N32 C128 56x56 3x3 is 0.23 GFLOP over 51 MB in+out: bandwidth-bound (~2 ms).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "check.hpp"
#include "gemm.hpp"
#include "ndarray.hpp"
#include "simd.hpp"
#include "simd_math.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

using i64 = int64_t;

enum Path : int { kAuto = 0, kGemm1x1 = 1, kIm2col = 2, kImplicit = 3, kDirect = 4, kSmallK = 5, kWinograd = 6 };
const char* const kPathNames[] = {"auto", "gemm1x1", "im2col", "implicit", "direct", "smallk", "winograd"};
constexpr int kNumPaths = 7;

// im2col tile budget per thread (conv_set_tile_bytes). Measured (dev/conv/README.md): 512 KB tiles
// (3 output rows of ResNet 3x3 C64) starve the packed GEMM of columns (N = 168, or 42 at 14x14);
// 2-8 MB (L3-resident; the GEMM re-packs B into L2/L1 blocks itself) run 1.5-3x faster.
// 0: derived from the L3 (a quarter of one CPU's share, within 2-8 MB; 4 MB when unknown).
i64 kTileBytes = 0;

i64 tile_bytes() {
  if (kTileBytes > 0) return kTileBytes;
  const i64 l3 = gemm::cache_sizes().l3;
  return l3 > 0 ? std::clamp<i64>(l3 / 4, i64(2) << 20, i64(8) << 20) : i64(4) << 20;
}

struct Geom {
  i64 n, c, h, w, k, r, s, sh, sw, ph, pw, dh, dw, g, oh, ow;
  i64 cg() const { return c / g; }
  i64 kg() const { return k / g; }
  i64 l() const { return oh * ow; }
  i64 crs() const { return cg() * r * s; }  // GEMM depth per group
  bool is1x1() const { return r == 1 && s == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

// [lo, hi): the output columns ow whose input column ow*sw + off lies in [0, w)
inline void valid_range(i64 off, i64 stride, i64 w, i64 ow, i64& lo, i64& hi) {
  lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  hi = off > w - 1 ? 0 : (w - 1 - off) / stride + 1;
  hi = std::min(hi, ow);
  lo = std::min(lo, hi);
}

// cols rows of channels [0, cc) of one image x (cc, H, W), output rows [oh0, oh1): a
// (cc*R*S) x ((oh1-oh0)*OW) block with row stride ldc. Stride > 1 along the width: each channel
// plane is first split into its sw phases (phase p of a row holds x[.., i*sw + p]), so that
// every tap's row becomes a contiguous copy instead of a strided gather (AlexNet's stride 4,
// R = S = 11: the im2col otherwise cost more than its GEMM).
template <class T>
void im2col_rows(const Geom& q, const T* x, i64 cc, i64 oh0, i64 oh1, T* cols, i64 ldc) {
  const i64 sw = q.sw, pl = (q.w + sw - 1) / sw;  // phase length
  // a stride wider than the row (any stride up to 2^31 is valid: one output column) leaves
  // nothing to de-interleave and its sw phases would be mostly empty: read in place instead
  const bool split = sw > 1 && sw <= q.w;
  std::vector<T> phases(split ? static_cast<size_t>(q.h * sw * pl) : 0);
  for (i64 c = 0; c < cc; ++c) {
    const T* xc = x + c * q.h * q.w;
    if (split)
      for (i64 i = 0; i < q.h; ++i)
        for (i64 j = 0; j < q.w; ++j) phases[(i * sw + j % sw) * pl + j / sw] = xc[i * q.w + j];
    for (i64 r = 0; r < q.r; ++r)
      for (i64 s = 0; s < q.s; ++s) {
        T* row = cols + ((c * q.r + r) * q.s + s) * ldc;
        const i64 off = s * q.dw - q.pw;
        i64 lo, hi;
        valid_range(off, sw, q.w, q.ow, lo, hi);
        // off = qo*sw + ph with 0 <= ph < sw: input column ow*sw + off is phase ph, index ow + qo
        const i64 qo = off >= 0 ? off / sw : -((-off + sw - 1) / sw), ph = off - qo * sw;
        for (i64 oh = oh0; oh < oh1; ++oh) {
          T* d = row + (oh - oh0) * q.ow;
          const i64 ih = oh * q.sh - q.ph + r * q.dh;
          if (ih < 0 || ih >= q.h) {
            std::fill(d, d + q.ow, T(0));
            continue;
          }
          std::fill(d, d + lo, T(0));
          if (split || sw == 1) {
            const T* src = sw == 1 ? xc + ih * q.w + off : phases.data() + (ih * sw + ph) * pl + qo;
            std::memcpy(d + lo, src + lo, sizeof(T) * (hi - lo));
          } else {
            for (i64 o = lo; o < hi; ++o) d[o] = xc[ih * q.w + off + o * sw];
          }
          std::fill(d + hi, d + q.ow, T(0));
        }
      }
  }
}

// The adjoint: adds the block back into x (cc, H, W) (x must hold the sum so far).
template <class T>
void col2im_rows(const Geom& q, const T* cols, i64 ldc, i64 cc, i64 oh0, i64 oh1, T* x) {
  for (i64 c = 0; c < cc; ++c)
    for (i64 r = 0; r < q.r; ++r)
      for (i64 s = 0; s < q.s; ++s) {
        const T* row = cols + ((c * q.r + r) * q.s + s) * ldc;
        const i64 off = s * q.dw - q.pw;
        i64 lo, hi;
        valid_range(off, q.sw, q.w, q.ow, lo, hi);
        for (i64 oh = oh0; oh < oh1; ++oh) {
          const i64 ih = oh * q.sh - q.ph + r * q.dh;
          if (ih < 0 || ih >= q.h) continue;
          const T* sp = row + (oh - oh0) * q.ow;
          T* d = x + (c * q.h + ih) * q.w + off;
          if (q.sw == 1) {
#pragma omp simd
            for (i64 o = lo; o < hi; ++o) d[o] += sp[o];
          } else {
            const i64 sw = q.sw;
            for (i64 o = lo; o < hi; ++o) d[o * sw] += sp[o];
          }
        }
      }
}

// Output rows per im2col tile: the (CgRS x rows*OW) buffer within kTileBytes.
template <class T>
i64 tile_rows(const Geom& q) {
  const i64 per_row = q.crs() * q.ow * i64(sizeof(T));
  return std::max<i64>(1, std::min<i64>(q.oh, tile_bytes() / std::max<i64>(per_row, 1)));
}

// The measured heuristic (dev/conv/README.md): depthwise (groups, one input channel per group,
// <= 8 filters each) -> direct (a GEMM of depth R*S is all overhead); 1x1/stride 1/pad 0 -> GEMM
// on x itself; 3x3 stride 1 with enough channels -> Winograd (winograd_pays); <= 256 filters per
// group -> smallk (forward 1.0-2.5x im2col/gemm1x1, backward 1.1-1.5x, on every bench shape of
// <= 256 filters, one thread; but the forward of a shallow product whose filters suit the GEMM's
// rows better takes im2col, gemm_rows_win); the forward of <= 1024 filters too (session 15, two
// threads: 1.1-1.55x im2col at AVX-512 and 1.0-1.5x at AVX2 on 384-1024-filter 3x3 stride-2, 5x5
// and small-batch 7x7 layers), not their backward (0.75-0.95x im2col with 1-4 images, 0.94-1.06x
// with 32); else im2col tiles.
// Implicit GEMM (its per-element bounds checks while packing) lost to 4 MB im2col tiles on every
// measured shape, so only its variant reaches it.
//
// direct and smallk copy the group's zero-padded (smallk: width-phase-split) planes per thread:
// that grows with the padding and the stride, not with the output (padding 2^14 on a 6x6 image:
// a 4 GB plane for a 3x3 output), and an allocation failing inside a parallel region aborts the
// process. Past a few times the input's planes, the im2col tiles (bounded by the output) take
// the convolution, also when a variant forces direct or smallk (the path taken is returned).
// Winograd F(2x2, 3x3) (winograd_conv): 3x3, stride 1, no dilation, one group; dx's transposed
// convolution pads by 2 - p
bool winograd_fits(const Geom& q) {
  return q.r == 3 && q.s == 3 && q.sh == 1 && q.sw == 1 && q.dh == 1 && q.dw == 1 && q.g == 1 && q.ph <= 2 &&
         q.pw <= 2;
}

// Whether Winograd beats smallk (measured, dev/conv/README.md session 15: C = K from 32 to 512 on
// 7x7 to 56x56 planes, both levels, forward and backward) on a convolution of nc channels into nf
// filters with oh x ow outputs over n images. The products cost ~ nc nf per tile, the transforms
// ~ nc + nf, and narrow planes (their 2x2 tiles' sums in shorter loops, 7x7's 64 outputs computed
// for 49 kept) give the transforms a larger share: the channels' harmonic mean nc nf / (nc + nf),
// times the share of computed outputs kept, must reach a bar per level and plane width. AVX-512
// (whose GEMM runs twice as fast): 32 on 56-wide planes (C64 1.29x forward / 1.14x backward; C32
// 0.74-0.94 everywhere), 48 from 16 wide (C64 there ran 0.92-1.10x with the batch: N4 28x28 0.96 /
// 0.97, N32 1.07; C128 1.35-1.42 / 1.15-1.17), 64 below (C64 14x14 0.97 / 1.01, 8x8 0.99 / 1.01;
// C128 8x8 1.23 / 1.08). AVX2: 16 from 28-wide planes (C32 28x28 1.13 / 1.03, 16x16
// 1.13 / 0.99, 14x14 1.06 / 0.91), 32 from 8 (C64 8x8 1.22 / 1.15), 48 below (7x7: C64 1.03 /
// 0.86, C128 1.34 / 1.07). The filters' transform (16 nf nc values per call) must be amortized over
// >= 64 tiles per thread (N1 C256 14x14, 49 tiles, ran 0.95x at AVX-512) and stay within 32 MB.
bool winograd_pays(i64 n, i64 nc, i64 nf, i64 oh, i64 ow) {
  const i64 th = (oh + 1) / 2, tw = (ow + 1) / 2;
  const double kept = double(oh * ow) / double(4 * th * tw);
  const double hm = double(nc) * double(nf) / double(nc + nf) * kept;
  const double need = simd_level() == Simd::avx512 ? (ow >= 56 ? 32.0 : ow >= 16 ? 48.0 : 64.0)
                                                   : (ow >= 28 ? 16.0 : ow >= 8 ? 32.0 : 48.0);
  return hm >= need && n * th * tw >= 64 * i64(num_threads()) && nc * nf <= 512 * 1024;
}

bool planes_fit(const Geom& q) {
  const double hp = double(q.h) + 2.0 * double(q.ph), wp = double(q.w) + 2.0 * double(q.pw);
  const double wq = double(q.sw) * std::ceil(wp / double(q.sw));  // smallk's phase-split width
  return double(q.cg()) * hp * std::max(wp, wq) <= 4.0 * double(q.cg()) * double(q.h) * double(q.w) + double(1 << 20);
}

// `rows_win` (the forward only, gemm_rows_win): a shallow product whose filters fill the GEMM's
// row tiles better than smallk's vector lanes goes to im2col.
int choose_path(const Geom& q, int forced, bool rows_win = false, bool backward = false) {
  if (forced == kGemm1x1) return q.is1x1() ? kGemm1x1 : kIm2col;  // not applicable: im2col
  const bool fit = planes_fit(q);
  if (forced == kWinograd && !winograd_fits(q)) forced = kAuto;  // not applicable: the automatic choice
  if (forced != kAuto) return (!fit && (forced == kDirect || forced == kSmallK)) ? kIm2col : forced;
  if (!fit) return q.is1x1() ? kGemm1x1 : kIm2col;
  if (q.g > 1 && q.cg() == 1 && q.kg() <= 8) return kDirect;
  if (q.is1x1()) return kGemm1x1;  // with the unpacked-B GEMM: 1x1 c256->k64 fwd 0.84 vs smallk 1.31 ms
  if (winograd_fits(q) && winograd_pays(q.n, q.c, q.k, q.oh, q.ow)) return kWinograd;
  if (q.kg() <= 256 || (q.kg() <= 1024 && !backward)) return rows_win ? kIm2col : kSmallK;
  return kIm2col;
}

// smallk puts the Kg filters in vector lanes (Kg / kpad of them useful), im2col's GEMM in the rows
// of its MR-row tiles (Kg / round_up(Kg, MR)). For a shallow product (<= 32 taps: the column copy
// is small) the forward takes im2col when its rows are used a fifth better: LeNet's first layer
// (6 filters, 25 taps) at AVX2 (6 of 6 rows against 6 of 8 lanes): 0.134-0.141 ms against smallk's
// 0.167-0.189 (N64, two threads, dev/conv/README.md session 14); at AVX-512 (6 of 14 rows, 6 of 16
// lanes) the two ran even and smallk stays.
template <class T>
bool gemm_rows_win(const Geom& q) {
  if (q.crs() > 32) return false;
  i64 w = 1, mr = 1;
  with_level(simd_level(), [&](auto s) {
    using K = gemm::detail::KT<T, decltype(s)::value>;
    w = K::W;
    mr = K::MR;
  });
  const i64 kg = q.kg();
  return 5 * ((kg + w - 1) / w * w) > 6 * ((kg + mr - 1) / mr * mr);
}

bool over_images(const Geom& q) { return q.n >= num_threads(); }

// -- forward -------------------------------------------------------------------------

// src plane (h, w) into buf (rows, pwid) with its first element at (top, left), zeros around it
template <class T>
void pad_into(const T* src, i64 h, i64 w, i64 top, i64 left, i64 rows, i64 pwid, T* buf) {
  std::fill(buf, buf + top * pwid, T(0));
  for (i64 i = 0; i < h; ++i) {
    T* d = buf + (top + i) * pwid;
    std::fill(d, d + left, T(0));
    std::memcpy(d + left, src + i * w, sizeof(T) * w);
    std::fill(d + left + w, d + pwid, T(0));
  }
  std::fill(buf + (top + h) * pwid, buf + rows * pwid, T(0));
}

// The same with sh - 1 zero rows and sw - 1 zero columns between src's (a strided convolution's
// dy "zero-inserted": its transposed convolution is then a stride-1 one)
template <class T>
void pad_into(const T* src, i64 h, i64 w, i64 top, i64 left, i64 rows, i64 pwid, T* buf, i64 sh, i64 sw) {
  if (sh == 1 && sw == 1) return pad_into(src, h, w, top, left, rows, pwid, buf);
  std::fill(buf, buf + rows * pwid, T(0));
  for (i64 i = 0; i < h; ++i) {
    T* d = buf + (top + i * sh) * pwid + left;
    for (i64 j = 0; j < w; ++j) d[j * sw] = src[i * w + j];
  }
}

// x plane (H, W) into buf, zero-padded to (H + 2ph, W + 2pw): the taps then read without bounds
template <class T>
void pad_plane(const Geom& q, const T* x, T* buf) {
  pad_into(x, q.h, q.w, q.ph, q.pw, q.h + 2 * q.ph, q.w + 2 * q.pw, buf);
}

// f(V{}) with V the float32 SIMD wrapper of the level in use (vm::with_vec's); false, nothing
// called, for float64 or the scalar level, where the callers' autovectorized loops run instead
template <class T, class F>
bool with_float_simd(F&& f) {
  bool vec = false;
  vm::with_vec<T>([&](auto v) {
    if constexpr (decltype(v)::W > 1) {
      f(v);
      vec = true;
    }
  });
  return vec;
}

// One output row of a direct convolution, all taps summed in registers (4 vectors of accumulators
// in flight for the FMA latency), one store per output: d[j] = init (first) or d[j], plus the sum
// over t of wk[t] * base[toff[t] + j]. The taps' rows are contiguous along j: the planes are
// phase-split (phase_plane) when the stride is not 1. float32 at a SIMD level (with_float_simd;
// float64 and the scalar level take the callers' autovectorized row passes, direct_row_loops).
template <class V>
void direct_row(const float* base, const i64* toff, const float* wk, i64 taps, float* d, i64 ow,
                bool first, float init) {
  using Rg = typename V::R;
  constexpr i64 W = V::W;
  for (i64 j0 = 0; j0 < ow; j0 += 4 * W) {
    size_t cnt[4];
    Rg a[4];
    for (int u = 0; u < 4; ++u) {
      cnt[u] = size_t(std::clamp<i64>(ow - j0 - u * W, 0, W));
      a[u] = first ? V::set1(init) : V::load_n(d + j0 + u * W, cnt[u], 0.0f);
    }
    for (i64 t = 0; t < taps; ++t) {
      const Rg wv = V::set1(wk[t]);
      const float* src = base + toff[t] + j0;
      for (int u = 0; u < 4; ++u) a[u] = V::fma(wv, V::load_n(src + u * W, cnt[u], 0.0f), a[u]);
    }
    for (int u = 0; u < 4; ++u) V::store_n(d + j0 + u * W, a[u], cnt[u]);
  }
}

// The same row as direct_row for any T and level, as autovectorized passes (one per tap)
template <class T>
void direct_row_loops(const T* base, const i64* toff, const T* wk, i64 taps, T* d, i64 ow, bool first, T init) {
  if (first) std::fill(d, d + ow, init);
  for (i64 t = 0; t < taps; ++t) {
    const T wv = wk[t];
    const T* src = base + toff[t];
#pragma omp simd
    for (i64 j = 0; j < ow; ++j) d[j] += wv * src[j];
  }
}

template <class T>
void phase_plane(const Geom& q, i64 wph, const i64* cmap, const T* x, T* dst);

// A padded input plane split into its sw column phases (phase_plane: padded row y is wq = sw * wph
// elements, phase p holding columns p, p + sw, ...): tap (r, s) of output row oh, column j reads
// plane[oh * row + toff[t] + j], contiguous in j at every stride. The direct path's planes and,
// per channel, the smallk path's.
struct PhasePlane {
  i64 wph, wq, size, row;
  std::vector<i64> toff, cmap;
  explicit PhasePlane(const Geom& q)
      : wph((q.w + 2 * q.pw + q.sw - 1) / q.sw), wq(q.sw * wph), size((q.h + 2 * q.ph) * wq), row(q.sh * wq),
        toff(static_cast<size_t>(q.r * q.s)), cmap(static_cast<size_t>(q.w)) {
    for (i64 r = 0, t = 0; r < q.r; ++r)
      for (i64 s = 0; s < q.s; ++s) toff[size_t(t++)] = r * q.dh * wq + (s * q.dw) % q.sw * wph + (s * q.dw) / q.sw;
    for (i64 ix = 0; ix < q.w; ++ix) cmap[size_t(ix)] = (ix + q.pw) % q.sw * wph + (ix + q.pw) / q.sw;
  }
  template <class T>
  void fill(const Geom& q, const T* x, T* buf) const { phase_plane(q, wph, cmap.data(), x, buf); }
};

// Per (n, k) output plane: for each input channel of the group, pad (and phase-split) its plane
// once (L1-sized), then each output row (L1-resident) sums the R*S taps in registers.
template <class T>
void direct_forward(const Geom& q, const T* x, const T* wt, const T* bias, T* out) {
  const i64 planes = q.n * q.k, hw = q.h * q.w, taps = q.r * q.s;
  const PhasePlane dp(q);
  const i64* toff = dp.toff.data();
#pragma omp parallel num_threads(num_threads()) if (planes > 1)
  {
    std::vector<T> buf(static_cast<size_t>(dp.size));
#pragma omp for schedule(static)
    for (i64 p = 0; p < planes; ++p) {
      const i64 n = p / q.k, k = p % q.k, g = k / q.kg();
      T* o = out + p * q.l();
      for (i64 cl = 0; cl < q.cg(); ++cl) {
        dp.fill(q, x + (n * q.c + g * q.cg() + cl) * hw, buf.data());
        const T* wk = wt + (k * q.cg() + cl) * taps;
        const T init = bias ? bias[k] : T(0);
        const bool first = cl == 0;
        if (with_float_simd<T>([&](auto v) {  // one dispatch per plane, not per row
              for (i64 oh = 0; oh < q.oh; ++oh)
                direct_row<decltype(v)>(buf.data() + oh * dp.row, toff, wk, taps, o + oh * q.ow, q.ow, first, init);
            }))
          continue;
        for (i64 oh = 0; oh < q.oh; ++oh)
          direct_row_loops(buf.data() + oh * dp.row, toff, wk, taps, o + oh * q.ow, q.ow, first, init);
      }
    }
  }
}


// -- small-K forward (filters in the SIMD lanes) -------------------------------------

// MR output pixels x NV vectors of filters, summed over `taps` taps: tile[i][v*W + l] =
// sum_t x[base[i] + toff[t]] * wp[t*kpad + v*W + l]. x reads are broadcasts (L1: one output
// row's taps span R rows of Cg padded planes); wp rows are the packed W^T (taps x kpad).
template <class T, Simd S, int MR, int NV>
void smallk_tile(const T* x, const i64* base, const i64* toff, i64 taps, const T* wp, i64 kpad, T* tile,
                 i64 ldt, bool add) {
  using K = gemm::detail::KT<T, S>;
  using R = typename K::R;
  constexpr int W = K::W;
  R acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = add ? K::load(tile + i * ldt + v * W) : K::zero();
  const T* xs[MR];
  for (int i = 0; i < MR; ++i) xs[i] = x + base[i];
  for (i64 t = 0; t < taps; ++t) {
    const i64 o = toff[t];
    const T* w = wp + t * kpad;
    R b[NV];
    for (int v = 0; v < NV; ++v) b[v] = K::load(w + v * W);
    for (int i = 0; i < MR; ++i) {
      const R a = K::bcast(xs[i] + o);
      for (int v = 0; v < NV; ++v) acc[i][v] = K::fma(a, b[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) K::store_n(tile + i * ldt + v * W, acc[i][v], W);
}

// The forward's tile: MR CONSECUTIVE output pixels of one row (phase_plane makes their taps
// consecutive addresses: x[t] for pixel i is x + toff[t] + i, so one pointer per tap and the
// broadcasts at fixed offsets; no per-pixel pointers to keep in registers), NV vectors of
// filters from a lane block of the packed W^T (taps x ldw).
template <class T, Simd S, int MR, int NV>
void smallk_row_tile(const T* x, const i64* toff, i64 taps, const T* wp, i64 ldw, T* tile, i64 ldt, bool add) {
  using K = gemm::detail::KT<T, S>;
  using R = typename K::R;
  constexpr int W = K::W;
  R acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = add ? K::load(tile + i * ldt + v * W) : K::zero();
  for (i64 t = 0; t < taps; ++t) {
    const T* xp = x + toff[t];
    const T* w = wp + t * ldw;
    R b[NV];
    for (int v = 0; v < NV; ++v) b[v] = K::load(w + v * W);
    for (int i = 0; i < MR; ++i) {
      const R a = K::bcast(xp + i);
      for (int v = 0; v < NV; ++v) acc[i][v] = K::fma(a, b[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) K::store_n(tile + i * ldt + v * W, acc[i][v], W);
}

// Register-tile rows per level and NV (accumulators + NV weight vectors + a broadcast within the
// register file: 32 zmm, 16 ymm).
template <Simd S>
constexpr int smallk_mr(int nv) {
  if constexpr (S == Simd::avx512) return nv == 1 ? 10 : nv == 2 ? 12 : nv == 3 ? 8 : 6;
  else if constexpr (S == Simd::avx2) return nv == 1 ? 8 : nv == 2 ? 6 : nv == 3 ? 4 : 3;
  else return 4;
}

// Rows of the forward's row tile (smallk_row_tile) per level and NV: one pointer per tap, so the
// register file alone bounds it (AVX-512: 28 accumulators + 2 weight vectors + a broadcast at NV 2).
template <Simd S>
constexpr int smallk_row_mr(int nv) {
  if constexpr (S == Simd::avx512) return nv == 1 ? 12 : nv == 2 ? 14 : nv == 3 ? 8 : 6;
  else if constexpr (S == Simd::avx2) return nv == 1 ? 8 : nv == 2 ? 6 : nv == 3 ? 4 : 3;
  else return 4;
}

// Lanes per block of the smallk forward, in vectors (conv_set_smallk_block; 0 = the measured
// default of smallk_block()).
int kSmallkBlock = 0;
// Depth (taps) per block of the smallk forward's row tiles (conv_set_smallk_block's second value).
long long kSmallkDepth = 384;
// Depth (pixels) per block of the smallk dW tiles (conv_set_smallk_block's fourth value).
long long kSmallkDwDepth = 256;

template <class T, Simd S>
struct SmallK {
  static constexpr int W = gemm::detail::KT<T, S>::W;
  static constexpr int kMaxMR = 16;  // >= smallk_mr(nv) and smallk_row_mr(nv) for every nv
  using Fn = void (*)(const T*, const i64*, const i64*, i64, const T*, i64, T*, i64, bool);
  using RowFn = void (*)(const T*, const i64*, i64, const T*, i64, T*, i64, bool);
  // make(std::integral_constant<int, v>) for v = nv in 1..4 (a run-time count to a template one)
  template <class Make>
  static auto by_nv(int nv, Make&& make) {
    switch (nv) {
      case 1: return make(std::integral_constant<int, 1>{});
      case 2: return make(std::integral_constant<int, 2>{});
      case 3: return make(std::integral_constant<int, 3>{});
      default: return make(std::integral_constant<int, 4>{});
    }
  }
  // the dW kernel for nv vectors with the rows of the tile's first (widest, nv0) block
  static Fn fn(int nv0, int nv) {
    return by_nv(nv0, [nv](auto v0) {
      constexpr int mr = smallk_mr<S>(decltype(v0)::value);
      return by_nv(nv, [](auto v) -> Fn { return smallk_tile<T, S, mr, decltype(v)::value>; });
    });
  }
  // Row-tile rows for a lane block of nvb vectors on rows of ow pixels: one vector of filters
  // (LeNet) can take 10 rows instead of 12 when that wastes fewer (ow = 10: 12 computed 2 dropped).
  static int row_mr(int nvb, i64 ow) {
    const int mr = smallk_row_mr<S>(nvb);
    auto waste = [ow](int m) { return (ow + m - 1) / m * m - ow; };
    return nvb == 1 && mr == 12 && waste(10) < waste(12) ? 10 : mr;
  }
  static RowFn row_fn(int nvb, int nv, int mr) {
    if (mr == 10 && nvb == 1) return smallk_row_tile<T, S, 10, 1>;
    return by_nv(nvb, [nv](auto vb) {
      constexpr int mr = smallk_row_mr<S>(decltype(vb)::value);
      return by_nv(nv, [](auto v) -> RowFn { return smallk_row_tile<T, S, mr, decltype(v)::value>; });
    });
  }
  // Whether the forward takes flat tiles: always below AVX-512; at AVX-512 when the row tiles
  // would compute a quarter more pixels than the rows have (16-pixel rows in 14-pixel tiles: 28
  // computed, 16 kept; 8-pixel rows 14 for 8), where the flat tile's per-pixel pointers cost less.
  static bool flat(int nvb, i64 ow) {
    if constexpr (S != Simd::avx512) return true;
    const int mr = row_mr(nvb, ow);
    return 4 * ((ow + mr - 1) / mr * mr) > 5 * ow;
  }
  // dW: rows [r0, r1) of dW^T-like products: row i gets the sum over the `depth` entries j of
  // x[rows[i] + cols[j]] * B[j][lane] (rows = taps' offsets, cols = pixels' bases, B = dy^T), lanes
  // in blocks of nvb vectors packed as smallk_pack_lanes lays them out (the block at lane v0*W is
  // (depth x nv*W) at wpk + v0*W*depth: in L1/L2 across the row tiles). The tiles accumulate
  // straight into out (row i at out + i*ldo, all kpad lanes; stored over when `first`), depth
  // block by depth block: no tile buffer, no separate add pass. A last tile past r1 writes up to
  // mr - 1 rows past it: out must have them (slack), and a caller splitting rows between threads
  // splits at multiples of mr.
  static void tiles(const T* xg, const i64* rows, i64 r0, i64 r1, const i64* cols, i64 depth, const T* wpk,
                    i64 kpad, int nvb, T* out, i64 ldo, bool first) {
    const i64 nvec = kpad / W;
    const int mr = smallk_mr<S>(nvb);
    i64 base[kMaxMR];
    for (i64 v0 = 0; v0 < nvec; v0 += nvb) {
      const int nv = int(std::min<i64>(nvec - v0, nvb));
      const auto f = fn(nvb, nv);
      const T* wb = wpk + v0 * W * depth;
      const i64 ldw = nv * W;
      const i64 dmax = kSmallkDwDepth;
      for (i64 d0 = 0; d0 < depth; d0 += dmax) {
        const i64 dc = std::min(dmax, depth - d0);
        for (i64 pt = r0; pt < r1; pt += mr) {
          const int cnt = int(std::min<i64>(mr, r1 - pt));
          for (int i = 0; i < mr; ++i) base[i] = rows[pt + std::min(i, cnt - 1)];  // past r1: repeats
          f(xg, base, cols + d0, dc, wb + d0 * ldw, ldw, out + pt * ldo + v0 * W, ldo, !(first && d0 == 0));
        }
      }
    }
  }

  // The forward: output rows [oh0, oh1) of `ow` pixels (row oh's first pixel at xg + rowbase[oh];
  // the pixels of a row consecutive, phase_plane), lanes in blocks of nvb vectors (block at lane
  // v0*W is packed (depth x nv*W) at wpk + v0*W*depth, smallk_pack_lanes), in tiles of mr pixels:
  // - row tiles (AVX-512: 12-14 pixels, more pointers than the 16 GPRs hold): within a row, one
  //   pointer per tap (smallk_row_tile); a row's last tile reads past it, results dropped;
  // - flat tiles (AVX2 and scalar: 3-8 pixels; AVX-512 where row tiles would waste, flat()):
  //   consecutive pixels of the plane, a row's end included, one pointer per pixel (smallk_tile,
  //   pixel p's taps at xg + pb[p] + toff[t]). The 3-pixel AVX2 tile wasted one pixel in 15 on
  //   14-pixel rows (ResNet c256, c128 s2) and the 6-pixel one two in 12 on LeNet's 10-pixel
  //   rows; flat, only the plane's last tile has any.
  // Deeper than kSmallkDepth: depth block by depth block through acc (one slot of mr rows per
  // tile), each depth block's weights (384 x nvb vectors: 48 KB at nvb = 2) staying in L1/L2
  // across the tiles.
  template <class Emit>
  static void fwd_tiles(const T* xg, const i64* rowbase, const i64* pb, i64 ow, i64 oh0, i64 oh1, const i64* toff,
                        i64 depth, const T* wpk, i64 kpad, i64 kg, int nvb, std::vector<T>& acc, Emit&& emit) {
    const i64 nvec = kpad / W;
    const bool flat_tiles = flat(nvb, ow);
    const int mr = flat_tiles ? smallk_mr<S>(nvb) : row_mr(nvb, ow);
    const i64 tpr = (ow + mr - 1) / mr, p0 = oh0 * ow, p1 = oh1 * ow;
    const i64 ntile = flat_tiles ? (p1 - p0 + mr - 1) / mr : (oh1 - oh0) * tpr;
    constexpr i64 ldt = 4 * W;
    const i64 dmax = kSmallkDepth;
    const bool deep = depth > dmax;
    // flat and not deep: tiles gather in a chunk of kChunk tiles (in acc), emitted together, so that
    // emit_nchw sees whole blocks of 8 pixels; deep: every tile has its slot in acc
    constexpr i64 kChunk = 8;
    if (deep) acc.resize(static_cast<size_t>(ntile * mr * ldt));
    else if (flat_tiles) acc.resize(static_cast<size_t>(kChunk * mr * ldt));
    // tile j: its first output pixel and its count of pixels
    auto pixel = [&](i64 j, i64& pt, int& cnt) {
      if (flat_tiles) {
        pt = p0 + j * mr;
        cnt = int(std::min<i64>(mr, p1 - pt));
      } else {
        const i64 oh = oh0 + j / tpr, c0 = j % tpr * mr;
        pt = oh * ow + c0;
        cnt = int(std::min<i64>(mr, ow - c0));
      }
    };
    for (i64 v0 = 0; v0 < nvec; v0 += nvb) {
      const int nv = int(std::min<i64>(nvec - v0, nvb));
      Fn fflat = nullptr;  // flat tiles
      RowFn frow = nullptr;  // row tiles
      if (flat_tiles) fflat = fn(nvb, nv);
      else frow = row_fn(nvb, nv, mr);
      const T* wb = wpk + v0 * W * depth;
      const i64 ldw = nv * W, k0 = v0 * W, k1 = std::min<i64>(kg, (v0 + nv) * W);
      for (i64 d0 = 0; d0 < depth; d0 += dmax) {
        const i64 dc = deep ? std::min(dmax, depth - d0) : depth;
        for (i64 j = 0; j < ntile; ++j) {
          i64 pt;
          int cnt;
          pixel(j, pt, cnt);
          const bool add = deep && d0 > 0;
          if (flat_tiles) {
            T* dst = acc.data() + (deep ? j : j % kChunk) * mr * ldt;
            i64 base[kMaxMR];
            for (int i = 0; i < mr; ++i) base[i] = pb[pt + std::min(i, cnt - 1)];  // past the end: repeats
            fflat(xg, base, toff + d0, dc, wb + d0 * ldw, ldw, dst, ldt, add);
            if (!deep && (j % kChunk == kChunk - 1 || j == ntile - 1)) {
              const i64 c0 = p0 + (j - j % kChunk) * mr;
              emit(c0, pt + cnt - c0, k0, k1, static_cast<const T*>(acc.data()), ldt);
            }
          } else {
            alignas(64) T tile[kMaxMR * ldt];
            T* dst = deep ? acc.data() + j * mr * ldt : tile;
            frow(xg + rowbase[pt / ow] + pt % ow, toff + d0, dc, wb + d0 * ldw, ldw, dst, ldt, add);
            if (!deep) emit(pt, cnt, k0, k1, static_cast<const T*>(tile), ldt);
          }
        }
        if (!deep) break;
      }
      if (deep && flat_tiles) {
        emit(p0, p1 - p0, k0, k1, static_cast<const T*>(acc.data()), ldt);  // pixel p's lanes at row p - p0
      } else if (deep) {
        for (i64 j = 0; j < ntile; ++j) {
          i64 pt;
          int cnt;
          pixel(j, pt, cnt);
          emit(pt, cnt, k0, k1, static_cast<const T*>(acc.data() + j * mr * ldt), ldt);
        }
      }
    }
  }
};

// Lane-block width (vectors) of the smallk forward for kpad lanes. Measured on one Zen 5 thread
// (dev/conv/README.md, "row tiles"): AVX-512 blocks of 2 (14 x 2 tiles, 32 KB of weights per
// depth block in L1) beat 3 and 4 by 5-25% on every ResNet/AlexNet shape. AVX2 (16 ymm): 6 x 2
// or 4 x 3 tiles (12 accumulators, the weight vectors and a broadcast fill the register file);
// measured on Zen 4 held to AVX2, one thread, interleaved with PyTorch (dev/conv/README.md,
// "AVX2"): 3 x 4 tiles (4 vectors, 12 accumulators) ahead from 4 vectors of filters on (c64 +6%,
// c128 s2 +9%, c256 +7%, AlexNet +5% over the 3- and 2-vector blocks; the 3-pixel tile also wastes
// less of a 14-pixel row than 4 or 6), 2 below (LeNet c2). (Blocks of 1 only looked best before the
// broadcast fix of gemm.hpp's KT.)
// AVX-512 rows of 8, 16, 32 pixels (ow): the 2-vector row tile (14 pixels) would go flat, where
// the 3-vector one (8 pixels) fits them exactly: N32 C256 8x8 3x3 401 -> 429-436 GFLOP/s, C128
// 16x16 429 -> 437-445 (one process, two threads). With few lane blocks the 3-vector split leaves
// a 1-vector tail: C64 32x32 ran 345-355 against flat 2-vector tiles' 365-372, hence nvec >= 6.
template <class T, Simd S>
int smallk_block(i64 nvec, i64 ow) {
  if (kSmallkBlock > 0) return int(std::min<i64>(kSmallkBlock, 4));
  if constexpr (S == Simd::avx512) {
    if (nvec >= 6 && SmallK<T, S>::flat(2, ow) && ow % smallk_row_mr<S>(3) == 0) return 3;
    return nvec >= 2 ? 2 : 1;
  } else if constexpr (S == Simd::avx2) {
    return nvec >= 4 ? 4 : nvec >= 2 ? 2 : 1;
  } else {
    return 1;
  }
}

// Lane-block width (vectors) of the smallk dW (tiles(): smallk_mr rows of taps, one pointer
// each): 4 (6 x 4 tiles on AVX-512). Measured in dev/conv/README.md, "row tiles" (2-4 within
// 5-10%, 4 ahead in two of three runs); conv_set_smallk_block's third value overrides it.
int kSmallkDwBlock = 0;
inline int smallk_dw_block(i64 nvec) {
  return int(std::min<i64>(nvec, kSmallkDwBlock > 0 ? kSmallkDwBlock : 4));
}

// src (kg x depth, row k at src + k*depth: W_g for the forward, dy_g for dW) transposed into the
// lane blocks of nvb vectors of w lanes the smallk tiles read: the block at lane k0 is (depth x bw),
// bw = min(nvb*w, kpad - k0), at dst + k0*depth; zero lanes past kg.
template <class T>
void smallk_pack_lanes(const T* src, i64 kg, i64 depth, i64 kpad, int w, int nvb, T* dst, int nt = 1) {
  const i64 step = i64(nvb) * w;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && depth * kpad > 65536)
  for (i64 k0 = 0; k0 < kpad; k0 += step) {
    const i64 bw = std::min<i64>(step, kpad - k0), kn = std::max<i64>(0, std::min(kg, k0 + bw) - k0);
    T* blk = dst + k0 * depth;
    const T* sk = src + k0 * depth;
    // Rows a multiple of 1 KiB apart share a few L1 sets (a dy of 32x32 planes: one set), and
    // walking all bw of them for each t fetched every line again per t (dW of N64 C3 -> 64 on
    // 32x32 planes: 4.2 ms at AVX-512 against 1.5 on 31x31 planes): there, 16 entries t at a time
    // (a 64-byte line of one row, then the next row). Elsewhere the writes go in order, the reads
    // walk the bw rows at once (2-3% faster on LeNet c2's weights than the blocked copy).
    constexpr i64 kT = 64 / sizeof(T);
    if ((depth * i64(sizeof(T))) % 1024 != 0) {
      for (i64 t = 0; t < depth; ++t) {
        T* d = blk + t * bw;
        for (i64 k = 0; k < kn; ++k) d[k] = sk[k * depth + t];
        for (i64 k = kn; k < bw; ++k) d[k] = T(0);
      }
      continue;
    }
    for (i64 t0 = 0; t0 < depth; t0 += kT) {
      const i64 tn = std::min(kT, depth - t0);
      T* d = blk + t0 * bw;
      for (i64 k = 0; k < kn; ++k) {
        const T* sr = sk + k * depth + t0;
        for (i64 t = 0; t < tn; ++t) d[t * bw + k] = sr[t];
      }
      for (i64 t = 0; t < tn; ++t)
        for (i64 k = kn; k < bw; ++k) d[t * bw + k] = T(0);
    }
  }
}

// x plane (H, W) into dst as the smallk kernels read it: zero-padded, and along the width split
// into its sw phases: padded row y is stored as sw segments of wph elements, segment p holding
// the padded columns p, p + sw, p + 2sw, ... Output pixels along a row then read CONSECUTIVE
// addresses for every tap (ow*sw + s*dw is phase (s*dw) % sw, index ow + (s*dw) / sw), whatever
// the stride: the row kernel broadcasts at fixed offsets from one pointer. sw = 1: plain padding.
template <class T>
void phase_plane(const Geom& q, i64 wph, const i64* cmap, const T* x, T* dst) {
  if (q.sw == 1) return pad_plane(q, x, dst);  // one phase: the plain padded plane
  const i64 hp = q.h + 2 * q.ph, wq = q.sw * wph;
  for (i64 y = 0; y < hp; ++y) {
    T* d = dst + y * wq;
    const i64 iy = y - q.ph;
    if (iy < 0 || iy >= q.h) {
      std::fill(d, d + wq, T(0));
      continue;
    }
    const T* src = x + iy * q.w;
    // input column ix lands at cmap[ix] (phase (ix + pw) % sw, entry (ix + pw) / sw): one scatter
    // pass over the row (per-phase strided copies of ~15 elements ran at ~100 cycles a row)
    std::fill(d, d + wq, T(0));
    i64 ix = 0;
#if defined(__AVX2__)
    if constexpr (std::is_same_v<T, float>) {
      if (q.sw == 2) {  // split in registers (the scatter was 6% of a c128 s2 forward at AVX2):
        // even columns 2m go to phase pw % 2 at entry m + pw / 2, odd ones to the other at m + (pw + 1) / 2
        float* de = d + (q.pw % 2) * wph + q.pw / 2;
        float* dd = d + (1 - q.pw % 2) * wph + (q.pw + 1) / 2;
        for (; ix + 16 <= q.w; ix += 16) {
          const __m256 a = _mm256_loadu_ps(src + ix), b = _mm256_loadu_ps(src + ix + 8);
          // per 128-bit half (a0 a2 b0 b2 | a4 a6 b4 b6); the 64-bit permute puts them in order
          const __m256 e = _mm256_shuffle_ps(a, b, 0x88), o = _mm256_shuffle_ps(a, b, 0xdd);
          _mm256_storeu_ps(de + ix / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8)));
          _mm256_storeu_ps(dd + ix / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xd8)));
        }
        for (; ix + 8 <= q.w; ix += 8) {
          const __m256 a = _mm256_loadu_ps(src + ix);
          const __m128 lo = _mm256_castps256_ps128(a), hi = _mm256_extractf128_ps(a, 1);
          _mm_storeu_ps(de + ix / 2, _mm_shuffle_ps(lo, hi, 0x88));
          _mm_storeu_ps(dd + ix / 2, _mm_shuffle_ps(lo, hi, 0xdd));
        }
      }
    }
#endif
    for (; ix < q.w; ++ix) d[cmap[ix]] = src[ix];
  }
}

// Geometry shared by the smallk forward and dW: packed widths, tap offsets into the group's
// phase-split planes (phase_plane), output pixels' base offsets, and the planes themselves.
template <class T, Simd S>
struct SmallKGeom {
  const Geom& q;
  const PhasePlane pl;  // one channel's plane; the group's Cg planes follow each other
  i64 kpad, taps, L;
  bool copy;  // planes are copied (padding or stride > 1 along the width), else read in place
  std::vector<i64> toff, pb;
  explicit SmallKGeom(const Geom& g) : q(g), pl(g) {
    constexpr int W = SmallK<T, S>::W;
    kpad = (q.kg() + W - 1) / W * W;
    taps = q.crs();
    L = q.l();
    copy = q.ph > 0 || q.pw > 0 || q.sw > 1;
    const i64 rs = q.r * q.s;
    toff.resize(static_cast<size_t>(taps));
    for (i64 t = 0; t < taps; ++t) toff[t] = (t / rs) * pl.size + pl.toff[t % rs];
    pb.resize(static_cast<size_t>(L));
    for (i64 p = 0; p < L; ++p) pb[p] = (p / q.ow) * pl.row + p % q.ow;
  }
  // Elements past the last plane a row tile may read (its pixels past the row end: results
  // dropped, reads kept inside the buffer).
  static constexpr i64 kSlack = 64;
  // the planes of image n, group g, as phase_plane lays them out; copied into buf when `copy` or
  // `always` (the row kernels read up to kSlack elements past the end)
  const T* planes(const T* x, i64 n, i64 g, std::vector<T>& buf, bool always) const {
    const T* xg = x + (n * q.c + g * q.cg()) * q.h * q.w;
    if (!copy && !always) return xg;
    buf.resize(static_cast<size_t>(q.cg() * pl.size + kSlack));
    for (i64 c = 0; c < q.cg(); ++c) pl.fill(q, xg + c * q.h * q.w, buf.data() + c * pl.size);
    std::fill(buf.end() - kSlack, buf.end(), T(0));
    return buf.data();
  }
};

#if defined(__AVX512F__)
// 16 x 16 floats transposed in registers: afterwards r[j] holds what was column j.
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // u[4i + j], 128-bit lane l: rows 4i..4i+3 of column 4l + j
  for (int j = 0; j < 4; ++j) {
    const __m512 a0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), a1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    const __m512 b0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 b1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_f32x4(a0, b0, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(a0, b0, 0xdd);
    r[4 + j] = _mm512_shuffle_f32x4(a1, b1, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(a1, b1, 0xdd);
  }
}
#endif

// Finished forward tiles (cnt output pixels from pt on, lanes [k0, k1), lane k of pixel i at
// tile[i*ldt + k - k0]) into the NCHW rows og[k*L + pt + i], plus the bias. float on AVX-512 (a
// row tile, or a chunk of flat tiles 16 pixels at a time): 16 x 16 register transposes and masked
// row stores (the scalar strided loop cost 12% of AlexNet's forward). float on AVX2 (flat tiles, emitted a chunk of 8 tiles or a whole
// plane at a time): 8 x 8 register transposes of full blocks of 8 pixels x 8 lanes, unmasked stores
// (per 3-pixel tile, masked, they had cost more than the scalar moves: dev/conv/README.md).
template <class T, Simd S>
void emit_nchw(const T* tile, i64 ldt, i64 cnt, i64 k0, i64 k1, T* og, i64 L, i64 pt, const T* bg) {
#if defined(__AVX512F__)
  if constexpr (S == Simd::avx512 && std::is_same_v<T, float>) {
    for (i64 i0 = 0; i0 < cnt; i0 += 16) {  // (flat tiles come a chunk of them at a time)
      const i64 c = std::min<i64>(16, cnt - i0);
      const __mmask16 m = static_cast<__mmask16>((1u << c) - 1);
      const T* ti = tile + i0 * ldt;
      for (i64 kb = k0; kb < k1; kb += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = i < c ? _mm512_loadu_ps(ti + i * ldt + (kb - k0)) : _mm512_setzero_ps();
        transpose16(r);
        const int nk = int(std::min<i64>(16, k1 - kb));
        for (int j = 0; j < nk; ++j) {
          const __m512 v = bg ? _mm512_add_ps(r[j], _mm512_set1_ps(bg[kb + j])) : r[j];
          _mm512_mask_storeu_ps(og + (kb + j) * L + pt + i0, m, v);
        }
      }
    }
    return;
  }
#endif
  i64 i0 = 0, kfull = k0;  // lanes [k0, kfull) of pixels [0, i0) are written
#if defined(__AVX2__)
  if constexpr (S == Simd::avx2 && std::is_same_v<T, float>) {
    kfull = k0 + (k1 - k0) / 8 * 8;
    for (; i0 + 8 <= cnt; i0 += 8)
      for (i64 kb = k0; kb < kfull; kb += 8)
        gemm::detail::transpose8x8(tile + i0 * ldt + (kb - k0), ldt, og + kb * L + pt + i0, L, bg ? bg + kb : nullptr);
  }
#endif
  for (i64 k = k0; k < k1; ++k) {
    T* d = og + k * L + pt;
    const T bk = bg ? bg[k] : T(0);
    const T* sp = tile + (k - k0);
    for (i64 i = k < kfull ? i0 : 0; i < cnt; ++i) d[i] = sp[i * ldt] + bk;
  }
}

// emit_nchw through a staging buffer: tiles arrive in pixel order per lane block, are emitted
// into rows kLd apart (not a multiple of 1 KiB: distinct L1 sets) within a window of kW pixels (a
// multiple of 16: whole cache lines of the output row), and each window's rows are copied out
// once it is complete. For output planes whose size is a multiple of 1 KiB: the channel rows of
// a direct emit share one or a few L1 sets, and with 32-64 lanes in a block each tile's partial
// lines were evicted before the next tile completed them (N64 C3 -> 64 3x3, 32x32 planes: 126
// GFLOP/s at AVX-512 against 204 on 31x31 planes; dev/conv/README.md, session 14).
template <class T, Simd S>
struct StagedEmit {
  static constexpr i64 kW = 128, kLd = kW + 16;
  T* og;
  i64 L;
  const T* bg;
  T* stg;             // 4 vectors of lanes x kLd
  i64 s0 = 0;         // the window: pixels [s0, s0 + kW)
  i64 f = 0, e = -1;  // staged: pixels [f, e) of lanes [k0, k1); e < 0: nothing staged
  i64 k0 = 0, k1 = 0;
  void flush() {
    if (e > f)
      for (i64 k = k0; k < k1; ++k)
        std::memcpy(og + k * L + f, stg + (k - k0) * kLd + (f - s0), static_cast<size_t>(e - f) * sizeof(T));
    e = -1;
  }
  void put(i64 pt, i64 cnt, i64 kk0, i64 kk1, const T* tile, i64 ldt) {
    while (cnt > 0) {
      const i64 w0 = pt / kW * kW;
      if (e >= 0 && (kk0 != k0 || pt != e || w0 != s0)) flush();
      if (e < 0) {
        s0 = w0;
        f = e = pt;
        k0 = kk0;
        k1 = kk1;
      }
      const i64 c = std::min(cnt, w0 + kW - pt);
      emit_nchw<T, S>(tile, ldt, c, 0, k1 - k0, stg, kLd, pt - s0, bg ? bg + k0 : nullptr);
      e = pt + c;
      pt += c;
      cnt -= c;
      tile += c * ldt;
    }
  }
};

template <class T, Simd S>
void smallk_forward_s(const Geom& q, const T* x, const T* wt, const T* bias, T* out) {
  using SK = SmallK<T, S>;
  const SmallKGeom<T, S> sg(q);
  const i64 kpad = sg.kpad, taps = sg.taps, L = sg.L, kg = q.kg();
  const int nvb = smallk_block<T, S>(kpad / SK::W, q.ow);
  const std::unique_ptr<T[]> wpk(new T[static_cast<size_t>(q.g * taps * kpad)]);  // every entry written
  for (i64 g = 0; g < q.g; ++g)
    smallk_pack_lanes(wt + g * kg * taps, kg, taps, kpad, SK::W, nvb, wpk.get() + g * taps * kpad, num_threads());
  std::vector<i64> rowbase(static_cast<size_t>(q.oh));
  for (i64 oh = 0; oh < q.oh; ++oh) rowbase[oh] = oh * sg.pl.row;
  // Output planes a multiple of 1 KiB apart put the emit's channel rows in a few L1 sets (32x32:
  // all in one set), and a tile's partial lines are evicted before the next tile fills them:
  // staged, then (StagedEmit).
  const bool stage = (L * i64(sizeof(T))) % 1024 == 0;
  auto run = [&](i64 n, i64 g, const T* xg, i64 oh0, i64 oh1, std::vector<T>& acc, std::vector<T>& stg) {
    const T* bg = bias ? bias + g * kg : nullptr;
    T* og = out + (n * q.k + g * kg) * L;
    const T* wg = wpk.get() + g * taps * kpad;
    // the tile written transposed into NCHW, with the bias
    if (!stage) {
      SK::fwd_tiles(xg, rowbase.data(), sg.pb.data(), q.ow, oh0, oh1, sg.toff.data(), taps, wg, kpad, kg, nvb, acc,
                    [&](i64 pt, i64 cnt, i64 k0, i64 k1, const T* tile, i64 ldt) {
                      emit_nchw<T, S>(tile, ldt, cnt, k0, k1, og, L, pt, bg);
                    });
      return;
    }
    stg.resize(static_cast<size_t>(4 * SK::W * StagedEmit<T, S>::kLd));
    StagedEmit<T, S> se{og, L, bg, stg.data()};
    SK::fwd_tiles(xg, rowbase.data(), sg.pb.data(), q.ow, oh0, oh1, sg.toff.data(), taps, wg, kpad, kg, nvb, acc,
                  [&](i64 pt, i64 cnt, i64 k0, i64 k1, const T* tile, i64 ldt) { se.put(pt, cnt, k0, k1, tile, ldt); });
    se.flush();
  };
  const int nt = num_threads();
  if (q.n * q.g >= nt) {
#pragma omp parallel num_threads(nt)
    {
      std::vector<T> buf, acc, stg;
#pragma omp for schedule(dynamic, 1)
      for (i64 ng = 0; ng < q.n * q.g; ++ng) {
        const i64 n = ng / q.g, g = ng % q.g;
        run(n, g, sg.planes(x, n, g, buf, true), 0, q.oh, acc, stg);
      }
    }
  } else {
    std::vector<T> buf;
    for (i64 ng = 0; ng < q.n * q.g; ++ng) {
      const i64 n = ng / q.g, g = ng % q.g;
      const T* xg = sg.planes(x, n, g, buf, true);
      const i64 chunk = (q.oh + nt - 1) / nt;
#pragma omp parallel num_threads(nt)
      {
        std::vector<T> acc, stg;
        const i64 t = omp_get_thread_num();
        run(n, g, xg, std::min(q.oh, t * chunk), std::min(q.oh, (t + 1) * chunk), acc, stg);
      }
    }
  }
}

// dW by the same tiles with the roles swapped: dW_g^T (taps x Kg) = sum over images and pixels of
// x[tap offset + pixel base] * dy^T[pixel][k]; per image dy_g is transposed into (L x kpad) rows.
// Threads over taps when one image and group, else over (image, group) with per-thread partials.
template <class T, Simd S>
void smallk_dw_s(const Geom& q, const T* dy, const T* x, T* dwt) {
  using SK = SmallK<T, S>;
  const SmallKGeom<T, S> sg(q);
  const i64 kpad = sg.kpad, taps = sg.taps, L = sg.L, kg = q.kg();
  const int nvb = smallk_dw_block(kpad / SK::W);
  const int mr = smallk_mr<S>(nvb);
  // per thread and group, dW_g^T (taps x kpad) plus mr rows of slack for the last tile
  const i64 gpart = (taps + mr) * kpad, part = q.g * gpart;
  const int nt = num_threads();
  const bool split_taps = q.n * q.g < nt;
  const int nparts = split_taps ? 1 : nt;
  // every entry of a group's slice is stored over by its first image (tiles(first)); untouched
  // slices (a thread that got no image of that group) are skipped by the reduction
  const std::unique_ptr<T[]> parts(new T[static_cast<size_t>(nparts * part)]);
  std::vector<char> touched(static_cast<size_t>(nparts * q.g), 0);
  for (i64 s = 0; s < nparts * q.g; ++s)  // slack rows: written and read back as garbage, never used
    std::fill(parts.get() + s * gpart + taps * kpad, parts.get() + (s + 1) * gpart, T(0));
  auto transpose_dy = [&](i64 n, i64 g, std::vector<T>& dyt) {
    dyt.resize(static_cast<size_t>(L * kpad));
    smallk_pack_lanes(dy + (n * q.k + g * kg) * L, kg, L, kpad, SK::W, nvb, dyt.data());
  };
  if (!split_taps) {
#pragma omp parallel num_threads(nt)
    {
      std::vector<T> buf, dyt;
      const int me = omp_get_thread_num();
#pragma omp for schedule(static)
      for (i64 ng = 0; ng < q.n * q.g; ++ng) {
        const i64 n = ng / q.g, g = ng % q.g;
        transpose_dy(n, g, dyt);
        char& t = touched[me * q.g + g];
        SK::tiles(sg.planes(x, n, g, buf, false), sg.toff.data(), 0, taps, sg.pb.data(), L, dyt.data(), kpad, nvb,
                  parts.get() + me * part + g * gpart, kpad, !t);
        t = 1;
      }
    }
  } else {
    std::vector<T> buf, dyt;
    const i64 chunk = (taps + nt - 1) / nt / mr * mr + mr;  // a multiple of mr: no tile shared
    for (i64 ng = 0; ng < q.n * q.g; ++ng) {
      const i64 n = ng / q.g, g = ng % q.g;
      transpose_dy(n, g, dyt);
      const T* xg = sg.planes(x, n, g, buf, false);
#pragma omp parallel num_threads(nt)
      {
        const i64 t = omp_get_thread_num();
        SK::tiles(xg, sg.toff.data(), std::min(taps, t * chunk), std::min(taps, (t + 1) * chunk), sg.pb.data(), L,
                  dyt.data(), kpad, nvb, parts.get() + g * gpart, kpad, n == 0);
      }
      touched[g] = 1;
    }
  }
  // dW[g*kg + k][t] = sum over the touched partials of dW_g^T[t][k]; blocks of 16 taps, so the
  // 16 x kpad block of each partial stays in L1 while the filters' rows take 16 taps each
  constexpr i64 tb = 16;
  const i64 nblk = (taps + tb - 1) / tb;
#pragma omp parallel for schedule(static) num_threads(nt) if (q.k * taps * nparts > 65536)
  for (i64 gb = 0; gb < q.g * nblk; ++gb) {
    const i64 g = gb / nblk, t0 = gb % nblk * tb, t1 = std::min(taps, t0 + tb);
    for (i64 k = 0; k < kg; ++k) {
      T* d = dwt + (g * kg + k) * taps;
      for (i64 t = t0; t < t1; ++t) {
        T sum = T(0);
        for (int pi = 0; pi < nparts; ++pi)
          if (touched[pi * q.g + g]) sum += parts[pi * part + g * gpart + t * kpad + k];
        d[t] = sum;
      }
    }
  }
}

template <class T>
void smallk_dw(const Geom& q, const T* dy, const T* x, T* dwt) {
  with_level(simd_level(), [&](auto s) { smallk_dw_s<T, decltype(s)::value>(q, dy, x, dwt); });
}

template <class T>
void smallk_forward(const Geom& q, const T* x, const T* wt, const T* bias, T* out) {
  with_level(simd_level(), [&](auto s) { smallk_forward_s<T, decltype(s)::value>(q, x, wt, bias, out); });
}

// dx of a stride-1 convolution IS a convolution: of dy (N, K, OH, OW) with the weights flipped
// in R and S and transposed per group (W'[g*Cg + c][k][r][s] = W[g*Kg + k][c][R-1-r][S-1-s]),
// padding dh*(R-1) - ph (and width alike), same dilation and groups: its output is (N, C, H, W).
// Run by the smallk forward (row tiles, Kg' = Cg filters in the lanes), so dx costs what the
// forward costs instead of a GEMM with a transposed A plus a col2im pass. False (nothing done)
// for strides > 1 (a transposed conv with holes) or padding beyond the dilated kernel.
template <class T>
bool smallk_dx(const Geom& q, const T* dy, const T* wt, T* dx) {
  const i64 ph = q.dh * (q.r - 1) - q.ph, pw = q.dw * (q.s - 1) - q.pw;
  // Cg < 16: the transposed conv's few filters fill a fraction of the lanes (LeNet C6: 0.37 vs
  // 0.74 ms for the GEMM + col2im, one thread; Cg 8 and 12 ran 0.80-1.25x either way). Cg 16-31
  // gained 1.09-1.36x on both levels (dev/conv/README.md, session 14), Cg 20 at AVX2 0.97x.
  if (q.sh != 1 || q.sw != 1 || ph < 0 || pw < 0 || q.cg() < 16 || q.cg() > 256) return false;
  Geom t{q.n, q.k, q.oh, q.ow, q.c, q.r, q.s, 1, 1, ph, pw, q.dh, q.dw, q.g, q.h, q.w};
  if (!planes_fit(t)) return false;  // dy's padded planes would dwarf it: the GEMM + col2im
  const i64 rs = q.r * q.s;
  std::vector<T> wf(static_cast<size_t>(q.k * q.crs()));
  for (i64 g = 0; g < q.g; ++g)
    for (i64 k = 0; k < q.kg(); ++k)
      for (i64 c = 0; c < q.cg(); ++c) {
        const T* src = wt + ((g * q.kg() + k) * q.cg() + c) * rs;
        T* dst = wf.data() + ((g * q.cg() + c) * q.kg() + k) * rs;
        for (i64 j = 0; j < rs; ++j) dst[j] = src[rs - 1 - j];
      }
  smallk_forward(t, dy, wf.data(), static_cast<const T*>(nullptr), dx);
  return true;
}

// One image, one group: the GEMM by the chosen path. nt: GEMM threads (1 inside our region).
template <class T>
void forward_group(const Geom& q, int path, const T* xg, const T* wg, const T* bg, T* og,
                   std::vector<T>& buf, int nt) {
  const i64 M = q.kg(), L = q.l(), K = q.crs();
  gemm::View<T> A{wg, K, 1};
  gemm::Epilogue<T> ep;
  ep.bias = bg;
  ep.bias_per_row = true;
  if (path == kGemm1x1) {
    // one image per thread on a small plane: the same W_g for every image, read in place instead
    // of packed again per image (packing is ~1/L of the work): 1x1 C256 -> 64 at 14x14 1.04x
    // (AVX2) / 1.09x (AVX-512), C1024 -> 256 1.04 / 1.05x; on 56x56 (L = 3136) in place lost 27%
    if (nt == 1 && L <= 256) gemm::gemm_rows_a<T>(simd_level(), M, L, K, A, gemm::View<T>{xg, L, 1}, og, L, ep, 1);
    else gemm::gemm<T>(M, L, K, A, gemm::View<T>{xg, L, 1}, og, L, ep, nt);
  } else if (path == kImplicit) {
    const int nr = gemm::panel_width<T>();
    auto pack = [&](i64 k0, i64 kc, i64 n0, i64 nc, T* dst) {
      std::vector<i64> ihb(nr), iwb(nr);
      for (i64 p = 0; p * nr < nc; ++p) {
        const int lanes = int(std::min<i64>(nr, nc - p * nr));
        for (int j = 0; j < lanes; ++j) {
          const i64 col = n0 + p * nr + j;
          ihb[j] = (col / q.ow) * q.sh - q.ph;
          iwb[j] = (col % q.ow) * q.sw - q.pw;
        }
        i64 c = k0 / (q.r * q.s), rs = k0 % (q.r * q.s), r = rs / q.s, s = rs % q.s;
        for (i64 kk = 0; kk < kc; ++kk) {
          T* d = dst + (p * kc + kk) * nr;
          const T* xc = xg + c * q.h * q.w;
          const i64 dr = r * q.dh, ds = s * q.dw;
          for (int j = 0; j < lanes; ++j) {
            const i64 ih = ihb[j] + dr, iw = iwb[j] + ds;
            d[j] = (ih >= 0 && ih < q.h && iw >= 0 && iw < q.w) ? xc[ih * q.w + iw] : T(0);
          }
          for (int j = lanes; j < nr; ++j) d[j] = T(0);
          if (++s == q.s) { s = 0; if (++r == q.r) { r = 0; ++c; } }
        }
      }
    };
    gemm::gemm_packed_b<T>(M, L, K, A, pack, og, L, ep, nt);
  } else {  // im2col by tiles of output rows
    const i64 rows = tile_rows<T>(q);
    buf.resize(static_cast<size_t>(K * rows * q.ow));
    for (i64 oh0 = 0; oh0 < q.oh; oh0 += rows) {
      const i64 oh1 = std::min(q.oh, oh0 + rows), tl = (oh1 - oh0) * q.ow;
      im2col_rows(q, xg, q.cg(), oh0, oh1, buf.data(), tl);
      gemm::gemm<T>(M, tl, K, A, gemm::View<T>{buf.data(), tl, 1}, og + oh0 * q.ow, L, ep, nt);
    }
  }
}

// -- Winograd F(2x2, 3x3) ---------------------------------------------------------------
//
// A 3x3 stride-1 convolution on 2x2 output tiles: each tile's 4x4 input patch d and each filter
// g go to a 4x4 "Winograd domain" (V = B^T d B, U = G g G^T), where the convolution becomes 16
// independent products summed over the channels, M[xi] = U[xi] (filters x channels) . V[xi]
// (channels x tiles): 16 multiply-adds per tile and channel for 4 outputs against the direct
// convolution's 36, 2.25x fewer. Y = A^T M A takes each tile back (Lavin & Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2016), with
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// The transforms only add, subtract and halve: the error stays within a few times the direct
// convolution's (tests/test_conv.py checks it against the float64 reference).
//
// The tiles go in chunks of whole tile rows (across images), one chunk per thread at a time: the
// chunk's V (16 x channels x tiles) and M (16 x filters x tiles) stay in the caches between the
// transforms and the GEMMs, which run on the chunk's thread and read U in place
// (gemm::gemm_rows_a: packing U's 16 matrices again for every chunk cost 5-15%).

// Tiles per chunk (conv_set_winograd_tiles; 0 = the default, winograd_chunk).
i64 kWinoTiles = 0;

// The per-call buffers of the calling thread (kept: a chunk's V and M are megabytes, and fresh
// pages would be faulted in on every call).
inline gemm::detail::Scratch& wino_scratch() {
  static thread_local gemm::detail::Scratch s;
  return s;
}

// U[xi][f][ch] (xi at u + xi*nf*nc) for the nf x nc filters of the convolution computed: g =
// wt[f][ch] (wt (nf, nc, 3, 3)), or with `flip` (dx: the transposed convolution) wt[ch][f] rotated
// by 180 degrees (wt (nc, nf, 3, 3)). Vectorized over the channels (strided loads of the taps).
// noipa: the stride stays a run-time value, which GCC 12 vectorizes (gathers); with the constant 9
// propagated into the clone it left the loop scalar (a third of an N4 C256 14x14 forward).
template <class T, bool Flip>
__attribute__((noipa)) void winograd_weights_row(const T* __restrict g0, i64 cs, i64 nc, i64 plane, T* __restrict d) {
#pragma omp simd
  for (i64 ch = 0; ch < nc; ++ch) {
    const T* g = g0 + ch * cs;
    T gg[9];
    for (int j = 0; j < 9; ++j) gg[j] = g[Flip ? 8 - j : j];
    T t[4][3];
    for (int j = 0; j < 3; ++j) {
      t[0][j] = gg[j];
      t[1][j] = T(0.5) * (gg[j] + gg[3 + j] + gg[6 + j]);
      t[2][j] = T(0.5) * (gg[j] - gg[3 + j] + gg[6 + j]);
      t[3][j] = gg[6 + j];
    }
    for (int r = 0; r < 4; ++r) {
      d[(4 * r + 0) * plane + ch] = t[r][0];
      d[(4 * r + 1) * plane + ch] = T(0.5) * (t[r][0] + t[r][1] + t[r][2]);
      d[(4 * r + 2) * plane + ch] = T(0.5) * (t[r][0] - t[r][1] + t[r][2]);
      d[(4 * r + 3) * plane + ch] = t[r][2];
    }
  }
}

template <class T>
void winograd_weights(const T* wt, i64 nf, i64 nc, bool flip, T* u) {
  const i64 plane = nf * nc;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (plane > 4096)
  for (i64 f = 0; f < nf; ++f) {
    if (flip) winograd_weights_row<T, true>(wt + f * 9, nf * 9, nc, plane, u + f * nc);
    else winograd_weights_row<T, false>(wt + f * nc * 9, 9, nc, plane, u + f * nc);
  }
}

// Even and odd elements of 2n values (deinterleave) and back (interleave), a vector at a time for
// float32 at AVX2/AVX-512 (the transforms' stride-2 columns: GCC left them scalar).
template <class T>
void deinterleave(const T* a, i64 n, T* e, T* o) {
  i64 j = 0;
  if constexpr (std::is_same_v<T, float>) {
    with_float_simd<T>([&](auto v) {
      using V = decltype(v);
      constexpr int W = V::W;
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<V, vm::Avx512F>) {
        const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for (; j + W <= n; j += W) {
          const __m512 lo = _mm512_loadu_ps(a + 2 * j), hi = _mm512_loadu_ps(a + 2 * j + W);
          _mm512_storeu_ps(e + j, _mm512_permutex2var_ps(lo, ie, hi));
          _mm512_storeu_ps(o + j, _mm512_permutex2var_ps(lo, io, hi));
        }
      }
#endif
#if defined(__AVX2__)
      if constexpr (std::is_same_v<V, vm::Avx2F>) {
        for (; j + W <= n; j += W) {
          const __m256 lo = _mm256_loadu_ps(a + 2 * j), hi = _mm256_loadu_ps(a + 2 * j + W);
          const __m256d ev = _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88));
          const __m256d od = _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD));
          _mm256_storeu_ps(e + j, _mm256_castpd_ps(_mm256_permute4x64_pd(ev, 0xD8)));
          _mm256_storeu_ps(o + j, _mm256_castpd_ps(_mm256_permute4x64_pd(od, 0xD8)));
        }
      }
#endif
      (void)W;
    });
  }
  for (; j < n; ++j) {
    e[j] = a[2 * j];
    o[j] = a[2 * j + 1];
  }
}

template <class T>
void interleave(const T* e, const T* o, i64 n, T* a) {
  i64 j = 0;
  if constexpr (std::is_same_v<T, float>) {
    with_float_simd<T>([&](auto v) {
      using V = decltype(v);
      constexpr int W = V::W;
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<V, vm::Avx512F>) {
        const __m512i i0 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i i1 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        for (; j + W <= n; j += W) {
          const __m512 x = _mm512_loadu_ps(e + j), y = _mm512_loadu_ps(o + j);
          _mm512_storeu_ps(a + 2 * j, _mm512_permutex2var_ps(x, i0, y));
          _mm512_storeu_ps(a + 2 * j + W, _mm512_permutex2var_ps(x, i1, y));
        }
      }
#endif
#if defined(__AVX2__)
      if constexpr (std::is_same_v<V, vm::Avx2F>) {
        for (; j + W <= n; j += W) {
          const __m256 x = _mm256_loadu_ps(e + j), y = _mm256_loadu_ps(o + j);
          const __m256 u = _mm256_unpacklo_ps(x, y), w = _mm256_unpackhi_ps(x, y);
          _mm256_storeu_ps(a + 2 * j, _mm256_permute2f128_ps(u, w, 0x20));
          _mm256_storeu_ps(a + 2 * j + W, _mm256_permute2f128_ps(u, w, 0x31));
        }
      }
#endif
      (void)W;
    });
  }
  for (; j < n; ++j) {
    a[2 * j] = e[j];
    a[2 * j + 1] = o[j];
  }
}

// d B for one input row (row ih of the plane xc, h x w; zeros outside it): tile tx's four column
// combinations of the padded columns 2tx - pw .. + 3, ct[j * js + tx]. pr: 2 tw + 2 scratch, eo:
// 2 (tw + 1).
template <class T>
void winograd_cols(const T* xc, i64 h, i64 w, i64 ih, i64 pw, i64 tw, T* pr, T* eo, T* ct, i64 js) {
  if (ih < 0 || ih >= h) {
    for (int j = 0; j < 4; ++j) std::fill(ct + j * js, ct + j * js + tw, T(0));
    return;
  }
  pad_into(xc + ih * w, 1, w, 0, pw, 1, 2 * tw + 2, pr);  // 2 tw + 2 >= ow + 2 = w + 2 pw
  T *e = eo, *o = eo + tw + 1;
  deinterleave(pr, tw + 1, e, o);
  T *v0 = ct, *v1 = ct + js, *v2 = ct + 2 * js, *v3 = ct + 3 * js;
#pragma omp simd
  for (i64 tx = 0; tx < tw; ++tx) {
    v0[tx] = e[tx] - e[tx + 1];
    v1[tx] = o[tx] + e[tx + 1];
    v2[tx] = e[tx + 1] - o[tx];
    v3[tx] = o[tx] - o[tx + 1];
  }
}

// Output transform of one filter over the tile rows [ty0, ty0 + nty) of one image: Y = A^T M A,
// 2x2 per tile, plus b, into the plane o (oh x ow; rows past oh and the column past ow of odd
// planes dropped). m: the first tile's entry of U[0]'s product, xs between consecutive xi. The
// sums as one loop over all nty * tw tiles (y: 4 nty tw + 2 tw), then each output row interleaved.
template <class T>
void winograd_output(const T* m, i64 xs, i64 tw, i64 nty, T b, T* y, T* o, i64 ty0, i64 oh, i64 ow) {
  const i64 q1 = nty * tw;
  T *y00 = y, *y01 = y + q1, *y10 = y + 2 * q1, *y11 = y + 3 * q1, *r = y + 4 * q1;
#pragma omp simd
  for (i64 q = 0; q < q1; ++q) {
    T s[4], dd[4];
    for (int j = 0; j < 4; ++j) {
      const T m0 = m[j * xs + q], m1 = m[(4 + j) * xs + q], m2 = m[(8 + j) * xs + q], m3 = m[(12 + j) * xs + q];
      s[j] = m0 + m1 + m2;
      dd[j] = m1 - m2 - m3;
    }
    y00[q] = s[0] + s[1] + s[2] + b;
    y01[q] = s[1] - s[2] - s[3] + b;
    y10[q] = dd[0] + dd[1] + dd[2] + b;
    y11[q] = dd[1] - dd[2] - dd[3] + b;
  }
  const bool whole = ow == 2 * tw;  // else the last tile's right column is dropped
  for (i64 k = 0; k < nty; ++k) {
    const i64 ty = ty0 + k;
    T* o0 = o + 2 * ty * ow;
    interleave(y00 + k * tw, y01 + k * tw, tw, whole ? o0 : r);
    if (!whole) std::memcpy(o0, r, sizeof(T) * ow);
    if (2 * ty + 1 < oh) {
      interleave(y10 + k * tw, y11 + k * tw, tw, whole ? o0 + ow : r);
      if (!whole) std::memcpy(o0 + ow, r, sizeof(T) * ow);
    }
  }
}

// Tiles per chunk: 128. Measured 64-256 (session 15, both levels, N32 C256 14x14, N32 C64 56x56,
// N64 C32 32x32, N8 C512 28x28): within 5% of each other but for C512 (128 and 256 ahead by 10%).
inline i64 winograd_chunk() { return kWinoTiles > 0 ? kWinoTiles : 128; }

// How the tiles of n images with oh x ow outputs go in chunks of whole tile rows: about
// winograd_chunk() tiles, as many rows as make the tiles a multiple of the GEMM's column tile (nr:
// 14x14 planes, 7 tiles a row, in 18 rows were 126 tiles, 3.9 column tiles of 32 at AVX-512; in
// 32 rows 224, 7); few chunks: their count a multiple of the threads instead (an even split).
// Chunk ck goes to thread ck mod outer; one chunk only: outer 1 and the GEMMs take the threads.
struct WinoChunks {
  i64 th, tw, rows, rpc, nchunk, pmax, wp;
  int outer, inner;
};

template <class T>
WinoChunks winograd_chunks(Simd level, i64 n, i64 oh, i64 ow) {
  WinoChunks c;
  c.th = (oh + 1) / 2;
  c.tw = (ow + 1) / 2;
  c.rows = n * c.th;  // tile rows across the images
  const int nt = num_threads();
  const i64 want = winograd_chunk(), tw = c.tw, rows = c.rows;
  i64 nr = 1;
  with_level(level, [&](auto s) {
    using K = gemm::detail::KT<T, decltype(s)::value>;
    nr = K::W * K::NP;
  });
  const i64 step = nr / std::gcd(tw, nr);
  i64 rpc = std::max<i64>(1, (want + tw - 1) / tw);
  if (step * tw <= 2 * want) rpc = std::max<i64>(step, (rpc + step / 2) / step * step);
  i64 nchunk = (rows + rpc - 1) / rpc;
  if (nchunk < 4 * nt) {
    nchunk = std::min<i64>(rows, (std::max<i64>(1, (rows * tw + want - 1) / want) + nt - 1) / nt * nt);
    rpc = (rows + nchunk - 1) / nchunk;
    nchunk = (rows + rpc - 1) / rpc;
  }
  c.rpc = rpc;
  c.nchunk = nchunk;
  c.pmax = rpc * tw;
  c.wp = 2 * tw + 2;
  c.outer = int(std::min<i64>(nt, nchunk));
  c.inner = c.outer == 1 ? nt : 1;
  return c;
}

// Runs body(tid) for each of ck.outer threads (no parallel region for one).
template <class F>
void winograd_run(const WinoChunks& c, F&& body) {
  if (c.outer == 1) return body(0);  // outside a parallel region: the GEMMs' own threads can run
#pragma omp parallel num_threads(c.outer)
  body(omp_get_thread_num());
}

// Input transform of the tile rows [r0, r1) of x (n, nc, h, w), padding (ph, pw), into V[xi][ch][p]
// (p = (tile row - r0) * tw + tx, pc = (r1 - r0) * tw tiles). Per channel and image: the column
// combinations (d B) of each padded input row once (winograd_cols), the even rows' and the odd
// rows' apart (ce, co: [j][k][tx], row k of each = padded row 2 (ty0 + k) or 2 (ty0 + k) + 1),
// then the row combinations B^T (d B) as loops over all the image's tiles in the chunk at once
// (tile row ty reads rows k = ty - ty0 and k + 1 of both: one offset of tw): on narrow planes (7
// tiles a row) loops along one tile row left most vector lanes idle. tmp: winograd_input_scratch
// elements (ce and co, then a padded row and its even and odd columns).
inline i64 winograd_input_scratch(const WinoChunks& c) { return 8 * (c.rpc + 1) * c.tw + 2 * c.wp; }

template <class T>
void winograd_input(const T* x, i64 nc, i64 h, i64 w, i64 ph, i64 pw, const WinoChunks& ck, i64 r0, i64 r1, T* tmp,
                    T* V) {
  const i64 th = ck.th, tw = ck.tw, pc = (r1 - r0) * tw, ldv = nc * pc;  // ldv: between consecutive xi
  T* ct = tmp;
  T* pr = ct + 8 * (ck.rpc + 1) * tw;
  T* eo = pr + ck.wp;
  for (i64 img = r0 / th; img * th < r1; ++img) {
    const i64 ty0 = std::max(r0, img * th) - img * th, ty1 = std::min(r1, (img + 1) * th) - img * th;
    const i64 nty = ty1 - ty0, js = (nty + 1) * tw;  // js: between the j planes of ce and co
    T* ce = ct;
    T* co = ct + 4 * js;
    for (i64 ch = 0; ch < nc; ++ch) {
      const T* xc = x + (img * nc + ch) * h * w;
      for (i64 k = 0; k <= nty; ++k)
        for (int odd = 0; odd < 2; ++odd) {
          T* dst = (odd ? co : ce) + k * tw;
          winograd_cols(xc, h, w, 2 * (ty0 + k) + odd - ph, pw, tw, pr, eo, dst, js);
        }
      T* v = V + ch * pc + (img * th + ty0 - r0) * tw;
      const i64 q1 = nty * tw;
      for (int j = 0; j < 4; ++j) {
        const T *e = ce + j * js, *o = co + j * js;
        T *v0 = v + j * ldv, *v1 = v + (4 + j) * ldv, *v2 = v + (8 + j) * ldv, *v3 = v + (12 + j) * ldv;
#pragma omp simd
        for (i64 q = 0; q < q1; ++q) {
          const T d0 = e[q], d1 = o[q], d2 = e[q + tw], d3 = o[q + tw];
          v0[q] = d0 - d2;
          v1[q] = d1 + d2;
          v2[q] = d2 - d1;
          v3[q] = d1 - d3;
        }
      }
    }
  }
}

// The convolution of x (n, nc, h, w) with the filters u (winograd_weights), padding
// (ph, pw), into out (n, nf, oh, ow) (oh = h + 2 ph - 2, ow likewise), plus bias (nf) when given.
template <class T>
void winograd_conv(Simd level, i64 n, i64 nc, i64 h, i64 w, i64 nf, i64 ph, i64 pw, const T* x, const T* u,
                   const T* bias, T* out) {
  const i64 oh = h + 2 * ph - 2, ow = w + 2 * pw - 2;
  if (n == 0 || oh <= 0 || ow <= 0) return;
  const WinoChunks ck = winograd_chunks<T>(level, n, oh, ow);
  const i64 th = ck.th, tw = ck.tw, pmax = ck.pmax, tmps = winograd_input_scratch(ck);
  // per thread: V, M, the input transform's scratch, output sums and a row (4 rpc tw + 2 tw)
  const i64 per = 16 * (nc + nf) * pmax + tmps + 4 * pmax + 2 * tw + 64;
  T* ws = static_cast<T*>(wino_scratch().get(static_cast<size_t>(per * ck.outer) * sizeof(T)));
  winograd_run(ck, [&](int tid) {
    T* V = ws + per * tid;
    T* M = V + 16 * nc * pmax;
    T* tmp = M + 16 * nf * pmax;
    T* yr = tmp + tmps;
    for (i64 c = tid; c < ck.nchunk; c += ck.outer) {
      const i64 r0 = c * ck.rpc, r1 = std::min(ck.rows, r0 + ck.rpc), pc = (r1 - r0) * tw;
      winograd_input(x, nc, h, w, ph, pw, ck, r0, r1, tmp, V);
      // the 16 products M[xi] (nf x pc) = U[xi] (nf x nc) . V[xi] (nc x pc)
      for (int xi = 0; xi < 16; ++xi)
        gemm::gemm_rows_a<T>(level, nf, pc, nc, gemm::View<T>{u + xi * nf * nc, nc, 1},
                             gemm::View<T>{V + xi * nc * pc, pc, 1}, M + xi * nf * pc, pc, {}, ck.inner);
      // output transform: Y = A^T M A, 2x2 per tile, plus the bias, image by image
      for (i64 img = r0 / th; img * th < r1; ++img) {
        const i64 ty0 = std::max(r0, img * th) - img * th, ty1 = std::min(r1, (img + 1) * th) - img * th;
        for (i64 f = 0; f < nf; ++f)
          winograd_output(M + f * pc + (img * th + ty0 - r0) * tw, nf * pc, tw, ty1 - ty0, bias ? bias[f] : T(0), yr,
                          out + (img * nf + f) * oh * ow, ty0, oh, ow);
      }
    }
  });
}

// dW by the same tiles: the forward is Y = A^T (U . V) A per tile, so dL/dU = sum over the tiles
// (A dY A^T) . V, 16 GEMMs dU[xi] (K x C) += Z[xi] (K x tiles) . V[xi]^T (tiles x C) with Z the
// transformed dy tiles, and dW = G^T dU G. Per-thread dU partials over a static chunk split,
// summed at the end (the same bits from run to run).
template <class T>
void winograd_dw(const Geom& q, const T* dy, const T* x, T* dwt) {
  const Simd level = simd_level();
  const i64 nc = q.c, nf = q.k, oh = q.oh, ow = q.ow, usize = 16 * nf * nc;
  const WinoChunks ck = winograd_chunks<T>(level, q.n, oh, ow);
  const i64 th = ck.th, tw = ck.tw, pmax = ck.pmax, tmps = winograd_input_scratch(ck);
  // per thread: dU, V, Z, the input transform's scratch, dy rows (6 tw)
  const i64 per = usize + 16 * (nc + nf) * pmax + tmps + 6 * tw + 64;
  T* ws = static_cast<T*>(wino_scratch().get(static_cast<size_t>(per * ck.outer) * sizeof(T)));
  gemm::Epilogue<T> acc;
  acc.accumulate = true;
  winograd_run(ck, [&](int tid) {
    T* dU = ws + per * tid;
    T* V = dU + usize;
    T* Z = V + 16 * nc * pmax;
    T* tmp = Z + 16 * nf * pmax;
    T* yb = tmp + tmps;
    std::fill(dU, dU + usize, T(0));
    for (i64 c = tid; c < ck.nchunk; c += ck.outer) {
      const i64 r0 = c * ck.rpc, r1 = std::min(ck.rows, r0 + ck.rpc), pc = (r1 - r0) * tw;
      winograd_input(x, nc, q.h, q.w, q.ph, q.pw, ck, r0, r1, tmp, V);
      // dy tiles: rows 2ty, 2ty + 1, columns 2tx, 2tx + 1 (zeros past the plane), Z = A dY A^T
      for (i64 f = 0; f < nf; ++f)
        for (i64 tr = r0; tr < r1; ++tr) {
          const i64 img = tr / th, ty = tr % th;
          const T* d = dy + (img * nf + f) * oh * ow;
          T *e0 = yb, *o0 = yb + tw, *e1 = yb + 2 * tw, *o1 = yb + 3 * tw, *row = yb + 4 * tw;
          for (int i = 0; i < 2; ++i) {
            T* e = i ? e1 : e0;
            T* o = i ? o1 : o0;
            if (2 * ty + i >= oh) {
              std::fill(e, e + tw, T(0));
              std::fill(o, o + tw, T(0));
              continue;
            }
            std::memcpy(row, d + (2 * ty + i) * ow, sizeof(T) * ow);
            if (ow < 2 * tw) row[ow] = T(0);
            deinterleave(row, tw, e, o);
          }
          T* z = Z + f * pc + (tr - r0) * tw;
          const i64 xs = nf * pc;  // between consecutive xi
#pragma omp simd
          for (i64 tx = 0; tx < tw; ++tx) {
            const T a = e0[tx], b = o0[tx], cc = e1[tx], dd = o1[tx];
            const T r1a = a + cc, r1b = b + dd, r2a = a - cc, r2b = b - dd;
            z[0 * xs + tx] = a;
            z[1 * xs + tx] = a + b;
            z[2 * xs + tx] = a - b;
            z[3 * xs + tx] = -b;
            z[4 * xs + tx] = r1a;
            z[5 * xs + tx] = r1a + r1b;
            z[6 * xs + tx] = r1a - r1b;
            z[7 * xs + tx] = -r1b;
            z[8 * xs + tx] = r2a;
            z[9 * xs + tx] = r2a + r2b;
            z[10 * xs + tx] = r2a - r2b;
            z[11 * xs + tx] = -r2b;
            z[12 * xs + tx] = -cc;
            z[13 * xs + tx] = -cc - dd;
            z[14 * xs + tx] = dd - cc;
            z[15 * xs + tx] = dd;
          }
        }
      for (int xi = 0; xi < 16; ++xi)
        gemm::gemm<T>(nf, nc, pc, gemm::View<T>{Z + xi * nf * pc, pc, 1}, gemm::View<T>{V + xi * nc * pc, 1, pc},
                      dU + xi * nf * nc, nc, acc, ck.inner);
    }
  });
  // the partials summed, then dW = G^T dU G per filter and channel
  const i64 plane = nf * nc;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (plane > 4096)
  for (i64 fc = 0; fc < plane; ++fc) {
    T u[16];
    for (int xi = 0; xi < 16; ++xi) {
      T sum = T(0);
      for (int t = 0; t < ck.outer; ++t) sum += ws[per * t + xi * plane + fc];
      u[xi] = sum;
    }
    T t[3][4];
    for (int s = 0; s < 4; ++s) {
      t[0][s] = u[s] + T(0.5) * (u[4 + s] + u[8 + s]);
      t[1][s] = T(0.5) * (u[4 + s] - u[8 + s]);
      t[2][s] = T(0.5) * (u[4 + s] + u[8 + s]) + u[12 + s];
    }
    T* g = dwt + fc * 9;
    for (int r = 0; r < 3; ++r) {
      g[3 * r + 0] = t[r][0] + T(0.5) * (t[r][1] + t[r][2]);
      g[3 * r + 1] = T(0.5) * (t[r][1] - t[r][2]);
      g[3 * r + 2] = T(0.5) * (t[r][1] + t[r][2]) + t[r][3];
    }
  }
}

// The forward; dx (flip) as the transposed convolution: dy (n, K, OH, OW) with the filters
// flipped and transposed, padding 2 - p (stride 1: no zeros inserted).
template <class T>
void winograd(const Geom& q, const T* in, const T* wt, const T* bias, T* out, bool flip) {
  const Simd level = simd_level();
  const i64 nf = flip ? q.c : q.k, nc = flip ? q.k : q.c;
  std::unique_ptr<T[]> u(new T[static_cast<size_t>(16 * nf * nc)]);
  winograd_weights(wt, nf, nc, flip, u.get());
  if (!flip) winograd_conv(level, q.n, q.c, q.h, q.w, q.k, q.ph, q.pw, in, u.get(), bias, out);
  else winograd_conv(level, q.n, q.k, q.oh, q.ow, q.c, 2 - q.ph, 2 - q.pw, in, u.get(), bias, out);
}

template <class T>
void forward(const Geom& q, int path, const T* x, const T* wt, const T* bias, T* out) {
  if (q.n == 0) return;
  if (path == kDirect) return direct_forward(q, x, wt, bias, out);
  if (path == kSmallK) return smallk_forward(q, x, wt, bias, out);
  if (path == kWinograd) return winograd(q, x, wt, bias, out, false);
  auto image = [&](i64 n, std::vector<T>& buf, int nt) {
    for (i64 g = 0; g < q.g; ++g)
      forward_group(q, path, x + (n * q.c + g * q.cg()) * q.h * q.w, wt + g * q.kg() * q.crs(),
                    bias ? bias + g * q.kg() : nullptr, out + (n * q.k + g * q.kg()) * q.l(), buf, nt);
  };
  if (over_images(q)) {
#pragma omp parallel num_threads(num_threads())
    {
      std::vector<T> buf;
#pragma omp for schedule(dynamic, 1)
      for (i64 n = 0; n < q.n; ++n) image(n, buf, 1);
    }
  } else {
    std::vector<T> buf;
    for (i64 n = 0; n < q.n; ++n) image(n, buf, 0);
  }
}

// -- backward ------------------------------------------------------------------------

// dW of one filter over one image, NT taps at a time: acc[t] += sum over the output plane of
// dy[i][j] * xp[i*xpw + toff[t] + j], xp the zero-padded (phase-split) input plane, xpw its
// elements per output row (PhasePlane::row). One accumulator vector per tap (NT <= 9: 11
// registers at AVX2), dy loaded once for all of them; the row tail masks both loads (a lane past
// the row must not pair a 0 of dy with an inf of x).
template <class V, int NT>
void dw_taps(const float* dy, const float* xp, i64 oh, i64 ow, i64 xpw, const i64* toff, float* acc) {
  using Rg = typename V::R;
  constexpr i64 W = V::W;
  Rg a[NT];
  for (int t = 0; t < NT; ++t) a[t] = V::set1(0.0f);
  for (i64 i = 0; i < oh; ++i) {
    const float* g = dy + i * ow;
    const float* xr = xp + i * xpw;
    i64 j = 0;
    for (; j + W <= ow; j += W) {
      const Rg gv = V::load(g + j);
      for (int t = 0; t < NT; ++t) a[t] = V::fma(gv, V::load(xr + toff[t] + j), a[t]);
    }
    if (j < ow) {
      const size_t n = size_t(ow - j);
      const Rg gv = V::load_n(g + j, n, 0.0f);
      for (int t = 0; t < NT; ++t) a[t] = V::fma(gv, V::load_n(xr + toff[t] + j, n, 0.0f), a[t]);
    }
  }
  for (int t = 0; t < NT; ++t) acc[t] += V::reduce_add(a[t]);
}

constexpr int kTapChunk = 9;  // a 3x3 filter in one pass over the plane

template <class V, int NT = kTapChunk>
void dw_chunk(int nt, const float* dy, const float* xp, i64 oh, i64 ow, i64 xpw, const i64* toff, float* acc) {
  if constexpr (NT > 1) {
    if (nt < NT) return dw_chunk<V, NT - 1>(nt, dy, xp, oh, ow, xpw, toff, acc);
  }
  dw_taps<V, NT>(dy, xp, oh, ow, xpw, toff, acc);
}

// Direct backward. dx per (n, c) plane; dW per (k, c') filter, images outer. In float32 at a SIMD
// level (`vec`) both run as register-blocked plane passes on zero-padded planes (no bounds in the
// inner loops, no remainder loops of the compiler's choosing): dW by dw_taps on the forward's
// padded, phase-split input plane (PhasePlane: any stride); dx as the stride-1 forward
// convolution (direct_row) of dy padded by (R-1)dh - ph above and (S-1)dw - pw on the left, with
// the taps flipped, so that dx[i][j] = sum w[r][s] dy[i + ph - r dh][j + pw - s dw] (strides:
// dy zero-inserted, sh - 1 rows and sw - 1 columns of zeros between its own). Otherwise (float64,
// the scalar level; for dx also padding wider than the dilated filter) the row loops below,
// autovectorized: a scatter per tap for dx, a dot product per tap and row for dW.
template <class T>
void direct_backward(const Geom& q, const T* dy, const T* x, const T* wt, T* dx, T* dwt) {
  const i64 hw = q.h * q.w, L = q.l(), taps = q.r * q.s;
  const int nt = num_threads();
  const bool vec = with_float_simd<T>([](auto) {});
  const i64 top = (q.r - 1) * q.dh - q.ph, left = (q.s - 1) * q.dw - q.pw;
  const bool dx_planes = vec && top >= 0 && left >= 0;
  const i64 prow = q.h + (q.r - 1) * q.dh, pwid = q.w + (q.s - 1) * q.dw;  // padded dy (dx_planes)
  std::vector<i64> dx_off(static_cast<size_t>(taps));  // tap offsets into the padded dy
  for (i64 t = 0; t < taps; ++t) dx_off[size_t(t)] = (t / q.s) * q.dh * pwid + (t % q.s) * q.dw;
#pragma omp parallel num_threads(nt) if (dx)
  {
    std::vector<T> pbuf(dx_planes ? size_t(prow * pwid) : 0), wf(static_cast<size_t>(taps));
#pragma omp for schedule(static)
    for (i64 p = 0; p < (dx ? q.n * q.c : 0); ++p) {
      const i64 n = p / q.c, c = p % q.c, g = c / q.cg(), cl = c % q.cg();
      T* d = dx + p * hw;
      for (i64 k = g * q.kg(); k < (g + 1) * q.kg(); ++k) {
        const T* gk = dy + (n * q.k + k) * L;
        const T* wk = wt + (k * q.cg() + cl) * taps;
        const bool first = k == g * q.kg();
        if (dx_planes) {
          for (i64 t = 0; t < taps; ++t) wf[size_t(t)] = wk[taps - 1 - t];
          pad_into(gk, q.oh, q.ow, top, left, prow, pwid, pbuf.data(), q.sh, q.sw);
          with_float_simd<T>([&](auto v) {
            for (i64 i = 0; i < q.h; ++i)
              direct_row<decltype(v)>(pbuf.data() + i * pwid, dx_off.data(), wf.data(), taps, d + i * q.w, q.w,
                                      first, 0.0f);
          });
          continue;
        }
        if (first) std::fill(d, d + hw, T(0));
        for (i64 r = 0; r < q.r; ++r)
          for (i64 s = 0; s < q.s; ++s) {
            const T wv = wk[r * q.s + s];
            const i64 off = s * q.dw - q.pw;
            i64 lo, hi;
            valid_range(off, q.sw, q.w, q.ow, lo, hi);
            for (i64 oh = 0; oh < q.oh; ++oh) {
              const i64 ih = oh * q.sh - q.ph + r * q.dh;
              if (ih < 0 || ih >= q.h) continue;
              const T* src = gk + oh * q.ow;
              T* dr = d + ih * q.w + off;
              if (q.sw == 1) {
#pragma omp simd
                for (i64 j = lo; j < hi; ++j) dr[j] += wv * src[j];
              } else {
                const i64 sw = q.sw;
                for (i64 j = lo; j < hi; ++j) dr[j * sw] += wv * src[j];
              }
            }
          }
      }
    }
  }
  // dW: each thread takes a contiguous range of filters; images outer, so that a thread streams
  // its filters' input and dy planes, which lie next to each other in memory, image by image
  // (filters outer read planes a whole image apart: at N32, 64 MB from DRAM, dW ran at half the
  // forward's bandwidth); every filter still sums its images in order
  const PhasePlane dp(q);
  const i64 nf = dwt ? q.k * q.cg() : 0;
#pragma omp parallel num_threads(nt) if (dwt)
  {
    std::vector<T> xbuf(vec ? size_t(dp.size) : 0);
    const i64 me = omp_get_thread_num(), all = omp_get_num_threads();
    const i64 f0 = nf * me / all, f1 = nf * (me + 1) / all;
    std::fill(dwt + f0 * taps, dwt + f1 * taps, T(0));
    for (i64 n = 0; n < q.n; ++n)
      for (i64 f = f0; f < f1; ++f) {
        const i64 k = f / q.cg(), cl = f % q.cg(), c = (k / q.kg()) * q.cg() + cl;
        T* acc = dwt + f * taps;
        const T* gk = dy + (n * q.k + k) * L;
        const T* xc = x + (n * q.c + c) * hw;
        if (vec) {
          dp.fill(q, xc, xbuf.data());
          with_float_simd<T>([&](auto v) {
            for (i64 t0 = 0; t0 < taps; t0 += kTapChunk)
              dw_chunk<decltype(v)>(int(std::min<i64>(kTapChunk, taps - t0)), gk, xbuf.data(), q.oh, q.ow, dp.row,
                                    dp.toff.data() + t0, acc + t0);
          });
          continue;
        }
        for (i64 t = 0; t < taps; ++t) {
          const i64 r = t / q.s, s = t % q.s, off = s * q.dw - q.pw;
          i64 lo, hi;
          valid_range(off, q.sw, q.w, q.ow, lo, hi);
          T sum = T(0);
          for (i64 oh = 0; oh < q.oh; ++oh) {
            const i64 ih = oh * q.sh - q.ph + r * q.dh;
            if (ih < 0 || ih >= q.h) continue;
            const T* gr = gk + oh * q.ow;
            const T* xr = xc + ih * q.w + off;
            T part = T(0);
            if (q.sw == 1) {
#pragma omp simd reduction(+ : part)
              for (i64 j = lo; j < hi; ++j) part += gr[j] * xr[j];
            } else {
              const i64 sw = q.sw;
#pragma omp simd reduction(+ : part)
              for (i64 j = lo; j < hi; ++j) part += gr[j] * xr[j * sw];
            }
            sum += part;
          }
          acc[t] += sum;
        }
      }
  }
}

// One image, one group: dW_g += dy_g @ cols_g^T (with_dw) and dx_g += col2im(W_g^T @ dy_g) (dxg
// not null), by row tiles.
template <class T>
void backward_group(const Geom& q, int path, const T* gy, const T* xg, const T* wg, T* dxg, T* dwg,
                    std::vector<T>& buf, std::vector<T>& dbuf, int nt, bool with_dw) {
  const i64 M = q.kg(), L = q.l(), K = q.crs();
  gemm::Epilogue<T> acc;
  acc.accumulate = true;
  const gemm::View<T> wT{wg, 1, K};  // W_g^T (K x M)
  if (path == kGemm1x1) {
    if (with_dw) gemm::gemm<T>(M, K, L, gemm::View<T>{gy, L, 1}, gemm::View<T>{xg, 1, L}, dwg, K, acc, nt);
    if (dxg) gemm::gemm<T>(K, L, M, wT, gemm::View<T>{gy, L, 1}, dxg, L, {}, nt);
    return;
  }
  const i64 rows = tile_rows<T>(q);
  if (with_dw) buf.resize(static_cast<size_t>(K * rows * q.ow));
  if (dxg) dbuf.resize(static_cast<size_t>(K * rows * q.ow));
  for (i64 oh0 = 0; oh0 < q.oh; oh0 += rows) {
    const i64 oh1 = std::min(q.oh, oh0 + rows), tl = (oh1 - oh0) * q.ow;
    const gemm::View<T> gt{gy + oh0 * q.ow, L, 1};  // dy_g columns of the tile (M x tl)
    if (with_dw) {
      im2col_rows(q, xg, q.cg(), oh0, oh1, buf.data(), tl);
      gemm::gemm<T>(M, K, tl, gt, gemm::View<T>{buf.data(), 1, tl}, dwg, K, acc, nt);
    }
    if (dxg) {
      gemm::gemm<T>(K, tl, M, wT, gt, dbuf.data(), tl, {}, nt);
      col2im_rows(q, dbuf.data(), tl, q.cg(), oh0, oh1, dxg);
    }
  }
}

template <class T>
void backward(const Geom& q, int path, const T* dy, const T* x, const T* wt, T* dx, T* dwt, T* db) {
  const i64 wsize = q.k * q.crs(), L = q.l();
  if (db) {
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (i64 k = 0; k < q.k; ++k) {
      T acc = T(0);
      for (i64 n = 0; n < q.n; ++n) {
        const T* p = dy + (n * q.k + k) * L;
        T part = T(0);
#pragma omp simd reduction(+ : part)
        for (i64 j = 0; j < L; ++j) part += p[j];
        acc += part;
      }
      db[k] = acc;
    }
  }
  if (q.n == 0) {
    if (dwt) std::fill(dwt, dwt + wsize, T(0));
    return;
  }
  if (path == kDirect) return direct_backward(q, dy, x, wt, dx, dwt);
  // smallk: dW by its own tiles; dx by the smallk forward as a transposed convolution (stride 1),
  // else by the GEMM of the 1x1 or im2col path without their dW
  bool with_dw = dwt != nullptr;
  if (path == kWinograd) {  // dx by the Winograd transposed convolution
    // dW by Winograd's products below AVX-512 (backward 1.12-1.23x at AVX2: N32 C256 14x14, C64
    // 56x56, C512 7x7, N8 C128 28x28, N4 C256 14x14), by smallk's tiles at AVX-512 (Winograd's
    // 0.91-1.04x there: its GEMMs of depth = a chunk's tiles, B transposed, pack per chunk)
    if (dwt && simd_level() == Simd::avx512) smallk_dw(q, dy, x, dwt);
    else if (dwt) winograd_dw(q, dy, x, dwt);
    if (dx) winograd(q, dy, wt, static_cast<const T*>(nullptr), dx, true);
    return;
  }
  if (path == kSmallK) {
    if (dwt) smallk_dw(q, dy, x, dwt);
    if (!dx || smallk_dx(q, dy, wt, dx)) return;
    with_dw = false;
    path = q.is1x1() ? kGemm1x1 : kIm2col;
  }
  if (!dx && !with_dw) return;
  if (dx && path != kGemm1x1) std::fill(dx, dx + q.n * q.c * q.h * q.w, T(0));
  auto image = [&](i64 n, T* dw_acc, std::vector<T>& buf, std::vector<T>& dbuf, int nt) {
    for (i64 g = 0; g < q.g; ++g) {
      const i64 xo = (n * q.c + g * q.cg()) * q.h * q.w;
      backward_group(q, path, dy + (n * q.k + g * q.kg()) * L, x + xo, wt + g * q.kg() * q.crs(),
                     dx ? dx + xo : nullptr, dw_acc ? dw_acc + g * q.kg() * q.crs() : nullptr, buf, dbuf, nt,
                     with_dw);
    }
  };
  if (over_images(q) && !with_dw) {
#pragma omp parallel num_threads(num_threads())
    {
      std::vector<T> buf, dbuf;
#pragma omp for schedule(dynamic, 1)
      for (i64 n = 0; n < q.n; ++n) image(n, nullptr, buf, dbuf, 1);
    }
  } else if (over_images(q)) {
    const int nt = num_threads();
    std::vector<T> parts(static_cast<size_t>(nt * wsize), T(0));
#pragma omp parallel num_threads(nt)
    {
      std::vector<T> buf, dbuf;
      T* mine = parts.data() + omp_get_thread_num() * wsize;
#pragma omp for schedule(static)
      for (i64 n = 0; n < q.n; ++n) image(n, mine, buf, dbuf, 1);
    }
    for (i64 i = 0; i < wsize; ++i) {
      T s = T(0);
      for (int t = 0; t < nt; ++t) s += parts[t * wsize + i];
      dwt[i] = s;
    }
  } else {
    if (with_dw) std::fill(dwt, dwt + wsize, T(0));
    std::vector<T> buf, dbuf;
    for (i64 n = 0; n < q.n; ++n) image(n, with_dw ? dwt : nullptr, buf, dbuf, 0);
  }
}

// -- bindings ------------------------------------------------------------------------

template <class T>
using Array = NdArray<T>;  // exact dtype, any strides, never converted (ndarray.hpp)

template <class T>
const T* in_ptr(const Array<T>& a, const char* name, std::initializer_list<i64> shape) {
  PYDL_CHECK(a.flags() & py::array::c_style, name << ": expected a C-contiguous array");
  PYDL_CHECK(a.ndim() == i64(shape.size()), name << ": expected " << shape.size() << " dimensions, got "
                                                 << a.ndim());
  i64 d = 0;
  for (i64 s : shape) {
    PYDL_CHECK(a.shape(d) == s, name << ": dimension " << d << " is " << a.shape(d) << ", expected " << s);
    ++d;
  }
  return a.data();
}

template <class T>
T* out_ptr(Array<T>& a, const char* name, std::initializer_list<i64> shape) {
  in_ptr(a, name, shape);
  PYDL_CHECK(a.writeable(), name << ": expected a writeable array");
  return a.mutable_data();
}

Geom geom(i64 n, i64 c, i64 h, i64 w, i64 k, i64 r, i64 s, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh,
          i64 dw, i64 g) {
  // bounds (Python's checks: pydl/ops/_checks.py HYPER_MAX) that keep every product below in 64 bits
  constexpr i64 kMax = (i64(1) << 31) - 1, kDimMax = i64(1) << 31;
  PYDL_CHECK(r >= 1 && s >= 1 && r <= kDimMax && s <= kDimMax,
             "kernel_size: expected 1..2^31, got (" << r << ", " << s << ")");
  PYDL_CHECK(sh >= 1 && sw >= 1 && sh <= kMax && sw <= kMax,
             "stride: expected 1.." << kMax << ", got (" << sh << ", " << sw << ")");
  PYDL_CHECK(ph >= 0 && pw >= 0 && ph <= kMax && pw <= kMax,
             "padding: expected 0.." << kMax << ", got (" << ph << ", " << pw << ")");
  PYDL_CHECK(dh >= 1 && dw >= 1 && dh <= kMax && dw <= kMax,
             "dilation: expected 1.." << kMax << ", got (" << dh << ", " << dw << ")");
  PYDL_CHECK(h <= kDimMax && w <= kDimMax, "x: expected H, W <= 2^31, got (" << h << ", " << w << ")");
  PYDL_CHECK(g >= 1 && c % g == 0 && k % g == 0,
             "groups: expected a divisor of C = " << c << " and K = " << k << ", got " << g);
  PYDL_CHECK(c >= 1 && h >= 1 && w >= 1 && n >= 0, "x: expected N >= 0 and C, H, W >= 1");
  Geom q{n, c, h, w, k, r, s, sh, sw, ph, pw, dh, dw, g, 0, 0};
  q.oh = (h + 2 * ph - dh * (r - 1) - 1) / sh + 1;
  q.ow = (w + 2 * pw - dw * (s - 1) - 1) / sw + 1;
  PYDL_CHECK(h + 2 * ph - dh * (r - 1) - 1 >= 0 && w + 2 * pw - dw * (s - 1) - 1 >= 0,
             "kernel_size: the dilated kernel is larger than the padded input");
  return q;
}

template <class T>
const T* opt_ptr(const py::object& o, const char* name, i64 len) {
  if (o.is_none()) return nullptr;
  auto a = o.cast<Array<T>>();
  return in_ptr(a, name, {len});
}

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  m.def(("conv_im2col_" + sfx).c_str(),
        [](A x, A cols, i64 r, i64 s, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
          PYDL_CHECK(x.ndim() == 4, "x: expected 4 dimensions (N, C, H, W)");
          const Geom q = geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), 1, r, s, sh, sw, ph, pw, dh, dw, 1);
          const T* xp = in_ptr(x, "x", {q.n, q.c, q.h, q.w});
          T* cp = out_ptr(cols, "cols", {q.n, q.c * r * s, q.l()});
          py::gil_scoped_release nogil;
          const i64 planes = q.n * q.c, rows = q.r * q.s * q.l();
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (planes * rows > 32768)
          for (i64 p = 0; p < planes; ++p)
            im2col_rows(q, xp + p * q.h * q.w, i64(1), i64(0), q.oh, cp + p * rows, q.l());
        },
        py::arg("x").noconvert(), py::arg("cols").noconvert(), py::arg("kh"), py::arg("kw"), py::arg("sh"),
        py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw"));
  m.def(("conv_col2im_" + sfx).c_str(),
        [](A cols, A x, i64 r, i64 s, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
          PYDL_CHECK(x.ndim() == 4, "out: expected 4 dimensions (N, C, H, W)");
          const Geom q = geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), 1, r, s, sh, sw, ph, pw, dh, dw, 1);
          const T* cp = in_ptr(cols, "cols", {q.n, q.c * r * s, q.l()});
          T* xp = out_ptr(x, "out", {q.n, q.c, q.h, q.w});
          py::gil_scoped_release nogil;
          const i64 planes = q.n * q.c, rows = q.r * q.s * q.l(), hw = q.h * q.w;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (planes * rows > 32768)
          for (i64 p = 0; p < planes; ++p) {
            std::fill(xp + p * hw, xp + (p + 1) * hw, T(0));
            col2im_rows(q, cp + p * rows, q.l(), i64(1), i64(0), q.oh, xp + p * hw);
          }
        },
        py::arg("cols").noconvert(), py::arg("out").noconvert(), py::arg("kh"), py::arg("kw"), py::arg("sh"),
        py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw"));
  // Returns the path taken (a Path number).
  m.def(("conv_conv2d_" + sfx).c_str(),
        [](A x, A wt, py::object bias, A out, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, i64 g, int path) {
          PYDL_CHECK(x.ndim() == 4 && wt.ndim() == 4, "x, weight: expected 4 dimensions");
          const Geom q = geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), wt.shape(0), wt.shape(2),
                              wt.shape(3), sh, sw, ph, pw, dh, dw, g);
          const T* xp = in_ptr(x, "x", {q.n, q.c, q.h, q.w});
          const T* wp = in_ptr(wt, "weight", {q.k, q.cg(), q.r, q.s});
          const T* bp = opt_ptr<T>(bias, "bias", q.k);
          T* op = out_ptr(out, "out", {q.n, q.k, q.oh, q.ow});
          PYDL_CHECK(path >= 0 && path < kNumPaths, "path: expected 0.." << kNumPaths - 1 << ", got " << path);
          const int chosen = choose_path(q, path, path == kAuto && gemm_rows_win<T>(q));
          py::gil_scoped_release nogil;
          forward(q, chosen, xp, wp, bp, op);
          return chosen;
        });
  m.def(("conv_conv2d_backward_" + sfx).c_str(),
        [](A dy, A x, A wt, py::object dx, py::object dwt, py::object db, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh,
           i64 dw, i64 g, int path) {
          PYDL_CHECK(x.ndim() == 4 && wt.ndim() == 4, "x, weight: expected 4 dimensions");
          const Geom q = geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), wt.shape(0), wt.shape(2),
                              wt.shape(3), sh, sw, ph, pw, dh, dw, g);
          const T* gp = in_ptr(dy, "grad", {q.n, q.k, q.oh, q.ow});
          const T* xp = in_ptr(x, "x", {q.n, q.c, q.h, q.w});
          const T* wp = in_ptr(wt, "weight", {q.k, q.cg(), q.r, q.s});
          // dx, dweight, dbias: None skips that gradient
          T *dxp = nullptr, *dwp = nullptr, *dbp = nullptr;
          A dxa, dwa, dba;
          if (!dx.is_none()) {
            dxa = dx.cast<A>();
            dxp = out_ptr(dxa, "dx", {q.n, q.c, q.h, q.w});
          }
          if (!dwt.is_none()) {
            dwa = dwt.cast<A>();
            dwp = out_ptr(dwa, "dweight", {q.k, q.cg(), q.r, q.s});
          }
          if (!db.is_none()) {
            dba = db.cast<A>();
            dbp = out_ptr(dba, "dbias", {q.k});
          }
          PYDL_CHECK(path >= 0 && path < kNumPaths, "path: expected 0.." << kNumPaths - 1 << ", got " << path);
          // implicit has no backward of its own: the im2col tiles serve it
          int chosen = choose_path(q, path, false, true);
          if (chosen == kImplicit) chosen = kIm2col;
          py::gil_scoped_release nogil;
          backward(q, chosen, gp, xp, wp, dxp, dwp, dbp);
          return chosen;
        });
  // Bytes of per-thread workspace the im2col path uses for a geometry (the tile buffer;
  // backward uses two).
  m.def(("conv_workspace_" + sfx).c_str(),
        [](i64 c, i64 r, i64 s, i64 oh, i64 ow, i64 g) {
          Geom q{1, c, 1, 1, g, r, s, 1, 1, 0, 0, 1, 1, g, oh, ow};
          return tile_rows<T>(q) * q.ow * q.crs() * i64(sizeof(T));
        });
}

}  // namespace

void bind_conv(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
  m.def("conv_set_tile_bytes", [](i64 b) {
    PYDL_CHECK(b >= 0, "bytes: expected >= 1 (or 0: derived from the L3), got " << b);
    const i64 old = kTileBytes;
    kTileBytes = b;
    return old;
  }, "Sets the im2col tile budget (bytes per thread; 0 = a quarter of one CPU's L3 share, within 2-8 MB); returns the previous one (tuning hook).");
  m.def("conv_set_smallk_block", [](int b, long long depth, int dwb, long long dwdepth) {
    PYDL_CHECK(b >= 0 && b <= 4, "vectors: expected 0 (automatic) to 4, got " << b);
    PYDL_CHECK(depth >= 1, "depth: expected >= 1, got " << depth);
    PYDL_CHECK(dwb >= 0 && dwb <= 4, "dw_vectors: expected 0 (automatic) to 4, got " << dwb);
    PYDL_CHECK(dwdepth >= 1, "dw_depth: expected >= 1, got " << dwdepth);
    const auto old = py::make_tuple(kSmallkBlock, kSmallkDepth, kSmallkDwBlock, kSmallkDwDepth);
    kSmallkBlock = b;
    kSmallkDepth = depth;
    kSmallkDwBlock = dwb;
    kSmallkDwDepth = dwdepth;
    return old;
  }, py::arg("vectors"), py::arg("depth") = 384, py::arg("dw_vectors") = 0, py::arg("dw_depth") = 256,
  "Sets the smallk forward's lane block (SIMD vectors of filters, 0 = automatic) and depth block (taps), and dW's lane block and depth block (pixels); returns the previous four (tuning hook).");
  m.def("conv_set_winograd_tiles", [](long long tiles) {
    PYDL_CHECK(tiles >= 0, "tiles: expected >= 1 (or 0: the default), got " << tiles);
    const long long old = kWinoTiles;
    kWinoTiles = tiles;
    return old;
  }, py::arg("tiles"), "Sets the Winograd path's chunk (2x2 output tiles a thread transforms and multiplies at a time; 0 = the default, 128); returns the previous one (tuning hook).");
  py::tuple names(kNumPaths);
  for (int i = 0; i < kNumPaths; ++i) names[i] = kPathNames[i];
  m.attr("CONV_PATHS") = names;
}

}  // namespace pydl
