// Weight products with few rows (decode steps) for CPUs, called from JAX through the XLA FFI.
//
// y[r, :] = x[r, :] @ W for the first `num_rows` rows of x (the real tokens of a padded
// bucket; later rows of y are zero), with W stored [K, N] ("nn") or [N, K] ("nt", e.g. a tied
// embedding used as the LM head). The inputs of each product are in W's dtype and the sum is
// fp32, the semantics of esurge_core.matmul: x is rounded to W's dtype (bf16 products
// are exact in fp32), then multiplied and accumulated in fp32, and y is written in its dtype.
//
// Why a native kernel: a decode step multiplies a handful of rows by every weight of the model,
// so its floor is streaming the weights from memory once. XLA:CPU's bf16 x bf16 -> fp32 product
// runs at 13 GFLOP/s for one row (docs/PERFORMANCE.md), far below that floor, and a bucket
// padded from 1 to 8 rows computes all 8. Here each work item owns a block of output columns
// and keeps its sums in registers while it streams that block's weights once for up to
// kRowsPerPass rows (later passes over further rows find the block in cache), and only the
// real rows are computed.
//
// The vector code uses GCC/Clang vector extensions, so one source compiles to AVX-512, AVX2 or
// NEON as -march=native allows.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bf16_rows.h"
#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Vector width and register budgets follow the register file: 32 registers of 16 floats with
// AVX-512, 16 of 8 floats otherwise (AVX2, NEON). The AVX-512 sizes on AVX2 spilled: on a 2-core
// Zen 3 the LM head (49152 x 576, bf16) took 7.3 ms for one row (8 GB/s) and 49 ms for 8 rows,
// against XLA's 57 and 10 ms.
#if defined(__AVX512F__)
#define ESURGE_SMALL_MATMUL_LANES 16
#else
#define ESURGE_SMALL_MATMUL_LANES 8
#endif
constexpr int kLanes = ESURGE_SMALL_MATMUL_LANES;
typedef float FVec __attribute__((vector_size(kLanes * sizeof(float))));
typedef uint32_t UVec __attribute__((vector_size(kLanes * sizeof(uint32_t))));
typedef uint16_t HVec __attribute__((vector_size(kLanes * sizeof(uint16_t))));

// nn: a work item is a block of output columns, as many vectors (at most kMaxBlockVectors) as
// keep R rows x V vectors of sums within kAccumulators registers: the fewer the rows, the
// longer the contiguous piece of each weight row a block streams. Rows come kRowsPerPass at a
// time; later passes find the block's weights in cache.
constexpr int kMaxBlockVectors = 16;
constexpr int kRowsPerPass = 4;
// nt: a work item is a few groups of G output columns (rows of W), computed R rows a pass.
// Measured on the LM head (49152 x 576) with AVX-512: for one or two rows, groups of 8
// streaming alone are fastest; for more rows, groups of 4 with up to 8 rows a pass.
#if ESURGE_SMALL_MATMUL_LANES == 16
constexpr int kAccumulators = 24;
constexpr int kWideGroup = 8, kWideGroupRows = 2;
constexpr int kNarrowGroup = 4, kNarrowGroupRows = 8;
#else
constexpr int kAccumulators = 12;
constexpr int kWideGroup = 4, kWideGroupRows = 2;
constexpr int kNarrowGroup = 2, kNarrowGroupRows = 4;
#endif
// How many weight rows ahead the nn loop prefetches.
constexpr int kPrefetchRows = 16;

inline float Bf16ToF32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

using esurge_cpu::F32ToBf16;  // round to nearest even; NaN stays NaN

// Loads kLanes weights as fp32 (bf16 widens exactly).
inline FVec LoadLanes(const float* p) {
  FVec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline FVec LoadLanes(const uint16_t* p) {
  HVec h;
  std::memcpy(&h, p, sizeof h);
  const UVec wide = __builtin_convertvector(h, UVec) << 16;
  FVec v;
  std::memcpy(&v, &wide, sizeof v);
  return v;
}
inline float LoadOne(const float* p) { return *p; }
inline float LoadOne(const uint16_t* p) { return Bf16ToF32(*p); }
inline void StoreOne(float* p, float v) { *p = v; }
inline void StoreOne(uint16_t* p, float v) { *p = F32ToBf16(v); }
template <typename TY>
inline void StoreLanes(TY* p, FVec v) {
  for (int i = 0; i < kLanes; ++i) StoreOne(p + i, v[i]);
}
template <>
inline void StoreLanes<float>(float* p, FVec v) {
  std::memcpy(p, &v, sizeof v);
}

// y[r, n0 : n0 + V * kLanes] for R rows of xr (fp32, already rounded to W's dtype).
template <int R, int V, typename TW, typename TY>
void BlockNN(const float* xr, int64_t K, const TW* w, int64_t N, int64_t n0, TY* y) {
  if constexpr (R * V <= kAccumulators) {
    constexpr int kLineElems = 64 / sizeof(TW);
    FVec acc[R][V] = {};
    const TW* wp = w + n0;
    for (int64_t k = 0; k < K; ++k, wp += N) {
      if (k + kPrefetchRows < K) {
        for (int e = 0; e < V * kLanes; e += kLineElems) {
          __builtin_prefetch(wp + kPrefetchRows * N + e, 0, 3);
        }
      }
      FVec wv[V];
      for (int v = 0; v < V; ++v) wv[v] = LoadLanes(wp + v * kLanes);
      for (int r = 0; r < R; ++r) {
        const float xv = xr[r * K + k];
        for (int v = 0; v < V; ++v) acc[r][v] += xv * wv[v];
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < V; ++v) StoreLanes(y + r * N + n0 + v * kLanes, acc[r][v]);
    }
  }
}

// Output columns [n0, N) for every row, plainly: the tails past the last whole vector (nn) or
// group (nt). W's element (k, n) is at w[k * k_stride + n * n_stride].
template <typename TW, typename TY>
void TailColumns(const float* xr, int64_t rows, int64_t K, const TW* w, int64_t k_stride,
                 int64_t n_stride, int64_t N, int64_t n0, TY* y) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t n = n0; n < N; ++n) {
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        sum += xr[r * K + k] * LoadOne(w + k * k_stride + n * n_stride);
      }
      StoreOne(y + r * N + n, sum);
    }
  }
}

