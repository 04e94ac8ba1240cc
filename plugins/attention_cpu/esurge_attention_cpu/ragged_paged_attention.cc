// Ragged paged attention for CPUs, called from JAX through the XLA FFI.
//
// Contract A of docs/attention.md, the same semantics as the XLA kernel
// (esurge_attention_xla.kernel.ragged_paged_attention): packed ragged queries attend causally
// to a paged KV cache whose pages interleave K and V per kv head
// ([num_pages, page_size, 2 * num_kv_heads, head_dim]).
//
// Why a native kernel: XLA has no way to read pages in place, so the jax.numpy kernel first
// gathers every visible page into a temporary and then runs many tiny batched matrix products;
// on CPU that costs several times the memory floor. Here each work item (one sequence, one kv
// head, a block of up to kQueryBlock query tokens) walks its visible keys directly in the
// pages, a tile at a time, with an online softmax in fp32, so K/V are read once per item.
// Items are spread over the library's worker pool (parallel_for.h).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "amx_attention.h"
#include "amx_decode_attention.h"
#include "avx512_rows_attention.h"
#include "parallel_for.h"
#include "xla_thread_pool.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kKeyTile = 32;
constexpr int kMaxRowsPerItem = 32;
constexpr float kMasked = -1e30f;
// In a step of fewer than kSpanStepItemsPerThread items per thread, a decode token's visible
// keys are split into equal spans of at least Layout::span_min_keys keys (the call's
// `decode_span_min_keys`, 512 from Python), one work item each, as many as make about
// kSpanItemsPerThread items per thread, and their softmax states are merged afterwards: a single
// long sequence then keeps every thread busy (SmolLM2's three kv heads on two threads left one
// thread idle a third of the time; items finer than the threads' count balance a worker that
// joins late). Measured on the 2-core Zen 4 kind (docs/PERFORMANCE.md step 49). Larger steps
// keep one item per token: spans cut into a sequence's stream of pages (spans at fixed
// multiples of 512 keys cost 64 sequences 4-5% a layer).
constexpr int64_t kSpanStepItemsPerThread = 2;
constexpr int64_t kSpanItemsPerThread = 6;

inline float Bf16ToF32(uint16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t F32ToBf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// exp(x) for x <= 0 (softmax arguments), within 2 ulp; plain arithmetic, so the compiler
// vectorises the loops that call it (std::exp only vectorises under -ffast-math, which this
// library is not built with). Arguments below -87 give about 1.6e-38 instead of 0, which is
// harmless: they only ever scale zeros or are summed with far larger weights.
inline float ExpNonPositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// Online-softmax state of query rows over the keys of a prefix their sequence shares with
// others (see "Shared prefixes" below): for the query row of token i of sequence s (i counted
// within the sequence) and query head qh, index Row(s, i, qh) of max / denom, and values at
// that index times head_dim.
struct SharedPrefixState {
  std::vector<int64_t> base;  // per sequence: its first token's row / num_q_heads; -1: none
  float* max = nullptr;
  float* denom = nullptr;
  float* values = nullptr;
  int64_t num_q_heads = 0;
  int64_t Row(int64_t seq, int64_t token, int64_t q_head) const {
    return (base[seq] + token) * num_q_heads + q_head;
  }
};

struct Layout {
  int64_t num_tokens, num_q_heads, head_dim;
  int64_t page_size, num_kv_heads, group;
  int64_t pages_per_seq;
  float sm_scale, soft_cap;
  int64_t sliding_window, chunk_size;  // 0: none
  int64_t span_min_keys = 0;  // the fewest keys of a decode token's span; 0: no spans
  const SharedPrefixState* prefix = nullptr;  // set where some sequences share a prefix
  // Softmax states of the items that cover one span of a decode token's keys (Item::span),
  // kMaxRowsPerItem rows of SpanStateFloats() each.
  float* span_states = nullptr;
};

// Floats of one row's softmax state over a span: its max, its denominator, its weighted values.
inline int64_t SpanStateFloats(const Layout& L) { return 2 + L.head_dim; }
inline float* SpanStateRow(const Layout& L, int32_t span, int64_t row) {
  return L.span_states + (span * int64_t{kMaxRowsPerItem} + row) * SpanStateFloats(L);
}

// Which kernel runs a work item.
enum class Path : uint8_t {
  kVector,        // AttendItemAnyHeadDim
  kTiles,         // AttendItemTiles with amx::AttendTiles: prefill rows on the tile unit
  kFewRowsTiles,  // AttendItemTiles with amx::AttendFewRows: decode rows on the tile unit
  kRows,          // AttendItemRows with rows::AttendRows: prefill rows as products (AVX-512)
};

// One work item: query tokens [q_begin, q_begin + nq) of sequence `seq` (indices into the
// packed batch), all query heads of kv heads [h, h + nh), or with ng > 0 (head-major tile
// items) query heads h * group + [g0, g0 + ng) of kv head h. Covering several kv heads in one
// item reads each token's interleaved K/V row once, in one contiguous piece.
struct Item {
  int32_t seq, h, nh, q_begin, nq;
  int32_t kv_len, q_len, q0;  // q0: index of the block's first token within the sequence
  Path path;
  int32_t g0 = 0, ng = 0;
  // Keys below this were attended by the shared-prefix pass; the item starts from its state.
  int32_t prefix_end = 0;
  // A decode token's item that covers keys [key_from, key_to) only and leaves its rows'
  // softmax states in span state `span` (Layout::span_states) for MergeSpans; -1: every key.
  int32_t span = -1, key_from = 0, key_to = 0;
};

// The work of an item, for ordering them: the keys its last query token sees.
inline int64_t ItemKeys(const Item& it) {
  return it.span >= 0 ? it.key_to - it.key_from : it.kv_len - it.q_len + it.q0;
}

template <typename T>
inline float Load(const T* p, int64_t i);
template <>
inline float Load<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
inline float Load<uint16_t>(const uint16_t* p, int64_t i) {
  return Bf16ToF32(p[i]);
}

// Returns a pointer to the fp32 values of `n` elements at `src`: `src` itself for fp32, else
// `scratch` filled with the widened values.
inline const float* Widen(const float* src, float* /*scratch*/, int64_t /*n*/) { return src; }
inline const float* Widen(const uint16_t* src, float* scratch, int64_t n) {
  for (int64_t i = 0; i < n; ++i) scratch[i] = Bf16ToF32(src[i]);
  return scratch;
}

// The first key a query at position p sees (its window's or chunk's start; 0 without either).
inline int64_t FirstVisibleKey(const Layout& L, int64_t p) {
  int64_t lo = 0;
  if (L.sliding_window > 0) lo = std::max<int64_t>(lo, p - L.sliding_window + 1);
  if (L.chunk_size > 0) lo = std::max<int64_t>(lo, (p / L.chunk_size) * L.chunk_size);
  return lo;
}

// For an item after the shared-prefix pass (it.prefix_end > 0): the row of `token` (counted
// within the sequence) and `q_head` starts from the pass's state, at key it.prefix_end.
inline void ResumeAfterSharedPrefix(const Layout& L, const Item& it, int64_t token,
                                    int64_t q_head, int64_t head_dim, int64_t& lo, float& max,
                                    float& denom, float* values) {
  const int64_t sr = L.prefix->Row(it.seq, token, q_head);
  lo = std::max<int64_t>(lo, it.prefix_end);
  max = L.prefix->max[sr];
  denom = L.prefix->denom[sr];
  std::copy(L.prefix->values + sr * head_dim, L.prefix->values + (sr + 1) * head_dim, values);
}

// Writes a row's output: its weighted values over its denominator (zeros where it saw no key).
template <typename TQ>
inline void StoreNormalised(const float* values, float denom, int64_t head_dim, TQ* dst) {
  const float inv = denom > 0.0f ? 1.0f / denom : 0.0f;
  for (int64_t d = 0; d < head_dim; ++d) {
    const float value = values[d] * inv;
    if constexpr (sizeof(TQ) == 2) {
      dst[d] = F32ToBf16(value);
    } else {
      dst[d] = value;
    }
  }
}

// kHeadDim > 0 fixes the head size at compile time (fully unrolled vector loops); 0 reads it
// from the layout.
template <typename TQ, typename TKV, int kHeadDim>
void AttendItem(const Layout& L, const Item& it, const TQ* queries, const TKV* kv,
                const int32_t* page_table, TQ* out) {
  const int64_t D = kHeadDim > 0 ? kHeadDim : L.head_dim;
  const int64_t g = L.group, ps = L.page_size;
  const int64_t rows_per_token = it.nh * g;
  const int64_t rows = it.nq * rows_per_token;
  const int64_t kv_stride_token = 2 * L.num_kv_heads * D;
  const int64_t first_pos = it.kv_len - it.q_len + it.q0;  // position of the first row
  const int64_t last_pos = first_pos + it.nq - 1;

  // Row r: token r / rows_per_token, query head h * g + r % rows_per_token, which reads kv
  // head h + (r % rows_per_token) / g.
  alignas(64) float q[kMaxRowsPerItem * 256];
  alignas(64) float acc[kMaxRowsPerItem * 256];
  alignas(64) float scores[kMaxRowsPerItem * kKeyTile];
  float row_max[kMaxRowsPerItem], denom[kMaxRowsPerItem];
  int64_t row_hi[kMaxRowsPerItem], row_lo[kMaxRowsPerItem], row_kv[kMaxRowsPerItem];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = it.q_begin + r / rows_per_token;
    const int64_t head = it.h * g + r % rows_per_token;
    row_kv[r] = 2 * ((r % rows_per_token) / g) * D;  // K offset in the item's widened row
    const TQ* src = queries + (token * L.num_q_heads + head) * D;
    for (int64_t d = 0; d < D; ++d) q[r * D + d] = Load(src, d) * L.sm_scale;
    std::fill(acc + r * D, acc + (r + 1) * D, 0.0f);
    row_max[r] = kMasked;
    denom[r] = 0.0f;
    const int64_t p = first_pos + r / rows_per_token;
    row_hi[r] = std::min<int64_t>(p, it.kv_len - 1);  // last visible key (inclusive)
    row_lo[r] = FirstVisibleKey(L, p);
    if (it.prefix_end > 0) {
      ResumeAfterSharedPrefix(L, it, it.q0 + r / rows_per_token, head, D, row_lo[r],
                              row_max[r], denom[r], acc + r * D);
    }
  }
  const int64_t key_begin = row_lo[0];
  const int64_t key_end = std::min<int64_t>(last_pos, it.kv_len - 1) + 1;  // exclusive

  const int64_t row_width = 2 * it.nh * D;  // K and V of the item's kv heads, one token
  // Widened bf16 rows (unused for fp32); per thread, grown once to the largest item.
  thread_local std::vector<float> scratch_buffer;
  if (sizeof(TKV) == 2 && scratch_buffer.size() < static_cast<size_t>(kKeyTile * row_width)) {
    scratch_buffer.resize(kKeyTile * row_width);
  }
  float* kv_scratch = scratch_buffer.data();
  const float* kv_rows[kKeyTile];
  const float cap = L.soft_cap;
  for (int64_t k0 = key_begin; k0 < key_end; k0 += kKeyTile) {
    const int64_t nt = std::min<int64_t>(kKeyTile, key_end - k0);
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t pos = k0 + t;
      const int64_t slot = std::min<int64_t>(pos / ps, L.pages_per_seq - 1);
      const TKV* src = kv + (page_table[slot] * ps + pos % ps) * kv_stride_token + 2 * it.h * D;
      kv_rows[t] = Widen(src, kv_scratch + t * row_width, row_width);
    }
    // Scores of every row against the tile's keys (each key loaded once for all rows).
    for (int64_t t = 0; t < nt; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        const float* kt = kv_rows[t] + row_kv[r];
        const float* qr = q + r * D;
        float s = 0.0f;
        for (int64_t d = 0; d < D; ++d) s += qr[d] * kt[d];
        scores[r * kKeyTile + t] = s;
      }
    }
    bool any_rows = false;
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = scores + r * kKeyTile;
      const int64_t t_lo = std::max<int64_t>(row_lo[r] - k0, 0);
      const int64_t t_hi = std::min<int64_t>(row_hi[r] - k0 + 1, nt);  // exclusive
      if (t_lo >= t_hi) {
        std::fill(sr, sr + nt, 0.0f);
        continue;
      }
      any_rows = true;
      if (cap > 0.0f) {
        for (int64_t t = t_lo; t < t_hi; ++t) sr[t] = cap * std::tanh(sr[t] / cap);
      }
      float tile_max = kMasked;
      for (int64_t t = t_lo; t < t_hi; ++t) tile_max = std::max(tile_max, sr[t]);
      const float new_max = std::max(row_max[r], tile_max);
      const float rescale = std::exp(row_max[r] - new_max);
      if (rescale != 1.0f) {
        float* ar = acc + r * D;
        for (int64_t d = 0; d < D; ++d) ar[d] *= rescale;
      }
      float sum = 0.0f;
      for (int64_t t = 0; t < nt; ++t) {
        const float p = (t >= t_lo && t < t_hi) ? ExpNonPositive(sr[t] - new_max) : 0.0f;
        sr[t] = p;
        sum += p;
      }
      denom[r] = denom[r] * rescale + sum;
      row_max[r] = new_max;
    }
    if (!any_rows) continue;
    // Weighted values: each value row loaded once for all rows.
    for (int64_t t = 0; t < nt; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        const float* vt = kv_rows[t] + row_kv[r] + D;
        const float p = scores[r * kKeyTile + t];
        float* ar = acc + r * D;
        for (int64_t d = 0; d < D; ++d) ar[d] += p * vt[d];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = it.q_begin + r / rows_per_token;
    const int64_t head = it.h * g + r % rows_per_token;
    StoreNormalised(acc + r * D, denom[r], D, out + (token * L.num_q_heads + head) * D);
  }
}

