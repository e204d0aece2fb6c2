// Loss family (pydl._cpp): cross_entropy (class indices or probabilities), nll_loss, mse_loss,
// l1_loss, binary_cross_entropy, binary_cross_entropy_with_logits, kl_div, gaussian_nll_loss,
// forward and backward, float32 and float64.
//
// cross_entropy: x (R, C) C-contiguous rows of logits (the adapter moves the class dim last
//   when there are spatial dims). Per row, fused in one sweep of passes over the row while it
//   sits in L1: m = max_c x_c, Z = sum_c exp(x_c - m) (vm::exp), lz = log Z, then
//     class index t:  loss = -(1 - ls) w_t (x_t - m - lz) - ls/C (sum_c w_c (x_c - m) - W lz)
//     probabilities:  a_c = w_c ((1 - ls) T_c + ls/C),  loss = A lz - sum_c a_c (x_c - m)
//   backward: dx_c = g (exp(x_c - m - lz) A - a_c) (one more pass), 0 for an ignored row;
//   probability targets also get dT_c = -(1 - ls) w_c (x_c - m - lz) g.
// nll_loss: one pick per row (its backward zero-fills the row and writes the pick).
// Pointwise losses: one pass of a functor over the elements; the reduction sums float
//   partials of kChunk elements into doubles (deterministic for a given thread count).
//   Weights that broadcast come in at input's shape (the adapter expands them).
// Threads: rows (cross_entropy) or chunks (pointwise), static schedule.
//
// Napkin math (2 cores, ~25-30 GB/s): cross_entropy (4096, 1000) float32 reads 16 MB forward
//   (~0.6 ms), backward reads 16 MB and writes 16 MB (~1.2 ms). vm::exp is ~25 vector
//   instructions per 16 logits, ~6.5M instructions per pass over 4M logits: ~1 ms on one core,
//   so on two cores the forward sits near the memory time. mse over 4M elements moves 32 MB
//   forward and 64 MB backward (~1.1 + 2.2 ms); BCE adds two vector logs per element (~40
//   instructions per 16), still under the memory time on two cores.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

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

constexpr ptrdiff_t kChunk = 8192;          // elements per task and per float partial sum
constexpr ptrdiff_t kParallelMin = 32768;   // elements from which both threads run

template <class V, class F>
inline void for_vectors(ptrdiff_t n, F&& f) {
  ptrdiff_t i = 0;
  for (; i + V::W <= n; i += V::W) f(i, std::size_t(V::W));
  if (i < n) f(i, std::size_t(n - i));
}

// -- cross_entropy rows ---------------------------------------------------------------------------

template <class T>
struct CeArgs {
  ptrdiff_t R, C;
  const T* x;
  const std::int64_t* t;  // class indices (R,) or null
  const T* P;             // probabilities (R, C) or null
  const T* w;             // class weights (C,) or null
  std::int64_t ignore;
  double ls, W;           // label smoothing, sum of the class weights (C without weights)
};

// m and lz = log sum exp(x - m) of one row
template <class V>
std::pair<typename V::T, double> row_lse(const typename V::T* x, ptrdiff_t C) {
  using T = typename V::T;
  const T ninf = -std::numeric_limits<T>::infinity();
  Reg<V> mv = V::set1(ninf);
  for_vectors<V>(C, [&](ptrdiff_t i, std::size_t c) { mv = V::max(mv, V::load_n(x + i, c, ninf)); });
  const T m = V::reduce_max(mv);
  const Reg<V> mm = V::set1(m);
  Reg<V> z0 = V::set1(0), z1 = V::set1(0);
  ptrdiff_t i = 0;
  for (; i + 2 * V::W <= C; i += 2 * V::W) {
    z0 = V::add(z0, vm::exp<V>(V::sub(V::load(x + i), mm)));
    z1 = V::add(z1, vm::exp<V>(V::sub(V::load(x + i + V::W), mm)));
  }
  for (; i < C; i += V::W)
    z0 = V::add(z0, vm::exp<V>(V::sub(V::load_n(x + i, std::size_t(std::min<ptrdiff_t>(V::W, C - i)), ninf), mm)));
  return {m, std::log(double(V::reduce_add(V::add(z0, z1))))};
}

