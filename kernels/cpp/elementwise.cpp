// Elementwise family (pydl._cpp): activations, softmax and log_softmax, forward and backward.
//
// Computes, for float32 and float64 arrays of any shape (C-contiguous, n elements):
//   relu, leaky_relu, elu, gelu (erf or tanh form), sigmoid, tanh:  y = f(x),  dx = grad * f'(x);
//   softmax, log_softmax along `dim`, x viewed as (outer, n, inner):  y = softmax(x) and
//   dx = y (grad - sum(grad y)) or dx = grad - exp(y_log) sum(grad), per line of n elements.
// Algorithm: activations are one pass of an op functor over registers (AVX-512 16 lanes, AVX2 8,
//   or scalar; masked tails) with the vm:: polynomials of simd_math.hpp, threads over 16K-element
//   chunks. Softmax: a max pass, an exp-sum pass (softmax stores exp(x - max)), a scale pass; one
//   thread per row when inner == 1 (rows contiguous), else per 16 adjacent columns of an (n, inner) slab.
//   float64 runs the same code on scalar registers with libm exp/expm1/tanh/erf/erfc.
//
// Napkin math (AMD Zen 5, 2 cores, ~29 GB/s copy bandwidth): every op here is bandwidth-bound.
//   relu f32 forward moves 8N bytes (read x, write y): N = 4M -> 32 MB -> ~1.1 ms; backward 12N -> ~1.7 ms.
//   gelu costs ~40 vector instructions per 16 elements: 4M elements ~ 10M instructions, ~0.6 ms on
//   two cores, under the memory floor. Softmax rows of a few K floats stay in L1 between passes,
//   so DRAM still sees 8N bytes: the same ~1.1 ms floor as relu.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

#include "check.hpp"
#include "simd.hpp"
#include "simd_math.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

using std::ptrdiff_t;
template <class V>
using Reg = typename V::R;

// -- op functors: fwd<V>(x) = f(x), bwd<V>(g, x) = g * f'(x) -----------------------

struct Relu {
  template <class V> Reg<V> fwd(Reg<V> x) const { return V::max(V::set1(0), x); }  // max(0, nan) = nan
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> x) const {
    return V::select(V::gt(x, V::set1(0)), g, V::set1(0));
  }
};

struct LeakyRelu {
  double slope;
  template <class V> Reg<V> fwd(Reg<V> x) const {
    return V::select(V::gt(x, V::set1(0)), x, V::mul(x, V::set1(typename V::T(slope))));
  }
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> x) const {
    return V::select(V::gt(x, V::set1(0)), g, V::mul(g, V::set1(typename V::T(slope))));
  }
};

struct Elu {
  double alpha;
  template <class V> Reg<V> fwd(Reg<V> x) const {
    Reg<V> neg = vm::expm1<V>(V::min(V::set1(0), x));
    return V::select(V::gt(x, V::set1(0)), x, V::mul(V::set1(typename V::T(alpha)), neg));
  }
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> x) const {
    Reg<V> d = V::mul(V::mul(g, V::set1(typename V::T(alpha))), vm::exp<V>(V::min(V::set1(0), x)));
    return V::select(V::gt(x, V::set1(0)), g, d);
  }
};

// x * Phi(x); Phi' = exp(-x^2/2) / sqrt(2 pi)
struct GeluErf {
  template <class V> Reg<V> fwd(Reg<V> x) const {
    return V::mul(x, vm::normal_cdf<V>(x, vm::gauss<V>(x)));
  }
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> x) const {
    Reg<V> e = vm::gauss<V>(x);
    Reg<V> pdf = V::mul(e, V::set1(typename V::T(0.39894228040143267794)));
    return V::mul(g, V::fma(x, pdf, vm::normal_cdf<V>(x, e)));
  }
};

// 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): sigmoid keeps
// the x << 0 side accurate, where 1 + tanh(u) would cancel.
struct GeluTanh {
  template <class V> static Reg<V> two_u(Reg<V> x) {
    using T = typename V::T;
    Reg<V> x2 = V::mul(x, x);
    return V::mul(V::mul(x, V::set1(T(2 * 0.79788456080286535588))),
                  V::fma(x2, V::set1(T(0.044715)), V::set1(T(1))));
  }
  template <class V> Reg<V> fwd(Reg<V> x) const { return V::mul(x, vm::sigmoid<V>(two_u<V>(x))); }
  // d/dx = s + 2 x s (1 - s) du/dx, s = sigmoid(2u)
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> x) const {
    using T = typename V::T;
    Reg<V> t = two_u<V>(x);
    Reg<V> du = V::mul(V::set1(T(2 * 0.79788456080286535588)),
                       V::fma(V::mul(x, x), V::set1(T(3 * 0.044715)), V::set1(T(1))));
    Reg<V> ds = V::mul(vm::sigmoid_grad<V>(t), du);
    return V::mul(g, V::fma(x, ds, vm::sigmoid<V>(t)));
  }
};

