// SIMD level selection. A module compiles every level its -march allows
// (AVX-512 needs __AVX512F__, AVX2 needs __AVX2__ and __FMA__; scalar always).
// The portable build makes one module per level (_cpp_avx512: -march=x86-64-v4,
// _cpp_avx2: x86-64-v3, _cpp_base: x86-64-v2) and pydl/_cpp.py imports the best
// one the CPU runs (pydl/machine.py), so nothing here ever meets a CPU below
// its -march. Within a module the level used at run time is the highest
// compiled one unless lowered by PYDL_SIMD=avx2|scalar (which also picks the
// module) or pydl._cpp.set_simd_level(), which is how tests exercise the AVX2
// and scalar paths on an AVX-512 machine.
#pragma once
#include <string>
#include <type_traits>

namespace pydl {

enum class Simd : int { scalar = 0, avx2 = 1, avx512 = 2 };

constexpr Simd compiled_simd() {
#if defined(__AVX512F__)
  return Simd::avx512;
#elif defined(__AVX2__) && defined(__FMA__)
  return Simd::avx2;
#else
  return Simd::scalar;
#endif
}

Simd simd_level();                 // the level kernels use now
void set_simd_level(Simd level);   // clamps to compiled_simd()
const char* simd_name(Simd level);

// Threads for every parallel region. A process-wide setting: OpenMP's own
// omp_set_num_threads only binds the calling thread, so a Python thread
// other than the one that called pydl.set_num_threads would not see it.
int num_threads();
Simd simd_from_name(const std::string& name);  // throws std::invalid_argument

template <Simd S>
using SimdTag = std::integral_constant<Simd, S>;

// f(SimdTag<level>{}) for a level compiled into this build (scalar for one that is not):
// the one switch from a run-time level to a kernel template, e.g.
//   with_level(level, [&](auto s) { kernel<T, decltype(s)::value>(...); });
template <class F>
decltype(auto) with_level(Simd level, F&& f) {
  switch (level) {
#if defined(__AVX512F__)
    case Simd::avx512: return f(SimdTag<Simd::avx512>{});
#endif
#if defined(__AVX2__) && defined(__FMA__)
    case Simd::avx2: return f(SimdTag<Simd::avx2>{});
#endif
    default: return f(SimdTag<Simd::scalar>{});
  }
}

}  // namespace pydl