// ---- Vector path (head_dim a multiple of kLanes) ----------------------------------------
//
// The same computation as AttendItem, organised for the vector units and the memory system:
// keys come kLanes at a time; each key's K is read once per kv head for all of that head's
// query rows, the kLanes per-key partial sums of a row are folded into one vector of kLanes
// scores by a transpose-and-add tree (kLanes - 1 two-source shuffles and adds instead of a
// horizontal sum per key), the softmax runs on those vectors, and the weighted values accumulate in
// registers for a few rows at a time (the online-softmax rescale folded into their load). The
// next tile's K/V rows are prefetched while this one is computed: pages are scattered in
// memory, so the hardware prefetcher cannot follow a sequence across a page boundary.

// Vectors of 16 floats with AVX-512 (32 registers), of 8 otherwise (AVX2, NEON: 16 registers;
// the 16-float tiles spilled there).
#if defined(__AVX512F__)
#define ESURGE_ATTENTION_LANES 16
#else
#define ESURGE_ATTENTION_LANES 8
#endif
constexpr int kLanes = ESURGE_ATTENTION_LANES;
typedef float FVec __attribute__((vector_size(kLanes * sizeof(float))));
typedef uint32_t UVec __attribute__((vector_size(kLanes * sizeof(uint32_t))));
typedef uint16_t HVec __attribute__((vector_size(kLanes * sizeof(uint16_t))));
// Accumulator vectors the weighted-value loop keeps in registers per row group.
constexpr int kValueAccumulators = kLanes == 16 ? 16 : 8;