struct Sigmoid {
  template <class V> Reg<V> fwd(Reg<V> x) const { return vm::sigmoid<V>(x); }
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> x) const { return V::mul(g, vm::sigmoid_grad<V>(x)); }
};

struct Tanh {
  template <class V> Reg<V> fwd(Reg<V> x) const { return vm::tanh<V>(x); }
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> x) const { return V::mul(g, vm::tanh_grad<V>(x)); }
};

// Test hook: one vm:: function at the current SIMD level, to check its accuracy on wide grids.
struct VMath {
  int fn;
  template <class V> Reg<V> fwd(Reg<V> x) const {
    switch (fn) {
      case 0: return vm::exp<V>(x);
      case 1: return vm::expm1<V>(x);
      case 2: return vm::tanh<V>(x);
      case 3: return vm::sigmoid<V>(x);
      case 4: return vm::erf<V>(x);
      default: return vm::normal_cdf<V>(x, vm::gauss<V>(x));
    }
  }
};
const char* const kVMathNames[] = {"exp", "expm1", "tanh", "sigmoid", "erf", "normal_cdf"};

// -- drivers -------------------------------------------------------------------------

constexpr ptrdiff_t kChunk = 16384;           // elements per thread task: 64 KB of float32
constexpr ptrdiff_t kParallelMin = 1 << 17;   // below ~128K elements a fork costs more than it saves

// f(V{}) with the register wrapper for T at the current SIMD level
template <class T, class F>
void with_simd(F&& f) {
  if constexpr (std::is_same_v<T, double>) {
    f(vm::ScalarD{});
  } else {
    switch (simd_level()) {
#if defined(__AVX512F__)
      case Simd::avx512: f(vm::Avx512F{}); return;
#endif
#if defined(__AVX2__) && defined(__FMA__)
      case Simd::avx2: f(vm::Avx2F{}); return;
#endif
      default: f(vm::ScalarF{}); return;
    }
  }
}

// f(i, count) for the vectors of [begin, end): count = W except a shorter (masked) last one
template <class V, class F>
inline void for_vectors(ptrdiff_t begin, ptrdiff_t end, F&& f) {
  ptrdiff_t i = begin;
  for (; i + V::W <= end; i += V::W) f(i, std::size_t(V::W));
  if (i < end) f(i, std::size_t(end - i));
}

// body(begin, end) over [0, n) in kChunk pieces, on all threads when n is large
template <class Body>
void for_chunks(ptrdiff_t n, Body&& body) {
  const ptrdiff_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (ptrdiff_t c = 0; c < chunks; ++c) body(c * kChunk, std::min(n, (c + 1) * kChunk));
}

template <class V, class Op>
void map_forward(const typename V::T* x, typename V::T* y, ptrdiff_t n, const Op& op) {
  for_chunks(n, [&](ptrdiff_t b, ptrdiff_t e) {
    for_vectors<V>(b, e, [&](ptrdiff_t i, std::size_t c) {
      V::store_n(y + i, op.template fwd<V>(V::load_n(x + i, c, 0)), c);
    });
  });
}

template <class V, class Op>
void map_backward(const typename V::T* g, const typename V::T* x, typename V::T* dx, ptrdiff_t n,
                  const Op& op) {
  for_chunks(n, [&](ptrdiff_t b, ptrdiff_t e) {
    for_vectors<V>(b, e, [&](ptrdiff_t i, std::size_t c) {
      V::store_n(dx + i, op.template bwd<V>(V::load_n(g + i, c, 0), V::load_n(x + i, c, 0)), c);
    });
  });
}

// -- softmax lines ---------------------------------------------------------------------
// A line is the n elements one softmax runs over. Row: contiguous, reduced across the
// vectors and then across lanes (the result broadcast). Columns: W adjacent columns of an
// (n, inner) slab, element k at k * inner, each lane its own softmax (no lane reduction).

