// rnn family (pydl._cpp): Elman RNN (tanh | relu), LSTM and GRU sequences,
// forward and backward through time. Cells are sequences of one step.
//
// Entry points (T = f32 | f64; every array C-contiguous, of one dtype; the
// adapter pydl/backends/cpp/rnn.py makes them so):
//   rnn_forward_<T>(kind, relu, x, w_ih, w_hh, b_ih|None, b_hh|None, h0|None, c0|None,
//                   hs, cs|None, gates|None)
//     kind 0 rnn, 1 lstm, 2 gru. x (S, B, I) (S steps), w_ih (G*H, I), w_hh (G*H, H).
//     Writes hs (S+1, B, H) (h0, or zeros, first), cs (S+1, B, H) for the LSTM,
//     and when given the activated gates per step (S, B, 4H): LSTM [i, f, g, o],
//     GRU [r, z, n, W_hn h + b_hn] (the reference's saved layouts).
//   rnn_backward_<T>(kind, relu, x, w_ih, w_hh, has_b_ih, has_b_hh, hs, cs|None, gates|None,
//                    g_out|None, g_hn|None, g_cn|None, dx|None, dw_ih|None, dw_hh|None,
//                    db_ih|None, db_hh|None, dh0|None, dc0|None)
//     Gradients of what is given (None: not wanted, not computed).
//
// Forward algorithm:
//   1. xw = x @ w_ih^T + bias, one GEMM over all S*B rows (bias = b_ih + b_hh for the
//      RNN and LSTM; b_ih for the GRU, whose b_hn must stay inside r * (W_hn h + b_hn)).
//   2. Thread p owns hidden units [u0, u1); the B of its step GEMMs (H, G*(u1-u0)) is
//      w_hh^T's columns of those units, gate 0's, then gate 1's, ..., packed once per call
//      by the thread into the GEMM's panels (pack_recurrent, gemm::pack_b_once): every
//      step's GEMM then streams contiguous panels (gemm::gemm_prepacked).
//   3. One parallel region for the whole sequence. Per step, each thread runs one
//      GEMM gh[:, G*u0 : G*u1] = h_prev @ its B (nthreads = 1), then one
//      fused vectorized pass over its units (gates, cell, output, saved activations),
//      then a barrier (the next step's GEMM reads every unit of h). One barrier a step,
//      no fork/join.
// Backward (one parallel region again, units owned as in the forward):
//   pointwise(t) on own units -> d[t] (S, B, G*H) in the standard gate order;
//   barrier; dh[:, own units] = d_hh[t] @ w_hh[:, own units] (K = G*H; the thread's
//   columns of w_hh packed once per call, as in the forward);
//   the next pointwise reads only its own units of dh, so again one barrier a step.
//   After the loop, with every thread on each GEMM: dx = d_ih @ w_ih,
//   dw_ih = d_ih^T @ x, dw_hh = d_hh^T @ hs[0:S] (one GEMM over S*B rows each),
//   db = column sums of d (LSTM/RNN: d_ih = d_hh), added up in the loop by the thread that
//   owns the columns, as it writes them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <new>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "check.hpp"
#include "gemm.hpp"
#include "ndarray.hpp"
#include "simd.hpp"
#include "simd_math.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

template <class T>
using Array = NdArray<T>;
template <class T>
using Opt = std::optional<Array<T>>;

enum Kind : int { RNN = 0, LSTM = 1, GRU = 2 };

int gates_of(int kind) { return kind == LSTM ? 4 : kind == GRU ? 3 : 1; }

// A C-contiguous array of exactly this shape (inputs and outputs alike).
template <class T>
const T* in(const Array<T>& a, std::initializer_list<int64_t> shape, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size()) && (a.flags() & py::array::c_style);
  int d = 0;
  for (int64_t s : shape) ok = ok && a.ndim() > d && a.shape(d++) == s;
  if (!ok) {
    std::ostringstream want;
    want << "(";
    int i = 0;
    for (int64_t s : shape) want << (i++ ? ", " : "") << s;
    want << ")";
    PYDL_CHECK(false, name << ": expected a C-contiguous array of shape " << want.str() << ", got "
                           << shape_str(a));
  }
  return a.data();
}

