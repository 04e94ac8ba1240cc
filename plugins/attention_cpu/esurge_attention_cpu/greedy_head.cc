// The greedy token of each row of a decode step, without reading the whole bf16 LM head:
// `bf16_greedy_head` returns, for the first `num_rows` rows of x, the first index of the
// largest of the logits x @ W that `bf16_packed_matmul` would compute (bitwise those fp32
// values: x rounded to bf16, VDPBF16PS sums over the packed pairs in order), as the engine's
// argmax (esurge_core.sampling.sampler.first_argmax) takes it: the first index on ties, 0
// where a logit is NaN.
//
// Why: a batch-1 decode step streams its weights from memory, and SmolLM2's tied head is a
// fifth of them (57 of 269 MB). Here each row is first screened against an int8 copy of the
// head (half the bytes): with x quantised to int16 (VPDPWSSD sums in int32, exact), every
// column n gets an approximate logit A_n and a bound B_n on |logit_n - A_n| made of
//   * the weights' quantisation: |sum_k x_k e_nk| <= |x|_1 * max_k |e_nk| (e = w - s_n q),
//   * x's quantisation: |sum_k d_k s_n q_nk| <= (t / 2) * s_n * |q_n|_1 (d = x - t p),
//   * the fp32 rounding of the exact product: at most 2K additions, each within 2^-24 of
//     the running sum, whose terms are at most |x|_1 * max_k |w_nk| in total,
// each column's constants computed at load in float64 (pack_greedy_screen in
// greedy_head.py) and the whole bound widened for the fp32 arithmetic that evaluates it.
// A column whose upper bound A_n + B_n is below the largest lower bound max_m (A_m - B_m)
// is smaller than that column's logit, so it is neither the maximum nor tied with it. The
// columns left (the candidates: for SmolLM2 a median of one, at most 95 of 49152 in the
// measurements of docs/PERFORMANCE.md step 44) get their exact logits from the packed bf16
// head, 16 columns at a time, with the products' own instruction sequence. A row with a
// non-finite value in x has every column computed exactly.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "amx_tiles.h"
#include "bf16_rows.h"
#include "parallel_for.h"
#include "xla_thread_pool.h"
#include "xla/ffi/api/ffi.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VNNI__)
#include <immintrin.h>
#define ESURGE_HAS_GREEDY_HEAD 1
#else
#define ESURGE_HAS_GREEDY_HEAD 0
#endif

namespace ffi = xla::ffi;

extern "C" int EsurgeGreedyHeadAvailable() { return ESURGE_HAS_GREEDY_HEAD; }

