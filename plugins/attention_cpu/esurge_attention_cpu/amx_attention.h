// Attention of query tiles (16 rows each) of one kv head over a paged bf16 cache on the AMX
// tile unit (the tile path of ragged_paged_attention.cc; amx_tiles.h has the unit's basics).
// An item holds up to kMaxQueryTiles tiles over the same rows' keys (in prefill: 16 tokens of
// each of the kv head's query heads), so each block of keys and values is fetched and its values
// re-laid once for all of them.
//
// Keys come 32 at a time (two tiles of 16, each inside one page: pages hold a multiple of 16
// tokens and the blocks start at multiples of 16):
//   * scores, transposed: S^T = K Q^T. A K tile (16 keys x 32 dims) is one strided load
//     straight from the page; the Q^T tiles (32 dims x 16 rows, in pairs of dims) are built
//     once per item, by register transposes. S^T's 16 x 16 fp32 tiles hold one key per row
//     and one query row per column, so the online softmax runs with one vector lane per query
//     row (max, exponential and sum over the block's keys, masked per row by its visible key
//     range);
//   * P V: the probabilities transposed to rows of 32 keys (two 16 x 16 transposes) times V
//     re-laid into pairs of keys, one 16 x 16 tile of sums per 16 dims, added to the row's
//     fp32 accumulators after the softmax rescale.
// The tile unit multiplies bf16 values. To keep the kernel's contract (fp32 queries and
// probabilities over the bf16 cache, equal to the XLA kernel within 1e-5), each query and
// probability value is split into three bf16 parts whose sum is the value to fp32 precision
// (8 significant bits each), and every product is the sum of three tile products: K and V
// are exact in bf16, so each partial product is exact and only the fp32 sums round.

#ifndef ESURGE_AMX_ATTENTION_H_
#define ESURGE_AMX_ATTENTION_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "amx_tiles.h"
#include "avx512_exp.h"
#include "avx512_transpose.h"

namespace esurge_cpu::amx {

constexpr int kAttentionRows = 16;  // query rows per tile
constexpr int kMaxQueryTiles = 4;   // query tiles per item

#if ESURGE_HAS_AMX

constexpr int kSplits = 3;        // bf16 parts per fp32 value
constexpr int kKeysPerBlock = 32;  // keys per softmax block (two tiles)

// Where one item's keys and values are in the cache.
struct PagedHead {
  const uint16_t* kv;         // [pages, page_size, 2 * kv heads, head_dim]
  const int32_t* page_table;  // the sequence's pages
  int64_t page_size, pages_per_seq;
  int64_t token_stride;  // elements from one token's row to the next
  int64_t k_offset;      // elements from a token's row to this kv head's K (its V follows)
  const uint16_t* Key(int64_t pos) const {
    const int64_t slot = std::min<int64_t>(pos / page_size, pages_per_seq - 1);
    return kv + (page_table[slot] * page_size + pos % page_size) * token_stride + k_offset;
  }
};

// A block of up to kKeysPerBlock keys of one kv head from k0: two tiles of 16 keys, each
// inside one page (pages hold a multiple of 16 tokens and blocks start at multiples of 16).
struct KeyBlock {
  int64_t k0;
  int nt;                 // keys of the block before key_end
  const uint16_t* keys0;  // rows of keys k0 .. k0 + 15
  const uint16_t* keys1;  // rows of keys k0 + 16 .. k0 + 31 (when nt > 16)

  static KeyBlock At(const PagedHead& head, int64_t k0, int64_t key_end) {
    const int nt = static_cast<int>(std::min<int64_t>(kKeysPerBlock, key_end - k0));
    const uint16_t* keys0 = head.Key(k0);
    return KeyBlock{k0, nt, keys0, nt > 16 ? head.Key(k0 + 16) : keys0};
  }
  // Key t's row (its K, then its V).
  const uint16_t* Row(const PagedHead& head, int t) const {
    return t < 16 ? keys0 + t * head.token_stride : keys1 + (t - 16) * head.token_stride;
  }
  // The first `bytes` of every key's row, into cache.
  void Prefetch(const PagedHead& head, int64_t bytes) const {
    for (int t = 0; t < nt; ++t) {
      const char* row = reinterpret_cast<const char*>(Row(head, t));
      for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(row + offset, 0, 3);
    }
  }
};

// 16 bf16 values widened to fp32.
inline __m512 Bf16ToF32(__m256i x) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16));
}