template <class T>
const T* in(const Opt<T>& a, std::initializer_list<int64_t> shape, const char* name) {
  return a ? in(*a, shape, name) : nullptr;
}

template <class T>
T* out(Opt<T>& a, std::initializer_list<int64_t> shape, const char* name) {
  if (!a) return nullptr;
  in(*a, shape, name);
  PYDL_CHECK(a->writeable(), name << ": must be writeable");
  return a->mutable_data();
}

template <class T>
T* out(Array<T>& a, std::initializer_list<int64_t> shape, const char* name) {
  in(a, shape, name);
  PYDL_CHECK(a.writeable(), name << ": must be writeable");
  return a.mutable_data();
}

// Hidden units per thread: contiguous ranges, multiples of 16 units (a cache line of
// float32) so that threads never share a line of h, c or dh.
struct Split {
  int nt;
  int64_t chunk, H;
  int64_t u0(int p) const { return std::min(H, p * chunk); }
  int64_t u1(int p) const { return std::min(H, (p + 1) * chunk); }
};

Split split_units(int64_t B, int64_t H, int G) {
  int nt = num_threads();
  // a step's recurrent GEMM below ~0.25 MFLOP is over before threads would meet at a barrier
  if (static_cast<double>(B) * G * H * H < 131072.0 || H < 32) nt = 1;
  int64_t chunk = std::max<int64_t>(1, (H + nt - 1) / nt);
  chunk = (chunk + 15) / 16 * 16;
  nt = static_cast<int>(std::max<int64_t>(1, (H + chunk - 1) / chunk));
  return {nt, chunk, H};
}

template <class T>
struct Fwd {
  int kind;
  bool relu;
  int64_t S, B, I, H;
  const T *x, *w_ih, *w_hh, *b_ih, *b_hh, *h0, *c0;
  T *hs, *cs, *gates;
};

// The big buffers of a call (the input projection, the gate gradients, the packed recurrent
// weights) are carved from a workspace the calling thread keeps between calls, up to kKeepBytes:
// allocated afresh, their pages were faulted in and zeroed by the kernel on every call (LSTM
// T100 B64 I512 H512, one thread: 10-15% of the forward in the page-fault handler). They are not
// zeroed: the kernels write every element they read. A bigger workspace is freed after the call.
constexpr std::size_t kKeepBytes = std::size_t(256) << 20;

inline gemm::detail::Scratch& workspace() {  // (the GEMM's own scratch is another one)
  static thread_local gemm::detail::Scratch w;
  return w;
}

