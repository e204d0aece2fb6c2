// Norm family (pydl._cpp): layer_norm, group_norm, instance_norm, batch_norm and
// local_response_norm, forward and backward, float32 and float64.
//
// Two kernels cover the four standardizing norms (y = (x - mean) * invstd * w + b):
//   rows:     x (R, L) C-contiguous, one statistic per row of L = Cg * S elements; row r belongs
//             to group g = r % G and element e to channel g * Cg + e / S (weight, bias (G * Cg,)).
//             layer_norm: G = 1, Cg = L, S = 1 (per-element affine); group_norm: (N * G, C/G * S);
//             instance_norm: G = C, Cg = 1.
//   channels: x (N, C, S) C-contiguous, one statistic per channel over its N runs of S:
//             batch_norm (training: batch statistics; eval: running ones) and instance_norm with
//             use_input_stats=False (the running statistics of each channel).
// Statistics: rows are two passes over the row while it sits in L1/L2 (the mean, then the
//   centred sums sum(d), sum(d^2), d = x - mean: var = (sum d^2 - (sum d)^2 / n) / n, the
//   corrected two-pass formula, sound for float32 with a large mean). Channels are too long to
//   re-read from cache, so one pass of shifted sums with the shift k = the mean of the channel's
//   first run (read twice, from L1): var = sum (x-k)^2 / n - (sum (x-k) / n)^2. Partial sums run
//   in T-wide vector registers over blocks of kBlock elements and are added into doubles.
// Backward: dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = g * w;
//   one pass for the two sums (and the dweight / dbias partials, per thread), one for dx.
//   Rows recompute their statistics (the row is in cache); channels take the forward's saved
//   mean and invstd.
// Threads: rows over rows; channels over channels (a channel's partial sums never cross threads).
//
// Napkin math (2 cores, ~25-30 GB/s copy bandwidth): layer_norm (8192, 768) float32 forward
//   reads 25 MB and writes 25 MB: ~2 ms at copy speed; backward reads x and g, writes dx:
//   75 MB, ~3 ms. The row passes (3 forward, 4 backward) run from L1: ~1 vector instruction
//   per 16 elements each, well under the memory time. batch_norm N32 C64 56x56: 25.7 MB each
//   way, a channel (400 KB) is re-read from L2 for the output pass.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "check.hpp"
#include "ndarray.hpp"
#include "simd.hpp"
#include "simd_math.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

using std::ptrdiff_t;
template <class V>
using Reg = typename V::R;
template <class T>
using Array = NdArray<T>;
template <class T>
using Opt = std::optional<Array<T>>;

constexpr ptrdiff_t kBlock = 4096;          // elements summed in T registers before a double add
constexpr ptrdiff_t kParallelMin = 32768;   // elements from which both threads run

// f(i, count) for the vectors of [0, n): count = W except a shorter (masked) last one
template <class V, class F>
inline void for_vectors(ptrdiff_t n, F&& f) {
  ptrdiff_t i = 0;
  for (; i + V::W <= n; i += V::W) f(i, std::size_t(V::W));
  if (i < n) f(i, std::size_t(n - i));
}

// sum of x over [0, n), in double across blocks
template <class V>
double run_sum(const typename V::T* x, ptrdiff_t n) {
  double s = 0;
  for (ptrdiff_t b = 0; b < n; b += kBlock) {
    const ptrdiff_t m = std::min(kBlock, n - b);
    Reg<V> a0 = V::set1(0), a1 = V::set1(0);
    ptrdiff_t i = 0;
    for (; i + 2 * V::W <= m; i += 2 * V::W) {
      a0 = V::add(a0, V::load(x + b + i));
      a1 = V::add(a1, V::load(x + b + i + V::W));
    }
    for (; i < m; i += V::W) a0 = V::add(a0, V::load_n(x + b + i, std::size_t(std::min<ptrdiff_t>(V::W, m - i)), 0));
    s += double(V::reduce_add(V::add(a0, a1)));
  }
  return s;
}