// sum_c w_c (x_c - m) (w = 1 without weights)
template <class V>
double weighted_shifted(const typename V::T* x, const typename V::T* w, ptrdiff_t C, typename V::T m) {
  const Reg<V> mm = V::set1(m);
  Reg<V> s = V::set1(0);
  for_vectors<V>(C, [&](ptrdiff_t i, std::size_t c) {
    Reg<V> d = V::sub(V::load_n(x + i, c, m), mm);
    s = w ? V::fma(d, V::load_n(w + i, c, 0), s) : V::add(s, d);
  });
  return double(V::reduce_add(s));
}

template <class T>
struct Ones {  // W ones: masked loads of it give 1 in the lanes below C, 0 past it
  alignas(64) static constexpr T v[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
};

// a_c = w_c ((1 - ls) T_c + ls / C) for the c lanes at i (0 past C)
template <class V>
Reg<V> prob_coef(const typename V::T* P, const typename V::T* w, ptrdiff_t i, std::size_t c, Reg<V> keep,
                 Reg<V> u) {
  using T = typename V::T;
  Reg<V> a = V::fma(V::load_n(P + i, c, 0), keep, V::mul(u, V::load_n(Ones<T>::v, c, 0)));
  return w ? V::mul(a, V::load_n(w + i, c, 0)) : a;
}

// (A, D) = (sum_c a_c, sum_c a_c (x_c - m))
template <class V>
std::pair<double, double> prob_sums(const typename V::T* x, const typename V::T* P, const typename V::T* w,
                                    ptrdiff_t C, typename V::T m, double ls) {
  using T = typename V::T;
  const Reg<V> mm = V::set1(m), keep = V::set1(T(1 - ls)), u = V::set1(T(ls / double(C)));
  Reg<V> A = V::set1(0), D = V::set1(0);
  for_vectors<V>(C, [&](ptrdiff_t i, std::size_t c) {
    Reg<V> a = prob_coef<V>(P, w, i, c, keep, u);
    A = V::add(A, a);
    D = V::fma(a, V::sub(V::load_n(x + i, c, m), mm), D);
  });
  return {double(V::reduce_add(A)), double(V::reduce_add(D))};
}

// nll_loss: loss_r = -w_t x[r, t] (0 where t == ignore); backward: -g w_t at t, 0 elsewhere
template <class T>
void nll_forward(const CeArgs<T>& a, T* loss, double& total, double& wsum) {
  double tot = 0, ws = 0;
  for (ptrdiff_t r = 0; r < a.R; ++r) {
    const std::int64_t t = a.t[r];
    double li = 0;
    if (t != a.ignore) {
      const double wt = a.w ? double(a.w[t]) : 1.0;
      li = -wt * double(a.x[r * a.C + t]);
      ws += wt;
    }
    if (loss) loss[r] = T(li);
    tot += li;
  }
  total = tot;
  wsum = ws;
}

template <class T>
void nll_backward(const CeArgs<T>& a, const T* g, double gscale, T* dx) {
#pragma omp parallel for schedule(static) if (a.R * a.C >= kParallelMin) num_threads(num_threads())
  for (ptrdiff_t r = 0; r < a.R; ++r) {
    T* d = dx + r * a.C;
    std::fill(d, d + a.C, T(0));
    const std::int64_t t = a.t[r];
    if (t != a.ignore) d[t] = -(a.w ? a.w[t] : T(1)) * (g ? g[r] : T(gscale));
  }
}

template <class V>
void ce_forward(const CeArgs<typename V::T>& a, typename V::T* loss, double& total, double& wsum) {
  using T = typename V::T;
  double tot = 0, ws = 0;
#pragma omp parallel for schedule(static) reduction(+ : tot, ws) if (a.R * a.C >= kParallelMin) \
    num_threads(num_threads())
  for (ptrdiff_t r = 0; r < a.R; ++r) {
    const T* x = a.x + r * a.C;
    double li = 0;
    if (a.t) {
      const std::int64_t t = a.t[r];
      if (t != a.ignore) {
        const auto [m, lz] = row_lse<V>(x, a.C);
        const double wt = a.w ? double(a.w[t]) : 1.0;
        li = -(1 - a.ls) * wt * (double(x[t]) - double(m) - lz);
        if (a.ls > 0) li -= a.ls / double(a.C) * (weighted_shifted<V>(x, a.w, a.C, m) - a.W * lz);
        ws += wt;
      }
    } else {
      const auto [m, lz] = row_lse<V>(x, a.C);
      const auto [A, D] = prob_sums<V>(x, a.P + r * a.C, a.w, a.C, m, a.ls);
      li = A * lz - D;
    }
    if (loss) loss[r] = T(li);
    tot += li;
  }
  total = tot;
  wsum = ws;
}

// g: per-row upstream gradients (R,) or null (then gscale for every row)
template <class V>
void ce_backward(const CeArgs<typename V::T>& a, const typename V::T* g, double gscale, typename V::T* dx,
                 typename V::T* dT) {
  using T = typename V::T;
#pragma omp parallel for schedule(static) if (a.R * a.C >= kParallelMin) num_threads(num_threads())
  for (ptrdiff_t r = 0; r < a.R; ++r) {
    const T* x = a.x + r * a.C;
    T* d = dx + r * a.C;
    const T gr = g ? g[r] : T(gscale);
    const T u = T(a.ls / double(a.C));
    if (a.t) {
      const std::int64_t t = a.t[r];
      if (t == a.ignore) {
        std::fill(d, d + a.C, T(0));
        continue;
      }
      const auto [m, lz] = row_lse<V>(x, a.C);
      const double wt = a.w ? double(a.w[t]) : 1.0;
      const T A = T((1 - a.ls) * wt + a.ls / double(a.C) * a.W);
      const Reg<V> sh = V::set1(T(double(m) + lz)), ga = V::set1(gr * A), gu = V::set1(gr * u);
      for_vectors<V>(a.C, [&](ptrdiff_t i, std::size_t c) {
        Reg<V> p = vm::exp<V>(V::sub(V::load_n(x + i, c, 0), sh));
        Reg<V> s = a.w ? V::mul(gu, V::load_n(a.w + i, c, 0)) : gu;  // g * ls/C * w_c
        V::store_n(d + i, V::sub(V::mul(p, ga), s), c);
      });
      d[t] -= gr * T((1 - a.ls) * wt);
    } else {
      const auto [m, lz] = row_lse<V>(x, a.C);
      const auto [Ad, Dd] = prob_sums<V>(x, a.P + r * a.C, a.w, a.C, m, a.ls);
      (void)Dd;
      const T* P = a.P + r * a.C;
      T* dt = dT + r * a.C;
      const Reg<V> sh = V::set1(T(double(m) + lz)), ga = V::set1(gr * T(Ad)), keep = V::set1(T(1 - a.ls)),
                   uv = V::set1(u), gv = V::set1(gr), gk = V::set1(-gr * T(1 - a.ls));
      for_vectors<V>(a.C, [&](ptrdiff_t i, std::size_t c) {
        Reg<V> lp = V::sub(V::load_n(x + i, c, 0), sh);
        Reg<V> p = vm::exp<V>(lp);
        Reg<V> ac = prob_coef<V>(P, a.w, i, c, keep, uv);
        Reg<V> tg = V::mul(gk, lp);
        if (a.w) tg = V::mul(tg, V::load_n(a.w + i, c, 0));
        V::store_n(d + i, V::sub(V::mul(p, ga), V::mul(gv, ac)), c);
        V::store_n(dt + i, tg, c);
      });
    }
  }
}

// -- pointwise losses ------------------------------------------------------------------------------

enum Kind : int { kMse = 0, kL1, kBce, kBceLogits, kKl, kKlLog, kGnll };

template <class T>
struct PwArgs {
  ptrdiff_t n;
  const T *x, *t, *w, *pw, *v;  // input, target, weight, pos_weight, var (null when absent)
  double eps;
  bool full;
};

// -- vector log for the pointwise losses ---------------------------------------------------------
// log(x) = e ln2 + log(m), x = m 2^e with m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s),
// s = (m - 1) / (m + 1), |s| <= 0.172: 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), relative error
// under 1e-8 (the next term, s^10/11, is 2e-9). 0 -> -inf, x < 0 -> NaN, inf -> inf, NaN -> NaN.
// float64 and the scalar float32 path call libm.

template <class V>
inline void split_exp(Reg<V>& x, Reg<V>& e);  // x <- m in [1, 2), e <- the exponent

#if defined(__AVX512F__)
template <>
inline void split_exp<vm::Avx512F>(__m512& x, __m512& e) {
  e = _mm512_getexp_ps(x);  // subnormals too
  x = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
}
#endif
#if defined(__AVX2__) && defined(__FMA__)
// x a positive normal float: its exponent field and its mantissa with the exponent of 1
inline void split_exp_normal(__m256& x, __m256& e) {
  const __m256i bits = _mm256_castps_si256(x);
  e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
  x = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffff)),
                                          _mm256_set1_epi32(0x3f800000)));
}

