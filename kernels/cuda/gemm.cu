// GEMM on the GPU: C = epilogue(op(A) @ op(B)), batched over grid z.
//
// All matrices are row-major with explicit leading dimensions; op(A) is A or
// A^T and op(B) is B or B^T by template flag, so transposed operands are read
// in place (no copies). A batch entry z reads A + z*sA, B + z*sB and writes
// C + z*sC (a stride of 0 shares an operand across the batch).
//
// Epilogue, per output element v = sum_k A(m,k) B(k,n):
//   v += bias[n] (bias_mode 1) or bias[m] (bias_mode 2); v += beta * C(m,n);
//   C(m,n) = gmul ? gmul(m,n) * act'(v) : act(v)
// (gmul is the upstream gradient: linear's backward gets dz = g * act'(z) from
// the same GEMM that recomputes z; activation codes in cuda_act.cuh).
//
// Kernels (entry points are template instances; see pydl/backends/cuda/gemm.py
// for the name expressions):
// - gemm_simt<T, TA, TB, VA, VB, BM>: float32 / float64 on the CUDA cores. Block
//   tile 128x128x8 (BM 128: 8 warps as 2 x 4) or 64x256x8 (BM 64: 1 x 8, for
//   outputs of at most 64 rows), warp tile 64x32, thread
//   tile 8x8 as 2x2 sub-tiles of 4x4 (16-byte shared-memory reads, no bank
//   conflicts). Tiles go global -> shared through cp.async, double-buffered:
//   16-byte copies when the operand's contiguous dimension is the one shared
//   memory wants and is 16-byte aligned (VA / VB), else 4/8-byte copies that
//   transpose on the way. Out-of-range elements are zero-filled by cp.async.
// - gemm_bf16_tc<OUT_BF16, BN, STAGES>: bf16 A (M, K) and B given as (N, K)
//   (both K-contiguous), fp32 accumulate on tensor cores with mma.sync
//   m16n8k16, fragments through ldmatrix; block tile 128 x BN x 32, 8 warps
//   (2 x 4), warp tile 64 x BN/4, STAGES-deep cp.async pipeline. The tile in
//   use: 128x128, 3 stages (61,440 bytes of dynamic shared memory: the
//   launcher raises the kernel's limit). 128x256 with 4 stages (twice the mma
//   per ldmatrix of A, 202 registers, one block per SM) ran 0.6-0.8x its speed
//   on the H200 (benchmarks/results/gpu-h200/NOTES.md). Requires K % 8 == 0 and 16-byte aligned
//   rows (lda, ldb multiples of 8). sm_80+.
// - cast_f32_bf16<TRANS>: float32 (rows, cols) -> bf16 bits (rows, ld_out),
//   optionally transposed on the way, zero padding from cols to ld_out.
// - bias_grad<T>: column sums of a (rows, cols) matrix (the bias gradient).
#include "cuda_helpers.cuh"
#include "cuda_async.cuh"
#include "cuda_act.cuh"

