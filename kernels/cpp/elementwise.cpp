// Elementwise family (pydl._cpp): activations, softmax and log_softmax, dropout, forward and backward.
//
// Computes, for float32 and float64 arrays of any shape (C-contiguous, n elements):
//   relu, leaky_relu, elu, gelu (erf or tanh form), sigmoid, tanh:  y = f(x),  dx = grad * f'(x),
//   sigmoid's and tanh's from the forward's output y: grad y (1 - y), grad (1 - y^2);
//   softmax, log_softmax along `dim`, x viewed as (outer, n, inner):  y = softmax(x) and, from y,
//   dx = y (grad - sum(grad y)) or dx = grad - exp(y_log) sum(grad), per line of n elements;
//   dropout: y = x * keep / (1 - p), keep drawn in the kernel from (seed, index) or given (below).
// Algorithm: activations are one pass of an op functor over registers (AVX-512 16 lanes, AVX2 8,
//   or scalar; masked tails) with the vm:: polynomials of simd_math.hpp, threads over 16K-element
//   chunks. Softmax: a max pass, an exp-sum pass, an output pass; threads over rows when inner == 1
//   (a row stays in L1 across passes), else over slabs of up to 32 vectors of columns swept row by row.
//   float64 runs the same code on scalar registers with libm exp/expm1/tanh/erf/erfc.
//
// Napkin math (AMD Zen 5, 2 cores, ~29 GB/s DRAM copy bandwidth): every op here is bandwidth-bound.
//   relu f32 forward moves 8N bytes (read x, write y): N = 4M -> 32 MB -> ~1.1 ms from DRAM;
//   backward 12N -> ~1.7 ms. (Repeated calls on 4M elements partly run from the 32 MB L3 and beat
//   that: ~0.3-0.45 ms measured.) gelu costs ~40 vector instructions per 16 elements: 4M elements
//   ~10M instructions, ~0.6 ms on two cores, under the DRAM floor. Softmax rows of a few K floats
//   stay in L1 between passes, so memory still sees 8N bytes: the relu floor. Column slabs re-stream
//   x three times (max, sum, output) from L2/L3: ~2x the relu time.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

#include "check.hpp"
#include "ndarray.hpp"
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

// sigmoid and tanh: bwd takes the forward's output y (saved by the forward), as PyTorch's do
struct Sigmoid {
  template <class V> Reg<V> fwd(Reg<V> x) const { return vm::sigmoid<V>(x); }
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> y) const {
    return V::mul(g, V::mul(y, V::sub(V::set1(1), y)));
  }
};