template <class T>
class Buffers {
 public:
  // one buffer of n elements per entry, each 64-byte aligned
  explicit Buffers(std::initializer_list<int64_t> sizes) {
    std::size_t total = 0;
    for (int64_t n : sizes) total += bytes(n);
    char* q = static_cast<char*>(workspace().get(total));
    for (int64_t n : sizes) {
      ptrs_.push_back(reinterpret_cast<T*>(q));
      q += bytes(n);
    }
  }
  ~Buffers() {
    if (workspace().cap > kKeepBytes) workspace().release();
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
  T* operator[](std::size_t i) const { return ptrs_[i]; }

 private:
  static std::size_t bytes(int64_t n) { return (static_cast<std::size_t>(n) * sizeof(T) + 63) / 64 * 64; }
  std::vector<T*> ptrs_;
};

// Row stride for a buffer of rows of n elements that the GEMMs read or write a row tile at a
// time: n, or one cache line more when n's rows would lie a multiple of 2 KiB apart (an LSTM of
// 256 units: 4 KiB), which puts a tile's rows in a few L1 sets (see pack_recurrent).
template <class T>
int64_t padded_ld(int64_t n) {
  return (n * static_cast<int64_t>(sizeof(T))) % 2048 == 0 && n > 0 ? n + 64 / static_cast<int64_t>(sizeof(T)) : n;
}

// The fused pointwise pass of one step for units [u0, u1) of every row.
// xw: the step's input projection (B rows, ldx apart, of G*H), standard gate order, biases in;
// gh: the recurrent GEMM's result, rows ldg apart, gate k of unit u0 + j at [off + k*gs + j]
// (off = G*u0, gs = u1 - u0 in the per-thread regrouped layout; off = u0, gs = H in the standard one).
template <class V, class T>
void step_forward(const Fwd<T>& a, int64_t t, int64_t u0, int64_t u1, const T* xw, int64_t ldx, const T* gh,
                  int64_t ldg, int64_t off, int64_t gs) {
  using R = typename V::R;
  const int64_t B = a.B, H = a.H, nu = u1 - u0;
  const R zero = V::set1(T(0));
  for (int64_t b = 0; b < B; ++b) {
    const T* xr = xw + b * ldx;
    const T* gr = gh + b * ldg + off;
    const T* hp = a.hs + (t * B + b) * H;
    T* hn = a.hs + ((t + 1) * B + b) * H;
    T* sv = a.gates ? a.gates + (t * B + b) * 4 * H : nullptr;
    for (int64_t j = 0; j < nu; j += V::W) {
      const std::size_t n = static_cast<std::size_t>(std::min<int64_t>(V::W, nu - j));
      const int64_t u = u0 + j;
      auto X = [&](int k) { return V::load_n(xr + k * H + u, n, T(0)); };
      auto Hh = [&](int k) { return V::load_n(gr + k * gs + j, n, T(0)); };
      if (a.kind == RNN) {
        const R z = V::add(X(0), Hh(0));
        V::store_n(hn + u, a.relu ? V::max(zero, z) : vm::tanh<V>(z), n);
      } else if (a.kind == LSTM) {
        const R i = vm::sigmoid<V>(V::add(X(0), Hh(0)));
        const R f = vm::sigmoid<V>(V::add(X(1), Hh(1)));
        const R g = vm::tanh<V>(V::add(X(2), Hh(2)));
        const R o = vm::sigmoid<V>(V::add(X(3), Hh(3)));
        const R cp = V::load_n(a.cs + (t * B + b) * H + u, n, T(0));
        const R c = V::fma(f, cp, V::mul(i, g));
        V::store_n(a.cs + ((t + 1) * B + b) * H + u, c, n);
        V::store_n(hn + u, V::mul(o, vm::tanh<V>(c)), n);
        if (sv) {
          V::store_n(sv + u, i, n);
          V::store_n(sv + H + u, f, n);
          V::store_n(sv + 2 * H + u, g, n);
          V::store_n(sv + 3 * H + u, o, n);
        }
      } else {  // GRU
        const R r = vm::sigmoid<V>(V::add(X(0), Hh(0)));
        const R z = vm::sigmoid<V>(V::add(X(1), Hh(1)));
        const R hnn = Hh(2);
        const R nn = vm::tanh<V>(V::fma(r, hnn, X(2)));
        const R h = V::load_n(hp + u, n, T(0));
        V::store_n(hn + u, V::fma(z, V::sub(h, nn), nn), n);  // (1 - z) n + z h
        if (sv) {
          V::store_n(sv + u, r, n);
          V::store_n(sv + H + u, z, n);
          V::store_n(sv + 2 * H + u, nn, n);
          V::store_n(sv + 3 * H + u, hnn, n);
        }
      }
    }
  }
}

// Thread p's recurrent weights as the B of its step GEMMs (H x G*nu), for gemm::pack_b_once:
// column c = g*nu + j is w_hh's row g*H + u0 + j, read along k. A panel within one gate is a
// strided view of w_hh^T (gemm's packing, register transposes); one across a gate boundary (nu
// not a multiple of the panel width) goes lane by lane. Read in place instead, as a row-major
// regrouped copy, the step GEMMs found B's rows G*H apart (4 KiB for an LSTM of 256 units: all
// in a few L1 sets) and fetched them again for every row tile of every step.
template <class T>
void pack_recurrent(const T* w_hh, int64_t H, int64_t u0, int64_t nu, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                    T* dst) {
  const int W = gemm::panel_width<T>();
  for (int64_t q = 0; q < nc; q += W) {
    const int64_t c = n0 + q, w = std::min<int64_t>(W, nc - q), g = c / nu, j = c % nu;
    T* d = dst + q * kc;  // panel q / W
    if (j + w <= nu) {
      gemm::pack_b_view<T>({w_hh + (g * H + u0) * H, 1, H}, k0, kc, j, w, d);
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int l = 0; l < W; ++l) {
          const int64_t cl = c + l;
          d[k * W + l] = l < w ? w_hh[((cl / nu) * H + u0 + cl % nu) * H + k0 + k] : T(0);
        }
    }
  }
}

