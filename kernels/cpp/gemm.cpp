// gemm family (pydl._cpp): matmul and linear, forward and backward, on the
// packed GEMM of kernels/common/gemm.hpp.
//
// Entry points (T = f32 | f64; every array of one dtype; outputs C-contiguous):
//   gemm_matmul_<T>(a, b, out, simd, algo): a (M,K) | (B,M,K), b (K,N) | (B,K,N),
//     out (M,N) | (B,M,N). Inputs are read through their strides (a.T, a[:, ::2]).
//   gemm_matmul_backward_<T>(grad, a, b, da, db, simd, algo): da = grad @ b^T and
//     db = a^T @ grad as strided views (no transposed copies); a 2-D operand
//     shared by a batch gets the sum over the batch (accumulating GEMMs).
//   gemm_linear_<T>(x, weight, bias|None, activation, out, preact|None, simd, algo):
//     out = act(x @ weight^T + bias), x (R, in), weight (out, in); the bias,
//     activation and the pre-activation store happen on each C tile in cache.
//   gemm_linear_backward_<T>(dz, x, weight, dx, dw, simd, algo): dx = dz @ weight,
//     dw = dz^T @ x (dz = grad * act'(preact), computed by the caller).
// simd: "" (the current level) or a lower level for this call; algo: "" | "naive" |
// "packed" | "direct" (development variants). The GIL is released while computing.
//
// Napkin math (Zen 5, 2 cores, fp32 FMA peak ~230 GFLOP/s per core with zmm):
//   2048^3 sgemm = 17.2 GFLOP -> 37 ms at the 2-core peak; it moves 3 * 16 MiB
//   once, ~2 ms at 29 GB/s: compute-bound, the target is the FMA pipes.
//   (1x4096)(4096x4096): 33.6 MFLOP but 64 MiB of B -> ~2.3 ms: bandwidth-bound,
//   so it takes the direct (unpacked) path that reads B exactly once.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "gemm.hpp"
#include "ndarray.hpp"
#include "simd.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

template <class T>
using Array = NdArray<T>;  // exact dtype, any strides, never converted (ndarray.hpp)

// A 2-D or 3-D operand as (batch, rows, cols) with element strides (batch stride 0 if 2-D).
template <class T>
struct Mat {
  const T* p;
  int64_t batch, rows, cols, bs, rs, cs;
  bool batched;
  gemm::View<T> view(int64_t b) const { return {p + b * bs, rs, cs}; }
  gemm::View<T> tview(int64_t b) const { return {p + b * bs, cs, rs}; }  // transposed
};

template <class T>
int64_t elem_stride(const py::array& a, int d, const char* name) {
  const py::ssize_t s = a.strides(d);
  PYDL_CHECK(s % static_cast<py::ssize_t>(sizeof(T)) == 0,
             name << ": strides must be multiples of the item size, got " << s << " bytes");
  return static_cast<int64_t>(s / static_cast<py::ssize_t>(sizeof(T)));
}

template <class T>
Mat<T> mat(const Array<T>& a, const char* name) {
  const int nd = static_cast<int>(a.ndim());
  PYDL_CHECK(nd == 2 || nd == 3, name << ": expected a 2-D or 3-D array, got shape " << shape_str(a));
  Mat<T> m;
  m.p = a.data();
  m.batched = nd == 3;
  m.batch = nd == 3 ? a.shape(0) : 1;
  m.bs = nd == 3 ? elem_stride<T>(a, 0, name) : 0;
  m.rows = a.shape(nd - 2);
  m.cols = a.shape(nd - 1);
  m.rs = elem_stride<T>(a, nd - 2, name);
  m.cs = elem_stride<T>(a, nd - 1, name);
  return m;
}

