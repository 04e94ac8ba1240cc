// Attention of many query rows of one kv head over a run of keys in a paged cache, on AVX-512
// vector units in fp32, organised as two matrix products per block of 16 keys: used for
// prefill rows and for the rows of several sequences over the keys they share (a common prefix,
// ragged_paged_attention.cc).
//
// The vector path of ragged_paged_attention.cc computes each score as a dot product (one
// query row times one key, 16 lanes of partial sums folded by a transpose-and-add tree), which
// suits the few rows of a decode token. With many rows per key that fold and each key's
// widening dominate. Here a block of 16 keys is widened and transposed once (K^T: one vector of
// 16 keys per dim), and each row's 16 scores are the sum over dims of its query value
// (broadcast) times that vector: FMAs and loads only, shared by every row. The softmax is
// online, one vector per row per block; then the weighted values, with the block's V widened
// once and each probability broadcast over a row's accumulators, a few rows at a time with
// their sums in registers. The state (row max, denominator, unnormalised values) is the
// caller's, so a run of keys can continue where another left off.
//
// Numerics: queries, K / V (bf16 or fp32 cache, widened exactly) and all arithmetic in fp32;
// only the summation order differs from the reference, so results stay within the kernel's
// 1e-5 contract.

#ifndef ESURGE_AVX512_ROWS_ATTENTION_H_
#define ESURGE_AVX512_ROWS_ATTENTION_H_

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "avx512_exp.h"
#include "avx512_transpose.h"