template <class T>
void forward(const Fwd<T>& a) {
  const int G = gates_of(a.kind);
  const int64_t S = a.S, B = a.B, I = a.I, H = a.H, GH = G * H;
  // states at step 0
  for (int64_t e = 0; e < B * H; ++e) a.hs[e] = a.h0 ? a.h0[e] : T(0);
  if (a.kind == LSTM)
    for (int64_t e = 0; e < B * H; ++e) a.cs[e] = a.c0 ? a.c0[e] : T(0);
  if (B == 0 || H == 0) return;
  // 1. input projection of every step
  std::vector<T> bias;
  const T* bias_p = nullptr;
  if (a.kind == GRU) {
    bias_p = a.b_ih;
  } else if (a.b_ih && a.b_hh) {
    bias.resize(GH);
    for (int64_t j = 0; j < GH; ++j) bias[j] = a.b_ih[j] + a.b_hh[j];
    bias_p = bias.data();
  } else {
    bias_p = a.b_ih ? a.b_ih : a.b_hh;
  }
  const int64_t ld = padded_ld<T>(GH);  // rows of xw and gh
  const Split sp = split_units(B, H, G);
  // each thread's recurrent weights, packed by the thread into the GEMM's panels (pack_recurrent)
  std::vector<int64_t> poff(static_cast<std::size_t>(sp.nt) + 1, 0);
  for (int p = 0; p < sp.nt; ++p)
    poff[p + 1] = poff[p] + (S > 1 ? gemm::packed_b_elems<T>(H, G * (sp.u1(p) - sp.u0(p))) : 0);
  const Buffers<T> buf({S * B * ld, B * ld, poff[sp.nt]});
  T* const xw = buf[0];  // (S*B, GH), rows ld apart
  T* const gh = buf[1];  // (B, GH), rows ld apart
  T* const wpk = buf[2];
  gemm::Epilogue<T> ep;
  ep.bias = bias_p;
  gemm::gemm<T>(S * B, GH, I, {a.x, I, 1}, {a.w_ih, 1, I}, xw, ld, ep, 0);
  if (S == 1) {
    // One step (the cells): regrouping w_hh would cost as much as the step's GEMM itself;
    // gh = h @ w_hh^T (+ b_hh for the GRU) on every thread, then the pointwise pass by units.
    gemm::Epilogue<T> e1;
    if (a.kind == GRU) e1.bias = a.b_hh;
    // with a zero state too: 0 * a non-finite weight is NaN, as in the reference and torch
    std::vector<T> hz;
    if (!a.h0) hz.assign(static_cast<std::size_t>(B * H), T(0));
    gemm::gemm<T>(B, GH, H, {a.h0 ? a.h0 : hz.data(), H, 1}, {a.w_hh, 1, H}, gh, ld, e1, 0);
    vm::with_vec<T>([&](auto v) {
      using V = decltype(v);
#pragma omp parallel for num_threads(sp.nt) if (sp.nt > 1) schedule(static)
      for (int p = 0; p < sp.nt; ++p)
        step_forward<V, T>(a, 0, sp.u0(p), sp.u1(p), xw, ld, gh, ld, sp.u0(p), H);
    });
    return;
  }
  // 2. b_hh regrouped per thread for the GRU (thread p's columns: gate 0's units, gate 1's, ...)
  std::vector<T> bp;
  if (a.kind == GRU && a.b_hh) {
    bp.resize(GH);
    for (int p = 0; p < sp.nt; ++p) {
      const int64_t u0 = sp.u0(p), nu = sp.u1(p) - u0;
      for (int g = 0; g < G; ++g)
        for (int64_t j = 0; j < nu; ++j) bp[G * u0 + g * nu + j] = a.b_hh[g * H + u0 + j];
    }
  }
  // 3. the recurrence
  vm::with_vec<T>([&](auto v) {
    using V = decltype(v);
#pragma omp parallel num_threads(sp.nt) if (sp.nt > 1)
    {
      const int p = omp_get_thread_num();
      const int64_t u0 = sp.u0(p), u1 = sp.u1(p), c0 = G * u0, nc = G * (u1 - u0);
      gemm::Epilogue<T> e;
      if (!bp.empty()) e.bias = bp.data() + c0;
      const int64_t nu = u1 - u0;
      const gemm::PackedB<T> w = gemm::pack_b_once<T>(H, nc, wpk + poff[p], [&](int64_t k0, int64_t kc, int64_t n0, int64_t n, T* d) {
        pack_recurrent(a.w_hh, H, u0, nu, k0, kc, n0, n, d);
      });
      for (int64_t t = 0; t < S; ++t) {
        if (nc > 0) {
          gemm::gemm_prepacked<T>(B, {a.hs + t * B * H, H, 1}, w, gh + c0, ld, e, 1);
          step_forward<V, T>(a, t, u0, u1, xw + t * B * ld, ld, gh, ld, c0, u1 - u0);
        }
        if (sp.nt > 1) {
#pragma omp barrier
        }
      }
    }
  });
}