// A writable C-contiguous output of the given shape, not overlapping the inputs.
template <class T>
T* output(Array<T>& out, const std::vector<int64_t>& shape, const char* name,
          std::initializer_list<const py::array*> inputs) {
  PYDL_CHECK(out.writeable(), name << ": must be writeable");
  PYDL_CHECK(out.ndim() == static_cast<py::ssize_t>(shape.size()),
             name << ": expected " << shape.size() << " dimensions, got shape " << shape_str(out));
  for (std::size_t d = 0; d < shape.size(); ++d)
    PYDL_CHECK(out.shape(d) == shape[d], name << ": wrong shape " << shape_str(out));
  PYDL_CHECK(out.flags() & py::array::c_style, name << ": must be C-contiguous");
  const char* o0 = reinterpret_cast<const char*>(out.data());
  const char* o1 = o0 + out.nbytes();
  for (const py::array* in : inputs) {
    if (!in || in->size() == 0) continue;
    const char* i0 = static_cast<const char*>(in->data());
    // conservative extent: from the lowest to the highest element address
    const char* lo = i0;
    const char* hi = i0 + in->itemsize();
    for (py::ssize_t d = 0; d < in->ndim(); ++d) {
      const py::ssize_t span = (in->shape(d) - 1) * in->strides(d);
      (span < 0 ? lo : hi) += span;
    }
    PYDL_CHECK(o1 <= lo || hi <= o0, name << ": must not overlap the inputs");
  }
  return out.mutable_data();
}

gemm::Algo algo_of(const std::string& s) {
  if (s.empty() || s == "auto") return gemm::Algo::automatic;
  if (s == "naive") return gemm::Algo::naive;
  if (s == "packed") return gemm::Algo::packed;
  if (s == "direct") return gemm::Algo::direct;
  if (s == "unpacked") return gemm::Algo::unpacked;
  PYDL_CHECK(false, "algo: expected '', 'naive', 'packed', 'direct' or 'unpacked', got '" << s << "'");
  return gemm::Algo::automatic;
}

Simd level_of(const std::string& s) { return s.empty() ? simd_level() : simd_from_name(s); }

gemm::Act act_of(const std::string& s) {
  if (s.empty() || s == "none") return gemm::Act::none;
  if (s == "relu") return gemm::Act::relu;
  if (s == "gelu") return gemm::Act::gelu;
  if (s == "tanh") return gemm::Act::tanh;
  if (s == "sigmoid") return gemm::Act::sigmoid;
  PYDL_CHECK(false, "activation: expected 'none', 'relu', 'gelu', 'tanh' or 'sigmoid', got '" << s << "'");
  return gemm::Act::none;
}

// C[b] (+)= A[b] @ B[b] for b < batch. Many small products run one per thread;
// large ones run one after another, each on every thread.
template <class T, class GetA, class GetB>
void batched(Simd level, gemm::Algo algo, int64_t batch, int64_t M, int64_t N, int64_t K, GetA ga,
             GetB gb, T* C, int64_t c_bs, const gemm::Epilogue<T>& ep) {
  const int nt = num_threads();
  const bool per_thread = batch >= 2 && nt > 1 && static_cast<double>(M) * N * K < 160.0 * 160 * 160;
  if (per_thread) {
#pragma omp parallel for num_threads(nt) schedule(dynamic)
    for (int64_t b = 0; b < batch; ++b)
      gemm::gemm_at<T>(level, algo, M, N, K, ga(b), gb(b), C + b * c_bs, N, ep, 1);
  } else {
    for (int64_t b = 0; b < batch; ++b)
      gemm::gemm_at<T>(level, algo, M, N, K, ga(b), gb(b), C + b * c_bs, N, ep, 0);
  }
}