namespace pydl {

struct Epilogue {
  const void* bias;   // T*, or nullptr
  const void* gmul;   // T*, same layout as C, or nullptr
  long long sG;       // batch stride of gmul
  int bias_mode;      // 0 none, 1 per column (n), 2 per row (m)
  int act;            // activation code
  float beta;         // 0 or 1: accumulate into C
};

template <typename T>
__device__ __noinline__ void store_out(T* C, long long ldc, int m, int n, T v, const Epilogue& ep,
                                          const T* gmul) {
  if (ep.bias_mode == 1) v += static_cast<const T*>(ep.bias)[n];
  else if (ep.bias_mode == 2) v += static_cast<const T*>(ep.bias)[m];
  T* p = C + (long long)m * ldc + n;
  if (ep.beta != 0.f) v += T(ep.beta) * *p;
  *p = gmul ? act::backward(ep.act, gmul[(long long)m * ldc + n], v) : act::forward(ep.act, v);
}

namespace simt {
constexpr int BK = 8, THREADS = 256, PAD = 4;
// Block tile BM x BN with 8 warps of 64 x 32: BM 128 -> 2 x 4 warps, BN 128; BM 64 -> 1 x 8, BN 256
// (an output of at most 64 rows, conv2d's K = 64 channels, fills the whole tile).
template <int BM>
struct Tile {
  static_assert(BM == 64 || BM == 128, "gemm_simt tiles: 128x128 or 64x256");
  static constexpr int WARPS_N = 8 / (BM / 64), BN = WARPS_N * 32;
};
}

// Load the (BK x BM) tile of op(A) starting at (k0, m0) into As[k][m].
// TA: A is stored (K, M) (M contiguous); else (M, K) (K contiguous).
template <typename T, bool TRANS, bool VEC, int ROWS>
__device__ __forceinline__ void load_tile(T (*S)[ROWS + simt::PAD], const T* X, long long ld, int k0,
                                          int r0, int K, int R, int tid) {
  // S[k][r] = op(X)(r0 + r, k0 + k); "contiguous in r" when TRANS (X stored (K, R)).
  constexpr int W = 16 / sizeof(T);  // elements per 16-byte copy
  if constexpr (TRANS && VEC) {
    constexpr int CHUNKS = simt::BK * ROWS / W;
    for (int c = tid; c < CHUNKS; c += simt::THREADS) {
      int k = c / (ROWS / W), r = (c % (ROWS / W)) * W;
      int gk = k0 + k, gr = r0 + r;
      int n = (gk < K && gr < R) ? min(W, R - gr) : 0;
      cp_async<16>(&S[k][r], n ? X + (long long)gk * ld + gr : X, n * (int)sizeof(T));
    }
  } else if constexpr (TRANS) {  // contiguous in r, unaligned: element copies along r
    for (int e = tid; e < simt::BK * ROWS; e += simt::THREADS) {
      int k = e / ROWS, r = e % ROWS;
      int gk = k0 + k, gr = r0 + r;
      bool in = gk < K && gr < R;
      cp_async<sizeof(T)>(&S[k][r], in ? X + (long long)gk * ld + gr : X, in ? (int)sizeof(T) : 0);
    }
  } else {  // X stored (R, K), contiguous in k: element copies along k, transposed into S
    for (int e = tid; e < simt::BK * ROWS; e += simt::THREADS) {
      int k = e % simt::BK, r = e / simt::BK;
      int gk = k0 + k, gr = r0 + r;
      bool in = gk < K && gr < R;
      cp_async<sizeof(T)>(&S[k][r], in ? X + (long long)gr * ld + gk : X, in ? (int)sizeof(T) : 0);
    }
  }
}

template <typename T>
__device__ __forceinline__ void lds4(T* d, const T* p) {
  if constexpr (sizeof(T) == 4) {
    float4 v = *reinterpret_cast<const float4*>(p);
    d[0] = v.x; d[1] = v.y; d[2] = v.z; d[3] = v.w;
  } else {
    double2 v0 = reinterpret_cast<const double2*>(p)[0], v1 = reinterpret_cast<const double2*>(p)[1];
    d[0] = v0.x; d[1] = v0.y; d[2] = v1.x; d[3] = v1.y;
  }
}

}  // namespace pydl

using namespace pydl;