template <class V>
struct Row {
  ptrdiff_t n;
  template <class F> void each(F&& f) const { for_vectors<V>(0, n, f); }
  Reg<V> max(Reg<V> m) const { return V::set1(V::reduce_max(m)); }
  template <class F> Reg<V> sum(Reg<V> s, F&& f) const { return V::set1(f(V::reduce_add(s))); }
};

template <class V>
struct Columns {
  ptrdiff_t n, inner;
  std::size_t lanes;
  template <class F> void each(F&& f) const {
    for (ptrdiff_t k = 0; k < n; ++k) f(k * inner, lanes);
  }
  Reg<V> max(Reg<V> m) const { return m; }
  template <class F> Reg<V> sum(Reg<V> s, F&& f) const {  // once per n * W elements: scalar is fine
    typename V::T t[V::W];
    V::store(t, s);
    for (auto& v : t) v = f(v);
    return V::load(t);
  }
};

// Masked-off lanes load -inf: they add exp(-inf) = 0. A row holding NaN or +inf gets a NaN
// sum (x - max is NaN somewhere), so the whole row is NaN, as in the reference.
template <class V, class Line>
Reg<V> line_max(const Line& line, const typename V::T* x) {
  const auto ninf = -std::numeric_limits<typename V::T>::infinity();
  Reg<V> m = V::set1(ninf);
  line.each([&](ptrdiff_t i, std::size_t c) { m = V::max(m, V::load_n(x + i, c, ninf)); });
  return line.max(m);
}

template <class V, bool Log, class Line>
void softmax_line(const Line& line, const typename V::T* x, typename V::T* y) {
  using T = typename V::T;
  const T ninf = -std::numeric_limits<T>::infinity();
  const Reg<V> m = line_max<V>(line, x);
  Reg<V> s = V::set1(0);
  line.each([&](ptrdiff_t i, std::size_t c) {
    Reg<V> e = vm::exp<V>(V::sub(V::load_n(x + i, c, ninf), m));
    if constexpr (!Log) V::store_n(y + i, e, c);
    s = V::add(s, e);
  });
  if constexpr (Log) {
    const Reg<V> l = line.sum(s, [](T v) { return std::log(v); });
    line.each([&](ptrdiff_t i, std::size_t c) {
      V::store_n(y + i, V::sub(V::sub(V::load_n(x + i, c, 0), m), l), c);
    });
  } else {
    const Reg<V> r = line.sum(s, [](T v) { return T(1) / v; });
    line.each([&](ptrdiff_t i, std::size_t c) { V::store_n(y + i, V::mul(V::load_n(y + i, c, 0), r), c); });
  }
}

template <class V, bool Log, class Line>
void softmax_backward_line(const Line& line, const typename V::T* g, const typename V::T* x,
                           typename V::T* dx) {
  using T = typename V::T;
  const auto same = [](T v) { return v; };
  if constexpr (!Log) {  // dx = y (g - sum(g y)); y lives in dx meanwhile
    softmax_line<V, false>(line, x, dx);
    Reg<V> d = V::set1(0);
    line.each([&](ptrdiff_t i, std::size_t c) {
      d = V::fma(V::load_n(g + i, c, 0), V::load_n(dx + i, c, 0), d);
    });
    d = line.sum(d, same);
    line.each([&](ptrdiff_t i, std::size_t c) {
      V::store_n(dx + i, V::mul(V::load_n(dx + i, c, 0), V::sub(V::load_n(g + i, c, 0), d)), c);
    });
  } else {  // dx = g - exp(log_softmax(x)) sum(g)
    const T ninf = -std::numeric_limits<T>::infinity();
    const Reg<V> m = line_max<V>(line, x);
    Reg<V> s = V::set1(0), gs = V::set1(0);
    line.each([&](ptrdiff_t i, std::size_t c) {
      s = V::add(s, vm::exp<V>(V::sub(V::load_n(x + i, c, ninf), m)));
      gs = V::add(gs, V::load_n(g + i, c, 0));
    });
    const Reg<V> l = line.sum(s, [](T v) { return std::log(v); });
    gs = line.sum(gs, same);
    line.each([&](ptrdiff_t i, std::size_t c) {
      Reg<V> p = vm::exp<V>(V::sub(V::sub(V::load_n(x + i, c, 0), m), l));
      V::store_n(dx + i, V::sub(V::load_n(g + i, c, 0), V::mul(p, gs)), c);
    });
  }
}