inline FVec LoadF(const float* p) {
  FVec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void TouchForTlb(const char* p) {
  const volatile char* v = p;
  (void)*v;
}
inline void StoreF(float* p, FVec v) { std::memcpy(p, &v, sizeof v); }
inline FVec Splat(float x) { return FVec{} + x; }

// Widens `n` bf16 values (a multiple of kLanes) to fp32. With AVX-512 spelled out: GCC's code
// for the generic form on Zen 4 widened each 16 values in two halves (six instructions instead
// of a zero-extending load and a shift; a batch-64 decode layer's attention 2-4% slower, step
// 41 in docs/PERFORMANCE.md).
inline void WidenLanes(const uint16_t* src, float* dst, int64_t n) {
#if defined(__AVX512F__)
  for (int64_t i = 0; i < n; i += 16) {
    const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
  }
#else
  for (int64_t i = 0; i < n; i += kLanes) {
    HVec h;
    std::memcpy(&h, src + i, sizeof h);
    const UVec wide = __builtin_convertvector(h, UVec) << 16;
    std::memcpy(dst + i, &wide, sizeof wide);
  }
#endif
}

#if ESURGE_ATTENTION_LANES == 16
// Adds the halves of a's and b's lane groups of width W: the result holds a's groups then b's,
// each half as wide (one step of the transpose-and-add tree).
template <int W>
inline FVec FoldPair(FVec a, FVec b) {
  if constexpr (W == 16) {
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22,
                                   23) +
           __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29,
                                   30, 31);
  } else if constexpr (W == 8) {
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26,
                                   27) +
           __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29,
                                   30, 31);
  } else if constexpr (W == 4) {
    return __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28,
                                   29) +
           __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27,
                                   30, 31);
  } else {
    static_assert(W == 2);
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                   30) +
           __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                   31);
  }
}

// Lane t of the result is the sum of all lanes of a[t].
inline FVec SumEachLane(const FVec* a) {
  FVec b[8], c[4], d[2];
  for (int i = 0; i < 8; ++i) b[i] = FoldPair<16>(a[2 * i], a[2 * i + 1]);
  for (int i = 0; i < 4; ++i) c[i] = FoldPair<8>(b[2 * i], b[2 * i + 1]);
  for (int i = 0; i < 2; ++i) d[i] = FoldPair<4>(c[2 * i], c[2 * i + 1]);
  return FoldPair<2>(d[0], d[1]);
}
#else  // 8 lanes
template <int W>
inline FVec FoldPair(FVec a, FVec b) {
  if constexpr (W == 8) {
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
  } else if constexpr (W == 4) {
    return __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13) +
           __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15);
  } else {
    static_assert(W == 2);
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14) +
           __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
  }
}

// Lane t of the result is the sum of all lanes of a[t].
inline FVec SumEachLane(const FVec* a) {
  FVec c[4], d[2];
  for (int i = 0; i < 4; ++i) c[i] = FoldPair<8>(a[2 * i], a[2 * i + 1]);
  for (int i = 0; i < 2; ++i) d[i] = FoldPair<4>(c[2 * i], c[2 * i + 1]);
  return FoldPair<2>(d[0], d[1]);
}
#endif

template <typename TKV>
inline const float* HeadRow(const TKV* row, float* scratch, int64_t n) {
  if constexpr (sizeof(TKV) == 2) {
    WidenLanes(row, scratch, n);
    return scratch;
  } else {
    (void)scratch;
    (void)n;
    return row;
  }
}

template <typename TQ, typename TKV, int kD>
void AttendItemVectorized(const Layout& L, const Item& it, const TQ* queries, const TKV* kv,
                          const int32_t* page_table, TQ* out) {
  static_assert(kD % kLanes == 0);
  constexpr int kC = kD / kLanes;  // vectors per head row
  constexpr int kGroupRows = std::max(1, kValueAccumulators / kC);
  const int64_t g = L.group, ps = L.page_size;
  const int64_t rows_per_token = it.nh * g;
  const int64_t rows = it.nq * rows_per_token;
  const int64_t kv_stride_token = 2 * L.num_kv_heads * kD;
  const int64_t first_pos = it.kv_len - it.q_len + it.q0;
  const int64_t last_pos = first_pos + it.nq - 1;

  alignas(64) float q[kMaxRowsPerItem * kD];
  alignas(64) float acc[kMaxRowsPerItem * kD];
  alignas(64) float scores[kMaxRowsPerItem * kLanes];
  alignas(64) float widened[kLanes * kD];
  float row_max[kMaxRowsPerItem], denom[kMaxRowsPerItem], rescale[kMaxRowsPerItem];
  int64_t row_hi[kMaxRowsPerItem], row_lo[kMaxRowsPerItem];
  // Rows of each kv head of the item, in order (row r: token r / rows_per_token, query head
  // it.h * g + r % rows_per_token).
  int32_t head_rows[kMaxRowsPerItem];
  int64_t head_row_begin[kMaxRowsPerItem + 1];
  {
    int64_t n = 0;
    for (int64_t hk = 0; hk < it.nh; ++hk) {
      head_row_begin[hk] = n;
      for (int64_t tok = 0; tok < it.nq; ++tok) {
        for (int64_t j = 0; j < g; ++j) head_rows[n++] = tok * rows_per_token + hk * g + j;
      }
    }
    head_row_begin[it.nh] = n;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = it.q_begin + r / rows_per_token;
    const int64_t head = it.h * g + r % rows_per_token;
    const TQ* src = queries + (token * L.num_q_heads + head) * kD;
    for (int64_t d = 0; d < kD; ++d) q[r * kD + d] = Load(src, d) * L.sm_scale;
    std::fill(acc + r * kD, acc + (r + 1) * kD, 0.0f);
    row_max[r] = kMasked;
    denom[r] = 0.0f;
    const int64_t p = first_pos + r / rows_per_token;
    row_hi[r] = std::min<int64_t>(p, it.kv_len - 1);
    row_lo[r] = FirstVisibleKey(L, p);
    if (it.span >= 0) {  // a span of a decode token's keys
      row_lo[r] = std::max<int64_t>(row_lo[r], it.key_from);
      row_hi[r] = std::min<int64_t>(row_hi[r], it.key_to - 1);
    }
    if (it.prefix_end > 0) {
      ResumeAfterSharedPrefix(L, it, it.q0 + r / rows_per_token, head, kD, row_lo[r],
                              row_max[r], denom[r], acc + r * kD);
    }
  }
  const int64_t key_begin = row_lo[0];
  int64_t key_end = std::min<int64_t>(last_pos, it.kv_len - 1) + 1;  // exclusive
  if (it.span >= 0) key_end = std::min<int64_t>(key_end, it.key_to);
  const int64_t item_offset = 2 * it.h * kD;
  const int64_t item_bytes = 2 * it.nh * kD * static_cast<int64_t>(sizeof(TKV));
  auto token_row = [&](int64_t pos) {
    const int64_t slot = std::min<int64_t>(pos / ps, L.pages_per_seq - 1);
    return kv + (page_table[slot] * ps + pos % ps) * kv_stride_token + item_offset;
  };
  const float cap = L.soft_cap;
  const TKV* key_rows[kLanes];
  for (int64_t k0 = key_begin; k0 < key_end; k0 += kLanes) {
    const int64_t nt = std::min<int64_t>(kLanes, key_end - k0);
    for (int64_t t = 0; t < kLanes; ++t) key_rows[t] = token_row(k0 + std::min(t, nt - 1));
    // Prefetch the next tile's rows; the loads of each row's first and last byte also fill
    // the TLB entries a prefetch would otherwise wait for (measured: 37 -> 27 -> 24 ms for the
    // 30 layers of a batch-64 decode step with pages scattered in a 377 MB cache).
    const int64_t next_end = std::min<int64_t>(k0 + 2 * kLanes, key_end);
    for (int64_t pos = k0 + kLanes; pos < next_end; ++pos) {
      const char* row = reinterpret_cast<const char*>(token_row(pos));
      for (int64_t b = 0; b < item_bytes; b += 64) __builtin_prefetch(row + b, 0, 3);
      TouchForTlb(row);
      TouchForTlb(row + item_bytes - 1);
    }
    // Scores: row r against the tile's keys, one vector per row.
    for (int64_t hk = 0; hk < it.nh; ++hk) {
      const float* k_rows[kLanes];
      for (int64_t t = 0; t < kLanes; ++t) {
        k_rows[t] = HeadRow(key_rows[t] + 2 * hk * kD, widened + t * kD, kD);
      }
      for (int64_t i = head_row_begin[hk]; i < head_row_begin[hk + 1]; ++i) {
        const int64_t r = head_rows[i];
        FVec qv[kC];
        for (int c = 0; c < kC; ++c) qv[c] = LoadF(q + r * kD + c * kLanes);
        FVec partial[kLanes];
        for (int t = 0; t < kLanes; ++t) {
          FVec s = qv[0] * LoadF(k_rows[t]);
          for (int c = 1; c < kC; ++c) s += qv[c] * LoadF(k_rows[t] + c * kLanes);
          partial[t] = s;
        }
        StoreF(scores + r * kLanes, SumEachLane(partial));
      }
    }
    bool any_rows = false;
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = scores + r * kLanes;
      const int64_t t_lo = std::max<int64_t>(row_lo[r] - k0, 0);
      const int64_t t_hi = std::min<int64_t>(row_hi[r] - k0 + 1, nt);  // exclusive
      if (t_lo >= t_hi) {
        std::fill(sr, sr + kLanes, 0.0f);
        rescale[r] = 1.0f;
        continue;
      }
      any_rows = true;
      if (cap > 0.0f) {
        for (int64_t t = t_lo; t < t_hi; ++t) sr[t] = cap * std::tanh(sr[t] / cap);
      }
      float tile_max = kMasked;
      for (int64_t t = t_lo; t < t_hi; ++t) tile_max = std::max(tile_max, sr[t]);
      const float new_max = std::max(row_max[r], tile_max);
      rescale[r] = std::exp(row_max[r] - new_max);
      float sum = 0.0f;
      for (int64_t t = 0; t < kLanes; ++t) {
        const float p = (t >= t_lo && t < t_hi) ? ExpNonPositive(sr[t] - new_max) : 0.0f;
        sr[t] = p;
        sum += p;
      }
      denom[r] = denom[r] * rescale[r] + sum;
      row_max[r] = new_max;
    }
    if (!any_rows) continue;
    // Weighted values, kGroupRows rows at a time with their sums in registers.
    for (int64_t hk = 0; hk < it.nh; ++hk) {
      const float* v_rows[kLanes];
      for (int64_t t = 0; t < nt; ++t) {
        v_rows[t] = HeadRow(key_rows[t] + (2 * hk + 1) * kD, widened + t * kD, kD);
      }
      for (int64_t i0 = head_row_begin[hk]; i0 < head_row_begin[hk + 1]; i0 += kGroupRows) {
        const int64_t n = std::min<int64_t>(kGroupRows, head_row_begin[hk + 1] - i0);
        FVec sums[kGroupRows][kC];
        for (int64_t j = 0; j < n; ++j) {
          const int64_t r = head_rows[i0 + j];
          const FVec scale = Splat(rescale[r]);
          for (int c = 0; c < kC; ++c) sums[j][c] = LoadF(acc + r * kD + c * kLanes) * scale;
        }
        for (int64_t t = 0; t < nt; ++t) {
          FVec v[kC];
          for (int c = 0; c < kC; ++c) v[c] = LoadF(v_rows[t] + c * kLanes);
          for (int64_t j = 0; j < n; ++j) {
            const FVec p = Splat(scores[head_rows[i0 + j] * kLanes + t]);
            for (int c = 0; c < kC; ++c) sums[j][c] += p * v[c];
          }
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t r = head_rows[i0 + j];
          for (int c = 0; c < kC; ++c) StoreF(acc + r * kD + c * kLanes, sums[j][c]);
        }
      }
    }
  }
  if (it.span >= 0) {
    for (int64_t r = 0; r < rows; ++r) {
      float* state = SpanStateRow(L, it.span, r);
      state[0] = row_max[r];
      state[1] = denom[r];
      std::copy(acc + r * kD, acc + (r + 1) * kD, state + 2);
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = it.q_begin + r / rows_per_token;
    const int64_t head = it.h * g + r % rows_per_token;
    StoreNormalised(acc + r * kD, denom[r], kD, out + (token * L.num_q_heads + head) * kD);
  }
}