template <class T>
struct Bwd {
  int kind;
  bool relu;
  int64_t S, B, I, H;
  const T *x, *w_ih, *w_hh, *hs, *cs, *gates, *g_out, *g_hn, *g_cn;
  T *dx, *dw_ih, *dw_hh, *db_ih, *db_hh, *dh0, *dc0;
};

// Gradients of the pre-activations of step t for units [u0, u1): d_ih (and d_hh, GRU),
// standard gate order, rows of G*H, ld apart; dh (B, H) holds the gradient reaching h_{t+1} from
// step t+1 and leaves (GRU) the direct part z * dh; dc (B, H) is carried likewise.
template <class V, class T>
void step_backward(const Bwd<T>& a, int64_t t, int64_t u0, int64_t u1, T* d_ih, T* d_hh, int64_t ld, T* dh, T* dc) {
  using R = typename V::R;
  const int64_t B = a.B, H = a.H, nu = u1 - u0;
  const R one = V::set1(T(1)), zero = V::set1(T(0));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row = t * B + b;
    T* di = d_ih + row * ld;
    T* dhh = d_hh + row * ld;
    const T* go = a.g_out ? a.g_out + row * H : nullptr;
    const T* sv = a.gates ? a.gates + row * 4 * H : nullptr;
    for (int64_t j = 0; j < nu; j += V::W) {
      const std::size_t n = static_cast<std::size_t>(std::min<int64_t>(V::W, nu - j));
      const int64_t u = u0 + j;
      R g = V::load_n(dh + b * H + u, n, T(0));
      if (go) g = V::add(g, V::load_n(go + u, n, T(0)));
      if (a.kind == RNN) {
        const R h = V::load_n(a.hs + (row + B) * H + u, n, T(0));
        R d;
        if (a.relu) d = V::select(V::gt(h, zero), g, zero);
        else d = V::mul(g, V::sub(one, V::mul(h, h)));
        V::store_n(di + u, d, n);
      } else if (a.kind == LSTM) {
        const R i = V::load_n(sv + u, n, T(0)), f = V::load_n(sv + H + u, n, T(0));
        const R gg = V::load_n(sv + 2 * H + u, n, T(0)), o = V::load_n(sv + 3 * H + u, n, T(0));
        const R cp = V::load_n(a.cs + row * H + u, n, T(0));
        const R tc = vm::tanh<V>(V::load_n(a.cs + (row + B) * H + u, n, T(0)));
        R c = V::load_n(dc + b * H + u, n, T(0));
        c = V::fma(V::mul(g, o), V::sub(one, V::mul(tc, tc)), c);
        V::store_n(di + u, V::mul(V::mul(c, gg), V::mul(i, V::sub(one, i))), n);
        V::store_n(di + H + u, V::mul(V::mul(c, cp), V::mul(f, V::sub(one, f))), n);
        V::store_n(di + 2 * H + u, V::mul(V::mul(c, i), V::sub(one, V::mul(gg, gg))), n);
        V::store_n(di + 3 * H + u, V::mul(V::mul(g, tc), V::mul(o, V::sub(one, o))), n);
        V::store_n(dc + b * H + u, V::mul(c, f), n);
      } else {  // GRU
        const R r = V::load_n(sv + u, n, T(0)), z = V::load_n(sv + H + u, n, T(0));
        const R nn = V::load_n(sv + 2 * H + u, n, T(0)), hnn = V::load_n(sv + 3 * H + u, n, T(0));
        const R h = V::load_n(a.hs + row * H + u, n, T(0));
        const R dn = V::mul(V::mul(g, V::sub(one, z)), V::sub(one, V::mul(nn, nn)));
        const R dz = V::mul(V::mul(g, V::sub(h, nn)), V::mul(z, V::sub(one, z)));
        const R dr = V::mul(V::mul(dn, hnn), V::mul(r, V::sub(one, r)));
        V::store_n(di + u, dr, n);
        V::store_n(di + H + u, dz, n);
        V::store_n(di + 2 * H + u, dn, n);
        V::store_n(dhh + u, dr, n);
        V::store_n(dhh + H + u, dz, n);
        V::store_n(dhh + 2 * H + u, V::mul(dn, r), n);
        V::store_n(dh + b * H + u, V::mul(g, z), n);
      }
    }
  }
}