template <>
inline void split_exp<vm::Avx2F>(__m256& x, __m256& e) {
  const __m256 sub = _mm256_cmp_ps(x, _mm256_set1_ps(std::numeric_limits<float>::min()), _CMP_LT_OQ);
  x = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8388608.0f)), sub);  // subnormals: scale by 2^23
  split_exp_normal(x, e);
  e = _mm256_sub_ps(e, _mm256_and_ps(sub, _mm256_set1_ps(23.0f)));
}
#endif

// e ln2 + log(m) for m in [1, 2): the series below
template <class V>
inline Reg<V> log_split(Reg<V> m, Reg<V> e) {
  using T = typename V::T;
  const auto big = V::gt(m, V::set1(T(1.41421356237309505)));
  m = V::select(big, V::mul(m, V::set1(T(0.5))), m);
  e = V::select(big, V::add(e, V::set1(T(1))), e);
  const Reg<V> s = V::div(V::sub(m, V::set1(T(1))), V::add(m, V::set1(T(1))));
  const Reg<V> s2 = V::mul(s, s);
  Reg<V> p = V::fma(s2, V::set1(T(1.0 / 9)), V::set1(T(1.0 / 7)));
  p = V::fma(s2, p, V::set1(T(1.0 / 5)));
  p = V::fma(s2, p, V::set1(T(1.0 / 3)));
  p = V::fma(s2, p, V::set1(T(1)));
  return V::fma(e, V::set1(T(0.69314718055994531)), V::mul(V::add(s, s), p));
}