// s1 += sum (x - k), s2 += sum (x - k)^2 over [0, n)
template <class V>
void run_shifted(const typename V::T* x, ptrdiff_t n, typename V::T k, double& s1, double& s2) {
  const Reg<V> kv = V::set1(k);
  for (ptrdiff_t b = 0; b < n; b += kBlock) {
    const ptrdiff_t m = std::min(kBlock, n - b);
    Reg<V> a0 = V::set1(0), a1 = V::set1(0), q0 = V::set1(0), q1 = V::set1(0);
    ptrdiff_t i = 0;
    for (; i + 2 * V::W <= m; i += 2 * V::W) {
      Reg<V> d0 = V::sub(V::load(x + b + i), kv), d1 = V::sub(V::load(x + b + i + V::W), kv);
      a0 = V::add(a0, d0);
      a1 = V::add(a1, d1);
      q0 = V::fma(d0, d0, q0);
      q1 = V::fma(d1, d1, q1);
    }
    for (; i < m; i += V::W) {
      const std::size_t c = std::size_t(std::min<ptrdiff_t>(V::W, m - i));
      Reg<V> d = V::sub(V::load_n(x + b + i, c, k), kv);  // masked lanes: k - k = 0
      a0 = V::add(a0, d);
      q0 = V::fma(d, d, q0);
    }
    s1 += double(V::reduce_add(V::add(a0, a1)));
    s2 += double(V::reduce_add(V::add(q0, q1)));
  }
}

struct Stats {
  double mean, var;
};

// mean and biased variance of a contiguous row (two passes, the row in cache); NaN over nothing
template <class V>
Stats row_stats(const typename V::T* x, ptrdiff_t n) {
  using T = typename V::T;
  if (n == 0) return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  const double mean = run_sum<V>(x, n) / double(n);
  double s1 = 0, s2 = 0;
  run_shifted<V>(x, n, T(mean), s1, s2);
  const double var = (s2 - s1 * s1 / double(n)) / double(n);
  return {double(T(mean)) + s1 / double(n), var != var ? var : std::max(var, 0.0)};
}

// the mean as an unevaluated sum hi + lo of two T: with a large mean (1e4 in float32 has an
// ulp of 1e-3) x - hi is exact for x near the mean and lo carries the rest, so x - mean keeps
// float32 precision relative to the spread, not to the mean
template <class V>
struct Centre {
  Reg<V> hi, lo;
  explicit Centre(double mean) {
    using T = typename V::T;
    const T h = T(mean);
    hi = V::set1(h);
    lo = V::set1(T(mean - double(h)));
  }
  Reg<V> operator()(Reg<V> x) const { return V::sub(V::sub(x, hi), lo); }
};

template <class T>
T invstd_of(double var, double eps) {
  return T(1.0 / std::sqrt(var + eps));
}

// -- rows: layer_norm, group_norm, instance_norm --------------------------------------------

struct RowsShape {
  ptrdiff_t R, G, Cg, S;
  ptrdiff_t L() const { return Cg * S; }
};

