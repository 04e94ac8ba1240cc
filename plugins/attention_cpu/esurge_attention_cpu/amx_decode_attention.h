// Attention of a few query rows (decode tokens: one token times the GQA group) of one kv head
// over a paged bf16 cache on the AMX tile unit; amx_attention.h has the many-row (prefill)
// kernel and the pieces both share.
//
// The many-row kernel splits each fp32 query and probability into three bf16 parts and runs
// three tile products for every one it needs; with the three or four rows of a decode token
// those products fill a 16-row tile with mostly padding, and measured level with the vector
// path. Here the parts go into the padding instead: with R <= 5 rows, a tile holds all 3R
// (part, row) pairs, so each product runs once:
//   * scores, transposed: S^T = K Q^T with Q^T's column part * R + r holding part `part` of
//     row r (K tiles load straight from the page, as in the many-row kernel). The 16 x 16
//     fp32 tile is transposed in registers, and row r's scores over 16 keys are the sum of
//     its three part columns: the online softmax then runs with one vector lane per key, so
//     the few rows waste no lanes on the exponentials;
//   * P V: the probabilities' three bf16 parts as the rows part * R + r of one 16 x 32 tile,
//     times V re-laid into pairs of keys (one tile per 16 dims); row r's sums are the sum of
//     its three part rows, added to its fp32 accumulators after the softmax rescale.
// Per 32 keys and 64 dims that is 4 tile products for the scores and 4 for P V, against 12
// and 12 in the many-row kernel. Every partial product is exact (K, V and the parts are bf16),
// so the results keep the kernel's contract (within 1e-5 of the XLA kernel) as the other
// paths do.

#ifndef ESURGE_AMX_DECODE_ATTENTION_H_
#define ESURGE_AMX_DECODE_ATTENTION_H_

#include <algorithm>
#include <cstdint>

#include "amx_attention.h"

