// FP32 FMA peak of this CPU: the roof that `pydl bench` places kernels under.
//
// Each thread runs ACC independent FMA chains (acc = acc * b + c) for `iters`
// rounds, in zmm (AVX-512, 16 floats) or ymm (AVX2, 8 floats) registers.
// Napkin math: an FMA has ~4 cycles latency and Zen 4/5 and Intel cores issue
// 2 per cycle, so 8 chains are the minimum to keep both pipes busy; 12 leave
// slack for other cores' latencies (Zen 5 has 4 cycles, Ice Lake 4, older 5)
// and still fit the 16 ymm / 32 zmm registers. Flops per FMA lane = 2.
// One call: iters * ACC * lanes * 2 flops per thread; timed here with
// omp_get_wtime around the parallel region, after a warm-up region that
// wakes the threads and lifts the clock.
#include <pybind11/pybind11.h>
#include <omp.h>
#include <immintrin.h>

#include <string>
#include <vector>

#include "check.hpp"
#include "ndarray.hpp"
#include "simd.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

constexpr int ACC = 12;

#if defined(__AVX512F__)
float chains_avx512(long iters, float seed) {
  __m512 acc[ACC];
  for (int i = 0; i < ACC; ++i) acc[i] = _mm512_set1_ps(seed + 0.001f * i);
  // b just under 1 and c tiny keep the values finite for any iteration count
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f * seed);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < ACC; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  }
  __m512 s = acc[0];
  for (int i = 1; i < ACC; ++i) s = _mm512_add_ps(s, acc[i]);
  float out[16];  // a plain store: GCC 12 warns inside its own _mm512_reduce_add_ps
  _mm512_storeu_ps(out, s);
  float t = 0.f;
  for (float v : out) t += v;
  return t;
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
float chains_avx2(long iters, float seed) {
  __m256 acc[ACC];
  for (int i = 0; i < ACC; ++i) acc[i] = _mm256_set1_ps(seed + 0.001f * i);
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f * seed);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < ACC; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  }
  __m256 s = acc[0];
  for (int i = 1; i < ACC; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  float t = 0.f;
  for (float v : out) t += v;
  return t;
}
#endif

int lanes(Simd level) { return level == Simd::avx512 ? 16 : 8; }

float run_chains(Simd level, long iters, float seed) {
#if defined(__AVX512F__)
  if (level == Simd::avx512) return chains_avx512(iters, seed);
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if (level == Simd::avx2) return chains_avx2(iters, seed);
#endif
  PYDL_CHECK(false, "fma_peak: SIMD level '" << simd_name(level) << "' is not compiled in this build "
                    "(compiled: " << simd_name(compiled_simd()) << ")");
  return 0.f;
}

// Returns (flops, seconds, checksum) for `threads` threads each running
// `iters` rounds; the checksum keeps the compiler from dropping the work.
py::tuple fma_peak(const std::string& simd, long iters, int threads) {
  PYDL_CHECK(iters >= 1, "fma_peak: iters must be >= 1, got " << iters);
  PYDL_CHECK(threads >= 1, "fma_peak: threads must be >= 1, got " << threads);
  const Simd level = simd_from_name(simd);
  PYDL_CHECK(level != Simd::scalar, "fma_peak: simd must be 'avx512' or 'avx2', got 'scalar'");
  PYDL_CHECK(static_cast<int>(level) <= static_cast<int>(compiled_simd()),
             "fma_peak: SIMD level '" << simd << "' is not compiled in this build (compiled: "
                                      << simd_name(compiled_simd()) << ")");
  std::vector<float> sums(threads, 0.f);
  double seconds;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel num_threads(threads)
    sums[omp_get_thread_num()] += run_chains(level, iters / 8 + 1, 1.0f);  // warm-up
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    sums[omp_get_thread_num()] += run_chains(level, iters, 1.0f + omp_get_thread_num());
    seconds = omp_get_wtime() - t0;
  }
  double check = 0.0;
  for (float s : sums) check += s;
  const double flops = 2.0 * ACC * lanes(level) * static_cast<double>(iters) * threads;
  return py::make_tuple(flops, seconds, check);
}

// Streaming read of one slice: 4 independent vector sums, so the loads, not
// the add latency, set the pace.
float sum_slice(const float* p, int64_t n) {
  int64_t i = 0;
  float t = 0.f;
#if defined(__AVX512F__)
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
  }
  float out[16];
  _mm512_storeu_ps(out, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (float v : out) t += v;
#else
  float s[16] = {};
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) s[l] += p[i + l];
  for (float v : s) t += v;
#endif
  for (; i < n; ++i) t += p[i];
  return t;
}

// Read bandwidth: (bytes, seconds, checksum) of `threads` threads each summing
// a contiguous slice of x once (x should be far larger than the caches).
py::tuple read_peak(const NdArray<float>& x, int threads) {
  PYDL_CHECK(threads >= 1, "read_peak: threads must be >= 1, got " << threads);
  PYDL_CHECK(x.ndim() == 1 && (x.flags() & py::array::c_style),
             "read_peak: x must be a 1-D contiguous float32 array");
  const float* p = x.data();
  const int64_t n = x.shape(0);
  std::vector<float> sums(threads, 0.f);
  double seconds;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel num_threads(threads)
    sums[omp_get_thread_num()] += 0.f;  // wake the threads outside the clock
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      sums[t] += sum_slice(p + n * t / nt, n * (t + 1) / nt - n * t / nt);
    }
    seconds = omp_get_wtime() - t0;
  }
  double check = 0.0;
  for (float s : sums) check += s;
  return py::make_tuple(static_cast<double>(n) * sizeof(float), seconds, check);
}

}  // namespace

void bind_peak(py::module_& m) {
  m.def("read_peak", &read_peak, py::arg("x").noconvert(), py::arg("threads"),
        "Read bandwidth probe: (bytes, seconds, checksum) of `threads` threads each summing a slice of x.");
  m.def("fma_peak", &fma_peak, py::arg("simd"), py::arg("iters"), py::arg("threads"),
        "FP32 FMA peak probe: (flops, seconds, checksum) of `threads` threads each running "
        "`iters` rounds of 12 independent FMA chains in 'avx512' (zmm) or 'avx2' (ymm) registers.");
}

}  // namespace pydl