template <class V>
void rows_forward(const typename V::T* x, typename V::T* y, const RowsShape& sh, const typename V::T* w,
                  const typename V::T* b, double eps, typename V::T* mean_out, typename V::T* var_out) {
  using T = typename V::T;
  const ptrdiff_t L = sh.L();
#pragma omp parallel for schedule(static) if (sh.R * L >= kParallelMin) num_threads(num_threads())
  for (ptrdiff_t r = 0; r < sh.R; ++r) {
    const T* xr = x + r * L;
    T* yr = y + r * L;
    const Stats st = row_stats<V>(xr, L);
    if (mean_out) mean_out[r] = T(st.mean);
    if (var_out) var_out[r] = T(st.var);
    const T is = invstd_of<T>(st.var, eps);
    const Centre<V> centre(st.mean);
    const ptrdiff_t c0 = (r % sh.G) * sh.Cg;
    if (sh.S == 1) {  // per-element affine
      const Reg<V> iv = V::set1(is);
      for_vectors<V>(L, [&](ptrdiff_t i, std::size_t c) {
        Reg<V> h = V::mul(centre(V::load_n(xr + i, c, 0)), iv);
        if (w) h = V::mul(h, V::load_n(w + c0 + i, c, 0));
        if (b) h = V::add(h, V::load_n(b + c0 + i, c, 0));
        V::store_n(yr + i, h, c);
      });
    } else {  // per-channel affine: y = (x - mean) * a + b, a = invstd * w
      for (ptrdiff_t j = 0; j < sh.Cg; ++j) {
        const Reg<V> av = V::set1(w ? is * w[c0 + j] : is), ov = V::set1(b ? b[c0 + j] : T(0));
        const T* xs = xr + j * sh.S;
        T* ys = yr + j * sh.S;
        for_vectors<V>(sh.S, [&](ptrdiff_t i, std::size_t c) {
          V::store_n(ys + i, V::fma(centre(V::load_n(xs + i, c, 0)), av, ov), c);
        });
      }
    }
  }
}

// per-thread partials of dweight (sum g * xhat) and dbias (sum g) over the channels
template <class T>
struct Partials {
  std::vector<std::vector<double>> dw, db;
  Partials(int threads, ptrdiff_t n) : dw(threads, std::vector<double>(n, 0.0)), db(threads, std::vector<double>(n, 0.0)) {}
  void reduce(T* dweight, T* dbias) const {
    const ptrdiff_t n = ptrdiff_t(dw[0].size());
    for (ptrdiff_t c = 0; c < n; ++c) {
      double a = 0, s = 0;
      for (std::size_t t = 0; t < dw.size(); ++t) a += dw[t][c], s += db[t][c];
      if (dweight) dweight[c] = T(a);
      if (dbias) dbias[c] = T(s);
    }
  }
};