// The outputs of a decode token's items that each covered one span of its keys: per row, the
// spans' softmax states rescaled to their common max and summed, in span order.
struct SpanMerge {
  int32_t first_span, spans;  // span states [first_span, first_span + spans)
  int32_t token, h, nh;       // the items' query token and kv heads
};

template <typename TQ>
void MergeSpans(const Layout& L, const SpanMerge& m, TQ* out) {
  const int64_t kD = L.head_dim;
  float values[256];
  for (int64_t r = 0; r < m.nh * L.group; ++r) {
    float row_max = kMasked;
    for (int32_t s = 0; s < m.spans; ++s) {
      row_max = std::max(row_max, SpanStateRow(L, m.first_span + s, r)[0]);
    }
    float denom = 0.0f;
    std::fill(values, values + kD, 0.0f);
    for (int32_t s = 0; s < m.spans; ++s) {
      const float* state = SpanStateRow(L, m.first_span + s, r);
      if (state[1] == 0.0f) continue;  // a span that saw no key
      const float scale = ExpNonPositive(state[0] - row_max);
      denom += state[1] * scale;
      for (int64_t d = 0; d < kD; ++d) values[d] += state[2 + d] * scale;
    }
    const int64_t head = m.h * L.group + r;
    StoreNormalised(values, denom, kD, out + (m.token * L.num_q_heads + head) * kD);
  }
}

template <typename TQ, typename TKV>
void AttendItemAnyHeadDim(const Layout& L, const Item& it, const TQ* queries, const TKV* kv,
                          const int32_t* page_table, TQ* out) {
  switch (L.head_dim) {
    case 64:
      return AttendItemVectorized<TQ, TKV, 64>(L, it, queries, kv, page_table, out);
    case 128:
      return AttendItemVectorized<TQ, TKV, 128>(L, it, queries, kv, page_table, out);
    case 256:
      return AttendItemVectorized<TQ, TKV, 256>(L, it, queries, kv, page_table, out);
    default:
      return AttendItem<TQ, TKV, 0>(L, it, queries, kv, page_table, out);
  }
}

// ---- Rows path (AVX-512, no tile unit) --------------------------------------------------
//
// A sequence with at least kRowsMinRows query rows per kv head (prefill) on a CPU with AVX-512
// but without the tile unit runs in items of one kv head and up to kRowsPerItem rows (the
// tokens of a block times the group; row r: token r / g, query head h * g + r % g), each key
// block widened and transposed once for all of them (avx512_rows_attention.h). head_dim 64, 128
// or 256.
constexpr int64_t kRowsMinRows = 16;
// Rows of an item on the rows path and of the shared-prefix pass (at most rows::kMaxRows):
// 24 measured as fast as 48 for prefill and faster for the pass (more items to share out).
constexpr int64_t kRowsPerItem = 24;

bool RowsAvailable(const Layout& L) {
#if defined(__AVX512F__)
  return L.head_dim == 64 || L.head_dim == 128 || L.head_dim == 256;
#else
  (void)L;
  return false;
#endif
}

template <typename TQ, typename TKV, int kD>
void AttendItemRows(const Layout& L, const Item& it, const TQ* queries, const TKV* kv,
                    const int32_t* page_table, TQ* out) {
#if defined(__AVX512F__)
  namespace rows = esurge_cpu::rows;
  const int64_t g = L.group;
  const int n = static_cast<int>(it.nq * g);
  const int64_t h = it.h;
  const int64_t first_pos = it.kv_len - it.q_len + it.q0;
  alignas(64) float q[rows::kMaxRows * kD];
  alignas(64) float values[rows::kMaxRows * kD];
  float row_max[rows::kMaxRows], denom[rows::kMaxRows];
  int64_t lo[rows::kMaxRows], hi[rows::kMaxRows];
  auto vector_of = [&](int r) {
    return ((it.q_begin + r / g) * L.num_q_heads + h * g + r % g) * kD;
  };
  for (int r = 0; r < n; ++r) {
    const TQ* src = queries + vector_of(r);
    for (int d = 0; d < kD; ++d) q[r * kD + d] = Load(src, d) * L.sm_scale;
    std::fill(values + r * kD, values + (r + 1) * kD, 0.0f);
    row_max[r] = rows::kMasked;
    denom[r] = 0.0f;
    const int64_t p = first_pos + r / g;
    hi[r] = std::min<int64_t>(p, it.kv_len - 1);
    lo[r] = FirstVisibleKey(L, p);
    if (it.prefix_end > 0) {
      ResumeAfterSharedPrefix(L, it, it.q0 + r / g, h * g + r % g, kD, lo[r], row_max[r],
                              denom[r], values + r * kD);
    }
  }
  const int64_t key_begin = *std::min_element(lo, lo + n);
  const int64_t key_end = *std::max_element(hi, hi + n) + 1;
  const rows::PagedHead<TKV> head{kv, page_table, L.page_size, L.pages_per_seq,
                                  2 * L.num_kv_heads * kD, 2 * h * kD};
  rows::AttendRows<TKV, kD>(q, n, lo, hi, key_begin, key_end, head, L.soft_cap,
                            rows::RowState{row_max, denom, values});
  for (int r = 0; r < n; ++r) StoreNormalised(values + r * kD, denom[r], kD, out + vector_of(r));
#else
  (void)L, (void)it, (void)queries, (void)kv, (void)page_table, (void)out;
#endif
}