// The sum of a vector's lanes as a tree of vector adds (halves, then quarters, ...); a plain
// loop over the lanes is a chain of dependent adds that costs more than a group's products.
inline float SumLanes(FVec v) {
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  typedef float F8x __attribute__((vector_size(8 * sizeof(float))));
  typedef float F4x __attribute__((vector_size(4 * sizeof(float))));
#if ESURGE_SMALL_MATMUL_LANES == 16
  const F8x a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
#else
  const F8x a = v;
#endif
  const F4x b =
      __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
#else  // older GCC: no __builtin_shufflevector; the same tree over an array
  float lanes[kLanes];
  std::memcpy(lanes, &v, sizeof lanes);
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int i = 0; i < width; ++i) lanes[i] += lanes[i + width];
  }
  return lanes[0];
#endif
}

// y[r, n0 : n0 + G] for R rows, W stored [N, K].
template <int R, int G, typename TW, typename TY>
void GroupNT(const float* xr, int64_t K, const TW* w, int64_t n0, TY* y, int64_t N) {
  FVec acc[R][G] = {};
  const TW* wp = w + n0 * K;
  const int64_t k_vec = K - K % kLanes;
  for (int64_t k = 0; k < k_vec; k += kLanes) {
    FVec wv[G];
    for (int j = 0; j < G; ++j) wv[j] = LoadLanes(wp + j * K + k);
    for (int r = 0; r < R; ++r) {
      const FVec xv = LoadLanes(xr + r * K + k);
      for (int j = 0; j < G; ++j) acc[r][j] += xv * wv[j];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < G; ++j) {
      float sum = SumLanes(acc[r][j]);
      for (int64_t k = k_vec; k < K; ++k) sum += xr[r * K + k] * LoadOne(wp + j * K + k);
      StoreOne(y + r * N + n0 + j, sum);
    }
  }
}

// Calls fn.template operator()<C>() for the run-time count c in [1, kMax].
template <int kMax, typename Fn>
void Dispatch(int64_t c, Fn&& fn) {
  if constexpr (kMax > 1) {
    if (c < kMax) return Dispatch<kMax - 1>(c, fn);
  }
  fn.template operator()<kMax>();
}

// y for W stored [K, N]: blocks of whole vectors over the pool, then the last N % kLanes.
template <typename TW, typename TY>
void BlockedNN(const float* xr, int64_t rows, int64_t K, const TW* w, int64_t N, TY* y) {
  const int64_t threads = esurge_cpu::Pool().size();
  // Block width: what the first pass's rows allow, narrowed so that every thread gets at
  // least two blocks.
  const int64_t vectors = N / kLanes;
  const int64_t first_pass = std::min<int64_t>(rows, kRowsPerPass);
  const int64_t width = std::clamp<int64_t>(
      std::min<int64_t>(kAccumulators / first_pass, (vectors + 2 * threads - 1) / (2 * threads)),
      1, kMaxBlockVectors);
  const int64_t blocks = (vectors + width - 1) / width;
  esurge_cpu::ParallelFor(blocks + 1, [&](int64_t b) {
    if (b == blocks) return TailColumns(xr, rows, K, w, N, 1, N, vectors * kLanes, y);
    const int64_t n0 = b * width * kLanes;
    const int64_t v_count = std::min(width, vectors - b * width);
    for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerPass) {
      Dispatch<kRowsPerPass>(std::min<int64_t>(kRowsPerPass, rows - r0), [&]<int R>() {
        Dispatch<kMaxBlockVectors>(v_count, [&]<int V>() {
          BlockNN<R, V>(xr + r0 * K, K, w, N, n0, y + r0 * N);
        });
      });
    }
  });
}