template <class V>
void rows_backward(const typename V::T* g, const typename V::T* x, typename V::T* dx, const RowsShape& sh,
                   const typename V::T* w, double eps, typename V::T* dweight, typename V::T* dbias) {
  using T = typename V::T;
  const ptrdiff_t L = sh.L(), nch = sh.G * sh.Cg;
  const bool threaded = sh.R * L >= kParallelMin;
  const int threads = threaded ? num_threads() : 1;
  const bool per_elem = sh.S == 1;
  const bool want_affine = dweight || dbias;
  Partials<T> part(threads, want_affine ? nch : 1);
  // per-element partials (layer_norm): T registers per thread over the whole row, added in
  // double per row block of rows would cost a pass; T accumulation over R/threads rows is fine
  std::vector<std::vector<T>> pw(threads), pb(threads);
  if (per_elem && want_affine)
    for (int t = 0; t < threads; ++t) pw[t].assign(nch, T(0)), pb[t].assign(nch, T(0));
#pragma omp parallel num_threads(threads) if (threaded)
  {
    const int tid = threaded ? omp_get_thread_num() : 0;
#pragma omp for schedule(static)
    for (ptrdiff_t r = 0; r < sh.R; ++r) {
      const T* xr = x + r * L;
      const T* gr = g + r * L;
      T* dr = dx + r * L;
      const Stats st = row_stats<V>(xr, L);
      const T is = invstd_of<T>(st.var, eps);
      const Reg<V> iv = V::set1(is);
      const Centre<V> centre(st.mean);
      const ptrdiff_t c0 = (r % sh.G) * sh.Cg;
      double sa = 0, sb = 0;  // sum dxhat, sum dxhat * xhat
      if (per_elem) {
        Reg<V> a = V::set1(0), bb = V::set1(0);
        T* pwr = want_affine ? pw[tid].data() + c0 : nullptr;
        T* pbr = want_affine ? pb[tid].data() + c0 : nullptr;
        for_vectors<V>(L, [&](ptrdiff_t i, std::size_t c) {
          Reg<V> gv = V::load_n(gr + i, c, 0);
          Reg<V> h = V::mul(centre(V::load_n(xr + i, c, 0)), iv);
          if (pwr) {
            V::store_n(pwr + i, V::fma(gv, h, V::load_n(pwr + i, c, 0)), c);
            V::store_n(pbr + i, V::add(gv, V::load_n(pbr + i, c, 0)), c);
          }
          Reg<V> d = w ? V::mul(gv, V::load_n(w + c0 + i, c, 0)) : gv;
          a = V::add(a, d);
          bb = V::fma(d, h, bb);
        });
        sa = V::reduce_add(a);
        sb = V::reduce_add(bb);
      } else {
        for (ptrdiff_t j = 0; j < sh.Cg; ++j) {
          Reg<V> a = V::set1(0), gh = V::set1(0);
          const T* xs = xr + j * sh.S;
          const T* gs = gr + j * sh.S;
          for_vectors<V>(sh.S, [&](ptrdiff_t i, std::size_t c) {
            Reg<V> gv = V::load_n(gs + i, c, 0);
            a = V::add(a, gv);
            gh = V::fma(gv, V::mul(centre(V::load_n(xs + i, c, 0)), iv), gh);
          });
          const double sg = V::reduce_add(a), sgh = V::reduce_add(gh);
          if (want_affine) part.dw[tid][c0 + j] += sgh, part.db[tid][c0 + j] += sg;
          const double wc = w ? double(w[c0 + j]) : 1.0;
          sa += wc * sg;
          sb += wc * sgh;
        }
      }
      const double n = double(L);
      const Reg<V> ma = V::set1(T(sa / n)), mb = V::set1(T(sb / n));
      if (per_elem) {
        for_vectors<V>(L, [&](ptrdiff_t i, std::size_t c) {
          Reg<V> gv = V::load_n(gr + i, c, 0);
          Reg<V> d = w ? V::mul(gv, V::load_n(w + c0 + i, c, 0)) : gv;
          Reg<V> h = V::mul(centre(V::load_n(xr + i, c, 0)), iv);
          V::store_n(dr + i, V::mul(iv, V::sub(V::sub(d, ma), V::mul(h, mb))), c);
        });
      } else {
        for (ptrdiff_t j = 0; j < sh.Cg; ++j) {
          const Reg<V> wv = V::set1(w ? w[c0 + j] : T(1));
          const T* xs = xr + j * sh.S;
          const T* gs = gr + j * sh.S;
          T* ds = dr + j * sh.S;
          for_vectors<V>(sh.S, [&](ptrdiff_t i, std::size_t c) {
            Reg<V> d = V::mul(V::load_n(gs + i, c, 0), wv);
            Reg<V> h = V::mul(centre(V::load_n(xs + i, c, 0)), iv);
            V::store_n(ds + i, V::mul(iv, V::sub(V::sub(d, ma), V::mul(h, mb))), c);
          });
        }
      }
    }
  }
  if (!want_affine) return;
  if (per_elem) {
    for (ptrdiff_t c = 0; c < nch; ++c) {
      double a = 0, s = 0;
      for (int t = 0; t < threads; ++t) a += pw[t][c], s += pb[t][c];
      if (dweight) dweight[c] = T(a);
      if (dbias) dbias[c] = T(s);
    }
  } else {
    part.reduce(dweight, dbias);
  }
}

// -- channels: batch_norm, instance_norm with running statistics ------------------------------

struct ChanShape {
  ptrdiff_t N, C, S;
};