template <typename TQ, typename TKV>
void AttendItemRowsAnyHeadDim(const Layout& L, const Item& it, const TQ* queries, const TKV* kv,
                              const int32_t* page_table, TQ* out) {
  switch (L.head_dim) {
    case 64:
      return AttendItemRows<TQ, TKV, 64>(L, it, queries, kv, page_table, out);
    case 128:
      return AttendItemRows<TQ, TKV, 128>(L, it, queries, kv, page_table, out);
    default:
      return AttendItemRows<TQ, TKV, 256>(L, it, queries, kv, page_table, out);
  }
}

// ---- Shared prefixes -----------------------------------------------------------------------
//
// Prefix caching maps the pages of a prompt prefix that several sequences share (a system
// prompt) to the same physical pages. Attending each sequence to those keys on its own reads
// and widens every key once per sequence, for the 1-3 rows per kv head of a decode token. So,
// on the rows path's CPUs and without a window or chunking (every query row then sees every
// key of the prefix): sequences whose page tables start with the same pages, at least
// kSharedPrefixMinPages of them below every member's first query, form a group; a first pass
// attends all the group's query rows to those keys, kRowsPerItem rows of one kv head per
// item (the rows path), and leaves each row's online-softmax state; the ordinary items then
// continue from that state over each sequence's own keys. Page ids are compared, not contents:
// equal ids are the same memory, and the pages are below every member's first new token, so
// this step writes none of them.
constexpr int64_t kSharedPrefixMinPages = 2;
// ESURGE_CPU_SHARED_PREFIX=0 turns the pass off (to measure it).
const bool kSharedPrefixes = [] {
  const char* v = std::getenv("ESURGE_CPU_SHARED_PREFIX");
  return v == nullptr || std::string(v) != "0";
}();

// One item of the shared-prefix pass: rows [row_begin, row_begin + row_count) of the pass's row
// list, all of kv head h, over keys [0, prefix_end) of the group's pages (the leader's table).
struct PrefixItem {
  int32_t leader, h, prefix_end, row_begin, row_count;
};

// Row i of the pass: query vector queries[query_row] (token * num_q_heads + q head), state row
// state_row of the SharedPrefixState.
struct PrefixRow {
  int64_t query_row, state_row;
};

template <typename TQ, typename TKV, int kD>
void AttendSharedPrefix(const Layout& L, const PrefixItem& it, const PrefixRow* rows_list,
                        const TQ* queries, const TKV* kv, const int32_t* page_table) {
#if defined(__AVX512F__)
  namespace rows = esurge_cpu::rows;
  const int n = it.row_count;
  alignas(64) float q[rows::kMaxRows * kD];
  alignas(64) float values[rows::kMaxRows * kD];
  float row_max[rows::kMaxRows], denom[rows::kMaxRows];
  int64_t lo[rows::kMaxRows], hi[rows::kMaxRows];
  for (int r = 0; r < n; ++r) {
    const TQ* src = queries + rows_list[it.row_begin + r].query_row * kD;
    for (int d = 0; d < kD; ++d) q[r * kD + d] = Load(src, d) * L.sm_scale;
    std::fill(values + r * kD, values + (r + 1) * kD, 0.0f);
    row_max[r] = rows::kMasked;
    denom[r] = 0.0f;
    lo[r] = 0;
    hi[r] = it.prefix_end - 1;
  }
  const rows::PagedHead<TKV> head{kv, page_table, L.page_size, L.pages_per_seq,
                                  2 * L.num_kv_heads * kD, 2 * it.h * kD};
  rows::AttendRows<TKV, kD>(q, n, lo, hi, 0, it.prefix_end, head, L.soft_cap,
                            rows::RowState{row_max, denom, values});
  const SharedPrefixState& state = *L.prefix;
  for (int r = 0; r < n; ++r) {
    const int64_t sr = rows_list[it.row_begin + r].state_row;
    state.max[sr] = row_max[r];
    state.denom[sr] = denom[r];
    std::copy(values + r * kD, values + (r + 1) * kD, state.values + sr * kD);
  }
#else
  (void)L, (void)it, (void)rows_list, (void)queries, (void)kv, (void)page_table;
#endif
}

// Finds the groups of sequences that share a prefix, fills `state` (rows and buffers) and
// `prefix_end` (per sequence, 0 where none) and returns the pass's items and rows.
void PlanSharedPrefixes(const Layout& L, const int32_t* kv_lens, const int32_t* page_indices,
                        const int32_t* cu_q_lens, int64_t num_seqs, int64_t rows_per_item,
                        SharedPrefixState& state, std::vector<int32_t>& prefix_end,
                        std::vector<PrefixItem>& items, std::vector<PrefixRow>& rows_list) {
  prefix_end.assign(num_seqs, 0);
  // Candidates, by first page: sequences with at least kSharedPrefixMinPages cached pages.
  std::vector<std::pair<int32_t, int32_t>> by_first_page;  // (first page, sequence)
  auto cached_pages = [&](int64_t s) {
    const int64_t q_len = cu_q_lens[s + 1] - cu_q_lens[s];
    return std::min<int64_t>((kv_lens[s] - q_len) / L.page_size, L.pages_per_seq);
  };
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t begin = cu_q_lens[s], end = cu_q_lens[s + 1];
    if (end <= begin || begin < 0 || end > L.num_tokens) continue;  // as the items skip them
    if (cached_pages(s) < kSharedPrefixMinPages) continue;
    by_first_page.emplace_back(page_indices[s * L.pages_per_seq], static_cast<int32_t>(s));
  }
  std::sort(by_first_page.begin(), by_first_page.end());
  std::vector<int32_t> members;
  int64_t num_state_tokens = 0;
  state.base.assign(num_seqs, -1);
  for (size_t i = 0; i < by_first_page.size();) {
    size_t j = i;
    while (j < by_first_page.size() && by_first_page[j].first == by_first_page[i].first) ++j;
    const int32_t leader = by_first_page[i].second;
    const int32_t* lead = page_indices + leader * L.pages_per_seq;
    members.clear();
    int64_t shared = cached_pages(leader);
    for (size_t m = i; m < j; ++m) {
      const int32_t s = by_first_page[m].second;
      const int32_t* table = page_indices + s * L.pages_per_seq;
      const int64_t limit = std::min<int64_t>(cached_pages(s), cached_pages(leader));
      int64_t common = 0;
      while (common < limit && table[common] == lead[common]) ++common;
      if (common < kSharedPrefixMinPages) continue;
      members.push_back(s);
      shared = std::min(shared, common);
    }
    i = j;
    if (members.size() < 2) continue;
    const auto end = static_cast<int32_t>(shared * L.page_size);
    for (const int32_t s : members) {
      prefix_end[s] = end;
      state.base[s] = num_state_tokens;
      num_state_tokens += cu_q_lens[s + 1] - cu_q_lens[s];
    }
    // The pass's rows: kv head by kv head, each member's tokens and that head's query heads.
    for (int64_t h = 0; h < L.num_kv_heads; ++h) {
      const auto first_row = static_cast<int64_t>(rows_list.size());
      for (const int32_t s : members) {
        for (int64_t t = 0; t < cu_q_lens[s + 1] - cu_q_lens[s]; ++t) {
          for (int64_t j2 = 0; j2 < L.group; ++j2) {
            const int64_t q_head = h * L.group + j2;
            rows_list.push_back(PrefixRow{(cu_q_lens[s] + t) * L.num_q_heads + q_head,
                                          (state.base[s] + t) * L.num_q_heads + q_head});
          }
        }
      }
      const auto last_row = static_cast<int64_t>(rows_list.size());
      for (int64_t r = first_row; r < last_row; r += rows_per_item) {
        items.push_back(PrefixItem{leader, static_cast<int32_t>(h), end,
                                   static_cast<int32_t>(r),
                                   static_cast<int32_t>(std::min(rows_per_item, last_row - r))});
      }
    }
  }
  if (num_state_tokens == 0) return;
  // Reused across calls: a fresh allocation of this size would fault its pages in each time.
  static thread_local std::vector<float> buffer;
  const int64_t num_rows = num_state_tokens * L.num_q_heads;
  const auto needed = static_cast<size_t>(num_rows * (2 + L.head_dim));
  if (buffer.size() < needed) buffer.resize(needed);
  state.num_q_heads = L.num_q_heads;
  state.max = buffer.data();
  state.denom = state.max + num_rows;
  state.values = state.denom + num_rows;
}