template <class V>
inline Reg<V> vlog(Reg<V> x) {
  using T = typename V::T;
  if constexpr (V::W == 1) {
    return std::log(x);
  } else {
    Reg<V> m = x, e;
#if defined(__AVX2__) && defined(__FMA__)
    if constexpr (V::kNormalFastPaths) {  // (Avx2F: split_exp_normal is its form)
      // every lane a positive normal float: no subnormal scaling, and the special-value selects
      // below would keep r (~14 of ~35 instructions here; AVX-512 has vgetexpps/vgetmantps)
      if (V::all_within(x, std::numeric_limits<T>::min(), std::numeric_limits<T>::max())) {
        split_exp_normal(m, e);
        return log_split<V>(m, e);
      }
    }
#endif
    split_exp<V>(m, e);
    Reg<V> r = log_split<V>(m, e);
    const T inf = std::numeric_limits<T>::infinity();
    // x <= 0 or NaN: -inf for 0, NaN for x < 0, x itself for NaN; +inf stays +inf
    const Reg<V> zero_or_nan = V::select(V::lt(V::abs(x), V::set1(T(1))), V::set1(-inf), x);
    const Reg<V> nonpos = V::select(V::lt(x, V::set1(T(0))), V::set1(std::numeric_limits<T>::quiet_NaN()),
                                    zero_or_nan);
    r = V::select(V::gt(x, V::set1(std::numeric_limits<T>::max())), x, r);
    return V::select(V::gt(x, V::set1(T(0))), r, nonpos);
  }
}

// log(1 + y), accurate for small y: log(u) * y / (u - 1), u = 1 + y rounded (y itself when u == 1)
template <class V>
inline Reg<V> vlog1p(Reg<V> y) {
  using T = typename V::T;
  if constexpr (V::W == 1) {
    return std::log1p(y);
  } else {
    const Reg<V> u = V::add(V::set1(T(1)), y), um1 = V::sub(u, V::set1(T(1)));
    const Reg<V> r = V::mul(vlog<V>(u), V::div(y, um1));
    return V::select(V::lt(V::abs(um1), V::set1(std::numeric_limits<T>::denorm_min())), y, r);
  }
}

template <class V>
inline Reg<V> clamp100(Reg<V> v) {  // max(v, -100); NaN stays NaN
  return V::max(V::set1(typename V::T(-100)), v);
}