// parts[i] (16 bf16 each) sum to x to fp32 precision.
inline void SplitThree(__m512 x, __m256i parts[kSplits]) {
  for (int i = 0; i < kSplits; ++i) {
    parts[i] = (__m256i)_mm512_cvtneps_pbh(x);
    x = _mm512_sub_ps(x, Bf16ToF32(parts[i]));
  }
}

// Q^T of one query tile in pairs of dims: qt[(part * kD / 32 + s) * 256 + kp * 16 + r] holds
// dims 32s + 2kp (low half) and 32s + 2kp + 1 of part `part` of row r (fp32 values
// q[r * kD + d]; rows from `rows` on are zero). Each part's rows are written as bf16 rows
// first and then turned into columns 16 x 16 words at a time in registers.
template <int kD>
void BuildQueryColumns(const float* q, int rows, uint32_t* qt) {
  constexpr int kDimSteps = kD / 32;
  alignas(64) uint32_t part_rows[kSplits][kDimSteps][16 * 16];  // [part][step][row][pair]
  for (int r = 0; r < 16; ++r) {
    for (int s = 0; s < kDimSteps; ++s) {
      __m256i low[kSplits], high[kSplits];
      const bool real = r < rows;
      SplitThree(real ? _mm512_loadu_ps(q + r * kD + 32 * s) : _mm512_setzero_ps(), low);
      SplitThree(real ? _mm512_loadu_ps(q + r * kD + 32 * s + 16) : _mm512_setzero_ps(), high);
      for (int i = 0; i < kSplits; ++i) {
        _mm512_store_si512(part_rows[i][s] + r * 16,
                           _mm512_inserti64x4(_mm512_castsi256_si512(low[i]), high[i], 1));
      }
    }
  }
  for (int i = 0; i < kSplits; ++i) {
    for (int s = 0; s < kDimSteps; ++s) {
      __m512i words[16];
      for (int r = 0; r < 16; ++r) words[r] = _mm512_load_si512(part_rows[i][s] + r * 16);
      Transpose16x16(words);
      uint32_t* dst = qt + (i * kDimSteps + s) * 256;
      for (int kp = 0; kp < 16; ++kp) _mm512_store_si512(dst + kp * 16, words[kp]);
    }
  }
}