// TA: A stored (K, M); TB: B stored (N, K). VA / VB: 16-byte copies allowed
// (only used when the operand is contiguous along M (A) or N (B)).
template <typename T, bool TA, bool TB, bool VA, bool VB, int BM>
__global__ void __launch_bounds__(simt::THREADS)
    gemm_simt(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, int M, int N, int K,
              long long lda, long long ldb, long long ldc, long long sA, long long sB, long long sC,
              const void* bias, const void* gmul_, long long sG, int bias_mode, int act_code, float beta) {
  const Epilogue ep{bias, gmul_, sG, bias_mode, act_code, beta};
  using namespace simt;
  constexpr int BN = Tile<BM>::BN, WARPS_N = Tile<BM>::WARPS_N;
  __shared__ __align__(16) T As[2][BK][BM + PAD];
  __shared__ __align__(16) T Bs[2][BK][BN + PAD];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const long long z = blockIdx.z;
  A += z * sA;
  B += z * sB;
  C += z * sC;
  const T* gmul = ep.gmul ? static_cast<const T*>(ep.gmul) + z * ep.sG : nullptr;

  // A(m, k) for the tile loader: TA -> stored (K, M) = "TRANS" (contiguous in m)
  // B(k, n): !TB -> stored (K, N) (contiguous in n); TB -> stored (N, K).
  constexpr bool A_ALONG_ROWS = TA, B_ALONG_ROWS = !TB;

  // Thread tile: rows wm + {0,32} + lm*4 + i, cols wn + {0,16} + ln*4 + j.
  const int wm = (warp / WARPS_N) * 64, wn = (warp % WARPS_N) * 32;
  const int lm = lane / 4, ln = lane % 4;
  T acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = T(0);

  const int KT = (K + BK - 1) / BK;
  if (KT > 0) {
    load_tile<T, A_ALONG_ROWS, VA, BM>(As[0], A, lda, 0, m0, K, M, tid);
    load_tile<T, B_ALONG_ROWS, VB, BN>(Bs[0], B, ldb, 0, n0, K, N, tid);
  }
  cp_async_commit();
  for (int kt = 0; kt < KT; ++kt) {
    const int s = kt & 1;
    if (kt + 1 < KT) {
      load_tile<T, A_ALONG_ROWS, VA, BM>(As[s ^ 1], A, lda, (kt + 1) * BK, m0, K, M, tid);
      load_tile<T, B_ALONG_ROWS, VB, BN>(Bs[s ^ 1], B, ldb, (kt + 1) * BK, n0, K, N, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      T a[8], b[8];
      lds4(a, &As[s][k][wm + lm * 4]);
      lds4(a + 4, &As[s][k][wm + 32 + lm * 4]);
      lds4(b, &Bs[s][k][wn + ln * 4]);
      lds4(b + 4, &Bs[s][k][wn + 16 + ln * 4]);
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + wm + (i / 4) * 32 + lm * 4 + (i % 4);
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int n = n0 + wn + (j / 4) * 16 + ln * 4 + (j % 4);
      if (n < N) store_out(C, ldc, m, n, acc[i][j], ep, gmul);
    }
  }
}

// ---------------------------------------------------------------------------
// bf16 tensor-core GEMM (mma.sync m16n8k16, fp32 accumulate).

namespace pydl {
namespace tc {
constexpr int BM = 128, BK = 32, THREADS = 256;
constexpr int LDS = BK + 8;  // padded row: 80 bytes, so ldmatrix's 8 rows hit 8 distinct 16-byte bank groups
// Block tile BM x BN, STAGES-deep cp.async pipeline; 8 warps as 2 (m) x 4 (n), warp tile 64 x BN/4.
template <int BN, int STAGES>
struct Tile {
  static constexpr int WN = BN / 4, NJ = WN / 8, NB = WN / 16;  // n8 tiles and B ldmatrix.x4 per warp
  static constexpr int STAGE_ELEMS = (BM + BN) * LDS;
  static constexpr int SMEM_BYTES = STAGES * STAGE_ELEMS * 2;
};
static_assert(Tile<128, 3>::SMEM_BYTES == 61440,
              "pydl/backends/cuda/gemm.py TC_TILE launches gemm_bf16_tc with these byte counts");
}  // namespace tc
}  // namespace pydl

// A: (M, K) bf16, lda; B: (N, K) bf16, ldb (i.e. op(B) = B^T). C: (M, N), ldc,
// float32 (OUT_BF16 false) or bf16 bits. Epilogue values are float32; with
// OUT_BF16, bias / gmul are float32 too.
template <bool OUT_BF16, int BN, int STAGES>
__global__ void __launch_bounds__(tc::THREADS)
    gemm_bf16_tc(const unsigned short* __restrict__ A, const unsigned short* __restrict__ B,
                 void* __restrict__ Cv, int M, int N, int K, long long lda, long long ldb, long long ldc,
                 long long sA, long long sB, long long sC, const void* bias, const void* gmul_, long long sG, int bias_mode, int act_code, float beta) {
  const Epilogue ep{bias, gmul_, sG, bias_mode, act_code, beta};
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace tc;
  using Cfg = Tile<BN, STAGES>;
  constexpr int STAGE_ELEMS = Cfg::STAGE_ELEMS, WN = Cfg::WN, NJ = Cfg::NJ, NB = Cfg::NB;
  extern __shared__ __align__(16) unsigned short smem[];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const long long z = blockIdx.z;
  A += z * sA;
  B += z * sB;
  const float* gmul = ep.gmul ? static_cast<const float*>(ep.gmul) + z * ep.sG : nullptr;

  auto load_stage = [&](int stage, int k0) {
    unsigned short* As = smem + stage * STAGE_ELEMS;
    unsigned short* Bs = As + BM * LDS;
    // rows x 4 chunks of 8 bf16 per operand: BM*4 chunks of A and BN*4 of B, 2 (4) per thread.
#pragma unroll
    for (int c = tid; c < BM * (BK / 8); c += THREADS) {
      int r = c / (BK / 8), kc = (c % (BK / 8)) * 8;
      int gk = k0 + kc;
      int gm = m0 + r;
      int na = (gm < M && gk < K) ? min(8, K - gk) : 0;
      cp_async<16>(As + r * LDS + kc, na ? A + (long long)gm * lda + gk : A, na * 2);
    }
#pragma unroll
    for (int c = tid; c < BN * (BK / 8); c += THREADS) {
      int r = c / (BK / 8), kc = (c % (BK / 8)) * 8;
      int gk = k0 + kc;
      int gn = n0 + r;
      int nb = (gn < N && gk < K) ? min(8, K - gk) : 0;
      cp_async<16>(Bs + r * LDS + kc, nb ? B + (long long)gn * ldb + gk : B, nb * 2);
    }
  };

  const int wm = (warp / 4) * 64, wn = (warp % 4) * WN;
  float acc[4][NJ][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  const int KT = (K + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_stage(s, s * BK);
    cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile kt visible to all; stage (kt-1) % STAGES no longer read
    {
      const int pre = kt + STAGES - 1;
      if (pre < KT) load_stage(pre % STAGES, pre * BK);
      cp_async_commit();
    }
    const unsigned short* As = smem + (kt % STAGES) * STAGE_ELEMS;
    const unsigned short* Bs = As + BM * LDS;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      unsigned af[4][4], bf[NB][4];
#pragma unroll
      for (int i = 0; i < 4; ++i)  // rows wm + i*16 + (lane % 16), k kk + (lane / 16) * 8
        ldmatrix_x4(af[i], As + (wm + i * 16 + (lane % 16)) * LDS + kk + (lane / 16) * 8);
#pragma unroll
      for (int j = 0; j < NB; ++j)  // n rows wn + j*16 + (lane%8) + (lane/16)*8, k kk + ((lane/8)%2)*8
        ldmatrix_x4(bf[j], Bs + (wn + j * 16 + (lane % 8) + (lane / 16) * 8) * LDS + kk + ((lane / 8) % 2) * 8);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < NJ; ++j)
          mma_bf16_16816(acc[i][j], af[i], bf[j / 2][(j % 2) * 2], bf[j / 2][(j % 2) * 2 + 1]);
    }
  }
  cp_async_wait<0>();

  // Accumulator (i, j): rows wm + i*16 + lane/4 (+8 for q >= 2), cols wn + j*8 + (lane%4)*2 + (q%2).
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int m = m0 + wm + i * 16 + lane / 4 + (q / 2) * 8;
        const int n = n0 + wn + j * 8 + (lane % 4) * 2 + (q % 2);
        if (m >= M || n >= N) continue;
        float v = acc[i][j][q];
        if (ep.bias_mode == 1) v += static_cast<const float*>(ep.bias)[n];
        else if (ep.bias_mode == 2) v += static_cast<const float*>(ep.bias)[m];
        const long long off = (long long)m * ldc + n;
        if constexpr (OUT_BF16) {
          unsigned short* C = static_cast<unsigned short*>(Cv) + z * sC;
          if (ep.beta != 0.f) v += ep.beta * bf16_to_f32(C[off]);
          C[off] = f32_to_bf16(gmul ? act::backward(ep.act, gmul[off], v) : act::forward(ep.act, v));
        } else {
          float* C = static_cast<float*>(Cv) + z * sC;
          if (ep.beta != 0.f) v += ep.beta * C[off];
          C[off] = gmul ? act::backward(ep.act, gmul[off], v) : act::forward(ep.act, v);
        }
      }