namespace {

#if ESURGE_HAS_GREEDY_HEAD

constexpr int kLanes = 16;
constexpr int kBlockVectors = 4;
constexpr int kBlockColumns = kLanes * kBlockVectors;  // the packed layouts' block: 64 columns
// x is quantised to integers of at most this magnitude: 576 products of 16383 x 127 sum to
// 1.2e9, inside int32 (no wrap in VPDPWSSD's sums) for K up to 1032.
constexpr int32_t kXLevels = 16383;
constexpr int64_t kMaxK = 1032;

// One row of x as the screen and the exact products read it.
struct ScreenedRow {
  std::vector<uint32_t> bf16_pairs;  // x rounded to bf16, as pairs (even k in the low half)
  std::vector<uint32_t> int_pairs;   // x / t rounded to int16, as pairs
  float t = 1.0f;                    // x ~ t * p
  float l1 = 0.0f;                   // sum_k |x_k| (x as rounded to bf16), rounded up
  bool finite = true;
};

template <typename TX>
void ScreenRow(const TX* x, int64_t K, ScreenedRow* row) {
  const int64_t pairs = (K + 1) / 2;
  std::vector<uint16_t> bf16(2 * pairs);
  esurge_cpu::RoundRowToBf16(x, K, bf16.data());
  row->bf16_pairs.resize(pairs);
  std::memcpy(row->bf16_pairs.data(), bf16.data(), pairs * sizeof(uint32_t));
  std::vector<double> values(2 * pairs);
  double l1 = 0.0, largest = 0.0;
  row->finite = true;
  for (int64_t k = 0; k < 2 * pairs; ++k) {
    const uint32_t bits = static_cast<uint32_t>(bf16[k]) << 16;
    float value;
    std::memcpy(&value, &bits, sizeof value);
    if (!std::isfinite(value)) row->finite = false;
    values[k] = value;
    l1 += std::fabs(values[k]);
    largest = std::max(largest, std::fabs(values[k]));
  }
  // A value the products flush to zero (VDPBF16PS treats denormals as zero) is counted as
  // itself here, which only widens the bound.
  // Sums this large could overflow fp32 in the bound; such a row is computed exactly.
  if (!(l1 < 1e30)) row->finite = false;
  const double t = largest > 0.0 && row->finite ? largest / kXLevels : 1.0;
  row->t = static_cast<float>(t);
  row->l1 = static_cast<float>(l1 * (1.0 + 1e-6));
  row->int_pairs.resize(pairs);
  for (int64_t kp = 0; kp < pairs; ++kp) {
    int32_t p[2];
    for (int h = 0; h < 2; ++h) {
      const double scaled = row->finite ? values[2 * kp + h] / row->t : 0.0;
      p[h] = static_cast<int32_t>(std::clamp(std::nearbyint(scaled), -double{kXLevels},
                                             double{kXLevels}));
    }
    row->int_pairs[kp] = static_cast<uint16_t>(static_cast<int16_t>(p[0])) |
                         (static_cast<uint32_t>(static_cast<uint16_t>(static_cast<int16_t>(p[1])))
                          << 16);
  }
}

// B is evaluated in fp32 from three products and two sums: widen it by this factor, and add
// this fraction of |A| for A's own rounding (int32 -> fp32 and two products).
constexpr float kBoundWidening = 1.0f + 1.0f / (1 << 16);
constexpr float kApproxRounding = 1.0f / (1 << 19);

// Columns [64 b, 64 b + 64) of the screen for one row: the upper bounds A + B into `upper`
// and the largest lower bound A - B returned. `screen` holds block b as `pairs` rows of 64
// columns x 2 int8 (even k first), `scale`, `err_l1`, `err_t` the block's 64 columns.
float ScreenBlock(const ScreenedRow& row, int64_t pairs, const int8_t* screen,
                  const float* scale, const float* err_l1, const float* err_t, float* upper) {
  __m512i acc[kBlockVectors];
  for (int v = 0; v < kBlockVectors; ++v) acc[v] = _mm512_setzero_si512();
  const uint32_t* xp = row.int_pairs.data();
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const __m512i xv = _mm512_set1_epi32(static_cast<int>(xp[kp]));
    const int8_t* q = screen + kp * 2 * kBlockColumns;
    for (int v = 0; v < kBlockVectors; ++v) {
      const __m512i w = _mm512_cvtepi8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + v * 2 * kLanes)));
      acc[v] = _mm512_dpwssd_epi32(acc[v], xv, w);
    }
  }
  const __m512 t = _mm512_set1_ps(row.t), l1 = _mm512_set1_ps(row.l1);
  const __m512 widen = _mm512_set1_ps(kBoundWidening), approx_rounding =
                                                           _mm512_set1_ps(kApproxRounding);
  const __m512 tiny = _mm512_set1_ps(1e-30f);
  __m512 best_lower = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int v = 0; v < kBlockVectors; ++v) {
    const __m512 a = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[v]), t),
                                   _mm512_loadu_ps(scale + v * kLanes));
    const __m512 abs_a = _mm512_abs_ps(a);
    __m512 b = _mm512_fmadd_ps(l1, _mm512_loadu_ps(err_l1 + v * kLanes),
                               _mm512_mul_ps(t, _mm512_loadu_ps(err_t + v * kLanes)));
    b = _mm512_fmadd_ps(b, widen, _mm512_fmadd_ps(abs_a, approx_rounding, tiny));
    _mm512_storeu_ps(upper + v * kLanes, _mm512_add_ps(a, b));
    best_lower = _mm512_max_ps(best_lower, _mm512_sub_ps(a, b));
  }
  return _mm512_reduce_max_ps(best_lower);
}