// Attention of `tiles` (at most kMaxQueryTiles) query tiles of one kv head over the same keys:
// row r < rows of tile j has the fp32 values q[(j * 16 + r) * kD + d] (already scaled) and
// sees the keys [lo[r], hi[r]] (inclusive; none if lo > hi), all of them in
// [key_begin, key_end); out[(j * 16 + r) * kD + d] gets its softmax-weighted values (zero
// without a visible key); out may be q. The tiles share each block's visibility masks and
// value pairs, so an item of several query heads re-lays each block of values once for all.
template <int kD>
void AttendTiles(const float* q, int tiles, int rows, const int64_t* lo, const int64_t* hi,
                 int64_t key_begin, int64_t key_end, const PagedHead& head, float* out) {
  static_assert(kD % 32 == 0 && kD <= 256);
  constexpr int kDimSteps = kD / 32;    // K tiles per 16 keys
  constexpr int kDimChunks = kD / 16;   // output tiles per row block
  constexpr int kQueryWords = kSplits * kDimSteps * 256;
  constexpr int kMasked = -1;
  // Per thread: each tile's Q^T (as in BuildQueryColumns) and fp32 accumulators [row][dim].
  thread_local std::vector<float> scratch;
  constexpr size_t kLineFloats = 64 / sizeof(float);
  const size_t need = kMaxQueryTiles * (kQueryWords + 16 * kD) + kLineFloats;
  if (scratch.size() < need) scratch.resize(need);
  float* aligned = scratch.data() + (kLineFloats - reinterpret_cast<uintptr_t>(scratch.data()) %
                                                       64 / sizeof(float)) % kLineFloats;
  uint32_t* qt = reinterpret_cast<uint32_t*>(aligned);
  float* acc = aligned + kMaxQueryTiles * kQueryWords;
  for (int j = 0; j < tiles; ++j) BuildQueryColumns<kD>(q + j * 16 * kD, rows, qt + j * kQueryWords);
  std::memset(acc, 0, sizeof(float) * tiles * 16 * kD);

  alignas(64) int32_t lo_lanes[16], hi_lanes[16];
  for (int r = 0; r < 16; ++r) {
    const bool real = r < rows;
    lo_lanes[r] = real ? static_cast<int32_t>(lo[r]) : 1;
    hi_lanes[r] = real ? static_cast<int32_t>(hi[r]) : kMasked;
  }
  const __m512i lo_v = _mm512_load_si512(lo_lanes), hi_v = _mm512_load_si512(hi_lanes);
  __m512 row_max[kMaxQueryTiles], denom[kMaxQueryTiles];
  for (int j = 0; j < kMaxQueryTiles; ++j) {
    row_max[j] = _mm512_set1_ps(-1e30f);
    denom[j] = _mm512_setzero_ps();
  }
  // Two of each buffer: while one (block, tile) step's probabilities (and, at a block's first
  // tile, its value pairs) are written by vector stores, the tile unit computes the next
  // step's scores, and only then loads them (a tile load of lines still in the store buffer
  // stalls; measured: a fifth of the time).
  alignas(64) float scores[2][kKeysPerBlock * 16];             // [key][row]
  alignas(64) uint16_t probs[2][kSplits][16 * kKeysPerBlock];  // [part][row][key]
  alignas(64) uint32_t value_pairs[2][kDimChunks][16 * 16];    // [chunk][key pair][dim]
  alignas(64) float rescale_lanes[2][16];
  alignas(64) float sums[4 * 16 * 16];
  // Value pairs: lanes 2j / 2j + 1 of a pair row hold dim j of the even / odd key.
  alignas(64) uint16_t low_index[32], high_index[32];
  for (int j = 0; j < 32; ++j) {
    low_index[j] = static_cast<uint16_t>((j % 2) * 32 + j / 2);
    high_index[j] = static_cast<uint16_t>((j % 2) * 32 + 16 + j / 2);
  }
  const __m512i low_pairs = _mm512_load_si512(low_index);
  const __m512i high_pairs = _mm512_load_si512(high_index);
  const int64_t key_bytes = head.token_stride * static_cast<int64_t>(sizeof(uint16_t));
  const int64_t first_key = key_begin / 16 * 16;

  auto block_at = [&](int64_t k0) { return KeyBlock::At(head, k0, key_end); };
  auto prefetch = [&](int64_t k0) {
    if (k0 < key_end) block_at(k0).Prefetch(head, 2 * kD * 2);
  };
  // S^T of block b and tile j into dst: tmm0 keys 0-15, tmm1 keys 16-31.
  auto compute_scores = [&](const KeyBlock& b, int j, float* dst) {
    const bool second_tile = b.nt > 16;
    const uint32_t* tile_qt = qt + j * kQueryWords;
    _tile_zero(0);
    _tile_zero(1);
    for (int s = 0; s < kDimSteps; ++s) {
      _tile_loadd(2, b.keys0 + 32 * s, key_bytes);
      if (second_tile) _tile_loadd(3, b.keys1 + 32 * s, key_bytes);
      for (int i = 0; i < kSplits; ++i) {
        _tile_loadd(4, tile_qt + (i * kDimSteps + s) * 256, 64);
        _tile_dpbf16ps(0, 2, 4);
        if (second_tile) _tile_dpbf16ps(1, 3, 4);
      }
    }
    _tile_stored(0, dst, 64);
    if (second_tile) _tile_stored(1, dst + 16 * 16, 64);
  };
  // Which rows see each key of block b (one bit per row).
  __mmask16 visible[kKeysPerBlock];
  auto mask_block = [&](const KeyBlock& b) {
    for (int t = 0; t < kKeysPerBlock; ++t) {
      const __m512i pos = _mm512_set1_epi32(static_cast<int32_t>(b.k0 + t));
      visible[t] = t < b.nt ? _mm512_cmple_epi32_mask(lo_v, pos) &
                                  _mm512_cmpge_epi32_mask(hi_v, pos)
                            : 0;
    }
  };
  // Block b's values in pairs of keys. Keys outside [key_begin, key_end) get zero values:
  // their probability is zero, but their rows may hold anything (a NaN times zero would
  // spread).
  auto pair_values = [&](const KeyBlock& b, uint32_t (*pairs)[256]) {
    const int t_first = static_cast<int>(std::max<int64_t>(0, key_begin - b.k0));
    auto value_row = [&](int t, int m) {
      if (t < t_first || t >= b.nt) return _mm512_setzero_si512();
      return _mm512_loadu_si512(b.Row(head, t) + kD + 32 * m);
    };
    for (int kp = 0; kp < 16; ++kp) {
      for (int m = 0; m < kD / 32; ++m) {
        const __m512i even = value_row(2 * kp, m), odd = value_row(2 * kp + 1, m);
        _mm512_store_si512(pairs[2 * m] + kp * 16, _mm512_permutex2var_epi16(even, low_pairs, odd));
        _mm512_store_si512(pairs[2 * m + 1] + kp * 16,
                           _mm512_permutex2var_epi16(even, high_pairs, odd));
      }
    }
  };
  // The online softmax of tile j over block b (one lane per query row): its probabilities in
  // rows of 32 keys split in three bf16 parts, and the rows' rescale factors.
  auto softmax = [&](int j, const float* sc, uint16_t (*p_parts)[16 * 32], float* rescale_out) {
    __m512 block_max = _mm512_set1_ps(-1e30f);
    for (int t = 0; t < kKeysPerBlock; ++t) {
      if (visible[t] == 0) continue;
      block_max = _mm512_mask_max_ps(block_max, visible[t], block_max, _mm512_load_ps(sc + t * 16));
    }
    const __m512 new_max = _mm512_max_ps(row_max[j], block_max);
    const __m512 rescale = ExpNonPositive16(_mm512_sub_ps(row_max[j], new_max));
    __m512 block_sum = _mm512_setzero_ps();
    __m512i p_rows[2][16];
    for (int t = 0; t < kKeysPerBlock; ++t) {
      __m512 p = _mm512_setzero_ps();
      if (visible[t] != 0) {
        const __m512 e = ExpNonPositive16(_mm512_sub_ps(_mm512_load_ps(sc + t * 16), new_max));
        p = _mm512_maskz_mov_ps(visible[t], e);
      }
      block_sum = _mm512_add_ps(block_sum, p);
      p_rows[t / 16][t % 16] = _mm512_castps_si512(p);
    }
    denom[j] = _mm512_fmadd_ps(denom[j], rescale, block_sum);
    row_max[j] = new_max;
    _mm512_store_ps(rescale_out, rescale);
    Transpose16x16(p_rows[0]);
    Transpose16x16(p_rows[1]);
    for (int r = 0; r < 16; ++r) {
      __m256i first[kSplits], second[kSplits];
      SplitThree(_mm512_castsi512_ps(p_rows[0][r]), first);
      SplitThree(_mm512_castsi512_ps(p_rows[1][r]), second);
      for (int i = 0; i < kSplits; ++i) {
        _mm512_store_si512(p_parts[i] + r * 32,
                           _mm512_inserti64x4(_mm512_castsi256_si512(first[i]), second[i], 1));
      }
    }
  };
  // acc = acc * rescale + P V for tile j, four 16-dim chunks at a time in four sum tiles
  // (tmm0, 1, 4, 5), so that consecutive tile products do not wait for each other;
  // probability parts alternate between tmm2 / 3 and value chunks between tmm6 / 7.
  auto add_products = [&](int j, const uint16_t (*p_parts)[16 * 32], const uint32_t (*pairs)[256],
                          const float* rescale_in) {
    float* tile_acc = acc + j * 16 * kD;
    for (int c0 = 0; c0 < kDimChunks; c0 += 4) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(4);
      _tile_zero(5);
      for (int i = 0; i < kSplits; ++i) {
        if (i % 2 == 0) {
          _tile_loadd(2, p_parts[i], 64);
          _tile_loadd(6, pairs[c0], 64);
          _tile_dpbf16ps(0, 2, 6);
          _tile_loadd(7, pairs[c0 + 1], 64);
          _tile_dpbf16ps(1, 2, 7);
          _tile_loadd(6, pairs[c0 + 2], 64);
          _tile_dpbf16ps(4, 2, 6);
          _tile_loadd(7, pairs[c0 + 3], 64);
          _tile_dpbf16ps(5, 2, 7);
        } else {
          _tile_loadd(3, p_parts[i], 64);
          _tile_loadd(6, pairs[c0], 64);
          _tile_dpbf16ps(0, 3, 6);
          _tile_loadd(7, pairs[c0 + 1], 64);
          _tile_dpbf16ps(1, 3, 7);
          _tile_loadd(6, pairs[c0 + 2], 64);
          _tile_dpbf16ps(4, 3, 6);
          _tile_loadd(7, pairs[c0 + 3], 64);
          _tile_dpbf16ps(5, 3, 7);
        }
      }
      _tile_stored(0, sums, 64);
      _tile_stored(1, sums + 256, 64);
      _tile_stored(4, sums + 512, 64);
      _tile_stored(5, sums + 768, 64);
      for (int r = 0; r < rows; ++r) {
        const __m512 scale = _mm512_set1_ps(rescale_in[r]);
        for (int c = 0; c < 4; ++c) {
          float* a = tile_acc + r * kD + (c0 + c) * 16;
          _mm512_store_ps(a, _mm512_fmadd_ps(_mm512_load_ps(a), scale,
                                             _mm512_load_ps(sums + c * 256 + r * 16)));
        }
      }
    }
  };

  // Steps (block, tile) in order; step n's scores are computed while step n - 1's
  // probabilities are stored, before its products.
  const TileScope tile_scope;
  if (first_key < key_end && tiles > 0) {
    KeyBlock block = block_at(first_key);
    prefetch(first_key + kKeysPerBlock);
    compute_scores(block, 0, scores[0]);
    int buffer = 0, pairs_buffer = 0;
    for (int j = 0;; buffer ^= 1) {
      if (j == 0) {
        prefetch(block.k0 + 2 * kKeysPerBlock);
        mask_block(block);
        pair_values(block, value_pairs[pairs_buffer]);
      }
      softmax(j, scores[buffer], probs[buffer], rescale_lanes[buffer]);
      const bool last_tile = j + 1 == tiles;
      const bool more = !last_tile || block.k0 + kKeysPerBlock < key_end;
      if (more) {
        if (last_tile) block = block_at(block.k0 + kKeysPerBlock);
        compute_scores(block, last_tile ? 0 : j + 1, scores[buffer ^ 1]);
      }
      add_products(j, probs[buffer], value_pairs[pairs_buffer], rescale_lanes[buffer]);
      if (!more) break;
      if (last_tile) {
        j = 0;
        pairs_buffer ^= 1;
      } else {
        ++j;
      }
    }
  }
  for (int j = 0; j < tiles; ++j) {
    alignas(64) float denom_lanes[16];
    _mm512_store_ps(denom_lanes, denom[j]);
    const float* tile_acc = acc + j * 16 * kD;
    for (int r = 0; r < rows; ++r) {
      const float inv = denom_lanes[r] > 0.0f ? 1.0f / denom_lanes[r] : 0.0f;
      for (int d = 0; d < kD; d += 16) {
        _mm512_storeu_ps(out + (j * 16 + r) * kD + d,
                         _mm512_mul_ps(_mm512_load_ps(tile_acc + r * kD + d), _mm512_set1_ps(inv)));
      }
    }
  }
}

#endif  // ESURGE_HAS_AMX

}  // namespace esurge_cpu::amx

#endif  // ESURGE_AMX_ATTENTION_H_
