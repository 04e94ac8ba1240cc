// A decoder's residual add and the RMSNorm that follows it, as one call:
// `esurge_cpu_add_rms_norm` returns, for each row of x [M, K] (fp32),
//   sum    = x + delta
//   normed = weight * (sum * rsqrt(mean(sum * sum) + eps))
// with weight [K] (fp32 or bf16, widened) and fp32 arithmetic, the order of
// esurge_core.models.norms.rms_norm (the mean's sum in another order than XLA's reduction).
//
// Why: XLA:CPU runs that pattern as four small ops (the add, the sum of squares, the rsqrt
// and the scaling), each its own thunk of a few microseconds on rows that take well under a
// microsecond to normalise; a SmolLM2 decode step has 60 of them. One call per norm, with no
// pass over memory beyond reading x and delta and writing the two results, takes their place
// (docs/PERFORMANCE.md step 45).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "parallel_for.h"
#include "xla_thread_pool.h"
#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// Rows a ParallelFor item takes; steps of at most this many rows run on the caller alone
// (a decode step's rows are done before a worker would have joined).
constexpr int64_t kRowsPerItem = 16;

inline float WeightAt(const float* w, int64_t k) { return w[k]; }
inline float WeightAt(const uint16_t* w, int64_t k) {
  const uint32_t bits = static_cast<uint32_t>(w[k]) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

template <typename TW>
void AddRmsNormRow(const float* x, const float* delta, const TW* w, int64_t K, float eps,
                   float* sum, float* normed) {
  int64_t k = 0;
  float squares = 0.0f;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (; k + 16 <= K; k += 16) {
    const __m512 s = _mm512_add_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(delta + k));
    _mm512_storeu_ps(sum + k, s);
    acc = _mm512_fmadd_ps(s, s, acc);
  }
  squares = _mm512_reduce_add_ps(acc);
#endif
  for (; k < K; ++k) {
    sum[k] = x[k] + delta[k];
    squares += sum[k] * sum[k];
  }
  const float scale = 1.0f / std::sqrt(squares / static_cast<float>(K) + eps);
  for (k = 0; k < K; ++k) normed[k] = WeightAt(w, k) * (sum[k] * scale);
}

template <typename TW>
void AddRmsNorm(const float* x, const float* delta, const TW* w, int64_t M, int64_t K, float eps,
                float* sum, float* normed) {
  const auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      AddRmsNormRow(x + r * K, delta + r * K, w, K, eps, sum + r * K, normed + r * K);
    }
  };
  if (M <= kRowsPerItem) return rows(0, M);
  esurge_cpu::ParallelFor((M + kRowsPerItem - 1) / kRowsPerItem, [&](int64_t item) {
    rows(item * kRowsPerItem, std::min(M, (item + 1) * kRowsPerItem));
  });
}

ffi::Error AddRmsNormImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> delta,
                          ffi::AnyBuffer weight, ffi::Result<ffi::Buffer<ffi::F32>> sum,
                          ffi::Result<ffi::Buffer<ffi::F32>> normed, float eps,
                          ffi::ThreadPool thread_pool) {
  const std::string what = "add_rms_norm (cpu): ";
  const auto x_dims = x.dimensions();
  const auto w_dims = weight.dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 1) {
    return ffi::Error::InvalidArgument(what + "x must be [M, K] and weight [K]");
  }
  const int64_t M = x_dims[0], K = x_dims[1];
  if (w_dims[0] != K || delta.element_count() != M * K || sum->element_count() != M * K ||
      normed->element_count() != M * K) {
    return ffi::Error::InvalidArgument(what + "shapes do not agree");
  }
  if (!(eps >= 0.0f)) {
    return ffi::Error::InvalidArgument(what + "eps must be >= 0, got " + std::to_string(eps));
  }
  esurge_cpu::XlaThreadPoolScope pool_scope(thread_pool, M);
  if (weight.element_type() == ffi::DataType::F32) {
    AddRmsNorm(x.typed_data(), delta.typed_data(), static_cast<const float*>(weight.untyped_data()),
               M, K, eps, sum->typed_data(), normed->typed_data());
  } else if (weight.element_type() == ffi::DataType::BF16) {
    AddRmsNorm(x.typed_data(), delta.typed_data(),
               static_cast<const uint16_t*>(weight.untyped_data()), M, K, eps, sum->typed_data(),
               normed->typed_data());
  } else {
    return ffi::Error::InvalidArgument(what + "weight must be float32 or bfloat16");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeAddRmsNorm, AddRmsNormImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("eps")
                                  .Ctx<ffi::ThreadPool>());