// ---- Tile path (AMX) ---------------------------------------------------------------------
//
// With a bf16 cache on a CPU whose AMX tile unit this process may use (amx_tiles.h), head_dim
// 64, 128 or 256, pages of a multiple of 16 tokens and no soft cap, query rows run on the tile
// unit, an item's kv heads one at a time:
//   * a sequence with at least kTileMinRows query rows (prefill) in items of at most 16 rows
//     (the tokens of a block times the group) of one kv head (amx_attention.h);
//   * the others (decode tokens), when the group is at most amx::kFewRows, in items of at
//     most kFewRows rows of every kv head (amx_decode_attention.h).
// Everything else takes the vector path.
constexpr int64_t kTileMinRows = 8;

bool TilesAvailable(const Layout& L, bool bf16_cache) {
  return bf16_cache && (L.head_dim == 64 || L.head_dim == 128 || L.head_dim == 256) &&
         L.page_size % 16 == 0 && L.soft_cap <= 0.0f && L.group <= 16 &&
         esurge_cpu::amx::Usable();
}

// Row r of tile j of an item on the tile path, for kv head h:
//   * head-major (it.ng > 0, prefill blocks): token q_begin + r of query head h * g + it.g0 + j;
//     the item's tiles share their rows' keys (amx::AttendTiles);
//   * interleaved (it.ng == 0: one tile, and the few-rows kernel's rows): token
//     q_begin + r / g of query head h * g + r % g.
template <typename TQ, int kD>
void AttendItemTiles(const Layout& L, const Item& it, const TQ* queries, const uint16_t* kv,
                     const int32_t* page_table, TQ* out) {
#if ESURGE_HAS_AMX
  constexpr int kRows = esurge_cpu::amx::kAttentionRows;
  const int64_t g = L.group;
  const bool head_major = it.ng > 0;
  const int tiles = head_major ? it.ng : 1;
  const int64_t per_token = head_major ? 1 : g;  // rows of a token in a tile
  const int rows = static_cast<int>(it.nq * per_token);
  const int64_t first_pos = it.kv_len - it.q_len + it.q0;
  int64_t lo[kRows], hi[kRows];
  for (int r = 0; r < rows; ++r) {
    const int64_t p = first_pos + r / per_token;
    hi[r] = std::min<int64_t>(p, it.kv_len - 1);
    lo[r] = FirstVisibleKey(L, p);
  }
  const int64_t key_begin = *std::min_element(lo, lo + rows);
  const int64_t key_end = *std::max_element(hi, hi + rows) + 1;
  // The rows' scaled queries, replaced by their results.
  alignas(64) float values[esurge_cpu::amx::kMaxQueryTiles * kRows * kD];
  for (int64_t h = it.h; h < it.h + it.nh; ++h) {
    auto vector_of = [&](int j, int r) {  // index of row r of tile j in queries / out
      const int64_t q_head = head_major ? h * g + it.g0 + j : h * g + r % g;
      return ((it.q_begin + r / per_token) * L.num_q_heads + q_head) * kD;
    };
    const __m512 scale = _mm512_set1_ps(L.sm_scale);
    for (int j = 0; j < tiles; ++j) {
      for (int r = 0; r < rows; ++r) {
        const TQ* src = queries + vector_of(j, r);
        float* dst = values + (j * kRows + r) * kD;
        for (int d = 0; d < kD; d += 16) {
          __m512 x;
          if constexpr (sizeof(TQ) == 2) {
            x = esurge_cpu::amx::Bf16ToF32(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + d)));
          } else {
            x = _mm512_loadu_ps(src + d);
          }
          _mm512_store_ps(dst + d, _mm512_mul_ps(x, scale));
        }
      }
    }
    const esurge_cpu::amx::PagedHead head{kv, page_table, L.page_size, L.pages_per_seq,
                                          2 * L.num_kv_heads * kD, 2 * h * kD};
    if (it.path == Path::kFewRowsTiles) {
      esurge_cpu::amx::AttendFewRows<kD>(values, rows, lo, hi, key_begin, key_end, head, values);
    } else {
      esurge_cpu::amx::AttendTiles<kD>(values, tiles, rows, lo, hi, key_begin, key_end, head,
                                       values);
    }
    for (int j = 0; j < tiles; ++j) {
      for (int r = 0; r < rows; ++r) {
        TQ* dst = out + vector_of(j, r);
        const float* src = values + (j * kRows + r) * kD;
        if constexpr (sizeof(TQ) == 2) {
          for (int d = 0; d < kD; ++d) dst[d] = F32ToBf16(src[d]);
        } else {
          for (int d = 0; d < kD; d += 16) _mm512_storeu_ps(dst + d, _mm512_load_ps(src + d));
        }
      }
    }
  }
#else
  (void)L, (void)it, (void)queries, (void)kv, (void)page_table, (void)out;
#endif
}

template <typename TQ, typename TKV>
void AttendItemTilesAnyHeadDim(const Layout& L, const Item& it, const TQ* queries, const TKV* kv,
                               const int32_t* page_table, TQ* out) {
  if constexpr (sizeof(TKV) == 2) {
    switch (L.head_dim) {
      case 64:
        return AttendItemTiles<TQ, 64>(L, it, queries, kv, page_table, out);
      case 128:
        return AttendItemTiles<TQ, 128>(L, it, queries, kv, page_table, out);
      default:
        return AttendItemTiles<TQ, 256>(L, it, queries, kv, page_table, out);
    }
  } else {
    (void)L, (void)it, (void)queries, (void)kv, (void)page_table, (void)out;
  }
}