#endif
}

// float32 (rows, cols) -> bf16 bits (rows, ld_out); TRANS: the source is
// stored (cols, rows) with leading dimension ld_in. Batched over grid z.
template <bool TRANS>
__global__ void cast_f32_bf16(const float* __restrict__ x, unsigned short* __restrict__ y, int rows,
                              int cols, long long ld_in, long long ld_out, long long s_in,
                              long long s_out) {
  x += blockIdx.z * s_in;
  y += blockIdx.z * s_out;
  const long long n = (long long)rows * ld_out;
  for_each_index(n, [&](auto i) {
    using I = decltype(i);
    int r = (int)(i / (I)ld_out), c = (int)(i % (I)ld_out);
    float v = 0.f;
    if (c < cols) v = TRANS ? x[(long long)c * ld_in + r] : x[(long long)r * ld_in + c];
    y[i] = f32_to_bf16(v);
  });
}

// out[c] = sum_r g[r * cols + c]: one thread per column, rows read coalesced
// across the warp.
template <typename T>
__global__ void bias_grad(const T* __restrict__ g, T* __restrict__ out, long long rows, int cols) {
  PYDL_GRID_STRIDE(c, cols) {
    T s = T(0);
    for (long long r = 0; r < rows; ++r) s += g[r * cols + c];
    out[c] = s;
  }
}