// training: mean and biased variance of every channel into mean, var; then invstd and y
template <class V>
void channels_forward(const typename V::T* x, typename V::T* y, const ChanShape& sh, const typename V::T* w,
                      const typename V::T* b, double eps, bool training, typename V::T* mean,
                      typename V::T* var, typename V::T* invstd) {
  using T = typename V::T;
  const ptrdiff_t count = sh.N * sh.S;
#pragma omp parallel for schedule(static) if (sh.N * sh.C * sh.S >= kParallelMin) num_threads(num_threads())
  for (ptrdiff_t c = 0; c < sh.C; ++c) {
    double mu = double(mean[c]);  // eval: the running mean
    if (training) {
      if (count == 0) {
        mean[c] = var[c] = std::numeric_limits<T>::quiet_NaN();
        mu = double(mean[c]);
      } else {
        const T k = T(run_sum<V>(x + c * sh.S, sh.S) / double(sh.S));
        double s1 = 0, s2 = 0;
        for (ptrdiff_t n = 0; n < sh.N; ++n) run_shifted<V>(x + (n * sh.C + c) * sh.S, sh.S, k, s1, s2);
        const double m1 = s1 / double(count), v = s2 / double(count) - m1 * m1;
        mu = double(k) + m1;
        mean[c] = T(mu);
        var[c] = T(v != v ? v : std::max(v, 0.0));
      }
    }
    const T is = invstd_of<T>(double(var[c]), eps);
    invstd[c] = is;
    const Reg<V> av = V::set1(w ? is * w[c] : is), ov = V::set1(b ? b[c] : T(0));
    const Centre<V> centre(mu);
    for (ptrdiff_t n = 0; n < sh.N; ++n) {
      const T* xs = x + (n * sh.C + c) * sh.S;
      T* ys = y + (n * sh.C + c) * sh.S;
      for_vectors<V>(sh.S, [&](ptrdiff_t i, std::size_t cnt) {
        V::store_n(ys + i, V::fma(centre(V::load_n(xs + i, cnt, 0)), av, ov), cnt);
      });
    }
  }
}

template <class V>
void channels_backward(const typename V::T* g, const typename V::T* x, typename V::T* dx, const ChanShape& sh,
                       const typename V::T* w, const typename V::T* mean, const typename V::T* invstd,
                       bool training, typename V::T* dweight, typename V::T* dbias) {
  using T = typename V::T;
  const double count = double(sh.N * sh.S);
#pragma omp parallel for schedule(static) if (sh.N * sh.C * sh.S >= kParallelMin) num_threads(num_threads())
  for (ptrdiff_t c = 0; c < sh.C; ++c) {
    const Reg<V> mv = V::set1(mean[c]), iv = V::set1(invstd[c]);
    double sg = 0, sgh = 0;
    for (ptrdiff_t n = 0; n < sh.N; ++n) {
      const T* xs = x + (n * sh.C + c) * sh.S;
      const T* gs = g + (n * sh.C + c) * sh.S;
      for (ptrdiff_t b0 = 0; b0 < sh.S; b0 += kBlock) {
        const ptrdiff_t m = std::min(kBlock, sh.S - b0);
        Reg<V> a = V::set1(0), gh = V::set1(0);
        for_vectors<V>(m, [&](ptrdiff_t i, std::size_t cnt) {
          Reg<V> gv = V::load_n(gs + b0 + i, cnt, 0);
          a = V::add(a, gv);
          gh = V::fma(gv, V::mul(V::sub(V::load_n(xs + b0 + i, cnt, 0), mv), iv), gh);
        });
        sg += V::reduce_add(a);
        sgh += V::reduce_add(gh);
      }
    }
    if (dweight) dweight[c] = T(sgh);
    if (dbias) dbias[c] = T(sg);
    const T wc = w ? w[c] : T(1);
    const Reg<V> wv = V::set1(wc * invstd[c]);
    const Reg<V> ma = V::set1(training ? T(sg / count) : T(0)), mb = V::set1(training ? T(sgh / count) : T(0));
    for (ptrdiff_t n = 0; n < sh.N; ++n) {
      const T* xs = x + (n * sh.C + c) * sh.S;
      const T* gs = g + (n * sh.C + c) * sh.S;
      T* ds = dx + (n * sh.C + c) * sh.S;
      for_vectors<V>(sh.S, [&](ptrdiff_t i, std::size_t cnt) {
        Reg<V> gv = V::load_n(gs + i, cnt, 0);
        if (training) {
          Reg<V> h = V::mul(V::sub(V::load_n(xs + i, cnt, 0), mv), iv);
          gv = V::sub(V::sub(gv, ma), V::mul(h, mb));
        }
        V::store_n(ds + i, V::mul(wv, gv), cnt);
      });
    }
  }
}