struct Tanh {
  template <class V> Reg<V> fwd(Reg<V> x) const { return vm::tanh<V>(x); }
  template <class V> Reg<V> bwd(Reg<V> g, Reg<V> y) const { return V::mul(g, V::sub(V::set1(1), V::mul(y, y))); }
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
constexpr ptrdiff_t kParallelMin = 2 * kChunk;  // measured: from two chunks on, 2 threads beat 1 even for relu

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
#pragma omp parallel for schedule(static) if (n >= kParallelMin) num_threads(num_threads())
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
// A line object walks the softmax lines of one task and owns their accumulators (Acc, one
// register per slot). each(f) calls f(offset, count, slot) for every vector.
// Row: one contiguous row of n; a single slot, reduced across lanes at the end (broadcast).
//   The row stays in L1 between passes, so the sum pass stores exp(x - max) for reuse.
// Slab: `cols` adjacent columns of an (n, inner) block, swept row by row (contiguous pieces
//   of <= kSlabVecs vectors), one slot per vector, one softmax per lane. Walking a column
//   down its own stride would touch a new page per element and, for power-of-two strides,
//   thrash a handful of cache sets; rows stream instead, and passes recompute exp.

constexpr int kSlabVecs = 32;

// K accumulator registers (a plain array: std::array<__m512, K> drops the vector type's attributes)
template <class V, int K>
struct Regs {
  Reg<V> r[K];
  Reg<V>& operator[](int i) { return r[i]; }
  const Reg<V>& operator[](int i) const { return r[i]; }
  void fill(typename V::T v) {
    for (auto& e : r) e = V::set1(v);
  }
};

template <class V>
struct Row {
  using Acc = Regs<V, 1>;
  static constexpr bool kCached = true;
  ptrdiff_t n;
  template <class F> void each(F&& f) const {
    for_vectors<V>(0, n, [&](ptrdiff_t i, std::size_t c) { f(i, c, 0); });
  }
  void max(Acc& m) const { m[0] = V::set1(V::reduce_max(m[0])); }
  template <class F> void sum(Acc& s, F&& f) const { s[0] = V::set1(f(V::reduce_add(s[0]))); }
};

template <class V>
struct Slab {
  using Acc = Regs<V, kSlabVecs>;
  static constexpr bool kCached = false;
  ptrdiff_t n, inner, cols;  // cols <= kSlabVecs * W
  template <class F> void each(F&& f) const {
    for (ptrdiff_t k = 0; k < n; ++k)
      for_vectors<V>(0, cols, [&](ptrdiff_t j, std::size_t c) { f(k * inner + j, c, int(j / V::W)); });
  }
  void max(Acc&) const {}
  template <class F> void sum(Acc& s, F&& f) const {  // once per n rows: scalar is fine
    for (ptrdiff_t v = 0; v * V::W < cols; ++v) {
      typename V::T t[V::W];
      V::store(t, s[v]);
      for (auto& e : t) e = f(e);
      s[v] = V::load(t);
    }
  }
};

template <class V, class Acc>
Acc filled(typename V::T v) {
  Acc a;
  a.fill(v);
  return a;
}

// Masked-off lanes load -inf: they add exp(-inf) = 0. A line holding NaN or +inf gets a NaN
// sum (x - max is NaN somewhere), so the whole line is NaN, as in the reference.
template <class V, class Line>
typename Line::Acc line_max(const Line& line, const typename V::T* x) {
  const auto ninf = -std::numeric_limits<typename V::T>::infinity();
  auto m = filled<V, typename Line::Acc>(ninf);
  line.each([&](ptrdiff_t i, std::size_t c, int a) { m[a] = V::max(m[a], V::load_n(x + i, c, ninf)); });
  line.max(m);
  return m;
}

template <class V, bool Log, class Line>
void softmax_line(const Line& line, const typename V::T* x, typename V::T* y) {
  using T = typename V::T;
  const T ninf = -std::numeric_limits<T>::infinity();
  const auto m = line_max<V>(line, x);
  auto s = filled<V, typename Line::Acc>(0);
  line.each([&](ptrdiff_t i, std::size_t c, int a) {
    Reg<V> e = vm::exp<V>(V::sub(V::load_n(x + i, c, ninf), m[a]));
    if constexpr (!Log && Line::kCached) V::store_n(y + i, e, c);
    s[a] = V::add(s[a], e);
  });
  if constexpr (Log) {
    line.sum(s, [](T v) { return std::log(v); });
    line.each([&](ptrdiff_t i, std::size_t c, int a) {
      V::store_n(y + i, V::sub(V::sub(V::load_n(x + i, c, 0), m[a]), s[a]), c);
    });
  } else {
    line.sum(s, [](T v) { return T(1) / v; });
    line.each([&](ptrdiff_t i, std::size_t c, int a) {
      Reg<V> e = Line::kCached ? V::load_n(y + i, c, 0) : vm::exp<V>(V::sub(V::load_n(x + i, c, 0), m[a]));
      V::store_n(y + i, V::mul(e, s[a]), c);
    });
  }
}

// From the forward's output y (saved by the forward): softmax dx = y (g - sum(g y)), log_softmax
// dx = g - exp(y) sum(g). Two passes (the sum, then dx), against the forward's three with its exp.
template <class V, bool Log, class Line>
void softmax_backward_line(const Line& line, const typename V::T* g, const typename V::T* y,
                           typename V::T* dx) {
  auto d = filled<V, typename Line::Acc>(0);
  line.each([&](ptrdiff_t i, std::size_t c, int a) {
    const Reg<V> gv = V::load_n(g + i, c, 0);
    d[a] = Log ? V::add(d[a], gv) : V::fma(gv, V::load_n(y + i, c, 0), d[a]);
  });
  line.sum(d, [](typename V::T v) { return v; });
  line.each([&](ptrdiff_t i, std::size_t c, int a) {
    const Reg<V> gv = V::load_n(g + i, c, 0), yv = V::load_n(y + i, c, 0);
    V::store_n(dx + i, Log ? V::sub(gv, V::mul(vm::exp<V>(yv), d[a])) : V::mul(yv, V::sub(gv, d[a])), c);
  });
}

// f(line, offset) for every task of an (outer, n, inner) array: rows, or slabs of columns
template <class V, class F>
void for_lines(ptrdiff_t outer, ptrdiff_t n, ptrdiff_t inner, F&& f) {
  const bool threaded = outer * n * inner >= kParallelMin;
  if (inner == 1) {
    const Row<V> row{n};
#pragma omp parallel for schedule(static) if (threaded) num_threads(num_threads())
    for (ptrdiff_t o = 0; o < outer; ++o) f(row, o * n);
  } else {
    constexpr ptrdiff_t width = kSlabVecs * V::W;
    const ptrdiff_t slabs = (inner + width - 1) / width;
#pragma omp parallel for schedule(static) if (threaded) num_threads(num_threads())
    for (ptrdiff_t t = 0; t < outer * slabs; ++t) {
      const ptrdiff_t o = t / slabs, j = (t % slabs) * width;
      f(Slab<V>{n, inner, std::min(width, inner - j)}, o * n * inner + j);
    }
  }
}

// -- argument checks (Python validated already: these guard the raw pointers) -----------

// with noconvert() a wrong dtype is a TypeError, never a silent copy
template <class T>
using Array = NdArray<T>;  // exact dtype, any strides, never converted (ndarray.hpp)

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
  vm::with_vec<T>([&](auto v) { map_forward<decltype(v)>(xp, yp, n, op); });
}