template <class T>
void matmul(const Array<T>& a, const Array<T>& b, Array<T>& out, const std::string& simd,
            const std::string& algo_s) {
  const Mat<T> A = mat(a, "a"), B = mat(b, "b");
  PYDL_CHECK(A.cols == B.rows, "b: inner dimension " << B.rows << " does not match a's last dimension "
                                                      << A.cols);
  PYDL_CHECK(!(A.batched && B.batched) || A.batch == B.batch,
             "b: batch dimension " << B.batch << " does not match a's " << A.batch);
  const bool batched_out = A.batched || B.batched;
  // the batched operand's batch (a 2-D operand counts 1, so max() would turn an empty batch into 1)
  const int64_t batch = A.batched ? A.batch : B.batch;
  std::vector<int64_t> shape;
  if (batched_out) shape.push_back(batch);
  shape.push_back(A.rows);
  shape.push_back(B.cols);
  T* C = output(out, shape, "out", {&a, &b});
  const Simd level = level_of(simd);
  const gemm::Algo algo = algo_of(algo_s);
  const int64_t M = A.rows, N = B.cols, K = A.cols;
  py::gil_scoped_release nogil;
  if (A.batched && !B.batched && A.rs == K * A.cs && A.bs == M * A.rs) {
    // (B, M, K) contiguous in its rows @ (K, N): one (B*M, K) @ (K, N) product
    gemm::gemm_at<T>(level, algo, batch * M, N, K, A.view(0), B.view(0), C, N, {}, 0);
    return;
  }
  batched<T>(level, algo, batch, M, N, K, [&](int64_t i) { return A.view(i); },
             [&](int64_t i) { return B.view(i); }, C, M * N, {});
}

// matmul into a new C-contiguous array allocated here (the adapter's fast path for small
// products: one Python-level allocation and call fewer, ~0.3 us of a 2.5 us 33x65x17 call).
template <class T>
py::array matmul_new(const Array<T>& a, const Array<T>& b) {
  const auto nd_a = a.ndim(), nd_b = b.ndim();
  PYDL_CHECK((nd_a == 2 || nd_a == 3) && (nd_b == 2 || nd_b == 3),
             "a, b: expected 2-D or 3-D arrays, got shapes " << shape_str(a) << " and " << shape_str(b));
  std::vector<py::ssize_t> shape;
  if (nd_a == 3 || nd_b == 3) shape.push_back(nd_a == 3 ? a.shape(0) : b.shape(0));
  shape.push_back(a.shape(nd_a - 2));
  shape.push_back(b.shape(nd_b - 1));
  Array<T> out(py::dtype::of<T>(), shape);
  matmul<T>(a, b, out, "", "");
  return std::move(out);
}

template <class T>
void matmul_backward(const Array<T>& g, const Array<T>& a, const Array<T>& b, Array<T>& da,
                     Array<T>& db, const std::string& simd, const std::string& algo_s) {
  const Mat<T> A = mat(a, "a"), B = mat(b, "b"), G = mat(g, "grad");
  const int64_t M = A.rows, K = A.cols, N = B.cols;
  const int64_t batch = A.batched ? A.batch : B.batch;  // as matmul: an empty batch stays empty
  PYDL_CHECK(A.cols == B.rows && G.rows == M && G.cols == N && G.batch == batch &&
                 G.batched == (A.batched || B.batched),
             "grad: shape " << shape_str(g) << " does not match the product of a " << shape_str(a)
                            << " and b " << shape_str(b));
  std::vector<int64_t> sa, sb;
  for (py::ssize_t d = 0; d < a.ndim(); ++d) sa.push_back(a.shape(d));
  for (py::ssize_t d = 0; d < b.ndim(); ++d) sb.push_back(b.shape(d));
  T* dA = output(da, sa, "da", {&a, &b, &g});
  T* dB = output(db, sb, "db", {&a, &b, &g});
  const Simd level = level_of(simd);
  const gemm::Algo algo = algo_of(algo_s);
  py::gil_scoped_release nogil;
  auto gv = [&](int64_t i) { return G.view(i); };
  // da = grad @ b^T: (M, N) @ (N, K)
  if (A.batched) {
    batched<T>(level, algo, batch, M, K, N, gv, [&](int64_t i) { return B.tview(i); }, dA, M * K, {});
  } else {
    gemm::Epilogue<T> acc;
    for (int64_t i = 0; i < batch; ++i) {
      acc.accumulate = i > 0;
      gemm::gemm_at<T>(level, algo, M, K, N, G.view(i), B.tview(i), dA, K, acc, 0);
    }
  }
  // db = a^T @ grad: (K, M) @ (M, N)
  if (B.batched) {
    batched<T>(level, algo, batch, K, N, M, [&](int64_t i) { return A.tview(i); }, gv, dB, K * N, {});
  } else if (A.batched && A.bs == M * A.rs && G.bs == M * G.rs) {
    // sum over the batch of a[i]^T grad[i] = (B*M rows of a)^T @ (B*M rows of grad)
    gemm::gemm_at<T>(level, algo, K, N, batch * M, A.tview(0), G.view(0), dB, N, {}, 0);
  } else {
    gemm::Epilogue<T> acc;
    for (int64_t i = 0; i < batch; ++i) {
      acc.accumulate = i > 0;
      gemm::gemm_at<T>(level, algo, K, N, M, A.tview(i), G.view(i), dB, N, acc, 0);
    }
  }
  if (batch == 0) {  // empty batch: the shared operand's gradient is zero
    if (!A.batched) std::fill(dA, dA + M * K, T(0));
    if (!B.batched) std::fill(dB, dB + K * N, T(0));
  }
}