template <typename TW, typename TY>
void SmallMatmul(const float* xr, int64_t rows, int64_t K, const TW* w, int64_t N,
                 bool transpose_w, TY* y) {
  const int64_t threads = esurge_cpu::Pool().size();
  if (!transpose_w) {
    BlockedNN(xr, rows, K, w, N, y);
    return;
  }
  const bool wide = rows <= kWideGroupRows;
  const int64_t group = wide ? kWideGroup : kNarrowGroup;
  const int64_t groups = N / group;
  // Items of several groups each: a group alone is too little work to be worth claiming.
  const int64_t per_item = std::clamp<int64_t>(groups / (8 * threads), 1, 64);
  const int64_t items = (groups + per_item - 1) / per_item;
  esurge_cpu::ParallelFor(items + 1, [&](int64_t item) {
    if (item == items) return TailColumns(xr, rows, K, w, 1, K, N, groups * group, y);
    const int64_t end = std::min(groups, (item + 1) * per_item);
    for (int64_t g = item * per_item; g < end; ++g) {
      if (wide) {
        Dispatch<kWideGroupRows>(rows, [&]<int R>() {
          GroupNT<R, kWideGroup>(xr, K, w, g * kWideGroup, y, N);
        });
        continue;
      }
      for (int64_t r0 = 0; r0 < rows; r0 += kNarrowGroupRows) {
        Dispatch<kNarrowGroupRows>(std::min<int64_t>(kNarrowGroupRows, rows - r0), [&]<int R>() {
          GroupNT<R, kNarrowGroup>(xr + r0 * K, K, w, g * kNarrowGroup, y + r0 * N, N);
        });
      }
    }
  });
}

// x rows [0, rows) as fp32, rounded to the weights' dtype (what the product multiplies).
std::vector<float> RoundedRows(const ffi::AnyBuffer& x, int64_t rows, int64_t K, bool bf16) {
  std::vector<float> out(static_cast<size_t>(rows * K));
  if (x.element_type() == ffi::DataType::BF16) {
    const auto* src = static_cast<const uint16_t*>(x.untyped_data());
    for (int64_t i = 0; i < rows * K; ++i) out[i] = Bf16ToF32(src[i]);
  } else {
    const auto* src = static_cast<const float*>(x.untyped_data());
    for (int64_t i = 0; i < rows * K; ++i) out[i] = bf16 ? Bf16ToF32(F32ToBf16(src[i])) : src[i];
  }
  return out;
}

bool IsF32OrBf16(ffi::DataType t) { return t == ffi::DataType::F32 || t == ffi::DataType::BF16; }

ffi::Error SmallMatmulImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Buffer<ffi::S32> num_rows,
                           ffi::Result<ffi::AnyBuffer> y, bool transpose_w) {
  const auto x_dims = x.dimensions();
  const auto w_dims = w.dimensions();
  const auto y_dims = y->dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 2 || y_dims.size() != 2 ||
      num_rows.element_count() != 1) {
    return ffi::Error::InvalidArgument("small_matmul (cpu): x, w and y must be matrices");
  }
  const int64_t M = x_dims[0], K = x_dims[1];
  const int64_t N = transpose_w ? w_dims[0] : w_dims[1];
  if ((transpose_w ? w_dims[1] : w_dims[0]) != K || y_dims[0] != M || y_dims[1] != N) {
    return ffi::Error::InvalidArgument("small_matmul (cpu): shapes do not agree");
  }
  if (!IsF32OrBf16(x.element_type()) || !IsF32OrBf16(w.element_type()) ||
      !IsF32OrBf16(y->element_type())) {
    return ffi::Error::InvalidArgument("small_matmul (cpu): dtypes must be float32 or bfloat16");
  }
  const int64_t rows = std::clamp<int64_t>(num_rows.typed_data()[0], 0, M);
  // Rows past num_rows are zero; the kernels write every column of the real rows.
  const size_t row_bytes = y->size_bytes() / std::max<int64_t>(M, 1);
  std::memset(static_cast<char*>(y->untyped_data()) + rows * row_bytes, 0,
              (M - rows) * row_bytes);
  if (rows == 0 || N == 0) return ffi::Error::Success();
  const bool w_bf16 = w.element_type() == ffi::DataType::BF16;
  const std::vector<float> xr = RoundedRows(x, rows, K, w_bf16);
  const bool y_bf16 = y->element_type() == ffi::DataType::BF16;
  void* out = y->untyped_data();
  const void* wd = w.untyped_data();
  if (w_bf16 && !y_bf16) {
    SmallMatmul(xr.data(), rows, K, static_cast<const uint16_t*>(wd), N, transpose_w,
                static_cast<float*>(out));
  } else if (w_bf16) {
    SmallMatmul(xr.data(), rows, K, static_cast<const uint16_t*>(wd), N, transpose_w,
                static_cast<uint16_t*>(out));
  } else if (!y_bf16) {
    SmallMatmul(xr.data(), rows, K, static_cast<const float*>(wd), N, transpose_w,
                static_cast<float*>(out));
  } else {
    SmallMatmul(xr.data(), rows, K, static_cast<const float*>(wd), N, transpose_w,
                static_cast<uint16_t*>(out));
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeSmallMatmul, SmallMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transpose_w"));
