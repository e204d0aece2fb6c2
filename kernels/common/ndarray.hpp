// pydl::NdArray<T>: the NumPy array argument every kernel binding takes: exactly
// dtype T (never converted), any strides. pybind11's array_t<T> does the same
// check through PyArray_EquivTypes with a freshly made descriptor, ~260 ns per
// argument here: 0.8 us of a 1-element relu and 1 us of a 3x3 matmul (measured:
// dev/gemm/README.md, "call overhead"). This one first compares the array's
// descriptor with the builtin one for T (the descriptor every ordinary array of
// that dtype shares), ~10 ns, and only falls back to the full equivalence test.
#pragma once
#include <pybind11/numpy.h>

#include <cstddef>
#include <optional>
#include <sstream>
#include <string>

#include "check.hpp"

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

// The raw pointer of a C-contiguous argument of `size` elements, checked (the Python layer has
// validated the arguments; these guard the pointers a kernel reads and writes). None -> nullptr.
template <class T>
const T* flat_in(const NdArray<T>& a, const char* name, std::ptrdiff_t size) {
  PYDL_CHECK(a.flags() & pybind11::array::c_style, name << ": expected a C-contiguous array");
  PYDL_CHECK(a.size() == size, name << ": expected " << size << " elements, got shape " << shape_str(a));
  return a.data();
}

template <class T>
const T* flat_in(const std::optional<NdArray<T>>& a, const char* name, std::ptrdiff_t size) {
  return a ? flat_in(*a, name, size) : nullptr;
}

// flat_in for an output: also writeable.
template <class T>
T* flat_out(NdArray<T>& a, const char* name, std::ptrdiff_t size) {
  PYDL_CHECK(a.writeable(), name << ": expected a writeable array");
  return const_cast<T*>(flat_in(a, name, size));
}

template <class T>
T* flat_out(std::optional<NdArray<T>>& a, const char* name, std::ptrdiff_t size) {
  return a ? flat_out(*a, name, size) : nullptr;
}

}  // namespace pydl

namespace pybind11 {
namespace detail {
template <class T>
struct handle_type_name<pydl::NdArray<T>> {
  static constexpr auto name = const_name("numpy.ndarray[") + npy_format_descriptor<T>::name + const_name("]");
};
}  // namespace detail
}  // namespace pybind11