// The exact logits of the 16 columns of vector g (columns [16 g, 16 g + 16)) for one row:
// the products' own sums (VDPBF16PS over the pairs in order from zero).
__m512 ExactVector(const ScreenedRow& row, int64_t pairs, const uint32_t* packed, int64_t g) {
  const uint32_t* w = packed + (g / kBlockVectors) * pairs * kBlockColumns + (g % kBlockVectors) *
                                                                                 kLanes;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(row.bf16_pairs[kp]));
    acc = _mm512_dpbf16_ps(acc, xv, (__m512bh)_mm512_loadu_si512(w + kp * kBlockColumns));
  }
  return acc;
}

// Where a row's greedy token stands while its candidates are compared.
struct Best {
  float value = -std::numeric_limits<float>::infinity();
  int64_t index = -1;
  bool nan = false;
  void Take(float v, int64_t i) {
    if (std::isnan(v)) {
      nan = true;
    } else if (index < 0 || v > value || (v == value && i < index)) {
      value = v;
      index = i;
    }
  }
  int32_t Token() const { return nan || index < 0 ? 0 : static_cast<int32_t>(index); }
};

template <typename TX>
void GreedyHead(const TX* x, int64_t rows, int64_t K, int64_t N, const uint32_t* packed,
                const int8_t* screen, const float* scale, const float* err_l1,
                const float* err_t, int32_t* tokens) {
  const int64_t pairs = (K + 1) / 2;
  const int64_t blocks = N / kBlockColumns, vectors = N / kLanes;
  std::vector<ScreenedRow> screened(rows);
  for (int64_t r = 0; r < rows; ++r) ScreenRow(x + r * K, K, &screened[r]);
  // The calling thread's buffers, reused by its next call (named through pointers: inside
  // the ParallelFor body a thread_local name would be the worker's own).
  thread_local std::vector<float> upper_buffer, block_lower_buffer;
  upper_buffer.resize(rows * N);
  block_lower_buffer.resize(rows * blocks);
  float* const upper = upper_buffer.data();
  float* const block_lower = block_lower_buffer.data();
  esurge_cpu::ParallelFor(blocks, [&](int64_t b) {
    for (int64_t r = 0; r < rows; ++r) {
      if (!screened[r].finite) continue;
      block_lower[r * blocks + b] = ScreenBlock(
          screened[r], pairs, screen + b * pairs * 2 * kBlockColumns, scale + b * kBlockColumns,
          err_l1 + b * kBlockColumns, err_t + b * kBlockColumns, upper + r * N + b * kBlockColumns);
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    const ScreenedRow& row = screened[r];
    std::vector<int64_t> candidates;
    if (row.finite) {
      const float* row_lower = block_lower + r * blocks;
      const float threshold = *std::max_element(row_lower, row_lower + blocks);
      const float* row_upper = upper + r * N;
      for (int64_t g = 0; g < vectors; ++g) {
        bool any = false;
        for (int j = 0; j < kLanes; ++j) any |= row_upper[g * kLanes + j] >= threshold;
        if (any) candidates.push_back(g);
      }
    }
    if (candidates.empty()) {  // a non-finite x (or, with finite x, never): every column
      candidates.resize(vectors);
      for (int64_t g = 0; g < vectors; ++g) candidates[g] = g;
    }
    std::vector<Best> found(candidates.size());
    auto exact = [&](int64_t c) {
      alignas(64) float values[kLanes];
      _mm512_store_ps(values, ExactVector(row, pairs, packed, candidates[c]));
      for (int j = 0; j < kLanes; ++j) found[c].Take(values[j], candidates[c] * kLanes + j);
    };
    if (candidates.size() > 64) {
      esurge_cpu::ParallelFor(static_cast<int64_t>(candidates.size()), exact);
    } else {
      for (size_t c = 0; c < candidates.size(); ++c) exact(static_cast<int64_t>(c));
    }
    Best best;
    for (const Best& f : found) {
      best.nan |= f.nan;
      if (f.index >= 0) best.Take(f.value, f.index);
    }
    tokens[r] = best.Token();
  }
}

#endif  // ESURGE_HAS_GREEDY_HEAD

ffi::Error GreedyHeadImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::U32> w_packed,
                          ffi::Buffer<ffi::S8> screen, ffi::Buffer<ffi::F32> scale,
                          ffi::Buffer<ffi::F32> err_l1, ffi::Buffer<ffi::F32> err_t,
                          ffi::Buffer<ffi::S32> num_rows, ffi::Result<ffi::Buffer<ffi::S32>> tokens,
                          ffi::ThreadPool thread_pool) {
  esurge_cpu::XlaThreadPoolScope pool_scope(thread_pool, esurge_cpu::LeadingDimension(x));
#if !ESURGE_HAS_GREEDY_HEAD
  (void)x, (void)w_packed, (void)screen, (void)scale, (void)err_l1, (void)err_t;
  (void)num_rows, (void)tokens;
  return ffi::Error(ffi::ErrorCode::kUnimplemented,
                    "bf16_greedy_head (cpu): this CPU has no AVX512-BF16 and AVX512-VNNI");
#else
  const std::string what = "bf16_greedy_head (cpu): ";
  const auto x_dims = x.dimensions();
  const auto w_dims = w_packed.dimensions();
  const auto s_dims = screen.dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 3 || s_dims.size() != 3 ||
      num_rows.element_count() != 1 || tokens->element_count() != x_dims[0]) {
    return ffi::Error::InvalidArgument(
        what + "x [M, K], w_packed [blocks, pairs, 64], screen [blocks, pairs, 128], tokens [M]");
  }
  const int64_t M = x_dims[0], K = x_dims[1], blocks = w_dims[0], pairs = w_dims[1];
  const int64_t N = blocks * kBlockColumns;
  if (pairs != (K + 1) / 2 || w_dims[2] != kBlockColumns || s_dims[0] != blocks ||
      s_dims[1] != pairs || s_dims[2] != 2 * kBlockColumns || scale.element_count() != N ||
      err_l1.element_count() != N || err_t.element_count() != N) {
    return ffi::Error::InvalidArgument(what + "shapes do not agree");
  }
  if (K > kMaxK) {
    return ffi::Error::InvalidArgument(what + "K must be at most " + std::to_string(kMaxK) +
                                       ", got " + std::to_string(K));
  }
  if (x.element_type() != ffi::DataType::F32 && x.element_type() != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument(what + "x must be float32 or bfloat16");
  }
  const int64_t rows = std::clamp<int64_t>(num_rows.typed_data()[0], 0, M);
  int32_t* out = tokens->typed_data();
  std::fill(out, out + M, 0);
  if (rows == 0 || K == 0) return ffi::Error::Success();
  if (esurge_cpu::amx::Takes(rows, K)) {  // those products sum in another order
    return ffi::Error::InvalidArgument(what + std::to_string(rows) +
                                       " rows: the products of that many rows run on the tile "
                                       "unit, whose sums this kernel does not reproduce");
  }
  const uint32_t* wp = w_packed.typed_data();
  const int8_t* sp = screen.typed_data();
  if (x.element_type() == ffi::DataType::F32) {
    GreedyHead(static_cast<const float*>(x.untyped_data()), rows, K, N, wp, sp,
               scale.typed_data(), err_l1.typed_data(), err_t.typed_data(), out);
  } else {
    GreedyHead(static_cast<const uint16_t*>(x.untyped_data()), rows, K, N, wp, sp,
               scale.typed_data(), err_l1.typed_data(), err_t.typed_data(), out);
  }
  return ffi::Error::Success();
#endif
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeBf16GreedyHead, GreedyHeadImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ctx<ffi::ThreadPool>());
