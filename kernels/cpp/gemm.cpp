// gemm family (pydl._cpp): matmul and linear (packed GEMM of kernels/common/gemm.hpp).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pydl {

void bind_gemm(py::module_& m) { (void)m; }

}  // namespace pydl