template <class T>
void backward(const Bwd<T>& a) {
  const int G = gates_of(a.kind);
  const int64_t S = a.S, B = a.B, I = a.I, H = a.H, GH = G * H, SB = S * B;
  std::vector<T> dh(static_cast<std::size_t>(B * H)), dc(a.kind == LSTM ? B * H : 0);
  for (int64_t e = 0; e < B * H; ++e) dh[e] = a.g_hn ? a.g_hn[e] : T(0);
  if (a.kind == LSTM)
    for (int64_t e = 0; e < B * H; ++e) dc[e] = a.g_cn ? a.g_cn[e] : T(0);
  const bool want_w = a.dx || a.dw_ih || a.dw_hh || a.db_ih || a.db_hh;
  const int64_t ld = padded_ld<T>(GH);  // rows of d
  const bool run = B > 0 && H > 0 && (want_w || a.dh0 || a.dc0);
  const Split sp = split_units(B, H, G);
  // each thread's columns of w_hh (rows G*H, H apart) packed once for its dh GEMMs, as in the
  // forward; but for one row (B = 1, a GEMV) the direct path reading w_hh in place is faster
  // (LSTM T50 H256/H512: 0.79-0.89x packed; the packed path's narrowest tile computes 4 rows
  // and its A panel is zero-filled to 14; B = 2 already gains 1.06-1.07x packed)
  const bool packed_w = run && (S > 1 || a.dh0) && B > 1;
  std::vector<int64_t> poff(static_cast<std::size_t>(sp.nt) + 1, 0);
  for (int p = 0; p < sp.nt; ++p)
    poff[p + 1] = poff[p] + (packed_w ? gemm::packed_b_elems<T>(GH, sp.u1(p) - sp.u0(p)) : 0);
  const Buffers<T> buf({SB * ld, a.kind == GRU ? SB * ld : 0, poff[sp.nt]});
  T* const d_ih = buf[0];  // (S*B, G*H), rows ld apart
  T* const d_hh = a.kind == GRU ? buf[1] : d_ih;
  T* const wpk = buf[2];
  if (run) {
    vm::with_vec<T>([&](auto v) {
      using V = decltype(v);
#pragma omp parallel num_threads(sp.nt) if (sp.nt > 1)
      {
        const int p = omp_get_thread_num();
        const int64_t u0 = sp.u0(p), u1 = sp.u1(p);
        gemm::Epilogue<T> e;
        e.accumulate = a.kind == GRU;  // dh = z * dh (direct) + d_hh @ w_hh
        gemm::PackedB<T> w;
        if (packed_w && u1 > u0) w = gemm::pack_b_once<T>({a.w_hh + u0, H, 1}, GH, u1 - u0, wpk + poff[p]);
        // the bias gradients (column sums of d over every step) summed by the thread that owns
        // the columns, from the rows it has just written (a pass over d after the loop cost
        // 0.4 ms of the LSTM LM's 9 ms backward)
        for (T* db : {a.db_ih, a.db_hh})
          if (db)
            for (int g = 0; g < G; ++g) std::fill(db + g * H + u0, db + g * H + u1, T(0));
        auto add_rows = [&](T* db, const T* d) {
          for (int64_t b = 0; b < B; ++b)
            for (int g = 0; g < G; ++g) {
              T* o = db + g * H;
              const T* r = d + b * ld + g * H;
              for (int64_t u = u0; u < u1; ++u) o[u] += r[u];
            }
        };
        for (int64_t t = S - 1; t >= 0; --t) {
          if (u1 > u0) {
            step_backward<V, T>(a, t, u0, u1, d_ih, d_hh, ld, dh.data(), dc.data());
            if (a.db_ih) add_rows(a.db_ih, d_ih + t * B * ld);
            if (a.db_hh) add_rows(a.db_hh, d_hh + t * B * ld);
          }
          if (sp.nt > 1) {
#pragma omp barrier
          }
          if (u1 > u0 && (t > 0 || a.dh0)) {
            const gemm::View<T> d{d_hh + t * B * ld, ld, 1};
            if (packed_w)
              gemm::gemm_prepacked<T>(B, d, w, dh.data() + u0, H, e, 1);
            else
              gemm::gemm<T>(B, u1 - u0, GH, d, {a.w_hh + u0, H, 1}, dh.data() + u0, H, e, 1);
          }
        }
      }
    });
  } else {
    std::fill(d_ih, d_ih + SB * ld, T(0));
    if (d_hh != d_ih) std::fill(d_hh, d_hh + SB * ld, T(0));
    for (T* db : {a.db_ih, a.db_hh})
      if (db) std::fill(db, db + GH, T(0));
  }
  if (a.dh0) std::copy(dh.begin(), dh.end(), a.dh0);
  if (a.dc0) std::copy(dc.begin(), dc.end(), a.dc0);
  if (a.dx) gemm::gemm<T>(SB, I, GH, {d_ih, ld, 1}, {a.w_ih, I, 1}, a.dx, I, {}, 0);
  if (a.dw_ih) gemm::gemm<T>(GH, I, SB, {d_ih, 1, ld}, {a.x, I, 1}, a.dw_ih, I, {}, 0);
  if (a.dw_hh) gemm::gemm<T>(GH, H, SB, {d_hh, 1, ld}, {a.hs, H, 1}, a.dw_hh, H, {}, 0);
}