namespace esurge_cpu::rows {

// Rows one call may hold (their queries and state stay in L1 / L2 across the keys).
constexpr int kMaxRows = 48;
// Score of a masked key; exp() of it minus any real maximum is 0.
constexpr float kMasked = -1e30f;

// Where one kv head's K and V rows are: token `pos` of the sequence whose page table is
// `page_table` has its K at Row(pos) and its V right after it (kD elements later).
template <typename TKV>
struct PagedHead {
  const TKV* kv;
  const int32_t* page_table;
  int64_t page_size, pages_per_seq;
  int64_t token_stride;  // elements from one token's row of a page to the next
  int64_t k_offset;      // this kv head's K within a token's row
  const TKV* Row(int64_t pos) const {
    const int64_t slot = std::min<int64_t>(pos / page_size, pages_per_seq - 1);
    return kv + (page_table[slot] * page_size + pos % page_size) * token_stride + k_offset;
  }
};

// Online-softmax state of `rows` rows: running max, denominator and unnormalised weighted
// values (rows x kD). Empty: max kMasked, denominator 0, values 0.
struct RowState {
  float* max;
  float* denom;
  float* values;
};

inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 Load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Independent sums per score: one per 64 dims, so no fp32 sum runs over more than 64 products
// (a 256-term chain measured 1.2e-5 off the reference), and rows per register block so that
// the sums fill 16 registers.
template <int kD>
constexpr int kScoreChains = kD / 64 > 0 ? kD / 64 : 1;
template <int kD>
constexpr int kScoreRows = 16 / kScoreChains<kD>;

// scores[j] = q row j . K^T for N rows (kt: kD vectors of 16 keys).
template <int kD, int N>
inline void ScoreRows(const float* q, const float* kt, __m512* scores) {
  constexpr int kChains = kScoreChains<kD>;
  constexpr int kSpan = kD / kChains;
  __m512 s[N][kChains];
  for (int j = 0; j < N; ++j) {
    for (int c = 0; c < kChains; ++c) s[j][c] = _mm512_setzero_ps();
  }
  for (int d = 0; d < kSpan; ++d) {
    for (int c = 0; c < kChains; ++c) {
      const __m512 k = _mm512_load_ps(kt + (c * kSpan + d) * 16);
      for (int j = 0; j < N; ++j) {
        s[j][c] = _mm512_fmadd_ps(_mm512_set1_ps(q[j * kD + c * kSpan + d]), k, s[j][c]);
      }
    }
  }
  for (int j = 0; j < N; ++j) {
    if constexpr (kChains == 4) {
      scores[j] = _mm512_add_ps(_mm512_add_ps(s[j][0], s[j][1]), _mm512_add_ps(s[j][2], s[j][3]));
    } else if constexpr (kChains == 2) {
      scores[j] = _mm512_add_ps(s[j][0], s[j][1]);
    } else {
      scores[j] = s[j][0];
    }
  }
}

template <int kD, int N>
inline void ScoreRowsUpTo(const float* q, const float* kt, int n, __m512* scores) {
  if constexpr (N > 1) {
    if (n < N) return ScoreRowsUpTo<kD, N - 1>(q, kt, n, scores);
  }
  ScoreRows<kD, N>(q, kt, scores);
}

// values[j] = values[j] * rescale[j] + sum over keys t < nt of probs[j][t] * V[t], for N rows.
template <int kD, int N>
inline void AddWeightedValues(const float* probs, const float* rescale, const float* vb, int nt,
                              float* values) {
  constexpr int kC = kD / 16;
  __m512 a[N][kC];
  for (int j = 0; j < N; ++j) {
    const __m512 scale = _mm512_set1_ps(rescale[j]);
    for (int c = 0; c < kC; ++c) {
      a[j][c] = _mm512_mul_ps(_mm512_load_ps(values + j * kD + c * 16), scale);
    }
  }
  for (int t = 0; t < nt; ++t) {
    __m512 v[kC];
    for (int c = 0; c < kC; ++c) v[c] = _mm512_load_ps(vb + t * kD + c * 16);
    for (int j = 0; j < N; ++j) {
      const __m512 p = _mm512_set1_ps(probs[j * 16 + t]);
      for (int c = 0; c < kC; ++c) a[j][c] = _mm512_fmadd_ps(p, v[c], a[j][c]);
    }
  }
  for (int j = 0; j < N; ++j) {
    for (int c = 0; c < kC; ++c) _mm512_store_ps(values + j * kD + c * 16, a[j][c]);
  }
}

// Rows per register block of the weighted values: as many rows' sums as fit 24 registers.
template <int kD>
constexpr int kValueRows = std::max(1, 24 / (kD / 16));

template <int kD, int N>
inline void AddWeightedValuesUpTo(const float* probs, const float* rescale, const float* vb,
                                  int nt, int n, float* values) {
  if constexpr (N > 1) {
    if (n < N) return AddWeightedValuesUpTo<kD, N - 1>(probs, rescale, vb, nt, n, values);
  }
  AddWeightedValues<kD, N>(probs, rescale, vb, nt, values);
}

// Attends `rows` rows (q: rows x kD, already scaled; row r sees keys lo[r] ..= hi[r]) to the
// keys [key_begin, key_end) of `head`, continuing `state`. soft_cap > 0 caps each score at
// soft_cap * tanh(score / soft_cap). rows <= kMaxRows; q and state.values 64-byte aligned.
template <typename TKV, int kD>
void AttendRows(const float* q, int rows, const int64_t* lo, const int64_t* hi,
                int64_t key_begin, int64_t key_end, const PagedHead<TKV>& head, float soft_cap,
                const RowState& state) {
  static_assert(kD % 16 == 0);
  constexpr int kC = kD / 16;
  constexpr int64_t kRowBytes = 2 * kD * static_cast<int64_t>(sizeof(TKV));
  alignas(64) float kt[kD * 16];  // K^T of the block: dim d's 16 keys at kt[d * 16]
  alignas(64) float vb[16 * kD];  // the block's V rows, widened
  alignas(64) float probs[kMaxRows * 16];
  alignas(64) float rescale[kMaxRows];
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t k0 = key_begin; k0 < key_end; k0 += 16) {
    const int nt = static_cast<int>(std::min<int64_t>(16, key_end - k0));
    const TKV* row[16];
    for (int t = 0; t < 16; ++t) row[t] = head.Row(k0 + std::min(t, nt - 1));
    // The next block's rows, while this one is computed (pages are scattered).
    for (int64_t pos = k0 + 16; pos < std::min<int64_t>(k0 + 32, key_end); ++pos) {
      const char* p = reinterpret_cast<const char*>(head.Row(pos));
      for (int64_t b = 0; b < kRowBytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
    }
    for (int c = 0; c < kC; ++c) {
      __m512i r[16];
      for (int t = 0; t < 16; ++t) r[t] = _mm512_castps_si512(Load16(row[t] + c * 16));
      Transpose16x16(r);
      for (int i = 0; i < 16; ++i) _mm512_store_si512(kt + (c * 16 + i) * 16, r[i]);
    }
    for (int t = 0; t < nt; ++t) {
      for (int c = 0; c < kC; ++c) {
        _mm512_store_ps(vb + t * kD + c * 16, Load16(row[t] + kD + c * 16));
      }
    }
    const __m512i pos = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(k0)), lanes);
    const __mmask16 in_block = static_cast<__mmask16>((1u << nt) - 1u);
    for (int r0 = 0; r0 < rows; r0 += kScoreRows<kD>) {
      const int n = std::min(kScoreRows<kD>, rows - r0);
      __m512 s[kScoreRows<kD>];
      ScoreRowsUpTo<kD, kScoreRows<kD>>(q + r0 * kD, kt, n, s);
      for (int j = 0; j < n; ++j) {
        const int r = r0 + j;
        const __mmask16 visible =
            in_block &
            _mm512_cmpge_epi32_mask(pos, _mm512_set1_epi32(static_cast<int32_t>(lo[r]))) &
            _mm512_cmple_epi32_mask(pos, _mm512_set1_epi32(static_cast<int32_t>(hi[r])));
        float* p = probs + r * 16;
        if (visible == 0) {
          _mm512_store_ps(p, _mm512_setzero_ps());
          rescale[r] = 1.0f;
          continue;
        }
        __m512 x = s[j];
        if (soft_cap > 0.0f) {
          alignas(64) float lane[16];
          _mm512_store_ps(lane, x);
          for (float& v : lane) v = soft_cap * std::tanh(v / soft_cap);
          x = _mm512_load_ps(lane);
        }
        const float block_max = _mm512_mask_reduce_max_ps(visible, x);
        const float new_max = std::max(state.max[r], block_max);
        rescale[r] = std::exp(state.max[r] - new_max);
        const __m512 shifted = _mm512_sub_ps(x, _mm512_set1_ps(new_max));
        const __m512 e = _mm512_maskz_mov_ps(visible, ExpNonPositive16(shifted));
        _mm512_store_ps(p, e);
        state.denom[r] = state.denom[r] * rescale[r] + _mm512_reduce_add_ps(e);
        state.max[r] = new_max;
      }
    }
    for (int r0 = 0; r0 < rows; r0 += kValueRows<kD>) {
      const int n = std::min(kValueRows<kD>, rows - r0);
      AddWeightedValuesUpTo<kD, kValueRows<kD>>(probs + r0 * 16, rescale + r0, vb, nt, n,
                                                state.values + r0 * kD);
    }
  }
}

}  // namespace esurge_cpu::rows

#endif  // __AVX512F__

#endif  // ESURGE_AVX512_ROWS_ATTENTION_H_