template <typename TQ, typename TKV>
ffi::Error Run(Layout L, const TQ* queries, const TKV* kv, const int32_t* kv_lens,
               const int32_t* page_indices, const int32_t* cu_q_lens, int64_t num_seqs,
               TQ* out) {
  std::memset(out, 0, sizeof(TQ) * L.num_tokens * L.num_q_heads * L.head_dim);
  // As many kv heads per item as fit kMaxRowsPerItem rows, then as many query tokens; on the
  // tile path, for prefill, blocks of 16 tokens, each one item per kv head and up to
  // amx::kMaxQueryTiles of its query heads (head-major), or where the block's tokens times the
  // group fit one tile, one interleaved item per kv head; for decode, every kv head and up to
  // amx::kFewRows rows.
  const bool tiles_available = TilesAvailable(L, sizeof(TKV) == 2);
  int64_t vector_heads = std::clamp<int64_t>(kMaxRowsPerItem / L.group, 1, L.num_kv_heads);
  // Fewer items than threads (a single request's decode step): one item per kv head, or all
  // but one thread would wait. Measured on the 2-core Zen 4 kind (SmolLM2, one sequence,
  // benchmarks/attention_decode_times.py --seqs 1): 16-23 against 21-28 us a layer at 256
  // keys, 58-76 against 80-102 at 1024; at two or three sequences no gain.
  const int64_t real_tokens = num_seqs > 0 ? cu_q_lens[num_seqs] - cu_q_lens[0] : 0;
  if (num_seqs < esurge_cpu::PoolSize() &&
      real_tokens <= num_seqs * (kMaxRowsPerItem / (vector_heads * L.group))) {
    vector_heads = 1;
  }
  const int64_t vector_block = std::max<int64_t>(1, kMaxRowsPerItem / (vector_heads * L.group));
  constexpr int64_t tile_block = esurge_cpu::amx::kAttentionRows;
  const int64_t few_rows_block = std::max<int64_t>(1, esurge_cpu::amx::kFewRows / L.group);
  const bool rows_available = RowsAvailable(L);
  const int64_t rows_block = std::max<int64_t>(1, kRowsPerItem / L.group);
  SharedPrefixState prefix_state;
  std::vector<int32_t> prefix_end;
  std::vector<PrefixItem> prefix_items;
  std::vector<PrefixRow> prefix_rows;
  if (!tiles_available && rows_available && L.sliding_window == 0 && L.chunk_size == 0 &&
      kSharedPrefixes) {
    PlanSharedPrefixes(L, kv_lens, page_indices, cu_q_lens, num_seqs, kRowsPerItem,
                       prefix_state, prefix_end, prefix_items, prefix_rows);
    if (!prefix_items.empty()) L.prefix = &prefix_state;
  }
  // Decode tokens on the vector path (head sizes it unrolls), without a shared-prefix state to
  // resume from, in a step of few items: up to `span_splits` items each, over equal spans of
  // their visible keys.
  const int64_t unsplit_items = num_seqs * ((L.num_kv_heads + vector_heads - 1) / vector_heads);
  const int64_t wanted_items = kSpanItemsPerThread * esurge_cpu::PoolSize();
  const bool spans_available =
      L.span_min_keys > 0 && L.prefix == nullptr &&
      unsplit_items < kSpanStepItemsPerThread * esurge_cpu::PoolSize() &&
      (L.head_dim == 64 || L.head_dim == 128 || L.head_dim == 256);
  const int64_t span_splits =
      spans_available ? (wanted_items + unsplit_items - 1) / std::max<int64_t>(unsplit_items, 1)
                      : 1;
  std::vector<SpanMerge> merges;
  int32_t num_spans = 0;
  std::vector<Item> items;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t begin = cu_q_lens[s], end = cu_q_lens[s + 1];
    const int32_t q_len = end - begin;
    if (q_len <= 0 || begin < 0 || end > L.num_tokens) continue;
    const int32_t kv_len = kv_lens[s];
    if (kv_len < q_len || kv_len > L.pages_per_seq * L.page_size) {
      return ffi::Error::InvalidArgument(
          "ragged_paged_attention: sequence " + std::to_string(s) + " has kv_len " +
          std::to_string(kv_len) + " and q_len " + std::to_string(q_len) +
          "; need q_len <= kv_len <= pages_per_seq * page_size (" +
          std::to_string(L.pages_per_seq * L.page_size) + ")");
    }
    Path path = Path::kVector;
    if (tiles_available && q_len * L.group >= kTileMinRows) {
      path = Path::kTiles;
    } else if (tiles_available && L.group <= esurge_cpu::amx::kFewRows) {
      path = Path::kFewRowsTiles;
    } else if (!tiles_available && rows_available && q_len * L.group >= kRowsMinRows) {
      path = Path::kRows;
    }
    const int64_t block = path == Path::kTiles          ? tile_block
                          : path == Path::kFewRowsTiles ? few_rows_block
                          : path == Path::kRows         ? rows_block
                                                        : vector_block;
    const int64_t heads_per_item = path == Path::kTiles || path == Path::kRows ? 1
                                   : path == Path::kFewRowsTiles ? L.num_kv_heads
                                                                 : vector_heads;
    for (int32_t q0 = 0; q0 < q_len; q0 += block) {
      const int32_t nq = static_cast<int32_t>(std::min<int64_t>(block, q_len - q0));
      if (path == Path::kTiles && nq * L.group > tile_block) {
        for (int32_t h = 0; h < L.num_kv_heads; ++h) {
          for (int32_t g0 = 0; g0 < L.group; g0 += esurge_cpu::amx::kMaxQueryTiles) {
            const auto ng = static_cast<int32_t>(
                std::min<int64_t>(esurge_cpu::amx::kMaxQueryTiles, L.group - g0));
            items.push_back(Item{static_cast<int32_t>(s), h, 1, begin + q0, nq, kv_len, q_len,
                                 q0, path, g0, ng});
          }
        }
        continue;
      }
      const int64_t first_key = FirstVisibleKey(L, kv_len - 1);
      const int64_t num_spans_of_token =
          spans_available && path == Path::kVector && q_len == 1
              ? std::min<int64_t>(span_splits, (kv_len - first_key) / L.span_min_keys)
              : 1;
      const bool spans = num_spans_of_token > 1;
      for (int64_t h = 0; h < L.num_kv_heads; h += heads_per_item) {
        const int64_t nh = std::min<int64_t>(heads_per_item, L.num_kv_heads - h);
        const Item item{static_cast<int32_t>(s), static_cast<int32_t>(h),
                        static_cast<int32_t>(nh), begin + q0, nq, kv_len, q_len, q0, path};
        if (!spans) {
          items.push_back(item);
          if (L.prefix != nullptr) items.back().prefix_end = prefix_end[s];
          continue;
        }
        SpanMerge merge{num_spans, 0, begin, static_cast<int32_t>(h), static_cast<int32_t>(nh)};
        for (int64_t i = 0; i < num_spans_of_token; ++i) {
          items.push_back(item);
          items.back().span = num_spans++;
          items.back().key_from =
              static_cast<int32_t>(first_key + (kv_len - first_key) * i / num_spans_of_token);
          items.back().key_to = static_cast<int32_t>(first_key + (kv_len - first_key) * (i + 1) /
                                                                     num_spans_of_token);
          ++merge.spans;
        }
        merges.push_back(merge);
      }
    }
  }
  // Costlier items (later query blocks see more keys) first, for better load balance.
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return ItemKeys(a) > ItemKeys(b); });
  std::vector<float> span_states(static_cast<size_t>(num_spans) * kMaxRowsPerItem *
                                 SpanStateFloats(L));
  L.span_states = span_states.data();
  if (L.prefix != nullptr) {
    esurge_cpu::ParallelFor(static_cast<int64_t>(prefix_items.size()), [&](int64_t i) {
      const PrefixItem& it = prefix_items[i];
      const int32_t* page_table = page_indices + it.leader * L.pages_per_seq;
      switch (L.head_dim) {
        case 64:
          return AttendSharedPrefix<TQ, TKV, 64>(L, it, prefix_rows.data(), queries, kv,
                                                 page_table);
        case 128:
          return AttendSharedPrefix<TQ, TKV, 128>(L, it, prefix_rows.data(), queries, kv,
                                                  page_table);
        default:
          return AttendSharedPrefix<TQ, TKV, 256>(L, it, prefix_rows.data(), queries, kv,
                                                  page_table);
      }
    });
  }
  esurge_cpu::ParallelFor(static_cast<int64_t>(items.size()), [&](int64_t i) {
    const Item& it = items[i];
    const int32_t* page_table = page_indices + it.seq * L.pages_per_seq;
    if (it.path == Path::kRows) {
      return AttendItemRowsAnyHeadDim<TQ, TKV>(L, it, queries, kv, page_table, out);
    }
    if (it.path != Path::kVector) {
      return AttendItemTilesAnyHeadDim<TQ, TKV>(L, it, queries, kv, page_table, out);
    }
    AttendItemAnyHeadDim<TQ, TKV>(L, it, queries, kv, page_table, out);
  });
  // A merge is a few rows of head_dim values: a handful run where they are.
  const auto merge = [&](int64_t i) { MergeSpans(L, merges[i], out); };
  if (merges.size() <= 8) {
    for (size_t i = 0; i < merges.size(); ++i) merge(static_cast<int64_t>(i));
  } else {
    esurge_cpu::ParallelFor(static_cast<int64_t>(merges.size()), merge);
  }
  return ffi::Error::Success();
}