// -- local_response_norm ----------------------------------------------------------------------
// x (N, C, S): d_c = k + alpha/size * sum_{j in [c - size/2, c + (size-1)/2]} x_j^2 (per position),
// y = x * d^-beta. A running window sum over channels, one plane of S at a time.
// Backward: dx_c = g_c d_c^-beta - 2 alpha beta / size * x_c * sum_{c' : c in window(c')} t_c',
// t = g x d^(-beta-1); the mirrored window [c - (size-1)/2, c + size/2].
// pow runs in scalar libm (log-exp); the window sums are vectorized over positions.

template <class V>
void window_sum(const typename V::T* a, typename V::T* out, ptrdiff_t C, ptrdiff_t S, ptrdiff_t before,
                ptrdiff_t after) {
  // out[c] = sum a[c - before .. c + after] (clipped), each a plane of S; a running sum
  using T = typename V::T;
  std::fill(out, out + C * S, T(0));
  for (ptrdiff_t c = 0; c < C; ++c) {
    const ptrdiff_t lo = std::max<ptrdiff_t>(0, c - before), hi = std::min<ptrdiff_t>(C - 1, c + after);
    T* o = out + c * S;
    for (ptrdiff_t j = lo; j <= hi; ++j) {
      const T* s = a + j * S;
      for_vectors<V>(S, [&](ptrdiff_t i, std::size_t cnt) {
        V::store_n(o + i, V::add(V::load_n(o + i, cnt, 0), V::load_n(s + i, cnt, 0)), cnt);
      });
    }
  }
}

template <class V>
void lrn(const typename V::T* x, const typename V::T* g, typename V::T* y, const ChanShape& sh, ptrdiff_t size,
         double alpha, double beta, double k) {
  using T = typename V::T;
  const ptrdiff_t plane = sh.C * sh.S;
  const ptrdiff_t tile = std::max<ptrdiff_t>(1, std::min<ptrdiff_t>(sh.S, 1024));
  const ptrdiff_t tiles = (sh.S + tile - 1) / tile;
#pragma omp parallel num_threads(num_threads()) if (sh.N * plane >= kParallelMin)
  {
    std::vector<T> sq(sh.C * tile), d(sh.C * tile), t(sh.C * tile), cross(sh.C * tile);
#pragma omp for schedule(static)
    for (ptrdiff_t job = 0; job < sh.N * tiles; ++job) {
      const ptrdiff_t n = job / tiles, s0 = (job % tiles) * tile, m = std::min(tile, sh.S - s0);
      const T* xn = x + n * plane + s0;
      for (ptrdiff_t c = 0; c < sh.C; ++c)
        for (ptrdiff_t i = 0; i < m; ++i) sq[c * m + i] = xn[c * sh.S + i] * xn[c * sh.S + i];
      window_sum<V>(sq.data(), d.data(), sh.C, m, size / 2, (size - 1) / 2);
      const T scale = T(alpha / double(size));
      for (ptrdiff_t e = 0; e < sh.C * m; ++e) d[e] = T(k) + scale * d[e];
      if (!g) {
        T* yn = y + n * plane + s0;
        for (ptrdiff_t c = 0; c < sh.C; ++c)
          for (ptrdiff_t i = 0; i < m; ++i) yn[c * sh.S + i] = xn[c * sh.S + i] * std::pow(d[c * m + i], T(-beta));
        continue;
      }
      const T* gn = g + n * plane + s0;
      for (ptrdiff_t c = 0; c < sh.C; ++c)
        for (ptrdiff_t i = 0; i < m; ++i) {
          const ptrdiff_t e = c * m + i;
          const T p = std::pow(d[e], T(-beta));  // d^-beta
          t[e] = gn[c * sh.S + i] * xn[c * sh.S + i] * (p / d[e]);
          d[e] = p;
        }
      window_sum<V>(t.data(), cross.data(), sh.C, m, (size - 1) / 2, size / 2);
      const T coef = T(2 * alpha * beta / double(size));
      T* yn = y + n * plane + s0;
      for (ptrdiff_t c = 0; c < sh.C; ++c)
        for (ptrdiff_t i = 0; i < m; ++i) {
          const ptrdiff_t e = c * m + i;
          yn[c * sh.S + i] = gn[c * sh.S + i] * d[e] - coef * xn[c * sh.S + i] * cross[e];
        }
    }
  }
}