// Explicit instances, so `nvcc -c` compiles every variant (NVRTC instantiates
// the ones the name expressions ask for).
#define PYDL_GEMM_SIMT_BM(T, TA, TB, VA, VB, BM) template __global__ void gemm_simt<T, TA, TB, VA, VB, BM>( \
    const T*, const T*, T*, int, int, int, long long, long long, long long, long long, long long,  \
    long long, const void*, const void*, long long, int, int, float);
#define PYDL_GEMM_SIMT(T, TA, TB, VA, VB) PYDL_GEMM_SIMT_BM(T, TA, TB, VA, VB, 128) \
  PYDL_GEMM_SIMT_BM(T, TA, TB, VA, VB, 64)
#define PYDL_GEMM_SIMT_T(T)                                                               \
  PYDL_GEMM_SIMT(T, false, false, false, false) PYDL_GEMM_SIMT(T, false, false, false, true) \
  PYDL_GEMM_SIMT(T, false, true, false, false) PYDL_GEMM_SIMT(T, true, false, false, false)  \
  PYDL_GEMM_SIMT(T, true, false, true, false) PYDL_GEMM_SIMT(T, true, false, false, true)    \
  PYDL_GEMM_SIMT(T, true, false, true, true) PYDL_GEMM_SIMT(T, true, true, false, false)     \
  PYDL_GEMM_SIMT(T, true, true, true, false)
PYDL_GEMM_SIMT_T(float)
PYDL_GEMM_SIMT_T(double)
#define PYDL_GEMM_TC(OUT, BN, ST)                                                                           \
  template __global__ void gemm_bf16_tc<OUT, BN, ST>(const unsigned short*, const unsigned short*, void*, int, \
                                                     int, int, long long, long long, long long, long long,    \
                                                     long long, long long, const void*, const void*,          \
                                                     long long, int, int, float);
PYDL_GEMM_TC(false, 128, 3)
PYDL_GEMM_TC(true, 128, 3)
template __global__ void cast_f32_bf16<false>(const float*, unsigned short*, int, int, long long, long long,
                                              long long, long long);
template __global__ void cast_f32_bf16<true>(const float*, unsigned short*, int, int, long long, long long,
                                             long long, long long);
template __global__ void bias_grad<float>(const float*, float*, long long, int);
template __global__ void bias_grad<double>(const double*, double*, long long, int);