template <class T>
void linear(const Array<T>& x, const Array<T>& w, const std::optional<Array<T>>& bias,
            const std::string& act, Array<T>& out, std::optional<Array<T>>& preact,
            const std::string& simd, const std::string& algo_s) {
  PYDL_CHECK(x.ndim() == 2, "x: expected a 2-D (rows, in_features) array, got shape " << shape_str(x));
  const Mat<T> X = mat(x, "x"), Wt = mat(w, "weight");
  PYDL_CHECK(!Wt.batched && Wt.cols == X.cols,
             "weight: expected shape (out_features, " << X.cols << "), got " << shape_str(w));
  const int64_t R = X.rows, K = X.cols, N = Wt.rows;
  gemm::Epilogue<T> ep;
  ep.act = act_of(act);
  if (bias) {
    PYDL_CHECK(bias->ndim() == 1 && bias->shape(0) == N && (bias->strides(0) == sizeof(T) || N <= 1),
               "bias: expected a contiguous (" << N << ",) array, got shape " << shape_str(*bias));
    ep.bias = bias->data();
  }
  T* C = output(out, {R, N}, "out", {&x, &w, bias ? &*bias : nullptr});
  if (preact) ep.preact = output(*preact, {R, N}, "preact", {&x, &w, bias ? &*bias : nullptr, &out});
  const Simd level = level_of(simd);
  const gemm::Algo algo = algo_of(algo_s);
  py::gil_scoped_release nogil;
  // x @ weight^T: weight^T is the (in, out) view with strides swapped
  gemm::gemm_at<T>(level, algo, R, N, K, X.view(0), Wt.tview(0), C, N, ep, 0);
}

template <class T>
void linear_backward(const Array<T>& dz, const Array<T>& x, const Array<T>& w, Array<T>& dx,
                     Array<T>& dw, const std::string& simd, const std::string& algo_s) {
  const Mat<T> Z = mat(dz, "grad"), X = mat(x, "x"), Wt = mat(w, "weight");
  PYDL_CHECK(!Z.batched && !X.batched && !Wt.batched, "linear_backward: expected 2-D arrays");
  const int64_t R = X.rows, K = X.cols, N = Wt.rows;
  PYDL_CHECK(Wt.cols == K && Z.rows == R && Z.cols == N,
             "grad: shape " << shape_str(dz) << " does not match x " << shape_str(x) << " and weight "
                            << shape_str(w));
  T* dX = output(dx, {R, K}, "dx", {&dz, &x, &w});
  T* dW = output(dw, {N, K}, "dw", {&dz, &x, &w});
  const Simd level = level_of(simd);
  const gemm::Algo algo = algo_of(algo_s);
  py::gil_scoped_release nogil;
  gemm::gemm_at<T>(level, algo, R, K, N, Z.view(0), Wt.view(0), dX, K, {}, 0);   // dz @ W
  gemm::gemm_at<T>(level, algo, N, K, R, Z.tview(0), X.view(0), dW, K, {}, 0);  // dz^T @ x
  if (R == 0) std::fill(dW, dW + N * K, T(0));
}

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  const auto simd = py::arg("simd") = "", algo = py::arg("algo") = "";
  m.def(("gemm_matmul_" + sfx).c_str(), &matmul<T>, py::arg("a").noconvert(), py::arg("b").noconvert(),
        py::arg("out").noconvert(), simd, algo);
  m.def(("gemm_matmul_new_" + sfx).c_str(), &matmul_new<T>, py::arg("a").noconvert(), py::arg("b").noconvert(),
        "matmul into a new C-contiguous array (checks as gemm_matmul).");
  m.def(("gemm_matmul_backward_" + sfx).c_str(), &matmul_backward<T>, py::arg("grad").noconvert(),
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("da").noconvert(),
        py::arg("db").noconvert(), simd, algo);
  m.def(("gemm_linear_" + sfx).c_str(),
        [](const A& x, const A& w, std::optional<A> bias, const std::string& act, A out,
           std::optional<A> preact, const std::string& s, const std::string& al) {
          linear<T>(x, w, bias, act, out, preact, s, al);
        },
        py::arg("x").noconvert(), py::arg("weight").noconvert(), py::arg("bias").noconvert().none(true),
        py::arg("activation"), py::arg("out").noconvert(), py::arg("preact").noconvert().none(true) = py::none(),
        simd, algo);
  m.def(("gemm_linear_backward_" + sfx).c_str(), &linear_backward<T>, py::arg("grad").noconvert(),
        py::arg("x").noconvert(), py::arg("weight").noconvert(), py::arg("dx").noconvert(),
        py::arg("dw").noconvert(), simd, algo);
}

}  // namespace