void check_kind(int kind) {
  PYDL_CHECK(kind == RNN || kind == LSTM || kind == GRU, "kind: expected 0 (rnn), 1 (lstm) or 2 (gru), got " << kind);
}

template <class T>
void forward_py(int kind, bool relu, const Array<T>& x, const Array<T>& w_ih, const Array<T>& w_hh,
                const Opt<T>& b_ih, const Opt<T>& b_hh, const Opt<T>& h0, const Opt<T>& c0, Array<T> hs,
                Opt<T> cs, Opt<T> gates) {
  check_kind(kind);
  PYDL_CHECK(x.ndim() == 3, "x: expected (T, B, I), got shape " << shape_str(x));
  PYDL_CHECK(w_hh.ndim() == 2, "w_hh: expected (G*H, H), got shape " << shape_str(w_hh));
  const int64_t G = gates_of(kind), S = x.shape(0), B = x.shape(1), I = x.shape(2), H = w_hh.shape(1);
  Fwd<T> a{kind, relu, S, B, I, H,
           in(x, {S, B, I}, "x"), in(w_ih, {G * H, I}, "w_ih"), in(w_hh, {G * H, H}, "w_hh"),
           in(b_ih, {G * H}, "b_ih"), in(b_hh, {G * H}, "b_hh"), in(h0, {B, H}, "h0"),
           kind == LSTM ? in(c0, {B, H}, "c0") : nullptr,
           out(hs, {S + 1, B, H}, "hs"), out(cs, {S + 1, B, H}, "cs"), out(gates, {S, B, 4 * H}, "gates")};
  PYDL_CHECK(kind != LSTM || a.cs, "cs: the LSTM needs the (T+1, B, H) cell states");
  py::gil_scoped_release nogil;
  forward<T>(a);
}