// f(line, offset) for every line of an (outer, n, inner) array, threads over lines
template <class V, class F>
void for_lines(ptrdiff_t outer, ptrdiff_t n, ptrdiff_t inner, F&& f) {
  const bool threaded = outer * n * inner >= kParallelMin;
  if (inner == 1) {
    const Row<V> row{n};
#pragma omp parallel for schedule(static) if (threaded)
    for (ptrdiff_t o = 0; o < outer; ++o) f(row, o * n);
  } else {
    const ptrdiff_t blocks = (inner + V::W - 1) / V::W;
#pragma omp parallel for schedule(static) if (threaded)
    for (ptrdiff_t t = 0; t < outer * blocks; ++t) {
      const ptrdiff_t o = t / blocks, j = (t % blocks) * V::W;
      f(Columns<V>{n, inner, std::size_t(std::min<ptrdiff_t>(V::W, inner - j))}, o * n * inner + j);
    }
  }
}

// -- argument checks (Python validated already: these guard the raw pointers) -----------

// flags 0, not forcecast: with noconvert() a wrong dtype is a TypeError, never a silent copy
template <class T>
using Array = py::array_t<T, 0>;

std::string shape_of(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) os << (d ? ", " : "") << a.shape(d);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    if (a.shape(d) != b.shape(d)) return false;
  return true;
}

template <class T>
const T* input(const Array<T>& a, const char* name, const py::array& like) {
  PYDL_CHECK(a.flags() & py::array::c_style, name << ": expected a C-contiguous array");
  PYDL_CHECK(same_shape(a, like), name << ": expected shape " << shape_of(like) << ", got " << shape_of(a));
  return a.data();
}

template <class T>
T* output(Array<T>& out, const Array<T>& x, std::initializer_list<const py::array*> inputs) {
  PYDL_CHECK(out.flags() & py::array::c_style, "out: expected a C-contiguous array");
  PYDL_CHECK(out.writeable(), "out: expected a writeable array");
  PYDL_CHECK(same_shape(out, x), "out: expected shape " << shape_of(x) << ", got " << shape_of(out));
  const char* o = static_cast<const char*>(static_cast<const py::array&>(out).data());
  for (const py::array* in : inputs) {
    const char* p = static_cast<const char*>(in->data());
    PYDL_CHECK(out.nbytes() == 0 || in->nbytes() == 0 || o + out.nbytes() <= p || p + in->nbytes() <= o,
               "out: must not overlap the inputs");
  }
  return out.mutable_data();
}

template <class T, class Op>
void activation(const Array<T>& x, Array<T>& out, const Op& op) {
  const T* xp = input(x, "x", x);
  T* yp = output(out, x, {&x});
  const ptrdiff_t n = x.size();
  py::gil_scoped_release nogil;
  with_simd<T>([&](auto v) { map_forward<decltype(v)>(xp, yp, n, op); });
}

template <class T, class Op>
void activation_backward(const Array<T>& g, const Array<T>& x, Array<T>& out, const Op& op) {
  const T* xp = input(x, "x", x);
  const T* gp = input(g, "grad", x);
  T* dp = output(out, x, {&x, &g});
  const ptrdiff_t n = x.size();
  py::gil_scoped_release nogil;
  with_simd<T>([&](auto v) { map_backward<decltype(v)>(gp, xp, dp, n, op); });
}

struct Lines {
  ptrdiff_t outer = 1, n = 1, inner = 1;
};

Lines lines_of(const py::array& x, int dim) {
  const int nd = static_cast<int>(x.ndim());
  PYDL_CHECK(nd >= 1, "x: expected at least 1 dimension, got shape " << shape_of(x));
  PYDL_CHECK(-nd <= dim && dim < nd, "dim: expected a dimension in [" << -nd << ", " << nd << "), got " << dim);
  dim = (dim + nd) % nd;
  Lines l;
  for (int d = 0; d < nd; ++d) (d < dim ? l.outer : d == dim ? l.n : l.inner) *= x.shape(d);
  return l;
}

template <class T, bool Log>
void softmax(const Array<T>& x, Array<T>& out, int dim) {
  const T* xp = input(x, "x", x);
  T* yp = output(out, x, {&x});
  const Lines l = lines_of(x, dim);
  py::gil_scoped_release nogil;
  with_simd<T>([&](auto v) {
    using V = decltype(v);
    for_lines<V>(l.outer, l.n, l.inner, [&](const auto& line, ptrdiff_t off) {
      softmax_line<V, Log>(line, xp + off, yp + off);
    });
  });
}