void bind_gemm(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
  m.def("gemm_tuning", [](int kc, int mc, int nc, int direct_max_m, int unpacked_max_m) {
          PYDL_CHECK(kc >= 0 && mc >= 0 && nc >= 0 && direct_max_m >= 0 && direct_max_m <= 8 && unpacked_max_m >= 0,
                     "gemm_tuning: expected kc, mc, nc >= 0, 0 <= direct_max_m <= 8 and unpacked_max_m >= 0");
          gemm::tuning() = gemm::Tuning{kc, mc, nc, direct_max_m, unpacked_max_m};
        }, py::arg("kc") = 0, py::arg("mc") = 0, py::arg("nc") = 0, py::arg("direct_max_m") = 4,
        py::arg("unpacked_max_m") = 512,
        "Development: GEMM cache blocks (0 = the level's default) and the direct-path row limit.");
  m.def("set_cache_sizes", [](int64_t l1d, int64_t l2, int64_t l3) {
          PYDL_CHECK(l1d >= 0 && l2 >= 0 && l3 >= 0, "set_cache_sizes: expected sizes >= 0 (0 = unknown), got "
                                                          << l1d << ", " << l2 << ", " << l3);
          const gemm::CacheSizes old = gemm::cache_sizes();
          gemm::cache_sizes() = gemm::CacheSizes{l1d, l2, l3};
          return py::make_tuple(old.l1d, old.l2, old.l3);
        }, py::arg("l1d"), py::arg("l2"), py::arg("l3"),
        "The caches (bytes per core, 0 = unknown) the GEMM cache blocks are derived from; set at import "
        "by pydl.machine. Returns the previous three.");
  m.def("gemm_blocks", [](const std::string& dtype, const std::string& level) {
          const Simd s = level.empty() ? simd_level() : simd_from_name(level);
          PYDL_CHECK(s <= compiled_simd(), "level: '" << level << "' is not compiled into this module (it has up to '"
                                                       << simd_name(compiled_simd()) << "')");
          PYDL_CHECK(dtype == "float32" || dtype == "float64", "dtype: expected 'float32' or 'float64', got '" << dtype << "'");
          const gemm::Blocks b = with_level(s, [&](auto tag) {
            constexpr Simd S = decltype(tag)::value;
            return dtype == "float32" ? gemm::detail::blocks<float, S>() : gemm::detail::blocks<double, S>();
          });
          return py::make_tuple(b.kc, b.mc, b.nc);
        }, py::arg("dtype") = "float32", py::arg("level") = "",
        "The (KC, MC, NC) cache blocks the packed GEMM uses for dtype at a SIMD level ('' = the level in use).");
}

}  // namespace pydl
