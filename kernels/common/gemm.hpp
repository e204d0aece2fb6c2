// The CPU GEMM every pydl C++ family calls (gemm, conv, rnn, attention).
//
// Interface (stable; kernels/cpp/gemm.cpp binds it, kernels/cpp/conv.cpp packs
// straight from images through gemm_packed_b):
//
//   C (M x N, row stride ldc, unit column stride) = epilogue(A @ B)
//   A (M x K) and B (K x N) are strided views: element (i, j) at p[i*rs + j*cs],
//   so A^T, B^T and any non-contiguous slice are read without a copy.
//   epilogue: C = act(A@B + bias) [+ C if accumulate]; bias per column (length N,
//   linear) or per row (length M, conv channels); optionally the pre-activation
//   is stored too (for a backward that needs it).
//
//   gemm_packed_b: B is not a matrix in memory but produced panel by panel by a
//   functor pack_b(k0, kc, n0, nc, dst) that writes B[k0:k0+kc, n0:n0+nc] as
//   ceil(nc / NR) panels of kc x NR (panel p at dst + p*kc*NR, row k of it at
//   + k*NR, column j of the block at panel j/NR, lane j%NR), zero-filling lanes
//   past nc. NR = panel_width<T>() for the SIMD level in use. This is how an
//   implicit-GEMM convolution packs its column matrix without materializing it.
//
//   nthreads: 0 = pydl::num_threads(); 1 = run serially on the calling thread
//   (safe inside a caller's own parallel region).
//
// This file holds the interface and a simple, correct implementation; the
// packed, register-blocked AVX-512/AVX2/scalar kernels replace its internals.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "check.hpp"
#include "simd.hpp"

namespace pydl {
namespace gemm {

enum class Act : int { none = 0, relu, gelu, tanh, sigmoid };

template <class T>
struct View {
  const T* p;
  int64_t rs, cs;  // element (i, j) at p[i*rs + j*cs]
  T at(int64_t i, int64_t j) const { return p[i * rs + j * cs]; }
};

template <class T>
struct Epilogue {
  const T* bias = nullptr;    // added before the activation
  bool bias_per_row = false;  // true: bias[i] (length M); false: bias[j] (length N)
  Act act = Act::none;
  T* preact = nullptr;        // if set, also store A@B + bias here (row stride ldc)
  bool accumulate = false;    // C += result (bias/act/preact must be unset)
};

template <class T>
inline T activate(Act act, T z) {
  switch (act) {
    case Act::relu: return z > T(0) ? z : (z == z ? T(0) : z);
    case Act::gelu: return T(0.5) * z * (T(1) + std::erf(z * T(0.70710678118654752440)));
    case Act::tanh: return std::tanh(z);
    case Act::sigmoid: return T(1) / (T(1) + std::exp(-z));
    default: return z;
  }
}

// Width of a packed B panel for the SIMD level in use.
template <class T>
inline int panel_width() {
  const int lanes = simd_level() == Simd::avx512 ? 64 : simd_level() == Simd::avx2 ? 32 : 16;
  return lanes / static_cast<int>(sizeof(T));
}

namespace detail {

template <class T>
inline void check_epilogue(const Epilogue<T>& ep) {
  PYDL_CHECK(!ep.accumulate || (ep.bias == nullptr && ep.act == Act::none && ep.preact == nullptr),
             "gemm: accumulate cannot be combined with bias, activation or preact");
}

// Simple reference driver over packed B: rows of C in parallel, B packed once.
template <class T, class PackB>
void run(int64_t M, int64_t N, int64_t K, View<T> A, PackB&& pack_b, T* C, int64_t ldc,
         const Epilogue<T>& ep, int nthreads) {
  check_epilogue(ep);
  if (M <= 0 || N <= 0) return;
  const int nr = panel_width<T>();
  const int64_t panels = (N + nr - 1) / nr;
  std::vector<T> bp(static_cast<size_t>(std::max<int64_t>(K, 1) * panels * nr));
  if (K > 0) pack_b(int64_t(0), K, int64_t(0), N, bp.data());
  const int nt = nthreads > 0 ? nthreads : num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t i = 0; i < M; ++i) {
    std::vector<T> acc(static_cast<size_t>(N), T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T a = A.at(i, k);
      for (int64_t p = 0; p < panels; ++p) {
        const T* b = bp.data() + (p * K + k) * nr;
        const int64_t w = std::min<int64_t>(nr, N - p * nr);
        for (int64_t j = 0; j < w; ++j) acc[p * nr + j] += a * b[j];
      }
    }
    T* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) {
      if (ep.accumulate) {
        c[j] += acc[j];
        continue;
      }
      T z = acc[j];
      if (ep.bias) z += ep.bias_per_row ? ep.bias[i] : ep.bias[j];
      if (ep.preact) ep.preact[i * ldc + j] = z;
      c[j] = activate(ep.act, z);
    }
  }
}

}  // namespace detail

// Packs B[k0:k0+kc, n0:n0+nc] of a strided view into panels (the default packer).
template <class T>
inline void pack_b_view(View<T> B, int64_t k0, int64_t kc, int64_t n0, int64_t nc, T* dst) {
  const int nr = panel_width<T>();
  for (int64_t p = 0; p * nr < nc; ++p)
    for (int64_t k = 0; k < kc; ++k) {
      T* d = dst + (p * kc + k) * nr;
      for (int j = 0; j < nr; ++j) {
        const int64_t col = p * nr + j;
        d[j] = col < nc ? B.at(k0 + k, n0 + col) : T(0);
      }
    }
}

template <class T, class PackB>
void gemm_packed_b(int64_t M, int64_t N, int64_t K, View<T> A, PackB&& pack_b, T* C,
                   int64_t ldc, const Epilogue<T>& ep = {}, int nthreads = 0) {
  detail::run(M, N, K, A, pack_b, C, ldc, ep, nthreads);
}

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, View<T> A, View<T> B, T* C, int64_t ldc,
          const Epilogue<T>& ep = {}, int nthreads = 0) {
  gemm_packed_b(
      M, N, K, A,
      [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, T* dst) { pack_b_view(B, k0, kc, n0, nc, dst); },
      C, ldc, ep, nthreads);
}

}  // namespace gemm
}  // namespace pydl