template <class T, bool Log>
void softmax_backward(const Array<T>& g, const Array<T>& x, Array<T>& out, int dim) {
  const T* xp = input(x, "x", x);
  const T* gp = input(g, "grad", x);
  T* dp = output(out, x, {&x, &g});
  const Lines l = lines_of(x, dim);
  py::gil_scoped_release nogil;
  with_simd<T>([&](auto v) {
    using V = decltype(v);
    for_lines<V>(l.outer, l.n, l.inner, [&](const auto& line, ptrdiff_t off) {
      softmax_backward_line<V, Log>(line, gp + off, xp + off, dp + off);
    });
  });
}

bool tanh_form(const std::string& approximate) {
  PYDL_CHECK(approximate == "none" || approximate == "tanh",
             "approximate: expected 'none' or 'tanh', got '" << approximate << "'");
  return approximate == "tanh";
}

// -- bindings: elementwise_<op>_<f32|f64>(x, out, ...), elementwise_<op>_backward_<..>(grad, x, out, ...)

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  auto name = [&](const char* op) { return "elementwise_" + std::string(op) + "_" + sfx; };
  const auto x = py::arg("x").noconvert(), out = py::arg("out").noconvert(),
             grad = py::arg("grad").noconvert();

  m.def(name("relu").c_str(), [](A x, A out) { activation(x, out, Relu{}); }, x, out);
  m.def(name("relu_backward").c_str(),
        [](A g, A x, A out) { activation_backward(g, x, out, Relu{}); }, grad, x, out);
  m.def(name("leaky_relu").c_str(),
        [](A x, A out, double s) { activation(x, out, LeakyRelu{s}); }, x, out, py::arg("negative_slope"));
  m.def(name("leaky_relu_backward").c_str(),
        [](A g, A x, A out, double s) { activation_backward(g, x, out, LeakyRelu{s}); },
        grad, x, out, py::arg("negative_slope"));
  m.def(name("elu").c_str(), [](A x, A out, double a) { activation(x, out, Elu{a}); }, x, out, py::arg("alpha"));
  m.def(name("elu_backward").c_str(),
        [](A g, A x, A out, double a) { activation_backward(g, x, out, Elu{a}); },
        grad, x, out, py::arg("alpha"));
  m.def(name("gelu").c_str(), [](A x, A out, const std::string& approximate) {
          if (tanh_form(approximate)) activation(x, out, GeluTanh{});
          else activation(x, out, GeluErf{});
        }, x, out, py::arg("approximate"));
  m.def(name("gelu_backward").c_str(), [](A g, A x, A out, const std::string& approximate) {
          if (tanh_form(approximate)) activation_backward(g, x, out, GeluTanh{});
          else activation_backward(g, x, out, GeluErf{});
        }, grad, x, out, py::arg("approximate"));
  m.def(name("sigmoid").c_str(), [](A x, A out) { activation(x, out, Sigmoid{}); }, x, out);
  m.def(name("sigmoid_backward").c_str(),
        [](A g, A x, A out) { activation_backward(g, x, out, Sigmoid{}); }, grad, x, out);
  m.def(name("tanh").c_str(), [](A x, A out) { activation(x, out, Tanh{}); }, x, out);
  m.def(name("tanh_backward").c_str(),
        [](A g, A x, A out) { activation_backward(g, x, out, Tanh{}); }, grad, x, out);
  m.def(name("softmax").c_str(), &softmax<T, false>, x, out, py::arg("dim"));
  m.def(name("softmax_backward").c_str(), &softmax_backward<T, false>, grad, x, out, py::arg("dim"));
  m.def(name("log_softmax").c_str(), &softmax<T, true>, x, out, py::arg("dim"));
  m.def(name("log_softmax_backward").c_str(), &softmax_backward<T, true>, grad, x, out, py::arg("dim"));
}

}  // namespace

void bind_elementwise(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
  m.def("vmath_f32", [](const std::string& fn, Array<float> x, Array<float> out) {
          const auto* names = std::begin(kVMathNames);
          const auto* it = std::find(names, std::end(kVMathNames), fn);
          PYDL_CHECK(it != std::end(kVMathNames), "fn: unknown vector math function '" << fn << "'");
          activation(x, out, VMath{static_cast<int>(it - names)});
        }, py::arg("fn"), py::arg("x").noconvert(), py::arg("out").noconvert(),
        "Test hook: out = vm::<fn>(x) in float32 at the current SIMD level "
        "(fn: exp, expm1, tanh, sigmoid, erf, normal_cdf).");
}

}  // namespace pydl
