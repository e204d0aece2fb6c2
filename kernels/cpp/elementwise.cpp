// placeholder, replaced by the elementwise kernels
#include <pybind11/pybind11.h>
namespace pydl { void bind_elementwise(pybind11::module_& m) {} }