template <class V>
inline Reg<V> log_sigmoid(Reg<V> x) {  // -log(1 + exp(-x)) without overflow
  return V::sub(V::min(V::set1(typename V::T(0)), x), vlog1p<V>(vm::exp<V>(V::sub(V::set1(typename V::T(0)), V::abs(x)))));
}

template <class V>
struct PwLanes {  // one vector of every operand (masked lanes: values that keep every term finite)
  Reg<V> x, t, w, pw, v;
  bool has_w, has_pw;
  PwLanes(const PwArgs<typename V::T>& a, ptrdiff_t i, std::size_t c) {
    using T = typename V::T;
    x = V::load_n(a.x + i, c, T(0.5));
    t = V::load_n(a.t + i, c, T(0.5));
    has_w = a.w != nullptr;
    has_pw = a.pw != nullptr;
    w = has_w ? V::load_n(a.w + i, c, T(0)) : V::set1(T(1));
    pw = has_pw ? V::load_n(a.pw + i, c, T(1)) : V::set1(T(1));
    v = a.v ? V::load_n(a.v + i, c, T(1)) : V::set1(T(1));
  }
};

template <int K, class V>
inline Reg<V> pw_term(const PwLanes<V>& l, typename V::T eps, bool full) {
  using T = typename V::T;
  const Reg<V> one = V::set1(T(1));
  Reg<V> f;
  if constexpr (K == kMse) {
    const Reg<V> d = V::sub(l.x, l.t);
    f = V::mul(d, d);
  } else if constexpr (K == kL1) {
    f = V::abs(V::sub(l.x, l.t));
  } else if constexpr (K == kBce) {
    const Reg<V> lp = clamp100<V>(vlog<V>(l.x)), lq = clamp100<V>(vlog1p<V>(V::sub(V::set1(T(0)), l.x)));
    f = V::sub(V::set1(T(0)), V::fma(l.t, lp, V::mul(V::sub(one, l.t), lq)));
  } else if constexpr (K == kBceLogits) {
    const Reg<V> lw = l.has_pw ? V::fma(V::sub(l.pw, one), l.t, one) : one;
    f = V::sub(V::mul(V::sub(one, l.t), l.x), V::mul(lw, log_sigmoid<V>(l.x)));
  } else if constexpr (K == kKl) {
    // t log t, 0 where t == 0 (|t| below the least subnormal); NaN stays NaN
    const Reg<V> tl = V::mul(l.t, vlog<V>(l.t));
    const Reg<V> tlog = V::select(V::lt(V::abs(l.t), V::set1(std::numeric_limits<T>::denorm_min())), V::set1(T(0)), tl);
    f = V::sub(tlog, V::mul(l.t, l.x));
  } else if constexpr (K == kKlLog) {
    f = V::mul(vm::exp<V>(l.t), V::sub(l.t, l.x));
  } else {
    const Reg<V> v = V::max(V::set1(eps), l.v), d = V::sub(l.x, l.t);
    f = V::mul(V::set1(T(0.5)), V::add(vlog<V>(v), V::div(V::mul(d, d), v)));
    if (full) f = V::add(f, V::set1(T(0.91893853320467274178)));  // 0.5 log(2 pi)
  }
  return l.has_w ? V::mul(f, l.w) : f;
}