template <class T>
void backward_py(int kind, bool relu, const Array<T>& x, const Array<T>& w_ih, const Array<T>& w_hh,
                 const Array<T>& hs, const Opt<T>& cs, const Opt<T>& gates, const Opt<T>& g_out,
                 const Opt<T>& g_hn, const Opt<T>& g_cn, Opt<T> dx, Opt<T> dw_ih, Opt<T> dw_hh,
                 Opt<T> db_ih, Opt<T> db_hh, Opt<T> dh0, Opt<T> dc0) {
  check_kind(kind);
  PYDL_CHECK(x.ndim() == 3, "x: expected (T, B, I), got shape " << shape_str(x));
  PYDL_CHECK(w_hh.ndim() == 2, "w_hh: expected (G*H, H), got shape " << shape_str(w_hh));
  const int64_t G = gates_of(kind), S = x.shape(0), B = x.shape(1), I = x.shape(2), H = w_hh.shape(1);
  Bwd<T> a{kind, relu, S, B, I, H,
           in(x, {S, B, I}, "x"), in(w_ih, {G * H, I}, "w_ih"), in(w_hh, {G * H, H}, "w_hh"),
           in(hs, {S + 1, B, H}, "hs"), in(cs, {S + 1, B, H}, "cs"), in(gates, {S, B, 4 * H}, "gates"),
           in(g_out, {S, B, H}, "g_out"), in(g_hn, {B, H}, "g_hn"), in(g_cn, {B, H}, "g_cn"),
           out(dx, {S, B, I}, "dx"), out(dw_ih, {G * H, I}, "dw_ih"), out(dw_hh, {G * H, H}, "dw_hh"),
           out(db_ih, {G * H}, "db_ih"), out(db_hh, {G * H}, "db_hh"), out(dh0, {B, H}, "dh0"),
           out(dc0, {B, H}, "dc0")};
  PYDL_CHECK(kind != LSTM || a.cs, "cs: the LSTM backward needs the saved cell states");
  PYDL_CHECK(kind == RNN || a.gates, "gates: the LSTM and GRU backward need the saved gates");
  PYDL_CHECK(kind == LSTM || !a.dc0, "dc0: only the LSTM has a cell state");
  py::gil_scoped_release nogil;
  backward<T>(a);
}

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  const auto opt = [](const char* n) { return py::arg(n).noconvert().none(true); };
  m.def(("rnn_forward_" + sfx).c_str(), &forward_py<T>, py::arg("kind"), py::arg("relu"),
        py::arg("x").noconvert(), py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(), opt("b_ih"),
        opt("b_hh"), opt("h0"), opt("c0"), py::arg("hs").noconvert(), opt("cs"), opt("gates"));
  m.def(("rnn_backward_" + sfx).c_str(), &backward_py<T>, py::arg("kind"), py::arg("relu"),
        py::arg("x").noconvert(), py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(),
        py::arg("hs").noconvert(), opt("cs"), opt("gates"), opt("g_out"), opt("g_hn"), opt("g_cn"),
        opt("dx"), opt("dw_ih"), opt("dw_hh"), opt("db_ih"), opt("db_hh"), opt("dh0"), opt("dc0"));
}

}  // namespace

void bind_rnn(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace pydl
