// Activations fused into GEMM epilogues, forward and derivative, float and
// double. Codes match pydl/backends/cuda/gemm.py: 0 none, 1 relu, 2 gelu
// (exact, erf), 3 tanh, 4 sigmoid. NaN propagates as in the NumPy reference.
#pragma once

namespace pydl {
namespace act {

__device__ __forceinline__ float e(float x) { return expf(x); }
__device__ __forceinline__ double e(double x) { return exp(x); }
__device__ __forceinline__ float t(float x) { return tanhf(x); }
__device__ __forceinline__ double t(double x) { return tanh(x); }
__device__ __forceinline__ float er(float x) { return erff(x); }
__device__ __forceinline__ double er(double x) { return erf(x); }

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {  // exp of a non-positive number only
  T z = e(-fabs(x));
  return x >= T(0) ? T(1) / (T(1) + z) : z / (T(1) + z);
}

template <typename T>
__device__ __forceinline__ T forward(int code, T v) {
  switch (code) {
    case 1: return v < T(0) ? T(0) : v;
    case 2: return T(0.5) * v * (T(1) + er(v * T(0.70710678118654752440)));
    case 3: return t(v);
    case 4: return sigmoid(v);
    default: return v;
  }
}

// g * f'(v)
template <typename T>
__device__ __forceinline__ T backward(int code, T g, T v) {
  switch (code) {
    case 1: return v > T(0) ? g : T(0);
    case 2: {
      T cdf = T(0.5) * (T(1) + er(v * T(0.70710678118654752440)));
      T pdf = e(T(-0.5) * v * v) * T(0.39894228040143267794);
      return g * (cdf + v * pdf);
    }
    case 3: { T y = t(v); return g * (T(1) - y * y); }
    case 4: { T y = sigmoid(v); return g * y * (T(1) - y); }
    default: return g;
  }
}

}  // namespace act
}  // namespace pydl