// d loss / d (input, target[, var]) times g, stored at i
template <int K, class V>
inline void pw_grad(const PwLanes<V>& l, Reg<V> g, typename V::T eps, typename V::T* dx, typename V::T* dt,
                    typename V::T* dv, std::size_t c) {
  using T = typename V::T;
  const Reg<V> one = V::set1(T(1)), zero = V::set1(T(0));
  if (l.has_w) g = V::mul(g, l.w);
  Reg<V> di, dti;
  if constexpr (K == kMse) {
    di = V::mul(V::mul(V::set1(T(2)), V::sub(l.x, l.t)), g);
    dti = V::sub(zero, di);
  } else if constexpr (K == kL1) {
    const Reg<V> d = V::sub(l.x, l.t);
    const Reg<V> sign = V::select(V::gt(d, zero), one, V::select(V::lt(d, zero), V::set1(T(-1)), V::mul(d, zero)));
    di = V::mul(sign, g);
    dti = V::sub(zero, di);
  } else if constexpr (K == kBce) {
    di = V::mul(V::div(V::sub(l.x, l.t), V::max(V::set1(T(1e-12)), V::mul(l.x, V::sub(one, l.x)))), g);
    dti = V::mul(V::sub(clamp100<V>(vlog1p<V>(V::sub(zero, l.x))), clamp100<V>(vlog<V>(l.x))), g);
  } else if constexpr (K == kBceLogits) {
    const Reg<V> s = vm::sigmoid<V>(l.x);
    if (l.has_pw) {
      const Reg<V> pm1 = V::sub(l.pw, one);
      di = V::mul(V::sub(V::mul(V::fma(pm1, l.t, one), s), V::mul(l.pw, l.t)), g);
      dti = V::mul(V::sub(V::sub(zero, l.x), V::mul(pm1, log_sigmoid<V>(l.x))), g);
    } else {
      di = V::mul(V::sub(s, l.t), g);
      dti = V::mul(V::sub(zero, l.x), g);
    }
  } else if constexpr (K == kKl) {
    di = V::sub(zero, V::mul(g, l.t));
    dti = V::mul(g, V::sub(V::add(vlog<V>(l.t), one), l.x));
  } else if constexpr (K == kKlLog) {
    const Reg<V> p = vm::exp<V>(l.t);
    di = V::sub(zero, V::mul(g, p));
    dti = V::mul(V::mul(g, p), V::add(V::sub(l.t, l.x), one));
  } else {
    const Reg<V> v = V::max(V::set1(eps), l.v), r = V::sub(l.x, l.t);
    const Reg<V> q = V::div(r, v);
    di = V::mul(g, q);
    dti = V::sub(zero, di);
    V::store_n(dv, V::mul(V::mul(g, V::set1(T(0.5))), V::sub(V::div(one, v), V::mul(q, q))), c);
  }
  V::store_n(dx, di, c);
  V::store_n(dt, dti, c);
}

template <int K, class V>
double pw_forward(const PwArgs<typename V::T>& a, typename V::T* out) {
  using T = typename V::T;
  const ptrdiff_t chunks = (a.n + kChunk - 1) / kChunk;
  const T eps = T(a.eps);
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (a.n >= kParallelMin) num_threads(num_threads())
  for (ptrdiff_t ch = 0; ch < chunks; ++ch) {
    const ptrdiff_t b = ch * kChunk, e = std::min(a.n, b + kChunk);
    Reg<V> s0 = V::set1(T(0)), s1 = V::set1(T(0));
    ptrdiff_t i = b;
    for (; i + 2 * V::W <= e; i += 2 * V::W) {
      const Reg<V> f0 = pw_term<K, V>(PwLanes<V>(a, i, V::W), eps, a.full);
      const Reg<V> f1 = pw_term<K, V>(PwLanes<V>(a, i + V::W, V::W), eps, a.full);
      if (out) V::store(out + i, f0), V::store(out + i + V::W, f1);
      s0 = V::add(s0, f0);
      s1 = V::add(s1, f1);
    }
    for (; i < e; i += V::W) {
      const std::size_t c = std::size_t(std::min<ptrdiff_t>(V::W, e - i));
      const Reg<V> f = pw_term<K, V>(PwLanes<V>(a, i, c), eps, a.full);
      if (out) V::store_n(out + i, f, c);
      s0 = V::add(s0, V::mul(f, V::load_n(Ones<T>::v, c, T(0))));  // masked lanes hold finite terms
    }
    total += double(V::reduce_add(V::add(s0, s1)));
  }
  return total;
}

template <int K, class V>
void pw_backward(const PwArgs<typename V::T>& a, const typename V::T* g, double gscale, typename V::T* dx,
                 typename V::T* dt, typename V::T* dv) {
  using T = typename V::T;
  const ptrdiff_t chunks = (a.n + kChunk - 1) / kChunk;
  const Reg<V> gs = V::set1(T(gscale));
  const T eps = T(a.eps);
#pragma omp parallel for schedule(static) if (a.n >= kParallelMin) num_threads(num_threads())
  for (ptrdiff_t ch = 0; ch < chunks; ++ch) {
    const ptrdiff_t b = ch * kChunk, e = std::min(a.n, b + kChunk);
    for (ptrdiff_t i = b; i < e; i += V::W) {
      const std::size_t c = std::size_t(std::min<ptrdiff_t>(V::W, e - i));
      const Reg<V> gv = g ? V::load_n(g + i, c, T(0)) : gs;
      pw_grad<K, V>(PwLanes<V>(a, i, c), gv, eps, dx + i, dt + i, dv ? dv + i : nullptr, c);
    }
  }
}

