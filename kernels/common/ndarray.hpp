// pydl::NdArray<T>: the NumPy array argument every kernel binding takes: exactly
// dtype T (never converted), any strides. pybind11's array_t<T> does the same
// check through PyArray_EquivTypes with a freshly made descriptor, ~260 ns per
// argument here: 0.8 us of a 1-element relu and 1 us of a 3x3 matmul (measured:
// dev/gemm/README.md, "call overhead"). This one first compares the array's
// descriptor with the builtin one for T (the descriptor every ordinary array of
// that dtype shares), ~10 ns, and only falls back to the full equivalence test.
#pragma once
#include <pybind11/numpy.h>

#include <sstream>
#include <string>

namespace pydl {

// "(2, 3)", "(5,)": an array's shape as error messages print it.
inline std::string shape_str(const pybind11::array& a) {
  std::ostringstream os;
  os << "(";
  for (pybind11::ssize_t d = 0; d < a.ndim(); ++d) os << (d ? ", " : "") << a.shape(d);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

template <class T>
class NdArray : public pybind11::array {
 public:
  using pybind11::array::array;
  NdArray() = default;
  const T* data() const { return static_cast<const T*>(pybind11::array::data()); }
  T* mutable_data() { return static_cast<T*>(pybind11::array::mutable_data()); }

  static bool check_(pybind11::handle h) {
    const auto& api = pybind11::detail::npy_api::get();
    if (!api.PyArray_Check_(h.ptr())) return false;
    PyObject* d = pybind11::detail::array_proxy(h.ptr())->descr;
    static PyObject* const builtin = pybind11::dtype::of<T>().release().ptr();  // kept for good
    return d == builtin || api.PyArray_EquivTypes_(d, builtin);
  }
};

}  // namespace pydl

namespace pybind11 {
namespace detail {
template <class T>
struct handle_type_name<pydl::NdArray<T>> {
  static constexpr auto name = const_name("numpy.ndarray[") + npy_format_descriptor<T>::name + const_name("]");
};
}  // namespace detail
}  // namespace pybind11