// dx = op.bwd(g, x): x is the forward's input, or its output for Sigmoid and Tanh (`name` "y")
template <class T, class Op>
void activation_backward(const Array<T>& g, const Array<T>& x, Array<T>& out, const Op& op,
                         const char* name = "x") {
  const T* xp = input(x, name, x);
  const T* gp = input(g, "grad", x);
  T* dp = output(out, x, {&x, &g});
  const ptrdiff_t n = x.size();
  py::gil_scoped_release nogil;
  vm::with_vec<T>([&](auto v) { map_backward<decltype(v)>(gp, xp, dp, n, op); });
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
  vm::with_vec<T>([&](auto v) {
    using V = decltype(v);
    for_lines<V>(l.outer, l.n, l.inner, [&](const auto& line, ptrdiff_t off) {
      softmax_line<V, Log>(line, xp + off, yp + off);
    });
  });
}

template <class T, bool Log>
void softmax_backward(const Array<T>& g, const Array<T>& y, Array<T>& out, int dim) {
  const T* yp = input(y, "y", y);
  const T* gp = input(g, "grad", y);
  T* dp = output(out, y, {&y, &g});
  const Lines l = lines_of(y, dim);
  py::gil_scoped_release nogil;
  vm::with_vec<T>([&](auto v) {
    using V = decltype(v);
    for_lines<V>(l.outer, l.n, l.inner, [&](const auto& line, ptrdiff_t off) {
      softmax_backward_line<V, Log>(line, gp + off, yp + off, dp + off);
    });
  });
}

bool tanh_form(const std::string& approximate) {
  PYDL_CHECK(approximate == "none" || approximate == "tanh",
             "approximate: expected 'none' or 'tanh', got '" << approximate << "'");
  return approximate == "tanh";
}

// -- dropout: y = x * (keep ? 1/(1-p) : 0), the keep-mask drawn in the kernel -----------------
// Element i (C order) is kept when the top 24 bits of splitmix64(seed + (i + 1) * golden) are
// >= ceil(p * 2^24): the integer form of pydl.ops.dropout_mask's u = bits / 2^24 >= p (bits is
// an integer and p * 2^24 is exact in double), so the mask is the same bit for bit. A multiply,
// not a select: a dropped NaN stays NaN, as in the reference (x * 0).

// splitmix64's constants: the counter step (the golden ratio) and the two mixing multipliers
constexpr std::uint64_t kSplitmixStep = 0x9E3779B97F4A7C15ull, kSplitmixMul1 = 0xBF58476D1CE4E5B9ull,
                        kSplitmixMul2 = 0x94D049BB133111EBull;

// splitmix64 of element i's counter, as dropout_mask draws it
inline std::uint64_t dropout_hash(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + (i + 1) * kSplitmixStep;
  z = (z ^ (z >> 30)) * kSplitmixMul1;
  z = (z ^ (z >> 27)) * kSplitmixMul2;
  return z ^ (z >> 31);
}