ffi::Error RaggedPagedAttentionImpl(ffi::AnyBuffer queries, ffi::AnyBuffer kv_pages,
                                    ffi::Buffer<ffi::S32> kv_lens,
                                    ffi::Buffer<ffi::S32> page_indices,
                                    ffi::Buffer<ffi::S32> cu_q_lens,
                                    ffi::Buffer<ffi::S32> num_seqs,
                                    ffi::Result<ffi::AnyBuffer> out, float sm_scale,
                                    int64_t sliding_window, int64_t chunk_size,
                                    int64_t decode_span_min_keys,
                                    float soft_cap, ffi::ThreadPool thread_pool) {
  esurge_cpu::XlaThreadPoolScope pool_scope(thread_pool, esurge_cpu::LeadingDimension(queries));
  const auto q_dims = queries.dimensions();
  const auto kv_dims = kv_pages.dimensions();
  const auto table_dims = page_indices.dimensions();
  if (q_dims.size() != 3 || kv_dims.size() != 4 || table_dims.size() != 2) {
    return ffi::Error::InvalidArgument("ragged_paged_attention: unexpected operand ranks");
  }
  Layout L;
  L.num_tokens = q_dims[0];
  L.num_q_heads = q_dims[1];
  L.head_dim = q_dims[2];
  L.page_size = kv_dims[1];
  L.num_kv_heads = kv_dims[2] / 2;
  L.group = L.num_q_heads / L.num_kv_heads;
  L.pages_per_seq = table_dims[1];
  L.sm_scale = sm_scale;
  L.soft_cap = soft_cap;
  L.sliding_window = sliding_window;
  L.chunk_size = chunk_size;
  L.span_min_keys = std::max<int64_t>(decode_span_min_keys, 0);
  if (L.head_dim > 256 || L.group > kMaxRowsPerItem) {
    return ffi::Error::InvalidArgument(
        "ragged_paged_attention (cpu): head_dim must be <= 256 and num_q_heads / num_kv_heads "
        "<= 32, got head_dim " + std::to_string(L.head_dim) + " and group " +
        std::to_string(L.group));
  }
  const int64_t max_num_seqs = table_dims[0];
  const int64_t n = std::clamp<int64_t>(num_seqs.typed_data()[0], 0, max_num_seqs);
  const auto q_type = queries.element_type();
  const auto kv_type = kv_pages.element_type();
  const int32_t* lens = kv_lens.typed_data();
  const int32_t* table = page_indices.typed_data();
  const int32_t* cu = cu_q_lens.typed_data();
  if (q_type == ffi::DataType::F32 && kv_type == ffi::DataType::F32) {
    return Run(L, static_cast<const float*>(queries.untyped_data()),
               static_cast<const float*>(kv_pages.untyped_data()), lens, table, cu, n,
               static_cast<float*>(out->untyped_data()));
  }
  if (q_type == ffi::DataType::F32 && kv_type == ffi::DataType::BF16) {
    return Run(L, static_cast<const float*>(queries.untyped_data()),
               static_cast<const uint16_t*>(kv_pages.untyped_data()), lens, table, cu, n,
               static_cast<float*>(out->untyped_data()));
  }
  if (q_type == ffi::DataType::BF16 && kv_type == ffi::DataType::BF16) {
    return Run(L, static_cast<const uint16_t*>(queries.untyped_data()),
               static_cast<const uint16_t*>(kv_pages.untyped_data()), lens, table, cu, n,
               static_cast<uint16_t*>(out->untyped_data()));
  }
  return ffi::Error::InvalidArgument(
      "ragged_paged_attention (cpu): queries/kv_pages must be float32/float32, "
      "float32/bfloat16 or bfloat16/bfloat16");
}

// Writes each token's K and V ([T, Hkv, D]) into its slot (page * page_size + offset) of the
// cache, which XLA aliases to the output: an in-place update. (XLA:CPU widens a bf16
// scatter's whole operand to f32 and back, copying the entire cache per layer per step.)
// Slots outside the cache are skipped, like a scatter with mode="drop".
template <typename TIN, typename TKV>
void WriteRows(const TIN* keys, const TIN* values, const int32_t* slots, int64_t num_tokens,
               int64_t num_slots, int64_t num_kv_heads, int64_t head_dim, TKV* cache) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slots[t];
    if (slot < 0 || slot >= num_slots) continue;
    TKV* row = cache + slot * 2 * num_kv_heads * head_dim;
    for (int64_t h = 0; h < num_kv_heads; ++h) {
      const TIN* k = keys + (t * num_kv_heads + h) * head_dim;
      const TIN* v = values + (t * num_kv_heads + h) * head_dim;
      TKV* k_dst = row + 2 * h * head_dim;
      TKV* v_dst = k_dst + head_dim;
      for (int64_t d = 0; d < head_dim; ++d) {
        if constexpr (sizeof(TKV) == 2) {
          k_dst[d] = F32ToBf16(Load(k, d));
          v_dst[d] = F32ToBf16(Load(v, d));
        } else {
          k_dst[d] = Load(k, d);
          v_dst[d] = Load(v, d);
        }
      }
    }
  }
}

ffi::Error WriteKVPagesImpl(ffi::AnyBuffer kv_pages, ffi::AnyBuffer keys, ffi::AnyBuffer values,
                            ffi::Buffer<ffi::S32> slot_mapping,
                            ffi::Result<ffi::AnyBuffer> out) {
  const auto kv_dims = kv_pages.dimensions();
  const auto k_dims = keys.dimensions();
  if (kv_dims.size() != 4 || k_dims.size() != 3 || keys.element_type() != values.element_type()) {
    return ffi::Error::InvalidArgument("write_kv_pages (cpu): unexpected operand ranks or types");
  }
  const int64_t num_slots = kv_dims[0] * kv_dims[1];
  const int64_t num_kv_heads = kv_dims[2] / 2, head_dim = kv_dims[3];
  const int64_t num_tokens = k_dims[0];
  if (out->untyped_data() != kv_pages.untyped_data()) {  // not aliased: start from a copy
    std::memcpy(out->untyped_data(), kv_pages.untyped_data(), kv_pages.size_bytes());
  }
  const int32_t* slots = slot_mapping.typed_data();
  const auto in_type = keys.element_type();
  const auto kv_type = kv_pages.element_type();
  void* cache = out->untyped_data();
  if (in_type == ffi::DataType::F32 && kv_type == ffi::DataType::F32) {
    WriteRows(static_cast<const float*>(keys.untyped_data()),
              static_cast<const float*>(values.untyped_data()), slots, num_tokens, num_slots,
              num_kv_heads, head_dim, static_cast<float*>(cache));
  } else if (in_type == ffi::DataType::F32 && kv_type == ffi::DataType::BF16) {
    WriteRows(static_cast<const float*>(keys.untyped_data()),
              static_cast<const float*>(values.untyped_data()), slots, num_tokens, num_slots,
              num_kv_heads, head_dim, static_cast<uint16_t*>(cache));
  } else if (in_type == ffi::DataType::BF16 && kv_type == ffi::DataType::BF16) {
    WriteRows(static_cast<const uint16_t*>(keys.untyped_data()),
              static_cast<const uint16_t*>(values.untyped_data()), slots, num_tokens, num_slots,
              num_kv_heads, head_dim, static_cast<uint16_t*>(cache));
  } else {
    return ffi::Error::InvalidArgument(
        "write_kv_pages (cpu): keys/kv_pages must be float32/float32, float32/bfloat16 or "
        "bfloat16/bfloat16");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeRaggedPagedAttention, RaggedPagedAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("sm_scale")
                                  .Attr<int64_t>("sliding_window")
                                  .Attr<int64_t>("chunk_size")
                                  .Attr<int64_t>("decode_span_min_keys")
                                  .Attr<float>("soft_cap")
                                  .Ctx<ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeWriteKVPages, WriteKVPagesImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>());
