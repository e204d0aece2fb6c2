// pydl._cpp: the pybind11 module. Each op family file defines
// bind_<family>(m); this file adds the runtime controls (threads, SIMD level)
// and the build description that `pydl info` prints.
#include <pybind11/pybind11.h>
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "check.hpp"
#include "simd.hpp"

namespace py = pybind11;

// setup.py builds this module once per x86-64 level under its own name
// (_cpp_avx512, _cpp_avx2, _cpp_base; _cpp_native for PYDL_ARCH builds);
// pydl/_cpp.py imports the one the CPU runs.
#ifndef PYDL_MODULE
#define PYDL_MODULE _cpp
#endif
#ifndef PYDL_BUILD_KIND
#define PYDL_BUILD_KIND "native"
#endif
#define PYDL_STR2(x) #x
#define PYDL_STR(x) PYDL_STR2(x)

namespace pydl {

static Simd g_level = [] {
  Simd level = compiled_simd();
  if (const char* env = std::getenv("PYDL_SIMD")) {
    try {
      Simd want = simd_from_name(env);
      if (static_cast<int>(want) < static_cast<int>(level)) level = want;
    } catch (const std::invalid_argument&) {
      // an unknown PYDL_SIMD keeps the compiled level; pydl info shows it
    }
  }
  return level;
}();

Simd simd_level() { return g_level; }

static std::atomic<int> g_threads{0};  // 0: OpenMP's default (OMP_NUM_THREADS or all cores)

int num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_simd_level(Simd level) {
  g_level = static_cast<int>(level) > static_cast<int>(compiled_simd()) ? compiled_simd() : level;
}

const char* simd_name(Simd level) {
  switch (level) {
    case Simd::avx512: return "avx512";
    case Simd::avx2: return "avx2";
    default: return "scalar";
  }
}

Simd simd_from_name(const std::string& name) {
  if (name == "avx512") return Simd::avx512;
  if (name == "avx2") return Simd::avx2;
  if (name == "scalar") return Simd::scalar;
  PYDL_CHECK(false, "simd level: expected 'avx512', 'avx2' or 'scalar', got '" << name << "'");
  return Simd::scalar;
}

void bind_elementwise(py::module_& m);
void bind_gemm(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_rnn(py::module_& m);
void bind_attention(py::module_& m);
void bind_norm(py::module_& m);
void bind_loss(py::module_& m);
void bind_sparse(py::module_& m);
void bind_peak(py::module_& m);

}  // namespace pydl

#ifndef PYDL_SANITIZE_FLAGS
#define PYDL_SANITIZE_FLAGS ""
#endif

PYBIND11_MODULE(PYDL_MODULE, m) {
  using namespace pydl;
  m.doc() = "pydl C++ kernels (private; use pydl.ops)";
  m.def("simd_level", [] { return std::string(simd_name(simd_level())); },
        "The SIMD level kernels use now: 'avx512', 'avx2' or 'scalar'.");
  m.def("compiled_simd", [] { return std::string(simd_name(compiled_simd())); },
        "The highest SIMD level this build contains.");
  m.def("set_simd_level", [](const std::string& name) { set_simd_level(simd_from_name(name)); },
        py::arg("level"), "Lower (or restore) the SIMD level; clamps to compiled_simd().");
  m.def("set_num_threads", [](int n) {
          PYDL_CHECK(n >= 1, "set_num_threads: expected n >= 1, got " << n);
          g_threads.store(n, std::memory_order_relaxed);
        }, py::arg("n"), "Threads for every kernel, from any Python thread.");
  m.def("get_num_threads", [] { return num_threads(); });
  m.def("build_info", [] {
    py::dict d;
    d["arch"] = PYDL_ARCH;
    d["kind"] = PYDL_BUILD_KIND;
    d["module"] = "pydl." PYDL_STR(PYDL_MODULE);
    d["compiler"] = __VERSION__;
    d["openmp"] = _OPENMP;
    d["compiled_simd"] = simd_name(compiled_simd());
    d["sanitize"] = PYDL_SANITIZE_FLAGS;  // "" unless built with PYDL_SANITIZE (make sanitize)
    return d;
  });
  bind_elementwise(m);
  bind_gemm(m);
  bind_conv(m);
  bind_pool(m);
  bind_rnn(m);
  bind_attention(m);
  bind_norm(m);
  bind_loss(m);
  bind_sparse(m);
  bind_peak(m);
}
