// conv family (pydl._cpp): im2col, col2im, conv2d forward and backward.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pydl {

void bind_conv(py::module_& m) { (void)m; }

}  // namespace pydl
