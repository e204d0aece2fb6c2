// Sparse family (pydl._cpp): embedding, forward (a row gather) and backward (a scatter-add of
// rows into a dense gradient of the table), float32 and float64.
//
// embedding_<T>(idx (n,) int64, weight (num, dim), out (n, dim)): out[i] = weight[idx[i]].
// embedding_backward_<T>(idx (n,) int64, grad (n, dim), padding_idx (-1: none), dw (num, dim)):
//   dw = 0, then dw[idx[i]] += grad[i] for i = 0, 1, ... (a padding_idx row gets nothing).
//   Each row of dw sums its upstream rows in the order of i, as the reference does, so the
//   result does not depend on the thread count. Threads split the embedding dim into
//   column ranges of whole cache lines and each walks every index: no two threads write one
//   line, no atomics. (The NumPy reference sorts the indices and adds in passes, falling back
//   to np.add.at for rows that repeat often: 0.9 ms for the LSTM LM's 2048 tokens over 96
//   rows of 64, where this loop adds 131k floats.)
// Indices arrive as int64 (the adapter converts other integer dtypes) and are checked here
// as well as in the op: an index outside [0, num) throws ValueError, never reads or writes
// outside the table.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "check.hpp"
#include "ndarray.hpp"
#include "simd.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

using std::ptrdiff_t;
template <class T>
using Array = NdArray<T>;

constexpr ptrdiff_t kParallelMin = 1 << 16;  // elements moved from which both threads run

void check_indices(const std::int64_t* idx, ptrdiff_t n, ptrdiff_t num) {
  for (ptrdiff_t i = 0; i < n; ++i)
    PYDL_CHECK(idx[i] >= 0 && idx[i] < num,
               "input: index " << idx[i] << " at position " << i << " is outside [0, " << num << ")");
}

int threads_for(ptrdiff_t elems) { return elems >= kParallelMin ? num_threads() : 1; }

template <class T>
void gather(const std::int64_t* idx, ptrdiff_t n, const T* w, ptrdiff_t dim, T* out) {
  const int nt = threads_for(n * dim);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (ptrdiff_t i = 0; i < n; ++i) std::memcpy(out + i * dim, w + idx[i] * dim, sizeof(T) * dim);
}

template <class T>
void scatter_add(const std::int64_t* idx, ptrdiff_t n, const T* g, std::int64_t pad, ptrdiff_t num, ptrdiff_t dim,
                 T* dw) {
  constexpr ptrdiff_t line = 64 / sizeof(T);
  const ptrdiff_t lines = (dim + line - 1) / line;
  int nt = threads_for(std::max(n, num) * dim);
  if (nt > lines) nt = static_cast<int>(std::max<ptrdiff_t>(lines, 1));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int p = omp_get_thread_num(), q = omp_get_num_threads();
    const ptrdiff_t j0 = std::min(dim, lines * p / q * line), j1 = std::min(dim, lines * (p + 1) / q * line);
    const ptrdiff_t w = j1 - j0;
    if (w > 0) {
      for (ptrdiff_t r = 0; r < num; ++r) std::fill(dw + r * dim + j0, dw + r * dim + j1, T(0));
      for (ptrdiff_t i = 0; i < n; ++i) {
        if (idx[i] == pad) continue;
        T* d = dw + idx[i] * dim + j0;
        const T* s = g + i * dim + j0;
        for (ptrdiff_t j = 0; j < w; ++j) d[j] += s[j];
      }
    }
  }
}

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  using I = Array<std::int64_t>;
  m.def(("embedding_" + sfx).c_str(),
        [](const I& idx, const A& weight, A out) {
          PYDL_CHECK(weight.ndim() == 2, "weight: expected (num_embeddings, embedding_dim), got shape "
                                             << shape_str(weight));
          const ptrdiff_t num = weight.shape(0), dim = weight.shape(1), n = idx.size();
          const std::int64_t* ip = flat_in(idx, "input", n);
          const T* wp = flat_in(weight, "weight", num * dim);
          T* op = flat_out(out, "out", n * dim);
          check_indices(ip, n, num);
          py::gil_scoped_release nogil;
          gather(ip, n, wp, dim, op);
        },
        py::arg("input").noconvert(), py::arg("weight").noconvert(), py::arg("out").noconvert());
  m.def(("embedding_backward_" + sfx).c_str(),
        [](const I& idx, const A& grad, std::int64_t padding_idx, A dw) {
          PYDL_CHECK(dw.ndim() == 2, "dweight: expected (num_embeddings, embedding_dim), got shape " << shape_str(dw));
          const ptrdiff_t num = dw.shape(0), dim = dw.shape(1), n = idx.size();
          const std::int64_t* ip = flat_in(idx, "input", n);
          const T* gp = flat_in(grad, "grad", n * dim);
          T* dp = flat_out(dw, "dweight", num * dim);
          PYDL_CHECK(padding_idx >= -1 && padding_idx < num,
                     "padding_idx: expected -1 (none) or a row in [0, " << num << "), got " << padding_idx);
          check_indices(ip, n, num);
          py::gil_scoped_release nogil;
          scatter_add(ip, n, gp, padding_idx, num, dim, dp);
        },
        py::arg("input").noconvert(), py::arg("grad").noconvert(), py::arg("padding_idx"),
        py::arg("dweight").noconvert());
}

}  // namespace

void bind_sparse(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace pydl