// -- bindings (flat_in / flat_out, kernels/common/ndarray.hpp, guard the raw pointers) --------- ----------------------------------------------------------------------------------

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  using O = Opt<T>;
  auto name = [&](const char* op) { return "norm_" + std::string(op) + "_" + sfx; };
  m.def(name("rows").c_str(),
        [](const A& x, A y, ptrdiff_t G, ptrdiff_t Cg, ptrdiff_t S, const O& w, const O& b, double eps,
           O mean, O var) {
          PYDL_CHECK(G >= 1 && Cg >= 0 && S >= 0, "G, Cg, S: expected G >= 1, Cg >= 0, S >= 0");
          const ptrdiff_t L = Cg * S, R = L ? x.size() / L : 0;
          PYDL_CHECK(L == 0 || R % G == 0, "x: expected a multiple of G rows of " << L << " elements");
          const RowsShape sh{R, G, Cg, S};
          const T* xp = flat_in(x, "x", x.size());
          T* yp = flat_out(y, "out", x.size());
          const T *wp = flat_in(w, "weight", G * Cg), *bp = flat_in(b, "bias", G * Cg);
          T *mp = flat_out(mean, "mean", R), *vp = flat_out(var, "var", R);
          py::gil_scoped_release nogil;
          vm::with_vec<T>([&](auto v) { rows_forward<decltype(v)>(xp, yp, sh, wp, bp, eps, mp, vp); });
        },
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("G"), py::arg("Cg"), py::arg("S"),
        py::arg("weight").noconvert(), py::arg("bias").noconvert(), py::arg("eps"),
        py::arg("mean").noconvert(), py::arg("var").noconvert());
  m.def(name("rows_backward").c_str(),
        [](const A& g, const A& x, A dx, ptrdiff_t G, ptrdiff_t Cg, ptrdiff_t S, const O& w, double eps,
           O dweight, O dbias) {
          PYDL_CHECK(G >= 1 && Cg >= 0 && S >= 0, "G, Cg, S: expected G >= 1, Cg >= 0, S >= 0");
          const ptrdiff_t L = Cg * S, R = L ? x.size() / L : 0;
          const RowsShape sh{R, G, Cg, S};
          const T* xp = flat_in(x, "x", x.size());
          const T* gp = flat_in(g, "grad", x.size());
          T* dp = flat_out(dx, "dx", x.size());
          const T* wp = flat_in(w, "weight", G * Cg);
          T *dwp = flat_out(dweight, "dweight", G * Cg), *dbp = flat_out(dbias, "dbias", G * Cg);
          py::gil_scoped_release nogil;
          vm::with_vec<T>([&](auto v) { rows_backward<decltype(v)>(gp, xp, dp, sh, wp, eps, dwp, dbp); });
        },
        py::arg("grad").noconvert(), py::arg("x").noconvert(), py::arg("dx").noconvert(), py::arg("G"),
        py::arg("Cg"), py::arg("S"), py::arg("weight").noconvert(), py::arg("eps"),
        py::arg("dweight").noconvert(), py::arg("dbias").noconvert());
  m.def(name("channels").c_str(),
        [](const A& x, A y, ptrdiff_t N, ptrdiff_t C, ptrdiff_t S, const O& w, const O& b, double eps,
           bool training, A mean, A var, A invstd) {
          const ChanShape sh{N, C, S};
          PYDL_CHECK(N >= 0 && C >= 0 && S >= 0 && x.size() == N * C * S, "x: expected N * C * S elements");
          const T* xp = flat_in(x, "x", x.size());
          T* yp = flat_out(y, "out", x.size());
          const T *wp = flat_in(w, "weight", C), *bp = flat_in(b, "bias", C);
          T *mp = flat_out(mean, "mean", C), *vp = flat_out(var, "var", C), *ip = flat_out(invstd, "invstd", C);
          py::gil_scoped_release nogil;
          vm::with_vec<T>([&](auto v) {
            channels_forward<decltype(v)>(xp, yp, sh, wp, bp, eps, training, mp, vp, ip);
          });
        },
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("N"), py::arg("C"), py::arg("S"),
        py::arg("weight").noconvert(), py::arg("bias").noconvert(), py::arg("eps"), py::arg("training"),
        py::arg("mean").noconvert(), py::arg("var").noconvert(), py::arg("invstd").noconvert());
  m.def(name("channels_backward").c_str(),
        [](const A& g, const A& x, A dx, ptrdiff_t N, ptrdiff_t C, ptrdiff_t S, const O& w, const A& mean,
           const A& invstd, bool training, O dweight, O dbias) {
          const ChanShape sh{N, C, S};
          PYDL_CHECK(N >= 0 && C >= 0 && S >= 0 && x.size() == N * C * S, "x: expected N * C * S elements");
          const T* xp = flat_in(x, "x", x.size());
          const T* gp = flat_in(g, "grad", x.size());
          T* dp = flat_out(dx, "dx", x.size());
          const T *wp = flat_in(w, "weight", C), *mp = flat_in(mean, "mean", C), *ip = flat_in(invstd, "invstd", C);
          T *dwp = flat_out(dweight, "dweight", C), *dbp = flat_out(dbias, "dbias", C);
          py::gil_scoped_release nogil;
          vm::with_vec<T>([&](auto v) {
            channels_backward<decltype(v)>(gp, xp, dp, sh, wp, mp, ip, training, dwp, dbp);
          });
        },
        py::arg("grad").noconvert(), py::arg("x").noconvert(), py::arg("dx").noconvert(), py::arg("N"),
        py::arg("C"), py::arg("S"), py::arg("weight").noconvert(), py::arg("mean").noconvert(),
        py::arg("invstd").noconvert(), py::arg("training"), py::arg("dweight").noconvert(),
        py::arg("dbias").noconvert());
  m.def(name("lrn").c_str(),
        [](const O& g, const A& x, A y, ptrdiff_t N, ptrdiff_t C, ptrdiff_t S, ptrdiff_t size, double alpha,
           double beta, double k) {
          PYDL_CHECK(N >= 0 && C >= 0 && S >= 0 && x.size() == N * C * S, "x: expected N * C * S elements");
          PYDL_CHECK(size >= 1, "size: expected >= 1, got " << size);
          const ChanShape sh{N, C, S};
          const T* xp = flat_in(x, "x", x.size());
          const T* gp = flat_in(g, "grad", x.size());
          T* yp = flat_out(y, "out", x.size());
          py::gil_scoped_release nogil;
          vm::with_vec<T>([&](auto v) { lrn<decltype(v)>(xp, gp, yp, sh, size, alpha, beta, k); });
        },
        py::arg("grad").noconvert(), py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("N"),
        py::arg("C"), py::arg("S"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"));
}

}  // namespace

void bind_norm(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace pydl