#if defined(__AVX2__)
// AVX2 has no 64-bit multiply (vpmullq is AVX-512DQ), and GCC left the hash loop scalar with a
// branch per element: 2.9 ms for 1M floats on two Zen 5 cores held to AVX2, 0.12 ms at AVX-512.
// Four counters per register: a * c mod 2^64 = alo clo + ((ahi clo + alo chi) << 32).
inline __m256i mul64_const(__m256i a, std::uint64_t c) {
  const __m256i cl = _mm256_set1_epi64x(static_cast<long long>(c & 0xffffffffu));
  const __m256i ch = _mm256_set1_epi64x(static_cast<long long>(c >> 32));
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), cl), _mm256_mul_epu32(a, ch));
  return _mm256_add_epi64(_mm256_mul_epu32(a, cl), _mm256_slli_epi64(cross, 32));
}

// all-ones in the 64-bit lanes whose element is dropped: (hash >> 40) < th, z the counters' seed + (i + 1) golden
inline __m256i dropped4(__m256i z, __m256i th) {
  z = mul64_const(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), kSplitmixMul1);
  z = mul64_const(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), kSplitmixMul2);
  z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
  return _mm256_cmpgt_epi64(th, _mm256_srli_epi64(z, 40));  // both below 2^25: the signed compare holds
}

// y[i] = x[i] * (kept ? sc : 0) for i in [b, e), 8 floats or 4 doubles a step; returns where it stopped
template <class T>
ptrdiff_t dropout_seeded_avx2(const T* x, T* y, ptrdiff_t b, ptrdiff_t e, std::uint64_t seed, std::uint64_t th, T sc) {
  constexpr int L = std::is_same_v<T, float> ? 8 : 4;
  constexpr std::uint64_t G = kSplitmixStep;
  const __m256i thv = _mm256_set1_epi64x(static_cast<long long>(th));
  const __m256i step4 = _mm256_set1_epi64x(static_cast<long long>(4 * G));
  const std::uint64_t i0 = static_cast<std::uint64_t>(b);
  __m256i z = _mm256_setr_epi64x(static_cast<long long>(seed + (i0 + 1) * G), static_cast<long long>(seed + (i0 + 2) * G),
                                 static_cast<long long>(seed + (i0 + 3) * G), static_cast<long long>(seed + (i0 + 4) * G));
  ptrdiff_t i = b;
  if constexpr (L == 8) {
    const __m256i low32 = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m256 scv = _mm256_set1_ps(sc);
    for (; i + 8 <= e; i += 8) {
      const __m256i z1 = _mm256_add_epi64(z, step4);
      const __m256i d0 = _mm256_permutevar8x32_epi32(dropped4(z, thv), low32);
      const __m256i d1 = _mm256_permutevar8x32_epi32(dropped4(z1, thv), low32);
      const __m256 drop = _mm256_castsi256_ps(_mm256_permute2x128_si256(d0, d1, 0x20));
      _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_andnot_ps(drop, scv)));
      z = _mm256_add_epi64(z1, step4);
    }
  } else {
    const __m256d scv = _mm256_set1_pd(sc);
    for (; i + 4 <= e; i += 4) {
      const __m256d drop = _mm256_castsi256_pd(dropped4(z, thv));
      _mm256_storeu_pd(y + i, _mm256_mul_pd(_mm256_loadu_pd(x + i), _mm256_andnot_pd(drop, scv)));
      z = _mm256_add_epi64(z, step4);
    }
  }
  return i;
}
#endif