namespace esurge_cpu::amx {

// Query rows per item of this kernel: every (part, row) pair in one 16-row tile.
constexpr int kFewRows = 16 / 3;

#if ESURGE_HAS_AMX

static_assert(kSplits * kFewRows <= 16);

// out[r * kD + d] = softmax-weighted values of query row r < R <= kFewRows (fp32 values
// q[r * kD + d], already scaled), which sees the keys [lo[r], hi[r]] (inclusive; none if
// lo > hi), all of them in [key_begin, key_end). Rows without a visible key are zero.
template <int kD, int R>
void AttendFewRowsOf(const float* q, const int64_t* lo, const int64_t* hi, int64_t key_begin,
                     int64_t key_end, const PagedHead& head, float* out) {
  static_assert(kD % 64 == 0 && kD <= 256 && R >= 1 && R <= kFewRows);
  constexpr int kDimSteps = kD / 32;   // K tiles per 16 keys
  constexpr int kDimChunks = kD / 16;  // sum tiles per block
  // Q^T in pairs of dims: qt[s * 256 + kp * 16 + part * R + r] holds dims 32s + 2kp (low half)
  // and 32s + 2kp + 1 of part `part` of row r; the other columns are zero.
  alignas(64) uint32_t qt[kDimSteps * 256] = {};
  for (int r = 0; r < R; ++r) {
    for (int d0 = 0; d0 < kD; d0 += 16) {
      __m256i parts[kSplits];
      SplitThree(_mm512_loadu_ps(q + r * kD + d0), parts);
      const int s = d0 / 32, kp0 = (d0 % 32) / 2;
      for (int i = 0; i < kSplits; ++i) {
        alignas(32) uint32_t words[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(words), parts[i]);
        for (int j = 0; j < 8; ++j) qt[s * 256 + (kp0 + j) * 16 + i * R + r] = words[j];
      }
    }
  }
  alignas(64) float acc[kFewRows * kD] = {};
  float row_max[kFewRows];
  __m512 denom[kFewRows];  // per-lane partial sums of each row's denominator
  for (int r = 0; r < R; ++r) {
    row_max[r] = -1e30f;
    denom[r] = _mm512_setzero_ps();
  }
  // Two of each block buffer, for the reason given in amx_attention.h: the tile unit computes
  // the next block's scores before it loads what vector stores just wrote.
  alignas(64) float scores[2][kKeysPerBlock * 16];  // [key][part * R + r]
  alignas(64) uint16_t probs[2][16 * kKeysPerBlock] = {};  // [part * R + r][key]
  // [chunk][key pair][16 dims]: the in-lane interleave of an even and an odd key's 32 dims
  // 32m .. 32m + 31 gives chunk 2m + h dims 32m + 8l + 4h + i (l, i < 4) in lanes 4l + i, so
  // the accumulators hold the dims in that order until the end.
  alignas(64) uint32_t value_pairs[2][kDimChunks][16 * 16];
  alignas(64) float rescale[2][kFewRows];
  alignas(64) float sums[2][kDimChunks * 16 * 16];  // [chunk][part * R + r][16 dims]
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const int64_t key_bytes = head.token_stride * static_cast<int64_t>(sizeof(uint16_t));
  const int64_t first_key = key_begin / 16 * 16;
  // The keys every row sees: [lo_all, hi_all].
  const int64_t lo_all = *std::max_element(lo, lo + R);
  const int64_t hi_all = std::min(*std::min_element(hi, hi + R), key_end - 1);

  auto block_at = [&](int64_t k0) { return KeyBlock::At(head, k0, key_end); };
  auto prefetch = [&](int64_t k0) {
    if (k0 < key_end) block_at(k0).Prefetch(head, 2 * kD * 2);
  };
  // The scores and P V use disjoint tile registers (tmm0-3 and tmm4-7): shared ones chained
  // block b + 1's scores behind block b's P V, which waits for the vector stores of its
  // operands (measured: 1.35 -> 1.08 ms per layer at context 560; the tile registers behave
  // as if they were not renamed).
  // S^T of block b into dst: tmm0 keys 0-15, tmm1 keys 16-31 (K tiles in tmm2, Q^T in tmm3).
  auto compute_scores = [&](const KeyBlock& b, float* dst) {
    const bool second_tile = b.nt > 16;
    _tile_zero(0);
    _tile_zero(1);
    for (int s = 0; s < kDimSteps; ++s) {
      _tile_loadd(3, qt + s * 256, 64);
      _tile_loadd(2, b.keys0 + 32 * s, key_bytes);
      _tile_dpbf16ps(0, 2, 3);
      if (second_tile) {
        _tile_loadd(2, b.keys1 + 32 * s, key_bytes);
        _tile_dpbf16ps(1, 2, 3);
      }
    }
    _tile_stored(0, dst, 64);
    if (second_tile) _tile_stored(1, dst + 16 * 16, 64);
  };
  // The online softmax of block b (one lane per key), its probabilities split in three bf16
  // parts as the rows of one tile, its values in pairs of keys, the rows' rescale factors.
  auto prepare_products = [&](const KeyBlock& b, const float* sc, uint16_t* p_tile,
                              uint32_t (*pairs)[256], float* rescale_out) {
    const int tiles = b.nt > 16 ? 2 : 1;
    __m512 s[2][kFewRows];
    for (int j = 0; j < tiles; ++j) {
      __m512i columns[16];
      for (int t = 0; t < 16; ++t) columns[t] = _mm512_load_si512(sc + (16 * j + t) * 16);
      Transpose16x16(columns);
      for (int r = 0; r < R; ++r) {
        s[j][r] = _mm512_add_ps(_mm512_add_ps(_mm512_castsi512_ps(columns[r]),
                                              _mm512_castsi512_ps(columns[R + r])),
                                _mm512_castsi512_ps(columns[2 * R + r]));
      }
    }
    const __m512i pos0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(b.k0)), lane);
    const __m512i pos1 = _mm512_add_epi32(pos0, _mm512_set1_epi32(16));
    const __m512i end = _mm512_set1_epi32(static_cast<int32_t>(key_end));
    // Blocks that every row sees whole (all but the edges of the visible ranges) skip the
    // per-row position masks.
    const bool whole = b.k0 >= lo_all && b.k0 + b.nt - 1 <= hi_all;
    const __mmask16 whole0 = static_cast<__mmask16>(b.nt >= 16 ? 0xffff : (1u << b.nt) - 1);
    const __mmask16 whole1 =
        static_cast<__mmask16>(b.nt >= 32 ? 0xffff : b.nt > 16 ? (1u << (b.nt - 16)) - 1 : 0);
    for (int r = 0; r < R; ++r) {
      __mmask16 m0 = whole0, m1 = whole1;
      if (!whole) {
        const __m512i lo_v = _mm512_set1_epi32(static_cast<int32_t>(lo[r]));
        const __m512i hi_v =
            _mm512_set1_epi32(static_cast<int32_t>(std::min(hi[r], key_end - 1)));
        m0 = _mm512_cmple_epi32_mask(lo_v, pos0) & _mm512_cmpge_epi32_mask(hi_v, pos0) &
             _mm512_cmplt_epi32_mask(pos0, end);
        m1 = tiles == 2 ? static_cast<__mmask16>(_mm512_cmple_epi32_mask(lo_v, pos1) &
                                                 _mm512_cmpge_epi32_mask(hi_v, pos1) &
                                                 _mm512_cmplt_epi32_mask(pos1, end))
                        : 0;
      }
      __m512 p0 = _mm512_setzero_ps(), p1 = _mm512_setzero_ps();
      if ((m0 | m1) == 0) {
        rescale_out[r] = 1.0f;
      } else {
        __m512 block_max = _mm512_mask_mov_ps(_mm512_set1_ps(-1e30f), m0, s[0][r]);
        if (m1 != 0) block_max = _mm512_mask_max_ps(block_max, m1, block_max, s[1][r]);
        const float new_max = std::max(row_max[r], _mm512_reduce_max_ps(block_max));
        const __m512 new_max_v = _mm512_set1_ps(new_max);
        // exp(0) is exactly 1: most blocks after the first leave the maximum where it was.
        const __m512 scale = new_max == row_max[r]
                                 ? _mm512_set1_ps(1.0f)
                                 : ExpNonPositive16(_mm512_set1_ps(row_max[r] - new_max));
        row_max[r] = new_max;
        rescale_out[r] = _mm512_cvtss_f32(scale);
        p0 = _mm512_maskz_mov_ps(m0, ExpNonPositive16(_mm512_sub_ps(s[0][r], new_max_v)));
        if (m1 != 0) {
          p1 = _mm512_maskz_mov_ps(m1, ExpNonPositive16(_mm512_sub_ps(s[1][r], new_max_v)));
        }
        denom[r] = _mm512_fmadd_ps(denom[r], scale, _mm512_add_ps(p0, p1));
      }
      // Three bf16 parts by truncation: each part is the top 8 significant bits of what the
      // ones before left, so all three are exact in bf16 and sum to p exactly.
      const __m512 top = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int32_t>(0xffff0000u)));
      for (int i = 0; i < kSplits; ++i) {
        const __m512 part0 = i + 1 < kSplits ? _mm512_and_ps(p0, top) : p0;
        const __m512 part1 = i + 1 < kSplits ? _mm512_and_ps(p1, top) : p1;
        _mm512_store_si512(p_tile + (i * R + r) * kKeysPerBlock,
                           (__m512i)_mm512_cvtne2ps_pbh(part1, part0));
        p0 = _mm512_sub_ps(p0, part0);
        p1 = _mm512_sub_ps(p1, part1);
      }
    }
    // Keys outside [key_begin, key_end) get zero values: their probability is zero, but
    // their rows may hold anything (a NaN times zero would spread).
    const int t_first = static_cast<int>(std::max<int64_t>(0, key_begin - b.k0));
    auto value_row = [&](int t, int m) {
      if (t < t_first || t >= b.nt) return _mm512_setzero_si512();
      return _mm512_loadu_si512(b.Row(head, t) + kD + 32 * m);
    };
    const int pair_rows = (b.nt + 1) / 2;
    for (int kp = 0; kp < 16; ++kp) {
      for (int m = 0; m < kD / 32; ++m) {
        if (kp >= pair_rows) {
          _mm512_store_si512(pairs[2 * m] + kp * 16, _mm512_setzero_si512());
          _mm512_store_si512(pairs[2 * m + 1] + kp * 16, _mm512_setzero_si512());
          continue;
        }
        const __m512i even = value_row(2 * kp, m), odd = value_row(2 * kp + 1, m);
        _mm512_store_si512(pairs[2 * m] + kp * 16, _mm512_unpacklo_epi16(even, odd));
        _mm512_store_si512(pairs[2 * m + 1] + kp * 16, _mm512_unpackhi_epi16(even, odd));
      }
    }
  };
  // P V of a block into `out` (one 16 x 16 tile of sums per 16 dims): the probability tile in
  // tmm4, value chunks in tmm5, two chunks at a time in the sum tiles tmm6 / 7.
  auto multiply_values = [&](const uint16_t* p_tile, const uint32_t (*pairs)[256], float* out) {
    _tile_loadd(4, p_tile, 64);
    for (int c = 0; c < kDimChunks; c += 2) {
      _tile_zero(6);
      _tile_zero(7);
      _tile_loadd(5, pairs[c], 64);
      _tile_dpbf16ps(6, 4, 5);
      _tile_loadd(5, pairs[c + 1], 64);
      _tile_dpbf16ps(7, 4, 5);
      _tile_stored(6, out + c * 256, 64);
      _tile_stored(7, out + (c + 1) * 256, 64);
    }
  };
  // acc = acc * rescale + a block's P V, row r's being the sum of its three part rows.
  auto accumulate = [&](const float* block_sums, const float* rescale_in) {
    for (int r = 0; r < R; ++r) {
      const __m512 scale = _mm512_set1_ps(rescale_in[r]);
      for (int c = 0; c < kDimChunks; ++c) {
        const float* part_sums = block_sums + c * 256;
        const __m512 block = _mm512_add_ps(
            _mm512_add_ps(_mm512_load_ps(part_sums + r * 16),
                          _mm512_load_ps(part_sums + (R + r) * 16)),
            _mm512_load_ps(part_sums + (2 * R + r) * 16));
        float* a = acc + r * kD + c * 16;
        _mm512_store_ps(a, _mm512_fmadd_ps(_mm512_load_ps(a), scale, block));
      }
    }
  };

  // Block b's stages in the order that keeps each unit from waiting on the other's fresh
  // stores: its softmax and operands (vector), block b + 1's scores (tiles), its P V (tiles),
  // and only then block b - 1's sums into the accumulators (vector).
  const TileScope tile_scope;
  if (first_key < key_end) {
    KeyBlock current = block_at(first_key);
    prefetch(first_key);
    prefetch(first_key + kKeysPerBlock);
    compute_scores(current, scores[0]);
    for (int buffer = 0;; buffer ^= 1) {
      prefetch(current.k0 + 2 * kKeysPerBlock);
      prepare_products(current, scores[buffer], probs[buffer], value_pairs[buffer],
                       rescale[buffer]);
      const bool more = current.k0 + kKeysPerBlock < key_end;
      KeyBlock next{};
      if (more) {
        next = block_at(current.k0 + kKeysPerBlock);
        compute_scores(next, scores[buffer ^ 1]);
      }
      multiply_values(probs[buffer], value_pairs[buffer], sums[buffer]);
      if (current.k0 > first_key) accumulate(sums[buffer ^ 1], rescale[buffer ^ 1]);
      if (!more) {
        accumulate(sums[buffer], rescale[buffer]);
        break;
      }
      current = next;
    }
  }
  for (int r = 0; r < R; ++r) {
    const float total = _mm512_reduce_add_ps(denom[r]);
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    for (int c = 0; c < kDimChunks; ++c) {
      const int m = c / 2, h = c % 2;
      for (int j = 0; j < 16; ++j) {
        out[r * kD + 32 * m + 8 * (j / 4) + 4 * h + j % 4] = acc[r * kD + c * 16 + j] * inv;
      }
    }
  }
}

// AttendFewRowsOf for a row count known only at run time (1 <= rows <= kFewRows).
template <int kD>
void AttendFewRows(const float* q, int rows, const int64_t* lo, const int64_t* hi,
                   int64_t key_begin, int64_t key_end, const PagedHead& head, float* out) {
  switch (rows) {
    case 1:
      return AttendFewRowsOf<kD, 1>(q, lo, hi, key_begin, key_end, head, out);
    case 2:
      return AttendFewRowsOf<kD, 2>(q, lo, hi, key_begin, key_end, head, out);
    case 3:
      return AttendFewRowsOf<kD, 3>(q, lo, hi, key_begin, key_end, head, out);
    case 4:
      return AttendFewRowsOf<kD, 4>(q, lo, hi, key_begin, key_end, head, out);
    default:
      return AttendFewRowsOf<kD, 5>(q, lo, hi, key_begin, key_end, head, out);
  }
}

#endif  // ESURGE_HAS_AMX

}  // namespace esurge_cpu::amx

#endif  // ESURGE_AMX_DECODE_ATTENTION_H_
