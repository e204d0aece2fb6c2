// Vector math for the CPU kernels: one set of register wrappers per ISA and
// float32 exp / expm1 / tanh / sigmoid / erf / normal CDF written once on top
// of them, so the AVX-512, AVX2 and scalar paths run the same algorithm.
//
// A wrapper V (Scalar<T>, Avx2F, Avx512F) gives T (element), R (register),
// M (lane mask), W (lanes) and static load/store/arithmetic. min and max have
// the x86 operand rule, min(a, b) = a < b ? a : b: with b a NaN the result is
// b, so kernels put the data second and NaN propagates (relu(nan) = nan).
//
// float32 accuracy against float64 on dense grids (tests/test_cpp_simd_levels.py),
// worst relative error: exp 8e-8, expm1 1.2e-7, tanh 1.6e-7, sigmoid 1.8e-7,
// erf 1.7e-7, normal_cdf 3.8e-7. The op tolerance is 2e-5. float64 (Scalar<double>) calls libm for
// exp, expm1, tanh, erf and erfc.
//
// Polynomial coefficients were fitted for this file (near-minimax in relative
// error, Chebyshev nodes with iterative reweighting, mpmath references):
//   expm1(r) = r + r^2 q(r),         |r| <= ln2/2,      q deg 5, rel err 2.7e-9
//   erf(a)   = a P(a^2),             0 <= a < 1,        P deg 6, rel err 1.2e-9
//   erfc(a)  = exp(-a^2) Q(1/(1+a)), 1 <= a <= 10,      Q deg 9, rel err 4.4e-9
//   erfc(a)/2 = exp(-a^2) w R(w), w = 1/(1+a/2), 0 <= a <= 10, R deg 8, rel err 4.3e-8 (normal_cdf)
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns inside its own AVX-512 header (_mm512_undefined_ps initialises
// itself, GCC bug 105593); silence it for that header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "simd.hpp"

namespace pydl::vm {

// -- register wrappers --------------------------------------------------------

template <class T_>
struct Scalar {
  using T = T_;
  using R = T_;
  using M = bool;
  static constexpr int W = 1;
  static constexpr bool kNormalFastPaths = false;  // see Avx2F

  static R load(const T* p) { return *p; }
  static R load_n(const T* p, std::size_t n, T fill) { return n ? *p : fill; }
  static void store(T* p, R v) { *p = v; }
  static void store_n(T* p, R v, std::size_t n) { if (n) *p = v; }
  static R set1(T v) { return v; }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static R div(R a, R b) { return a / b; }
  static R fma(R a, R b, R c) {
#if defined(__FMA__)
    return std::fma(a, b, c);
#else  // std::fma would be a slow library call; float products are exact in double
    if constexpr (std::is_same_v<T, float>) return static_cast<float>(double(a) * b + c);
    else return a * b + c;
#endif
  }
  static R min(R a, R b) { return a < b ? a : b; }
  static R max(R a, R b) { return a > b ? a : b; }
  static M lt(R a, R b) { return a < b; }
  static M gt(R a, R b) { return a > b; }
  static R select(M m, R a, R b) { return m ? a : b; }
  static R abs(R a) { return std::fabs(a); }
  static R copysign(R mag, R sign) { return std::copysign(mag, sign); }
  static R round(R a) { return std::nearbyint(a); }
  // a * 2^k for integer-valued k in [-151, 129]; NaN k gives NaN (casting NaN to int is UB)
  static R ldexp(R a, R k) {
    if (!(k == k)) return a + k;
    if constexpr (std::is_same_v<T, float>) {  // two normal factors, as in Avx2F: no libm call
      const int ki = static_cast<int>(k), k1 = ki / 2;
      return a * pow2(k1) * pow2(ki - k1);
    } else {
      return std::ldexp(a, static_cast<int>(k));
    }
  }
  static float pow2(int e) {  // 2^e for e in [-126, 127]
    const std::uint32_t bits = static_cast<std::uint32_t>(e + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  static T reduce_add(R a) { return a; }
  static T reduce_max(R a) { return a; }
};

using ScalarF = Scalar<float>;
using ScalarD = Scalar<double>;

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2F {
  using T = float;
  using R = __m256;
  using M = __m256;
  static constexpr int W = 8;
  // No one-instruction exponent scaling or split here (AVX-512 has vscalefps, vgetexpps and
  // vgetmantps), so the math functions take a shorter path for vectors whose every lane keeps
  // its exponents normal (all_within): exp and expm1 build 2^k from its bits (pow2_normal,
  // ldexp_normal; ldexp's two-halves scaling and the clamps cost ~11 of exp's ~25 instructions),
  // and the losses' log splits a positive normal float without the subnormal scaling and the
  // special-value selects (loss.cpp vlog, ~14 of ~35).
  static constexpr bool kNormalFastPaths = true;

  static __m256i lanes_below(std::size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  // maskload never touches the masked-off lanes' memory: tails read no byte past the end
  static R load_n(const T* p, std::size_t n, T fill) {
    if (n >= W) return load(p);
    __m256i m = lanes_below(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  static void store_n(T* p, R v, std::size_t n) {
    if (n >= W) return store(p, v);
    _mm256_maskstore_ps(p, lanes_below(n), v);
  }
  static R set1(T v) { return _mm256_set1_ps(v); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static M lt(R a, R b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M gt(R a, R b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static R select(M m, R a, R b) { return _mm256_blendv_ps(b, a, m); }
  static R abs(R a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static R copysign(R mag, R sign) {
    const R s = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sign));
  }
  static R round(R a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^k in two halves so that k in [-151, 129] needs no denormal or infinite factor
  static R ldexp(R a, R k) {
    __m256i ki = _mm256_cvtps_epi32(k);
    __m256i k1 = _mm256_srai_epi32(ki, 1);
    __m256i k2 = _mm256_sub_epi32(ki, k1);
    auto pow2 = [](__m256i e) {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
    };
    return _mm256_mul_ps(_mm256_mul_ps(a, pow2(k1)), pow2(k2));
  }
  // every lane in [lo, hi] (false for any NaN lane)
  static bool all_within(R x, T lo, T hi) {
    const R in = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(lo), _CMP_GE_OQ),
                               _mm256_cmp_ps(x, _mm256_set1_ps(hi), _CMP_LE_OQ));
    return _mm256_movemask_ps(in) == 0xff;
  }
  // 2^k for integer-valued k in [-126, 127], from the exponent bits
  static R pow2_normal(R k) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23));
  }
  // a * 2^k when a is a positive normal and a * 2^k is normal: k added to a's exponent field
  static R ldexp_normal(R a, R k) {
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(a), _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23)));
  }
  static T reduce_add(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  static T reduce_max(R a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
};
#endif

#if defined(__AVX512F__)
struct Avx512F {
  using T = float;
  using R = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static constexpr bool kNormalFastPaths = false;  // ldexp is one vscalefps

  static M lanes_below(std::size_t n) { return static_cast<M>((1u << n) - 1u); }  // n < 16
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  // masked-off lanes are neither read nor written (no fault past the end)
  static R load_n(const T* p, std::size_t n, T fill) {
    if (n >= W) return load(p);  // folds away in the main loops, where n == W is a constant
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), lanes_below(n), p);
  }
  static void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  static void store_n(T* p, R v, std::size_t n) {
    if (n >= W) return store(p, v);
    _mm512_mask_storeu_ps(p, lanes_below(n), v);
  }
  static R set1(T v) { return _mm512_set1_ps(v); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static M lt(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static R select(M m, R a, R b) { return _mm512_mask_blend_ps(m, b, a); }
  static R abs(R a) { return _mm512_abs_ps(a); }
  static R copysign(R mag, R sign) {  // integer logic: the _ps forms need AVX512DQ
    const __m512i s = _mm512_set1_epi32(INT32_MIN);
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_andnot_si512(s, _mm512_castps_si512(mag)),
                                               _mm512_and_si512(s, _mm512_castps_si512(sign))));
  }
  static R round(R a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // vscalefps: a * 2^k with IEEE overflow to inf and gradual underflow, in one instruction
  static R ldexp(R a, R k) { return _mm512_scalef_ps(a, k); }
  static T reduce_add(R a) { return _mm512_reduce_add_ps(a); }
  static T reduce_max(R a) { return _mm512_reduce_max_ps(a); }
};
#endif

// -- float32 math, generic over V ---------------------------------------------

namespace detail {

template <class V>
inline typename V::R poly(typename V::R x, const float* c, int n) {  // c[0] + c[1] x + ... (Horner)
  typename V::R p = V::set1(c[n - 1]);
  for (int i = n - 2; i >= 0; --i) p = V::fma(p, x, V::set1(c[i]));
  return p;
}

// x = k ln2 + r with |r| <= ln2/2; ln2 split so that k * kLn2Hi is exact
template <class V>
inline typename V::R reduce_ln2(typename V::R x, typename V::R& k) {
  constexpr float kLog2e = 1.44269504089f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  k = V::round(V::mul(x, V::set1(kLog2e)));
  typename V::R r = V::fma(k, V::set1(-kLn2Hi), x);
  return V::fma(k, V::set1(-kLn2Lo), r);
}

// expm1(r) on |r| <= ln2/2, without cancellation: r + r^2 q(r)
template <class V>
inline typename V::R expm1_reduced(typename V::R r) {
  static constexpr float q[] = {5.000000013e-01f, 1.666666653e-01f, 4.166646553e-02f,
                                8.333360721e-03f, 1.393359758e-03f, 1.985779518e-04f};
  return V::fma(V::mul(r, r), poly<V>(r, q, 6), r);
}

// clamp to [lo, hi], keeping NaN (x goes second in min/max)
template <class V>
inline typename V::R clamp(typename V::R x, float lo, float hi) {
  return V::min(V::set1(hi), V::max(V::set1(lo), x));
}

}  // namespace detail

// exp(x): 2^k (1 + expm1(r)). Clamping to [-104, 89] sends x < -103.97 to 0,
// x > 88.73 to inf (2^128 overflows in ldexp) and keeps NaN.
template <class V>
inline typename V::R exp(typename V::R x) {
  if constexpr (V::kNormalFastPaths) {
    // x in [-87, 88]: k in [-126, 127] and 2^k (1 + expm1(r)) normal (at k = -126, r > 0; at
    // k = 127, r < 0), so adding k to the exponent field is exact: the same bits as below
    if (V::all_within(x, -87.0f, 88.0f)) {
      typename V::R k, r = detail::reduce_ln2<V>(x, k);
      return V::ldexp_normal(V::add(V::set1(1.0f), detail::expm1_reduced<V>(r)), k);
    }
  }
  typename V::R k, r = detail::reduce_ln2<V>(detail::clamp<V>(x, -104.0f, 89.0f), k);
  return V::ldexp(V::add(V::set1(1.0f), detail::expm1_reduced<V>(r)), k);
}

// expm1(x) = 2^k expm1(r) + (2^k - 1): exact 2^k, so no cancellation near 0.
// k = 128 (x in (88.38, 88.8]) uses 2^127 and doubles the result.
template <class V>
inline typename V::R expm1(typename V::R x) {
  using R = typename V::R;
  if constexpr (V::kNormalFastPaths) {
    if (V::all_within(x, -30.0f, 88.0f)) {  // k in [-44, 127]: no clamp, 2^k from its bits, k < 128
      R k, r = detail::reduce_ln2<V>(x, k);
      R u = V::pow2_normal(k);
      return V::fma(u, detail::expm1_reduced<V>(r), V::sub(u, V::set1(1.0f)));
    }
  }
  R k, r = detail::reduce_ln2<V>(detail::clamp<V>(x, -30.0f, 88.8f), k);
  R p = detail::expm1_reduced<V>(r);
  R u = V::ldexp(V::set1(1.0f), V::min(V::set1(127.0f), k));
  R y = V::fma(u, p, V::sub(u, V::set1(1.0f)));
  return V::select(V::gt(k, V::set1(127.5f)), V::add(y, y), y);
}

// tanh(x) = sign(x) * -e / (e + 2), e = expm1(-2|x|) in (-1, 0]: no cancellation near 0
template <class V>
inline typename V::R tanh(typename V::R x) {
  using R = typename V::R;
  R e = expm1<V>(V::mul(V::set1(-2.0f), V::abs(x)));
  return V::copysign(V::div(V::sub(V::set1(0.0f), e), V::add(e, V::set1(2.0f))), x);
}

// sigmoid(x) = 1/(1+E) for x >= 0 and E/(1+E) for x < 0, E = exp(-|x|) <= 1: never overflows
template <class V>
inline typename V::R sigmoid(typename V::R x) {
  using R = typename V::R;
  R e = exp<V>(V::sub(V::set1(0.0f), V::abs(x)));
  R s = V::div(V::set1(1.0f), V::add(V::set1(1.0f), e));
  return V::select(V::lt(x, V::set1(0.0f)), V::mul(e, s), s);
}

// sigmoid'(x) = s (1 - s) = E / (1 + E)^2, E = exp(-|x|): no 1 - s cancellation
template <class V>
inline typename V::R sigmoid_grad(typename V::R x) {
  using R = typename V::R;
  R e = exp<V>(V::sub(V::set1(0.0f), V::abs(x)));
  R s = V::div(V::set1(1.0f), V::add(V::set1(1.0f), e));
  return V::mul(V::mul(e, s), s);
}

namespace detail {

// exp(-a * a * c) for c in {1, 1/2}, with the rounding error of a*a (from an
// FMA) folded back in: exp(-c (h + l)) ~ exp(-c h) (1 - c l).
template <class V>
inline typename V::R exp_neg_square(typename V::R a, float c) {
  using R = typename V::R;
  R h = V::mul(a, a);
  R l = V::fma(a, a, V::sub(V::set1(0.0f), h));
  // beyond |a| = 16 the result is 0; there, and for inf/NaN, l is meaningless
  l = V::select(V::lt(V::abs(a), V::set1(16.0f)), l, V::set1(0.0f));
  R e = exp<V>(V::mul(V::set1(-c), h));
  return V::fma(e, V::mul(V::set1(-c), l), e);
}

// erf(a) for 0 <= a < 1
template <class V>
inline typename V::R erf_small(typename V::R a) {
  static constexpr float p[] = {1.128379166e+00f, -3.761262582e-01f, 1.128358515e-01f,
                                -2.685381187e-02f, 5.188327560e-03f, -8.010192518e-04f,
                                7.853857697e-05f};
  return V::mul(a, poly<V>(V::mul(a, a), p, 7));
}

// erfc(a) for a >= 1, given ea2 = exp(-a^2); a > 10 evaluates Q at 10 (erfc < 1e-44 there)
template <class V>
inline typename V::R erfc_tail(typename V::R a, typename V::R ea2) {
  using R = typename V::R;
  static constexpr float q[] = {2.222384659e-06f, 5.640840345e-01f, 5.663167013e-01f,
                                2.584137627e-01f, -1.243816223e-01f, -1.327608020e+00f,
                                1.091913371e+00f, 1.692889845e+00f, -3.125116778e+00f,
                                1.454430117e+00f};
  R w = V::div(V::set1(1.0f), V::add(V::set1(1.0f), V::min(V::set1(10.0f), a)));
  return V::mul(ea2, poly<V>(w, q, 10));
}

}  // namespace detail

// erf(x): odd polynomial below |x| = 1, 1 - erfc(|x|) above.
template <class V>
inline typename V::R erf(typename V::R x) {
  using R = typename V::R;
  R a = V::abs(x);
  R tail = V::sub(V::set1(1.0f), detail::erfc_tail<V>(a, detail::exp_neg_square<V>(a, 1.0f)));
  return V::copysign(V::select(V::lt(a, V::set1(1.0f)), detail::erf_small<V>(a), tail), x);
}

// exp(-x^2/2), the unnormalized standard normal density (shared by gelu's forward and backward)
template <class V>
inline typename V::R gauss(typename V::R x) {
  return detail::exp_neg_square<V>(x, 0.5f);
}

// Phi(x) = P(N(0,1) <= x) given g = gauss(x). The lower tail Phi(-|x|) = erfc(a) / 2 (a = |x| /
// sqrt 2) comes from one fit over every a: g w R(w), w = 1 / (1 + a / 2), so Phi(-8) keeps its
// relative accuracy instead of being 1 - 0.99..., and no lane evaluates two branches (gelu's
// forward and backward ran 1.3-1.5x slower with erf's two polynomials and a select).
template <class V>
inline typename V::R normal_cdf(typename V::R x, typename V::R g) {
  using R = typename V::R;
  static constexpr float r[] = {1.410432085e-01f, 1.411876625e-01f, 1.215518171e-01f,
                                1.013437038e-01f, -1.331349972e-02f, 1.390345861e-01f,
                                -2.436008571e-01f, 1.422879318e-01f, -2.953457438e-02f};
  R w = V::div(V::set1(1.0f), V::fma(V::abs(x), V::set1(0.35355339059327376f), V::set1(1.0f)));
  R lower = V::mul(V::mul(g, w), detail::poly<V>(w, r, 9));
  return V::select(V::lt(x, V::set1(0.0f)), lower, V::sub(V::set1(1.0f), lower));
}

// -- float64: libm -------------------------------------------------------------

template <> inline double exp<ScalarD>(double x) { return std::exp(x); }
template <> inline double expm1<ScalarD>(double x) { return std::expm1(x); }
template <> inline double tanh<ScalarD>(double x) { return std::tanh(x); }
template <> inline double erf<ScalarD>(double x) { return std::erf(x); }
template <> inline double gauss<ScalarD>(double x) { return std::exp(-0.5 * x * x); }
template <> inline double normal_cdf<ScalarD>(double x, double) {
  return 0.5 * std::erfc(-x * 0.70710678118654752440);
}

// f(V{}) with the register wrapper for T at the SIMD level in use (float64: ScalarD, libm):
// the one switch from the run-time level to these templates for a kernel over T.
template <class T, class F>
void with_vec(F&& f) {
  if constexpr (std::is_same_v<T, double>) {
    f(ScalarD{});
  } else {
    switch (simd_level()) {
#if defined(__AVX512F__)
      case Simd::avx512: f(Avx512F{}); return;
#endif
#if defined(__AVX2__) && defined(__FMA__)
      case Simd::avx2: f(Avx2F{}); return;
#endif
      default: f(ScalarF{}); return;
    }
  }
}

}  // namespace pydl::vm