template <class T>
void dropout_seeded(const Array<T>& x, Array<T>& out, std::uint64_t seed, double p) {
  PYDL_CHECK(p >= 0 && p <= 1, "p: expected a probability in [0, 1], got " << p);
  const T* xp = input(x, "x", x);
  T* yp = output(out, x, {&x});
  const ptrdiff_t n = x.size();
  const std::uint64_t thresh = static_cast<std::uint64_t>(std::ceil(p * 16777216.0));
  const T scale = p == 1 ? T(0) : T(1.0 / (1.0 - p));
  py::gil_scoped_release nogil;
  [[maybe_unused]] const bool avx2 = simd_level() == Simd::avx2;
  for_chunks(n, [&](ptrdiff_t b, ptrdiff_t e) {
    const std::uint64_t sd = seed, th = thresh;  // locals, not captured references: the loop vectorizes
    const T sc = scale;
    ptrdiff_t start = b;
#if defined(__AVX2__)
    if (avx2) start = dropout_seeded_avx2(xp, yp, b, e, sd, th, sc);  // the loop below does its tail
#endif
    // blocks of 256: the hash loop has no branch and vectorizes at AVX-512 (which has the 64-bit
    // multiply); the multiply by the per-element factor is a second, streaming loop
    // (the factor as sc's bits and a mask of the keep bit, not T(kept) * sc: without a vector
    // 64-bit multiply GCC kept the scalar loop and branched on `kept`, 2.8 ms for 1M floats at x86-64-v2)
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    U scb;
    std::memcpy(&scb, &sc, sizeof scb);
    constexpr ptrdiff_t B = 256;
    U k[B];
    for (ptrdiff_t s = start; s < e; s += B) {
      const ptrdiff_t m = std::min(B, e - s);
#pragma omp simd
      for (ptrdiff_t j = 0; j < m; ++j) k[j] = scb & (U(0) - U((dropout_hash(sd, std::uint64_t(s + j)) >> 40) >= th));
      T kf[B];
      std::memcpy(kf, k, sizeof(U) * static_cast<size_t>(m));
#pragma omp simd
      for (ptrdiff_t j = 0; j < m; ++j) yp[s + j] = xp[s + j] * kf[j];
    }
  });
}

template <class T>
void dropout_masked(const Array<T>& x, const py::array& mask, Array<T>& out, double p) {
  PYDL_CHECK(mask.dtype().kind() == 'b' && mask.itemsize() == 1, "mask: expected a bool array");
  PYDL_CHECK(mask.flags() & py::array::c_style, "mask: expected a C-contiguous array");
  PYDL_CHECK(same_shape(mask, x), "mask: expected shape " << shape_of(x) << ", got " << shape_of(mask));
  const T* xp = input(x, "x", x);
  T* yp = output(out, x, {&x});
  const auto* mp = static_cast<const std::uint8_t*>(mask.data());
  const ptrdiff_t n = x.size();
  const T scale = p == 1 ? T(0) : T(1.0 / (1.0 - p));
  py::gil_scoped_release nogil;
  for_chunks(n, [&](ptrdiff_t b, ptrdiff_t e) {
    // no branch: written `mp[i] ? scale : 0`, a random mask mispredicted half the time (1.9 ms
    // for 1M floats on two Zen 5 cores)
#pragma omp simd
    for (ptrdiff_t i = b; i < e; ++i) yp[i] = xp[i] * (T(mp[i] != 0) * scale);
  });
}

// -- bindings: elementwise_<op>_<f32|f64>(x, out, ...), elementwise_<op>_backward_<..>(grad, x, out, ...)
//    (grad, y, out, ...) for sigmoid, tanh, softmax and log_softmax: y the forward's output

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  auto name = [&](const char* op) { return "elementwise_" + std::string(op) + "_" + sfx; };
  const auto x = py::arg("x").noconvert(), y = py::arg("y").noconvert(), out = py::arg("out").noconvert(),
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
  // from the forward's output y
  m.def(name("sigmoid_backward").c_str(),
        [](A g, A y, A out) { activation_backward(g, y, out, Sigmoid{}, "y"); }, grad, y, out);
  m.def(name("tanh").c_str(), [](A x, A out) { activation(x, out, Tanh{}); }, x, out);
  m.def(name("tanh_backward").c_str(),
        [](A g, A y, A out) { activation_backward(g, y, out, Tanh{}, "y"); }, grad, y, out);
  m.def(name("softmax").c_str(), &softmax<T, false>, x, out, py::arg("dim"));
  m.def(name("softmax_backward").c_str(), &softmax_backward<T, false>, grad, y, out, py::arg("dim"));
  m.def(name("log_softmax").c_str(), &softmax<T, true>, x, out, py::arg("dim"));
  m.def(name("log_softmax_backward").c_str(), &softmax_backward<T, true>, grad, y, out, py::arg("dim"));
  // the backward is the same map applied to the upstream gradient
  m.def(name("dropout_seeded").c_str(), &dropout_seeded<T>, x, out, py::arg("seed"), py::arg("p"));
  m.def(name("dropout_masked").c_str(), &dropout_masked<T>, x, py::arg("mask").noconvert(), out, py::arg("p"));
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