template <class F>
decltype(auto) with_kind(int kind, F&& f) {
  switch (kind) {
    case kMse: return f(std::integral_constant<int, kMse>{});
    case kL1: return f(std::integral_constant<int, kL1>{});
    case kBce: return f(std::integral_constant<int, kBce>{});
    case kBceLogits: return f(std::integral_constant<int, kBceLogits>{});
    case kKl: return f(std::integral_constant<int, kKl>{});
    case kKlLog: return f(std::integral_constant<int, kKlLog>{});
    case kGnll: return f(std::integral_constant<int, kGnll>{});
    default: PYDL_CHECK(false, "kind: unknown pointwise loss " << kind);
  }
  return f(std::integral_constant<int, kMse>{});
}

// -- argument checks ----------------------------------------------------------------------------

template <class T>
CeArgs<T> ce_args(const Array<T>& x, ptrdiff_t R, ptrdiff_t C, const Opt<std::int64_t>& t, const Opt<T>& P,
                  const Opt<T>& w, std::int64_t ignore, double ls) {
  PYDL_CHECK(R >= 0 && C >= 1 && x.size() == R * C, "x: expected R * C elements with C >= 1");
  PYDL_CHECK(bool(t) != bool(P), "target: expected class indices or probabilities");
  CeArgs<T> a{R, C, flat_in(x, "x", R * C), flat_in(t, "target", R), flat_in(P, "target", R * C), flat_in(w, "weight", C),
              ignore, ls, 0.0};
  if (a.t)
    for (ptrdiff_t r = 0; r < R; ++r)
      PYDL_CHECK(a.t[r] == ignore || (a.t[r] >= 0 && a.t[r] < C),
                 "target: expected class indices in [0, " << C << ") or ignore_index, got " << a.t[r]);
  a.W = double(C);
  if (a.w) {
    a.W = 0;
    for (ptrdiff_t c = 0; c < C; ++c) a.W += double(a.w[c]);
  }
  return a;
}

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  using O = Opt<T>;
  using I = Opt<std::int64_t>;
  auto name = [&](const char* op) { return "loss_" + std::string(op) + "_" + sfx; };
  m.def(name("cross_entropy").c_str(),
        [](const A& x, ptrdiff_t R, ptrdiff_t C, const I& t, const O& P, const O& w, std::int64_t ignore,
           double ls, O loss) {
          const CeArgs<T> a = ce_args(x, R, C, t, P, w, ignore, ls);
          T* lp = flat_out(loss, "out", R);
          double total = 0, wsum = 0;
          {
            py::gil_scoped_release nogil;
            vm::with_vec<T>([&](auto v) { ce_forward<decltype(v)>(a, lp, total, wsum); });
          }
          return py::make_tuple(total, wsum);
        },
        py::arg("x").noconvert(), py::arg("R"), py::arg("C"), py::arg("target").noconvert(),
        py::arg("probs").noconvert(), py::arg("weight").noconvert(), py::arg("ignore_index"),
        py::arg("label_smoothing"), py::arg("out").noconvert());
  m.def(name("cross_entropy_backward").c_str(),
        [](const O& g, double gscale, const A& x, ptrdiff_t R, ptrdiff_t C, const I& t, const O& P, const O& w,
           std::int64_t ignore, double ls, A dx, O dT) {
          const CeArgs<T> a = ce_args(x, R, C, t, P, w, ignore, ls);
          const T* gp = flat_in(g, "grad", R);
          T* dp = flat_out(dx, "dx", R * C);
          T* dtp = flat_out(dT, "dtarget", R * C);
          PYDL_CHECK(!P || dtp, "dtarget: needed with probability targets");
          py::gil_scoped_release nogil;
          vm::with_vec<T>([&](auto v) { ce_backward<decltype(v)>(a, gp, gscale, dp, dtp); });
        },
        py::arg("grad").noconvert(), py::arg("gscale"), py::arg("x").noconvert(), py::arg("R"), py::arg("C"),
        py::arg("target").noconvert(), py::arg("probs").noconvert(), py::arg("weight").noconvert(),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("dx").noconvert(),
        py::arg("dtarget").noconvert());
  m.def(name("nll").c_str(),
        [](const A& x, ptrdiff_t R, ptrdiff_t C, const I& t, const O& w, std::int64_t ignore, O loss) {
          const CeArgs<T> a = ce_args(x, R, C, t, O(), w, ignore, 0.0);
          T* lp = flat_out(loss, "out", R);
          double total = 0, wsum = 0;
          nll_forward(a, lp, total, wsum);
          return py::make_tuple(total, wsum);
        },
        py::arg("x").noconvert(), py::arg("R"), py::arg("C"), py::arg("target").noconvert(),
        py::arg("weight").noconvert(), py::arg("ignore_index"), py::arg("out").noconvert());
  m.def(name("nll_backward").c_str(),
        [](const O& g, double gscale, const A& x, ptrdiff_t R, ptrdiff_t C, const I& t, const O& w,
           std::int64_t ignore, A dx) {
          const CeArgs<T> a = ce_args(x, R, C, t, O(), w, ignore, 0.0);
          const T* gp = flat_in(g, "grad", R);
          T* dp = flat_out(dx, "dx", R * C);
          py::gil_scoped_release nogil;
          nll_backward(a, gp, gscale, dp);
        },
        py::arg("grad").noconvert(), py::arg("gscale"), py::arg("x").noconvert(), py::arg("R"), py::arg("C"),
        py::arg("target").noconvert(), py::arg("weight").noconvert(), py::arg("ignore_index"),
        py::arg("dx").noconvert());
  m.def(name("pointwise").c_str(),
        [](int kind, const A& x, const A& t, const O& w, const O& pw, const O& v, double eps, bool full, O loss) {
          const ptrdiff_t n = x.size();
          const PwArgs<T> a{n, flat_in(x, "input", n), flat_in(t, "target", n), flat_in(w, "weight", n), flat_in(pw, "pos_weight", n),
                            flat_in(v, "var", n), eps, full};
          PYDL_CHECK(kind != kGnll || a.v, "var: needed by gaussian_nll_loss");
          T* lp = flat_out(loss, "out", n);
          double total = 0;
          {
            py::gil_scoped_release nogil;
            with_kind(kind, [&](auto k) {
              vm::with_vec<T>([&](auto v) { total = pw_forward<decltype(k)::value, decltype(v)>(a, lp); });
            });
          }
          return total;
        },
        py::arg("kind"), py::arg("input").noconvert(), py::arg("target").noconvert(),
        py::arg("weight").noconvert(), py::arg("pos_weight").noconvert(), py::arg("var").noconvert(),
        py::arg("eps"), py::arg("full"), py::arg("out").noconvert());
  m.def(name("pointwise_backward").c_str(),
        [](int kind, const O& g, double gscale, const A& x, const A& t, const O& w, const O& pw, const O& v,
           double eps, A dx, A dt, O dv) {
          const ptrdiff_t n = x.size();
          const PwArgs<T> a{n, flat_in(x, "input", n), flat_in(t, "target", n), flat_in(w, "weight", n), flat_in(pw, "pos_weight", n),
                            flat_in(v, "var", n), eps, false};
          PYDL_CHECK(kind != kGnll || (a.v && dv), "var, dvar: needed by gaussian_nll_loss");
          const T* gp = flat_in(g, "grad", n);
          T *dxp = flat_out(dx, "dinput", n), *dtp = flat_out(dt, "dtarget", n), *dvp = flat_out(dv, "dvar", n);
          py::gil_scoped_release nogil;
          with_kind(kind, [&](auto k) {
            vm::with_vec<T>([&](auto v) { pw_backward<decltype(k)::value, decltype(v)>(a, gp, gscale, dxp, dtp, dvp); });
          });
        },
        py::arg("kind"), py::arg("grad").noconvert(), py::arg("gscale"), py::arg("input").noconvert(),
        py::arg("target").noconvert(), py::arg("weight").noconvert(), py::arg("pos_weight").noconvert(),
        py::arg("var").noconvert(), py::arg("eps"), py::arg("dinput").noconvert(), py::arg("dtarget").noconvert(),
        py::arg("dvar").noconvert());
}

}  // namespace

void bind_loss(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace pydl
