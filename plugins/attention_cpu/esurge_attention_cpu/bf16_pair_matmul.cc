// Weight products of more than a few rows (batched decode; the Python backend decides which)
// with bf16 weights, called from JAX through the XLA FFI: `bf16_pair_matmul` (W as stored) on
// CPUs with AVX512-BF16, and `bf16_packed_matmul` (W packed at load) on every CPU.
//
// y[r, :] = x[r, :] @ W for the first `num_rows` rows of x (later rows of y are zero), W bf16
// stored [K, N] ("nn") or [N, K] ("nt", a tied embedding as the LM head); the semantics of
// esurge_core.matmul: x rounded to bf16, exact bf16 products summed in fp32, y in its dtype
// (the instruction used treats denormal inputs and sums as zero, below 1.2e-38).
//
// Why a native kernel: at the row counts of batched decode (16-128 rows) XLA:CPU's bf16 dot
// runs at about 350-400 GFLOP/s on the 2-core Zen 5 machine of docs/PERFORMANCE.md, under half
// its rate at 2048 rows, and on a Zen 3 (AVX2) machine below its own fp32 dot. The
// dot-product instruction VDPBF16PS multiplies pairs of bf16 values (k, k + 1) of x and W and
// adds both products to one fp32 lane, twice the work of an fp32 FMA per instruction, but it
// wants W's pairs adjacent, which neither stored layout has. Here each work item owns a block
// of kBlockVectors x 16 output columns, re-arranges that block of W into pair order once in a
// per-thread buffer (a cost shared by all rows of the item), then runs a register-blocked
// micro-kernel of up to kRows rows x kBlockVectors vectors of sums over it. Without
// AVX512-BF16 only the packed product is built, with a portable micro-kernel of fp32 FMAs
// (below) over the same layout, and for items of many rows a plain fp32 tile over the item's
// block widened to fp32 once.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "amx_tiles.h"
#include "avx512_transpose.h"
#include "bf16_rows.h"
#include "gate_activations.h"
#include "parallel_for.h"
#include "xla_thread_pool.h"
#include "xla/ffi/api/ffi.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define ESURGE_HAS_BF16_PAIRS 1
#else
#define ESURGE_HAS_BF16_PAIRS 0
#endif

namespace ffi = xla::ffi;

extern "C" int EsurgeBf16PairMatmulAvailable() { return ESURGE_HAS_BF16_PAIRS; }
// Whether products of enough rows run on the AMX tile unit in this process (amx_tiles.h).
extern "C" int EsurgeAmxTilesUsable() { return esurge_cpu::amx::Usable() ? 1 : 0; }

namespace {

constexpr int kLanes = 16;
constexpr int kBlockVectors = 4;  // output columns per item: 64 (measured better than 256)
// Packed weights: an item takes at most this many micro-kernel passes of rows (96 rows), so a
// large product is split into row panels whose rows stay in cache while the block's weights
// are streamed (measured at 512 / 2048 rows: 76 -> 65 ms, 283 -> 230 ms for 30 products).
constexpr int64_t kPackedChunkPasses = 16;
// On the tile unit, a chunk holds about this many bytes of x's bf16 rows (16 passes of 32 rows
// at K = 576, 6 at K = 1536), which stay in the core's L2 while the thread's items run across
// every column block of the product; see Bf16PackedMatmul.
constexpr int64_t kTileChunkBytes = int64_t{576} << 10;
inline int64_t TileChunkPasses(int64_t K) {
  return std::max<int64_t>(1, kTileChunkBytes / (esurge_cpu::amx::kPassRows * K * 2));
}

using esurge_cpu::F32ToBf16;

// Prefetches the weights of the thread's next item a few cache lines per micro-kernel step,
// so the memory system fetches them while the cores compute this item (without it a step's
// products ran at about 60% of their rate with the weights in cache: fetch, then compute).
class AheadPrefetcher {
 public:
  AheadPrefetcher() = default;
  // `rows` pieces of `row_bytes` bytes, `stride` bytes apart, starting at `first`.
  AheadPrefetcher(const void* first, int64_t rows, int64_t row_bytes, int64_t stride)
      : stride_(stride), rows_(rows) {
    const auto address = reinterpret_cast<uintptr_t>(first);
    base_ = reinterpret_cast<const char*>(address & ~uintptr_t{63});
    lines_per_row_ = (static_cast<int64_t>(address & 63) + row_bytes + 63) / 64;
  }
  int64_t lines() const { return rows_ * lines_per_row_; }
  void set_lines_per_step(int64_t n) { per_step_ = n; }
  inline void Step() {
    for (int64_t i = 0; i < per_step_ && row_ < rows_; ++i) {
      __builtin_prefetch(base_ + row_ * stride_ + line_ * 64, 0, 3);
      if (++line_ == lines_per_row_) {
        line_ = 0;
        ++row_;
      }
    }
  }

 private:
  const char* base_ = nullptr;
  int64_t stride_ = 0, rows_ = 0, lines_per_row_ = 0, per_step_ = 0;
  int64_t row_ = 0, line_ = 0;
};

// Numbers the products, for the per-thread blocks of weights kept between items of one call.
std::atomic<uint64_t> g_calls{0};

#if ESURGE_HAS_BF16_PAIRS

constexpr int kRows = 6;  // rows per micro-kernel pass: 6 x 4 = 24 accumulators

// Packs columns [n0, n0 + width) of W [K, N] (width = 16 * vectors) into pair order: word
// kp * width + j holds (W[2kp, n0 + j], W[2kp + 1, n0 + j]) (the even k in the low half); an
// odd K's last pair has a zero high half.
void PackNN(const uint16_t* w, int64_t K, int64_t N, int64_t n0, int vectors, uint32_t* packed) {
  const int64_t width = kLanes * vectors;
  const int64_t pairs = (K + 1) / 2;
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const uint16_t* even = w + 2 * kp * N + n0;
    const bool has_odd = 2 * kp + 1 < K;
    const uint16_t* odd = even + N;
    uint32_t* dst = packed + kp * width;
    for (int v = 0; v < vectors; ++v) {
      const __m512i lo = _mm512_cvtepu16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(even + v * kLanes)));
      __m512i word = lo;
      if (has_odd) {
        const __m512i hi = _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(odd + v * kLanes)));
        word = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
      }
      _mm512_storeu_si512(dst + v * kLanes, word);
    }
  }
}

// The same for W stored [N, K]: the pair (W^T[2kp, n], W^T[2kp + 1, n]) is the 32-bit word kp
// of row n, so packing is a transpose of 32-bit words, done in 16 x 16 tiles in registers.
void PackNT(const uint16_t* w, int64_t K, int64_t n0, int vectors, uint32_t* packed) {
  const int64_t width = kLanes * vectors;
  const int64_t pairs = (K + 1) / 2;
  const int64_t full_pairs = K / 2;
  const int64_t tiled_pairs = full_pairs / kLanes * kLanes;
  for (int v = 0; v < vectors; ++v) {
    uint32_t* dst = packed + v * kLanes;
    const uint16_t* rows = w + (n0 + v * kLanes) * K;
    for (int64_t kp0 = 0; kp0 < tiled_pairs; kp0 += kLanes) {
      __m512i tile[16];
      for (int j = 0; j < kLanes; ++j) tile[j] = _mm512_loadu_si512(rows + j * K + 2 * kp0);
      esurge_cpu::Transpose16x16(tile);
      for (int c = 0; c < kLanes; ++c) _mm512_storeu_si512(dst + (kp0 + c) * width, tile[c]);
    }
    for (int j = 0; j < kLanes; ++j) {
      const uint16_t* row = rows + j * K;
      for (int64_t kp = tiled_pairs; kp < full_pairs; ++kp) {
        uint32_t word;
        std::memcpy(&word, row + 2 * kp, sizeof word);
        dst[kp * width + j] = word;
      }
      if (pairs > full_pairs) dst[full_pairs * width + j] = row[K - 1];
    }
  }
}

// Rows [r0, r0 + R) of y, columns [n0, n0 + 16 * V): sums over every pair of K. r0 is a
// multiple of kRows (the start of a panel of x).
template <int R, int V, typename TY>
inline void MicroKernel(const uint32_t* xp, int64_t pairs, int64_t r0, const uint32_t* packed,
                        int64_t packed_stride, TY* y, int64_t N, int64_t n0,
                        AheadPrefetcher& ahead) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  const uint32_t* panel = xp + r0 / kRows * pairs * kRows;
  for (int64_t kp = 0; kp < pairs; ++kp) {
    ahead.Step();
    __m512bh wv[V];
    for (int v = 0; v < V; ++v) {
      wv[v] = (__m512bh)_mm512_loadu_si512(packed + kp * packed_stride + v * kLanes);
    }
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(panel[kp * kRows + r]));
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xv, wv[v]);
    }
  }
  for (int r = 0; r < R; ++r) {
    TY* dst = y + (r0 + r) * N + n0;
    for (int v = 0; v < V; ++v) {
      if constexpr (sizeof(TY) == 4) {
        _mm512_storeu_ps(dst + v * kLanes, acc[r][v]);
      } else {
        alignas(64) float lanes[kLanes];
        _mm512_store_ps(lanes, acc[r][v]);
        for (int i = 0; i < kLanes; ++i) dst[v * kLanes + i] = F32ToBf16(lanes[i]);
      }
    }
  }
}

// The pair kernel reads the packed words as they are (nothing to widen).
inline bool WidensItem(int64_t) { return false; }
inline int64_t ItemSteps(int64_t rows, int, int64_t pairs) {
  return (rows + kRows - 1) / kRows * pairs;
}

// Words of x's packed rows (PackRows) for `rows` rows of `pairs` pairs.
inline int64_t XWords(int64_t rows, int64_t pairs) {
  return (rows + kRows - 1) / kRows * kRows * pairs;
}

// x's real rows rounded to bf16, as pairs in panels of kRows rows: the pair (x[r, 2kp],
// x[r, 2kp + 1]) of row r is the word xp[(r / kRows * pairs + kp) * kRows + r % kRows], so a
// micro-kernel pass reads its rows' pairs as one sequential stream (the last panel's missing
// rows are never read). fp32 rows are rounded 16 values per instruction (VCVTNEPS2BF16:
// nearest even, NaN stays NaN).
template <typename TX>
void PackRows(const TX* x, int64_t rows, int64_t K, uint32_t* xp) {
  const int64_t pairs = (K + 1) / 2;
  esurge_cpu::ParallelFor((rows + kRows - 1) / kRows, [&](int64_t p) {
    thread_local std::vector<uint32_t> row_pairs;
    if (row_pairs.size() < static_cast<size_t>(pairs)) row_pairs.resize(pairs);
    uint16_t* bf16 = reinterpret_cast<uint16_t*>(row_pairs.data());
    uint32_t* panel = xp + p * pairs * kRows;
    const int64_t end = std::min<int64_t>(rows, (p + 1) * kRows);
    for (int64_t r = p * kRows; r < end; ++r) {
      esurge_cpu::RoundRowToBf16(x + r * K, K, bf16);
      uint32_t* dst = panel + r % kRows;
      for (int64_t kp = 0; kp < pairs; ++kp) dst[kp * kRows] = row_pairs[kp];
    }
  });
}

#else  // portable

// Portable variant (no AVX512-BF16: AVX2, AVX-512 without BF16, NEON), GCC/Clang vector
// extensions of 8 floats. The packed words of 8 columns give two fp32 vectors: the even k's
// weights (low halves shifted up) and the odd k's (high halves masked), each multiplied by the
// row's x value and added with FMAs. x is rounded to bf16 like the dot-product variant, but
// kept as fp32 values so every row's pair is two broadcasts. A pass over K covers up to 4 rows
// x 16 columns (8 accumulators, 4 weight vectors and 2 broadcasts of 16 registers) for several
// rows, and a whole item (64 columns) for one row, whose products are bound by memory.
constexpr int kRows = 4;
// x is stored as 2 fp32 words per pair of K.
constexpr int kXWordsPerPair = 2;
constexpr int kPortableLanes = 8;
typedef float F8 __attribute__((vector_size(kPortableLanes * sizeof(float))));
typedef uint32_t U8 __attribute__((vector_size(kPortableLanes * sizeof(uint32_t))));

// Rows [0, R) of x (fp32 values, `width` apart) times C chunks of 8 columns of one packed
// block, into y (rows N apart).
template <int R, int C, typename TY>
inline void PortableTile(const float* x, int64_t width, int64_t pairs, const uint32_t* packed,
                         int64_t packed_stride, TY* y, int64_t N, AheadPrefetcher& ahead) {
  F8 acc[R][C] = {};
  for (int64_t kp = 0; kp < pairs; ++kp) {
    ahead.Step();
    F8 even[C], odd[C];
    for (int c = 0; c < C; ++c) {
      U8 words;
      std::memcpy(&words, packed + kp * packed_stride + c * kPortableLanes, sizeof words);
      even[c] = (F8)(words << 16);
      odd[c] = (F8)(words & 0xFFFF0000u);
    }
    for (int r = 0; r < R; ++r) {
      const float xe = x[r * width + 2 * kp], xo = x[r * width + 2 * kp + 1];
      for (int c = 0; c < C; ++c) {
        acc[r][c] += xe * even[c];
        acc[r][c] += xo * odd[c];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      TY* dst = y + r * N + c * kPortableLanes;
      if constexpr (sizeof(TY) == 4) {
        std::memcpy(dst, &acc[r][c], sizeof acc[r][c]);
      } else {
        for (int i = 0; i < kPortableLanes; ++i) dst[i] = F32ToBf16(acc[r][c][i]);
      }
    }
  }
}

// Rows [r0, r0 + R) of y, columns [n0, n0 + 16 * V): sums over every pair of K.
template <int R, int V, typename TY>
inline void MicroKernel(const uint32_t* xp, int64_t pairs, int64_t r0, const uint32_t* packed,
                        int64_t packed_stride, TY* y, int64_t N, int64_t n0,
                        AheadPrefetcher& ahead) {
  constexpr int kChunks = V * kLanes / kPortableLanes;
  constexpr int kGroup = R == 1 ? kChunks : 2;
  const int64_t width = 2 * pairs;
  const float* x = reinterpret_cast<const float*>(xp) + r0 * width;
  for (int g = 0; g < kChunks; g += kGroup) {
    PortableTile<R, kGroup>(x, width, pairs, packed + g * kPortableLanes, packed_stride,
                            y + r0 * N + n0 + g * kPortableLanes, N, ahead);
  }
}

// Items of many rows: the register budget of 16 AVX2 registers leaves the in-register
// widening above 4 rows x 16 columns with two dependent FMAs per sum and pass over K, which
// ran at 85-105 GFLOP/s on a Zen 3 where XLA's fp32 dot ran at 125. So an item of at least
// kWidenMinRows rows first widens its packed block into fp32 once, in a per-thread buffer
// (16-column chunks, each `2 * pairs` rows of 16 floats, contiguous), and then runs a plain
// fp32 tile of kWideRows rows x 16 columns over it: 12 independent sums, two weight vectors
// and one broadcast per k, the shape of the usual AVX2 GEMM kernels. The widening is a
// single pass over the block, shared by every row of the item.
constexpr int kWideRows = 6;
constexpr int64_t kWidenMinRows = 32;
constexpr int kWideColumns = 16;
constexpr int64_t kWideKBlock = 192;

// Chunk c (16 columns) of the item's fp32 weights at wide + c * 2 * pairs * 16: row k holds
// W[k, 16c .. 16c + 15] of the item's columns.
inline void WidenBlock(const uint32_t* packed, int64_t packed_stride, int64_t pairs, int chunks,
                       float* wide, AheadPrefetcher& ahead) {
  for (int c = 0; c < chunks; ++c) {
    float* dst = wide + c * 2 * pairs * kWideColumns;
    for (int64_t kp = 0; kp < pairs; ++kp) {
      ahead.Step();
      const uint32_t* src = packed + kp * packed_stride + c * kWideColumns;
      U8 low, high;
      std::memcpy(&low, src, sizeof low);
      std::memcpy(&high, src + kPortableLanes, sizeof high);
      const F8 even_low = (F8)(low << 16), even_high = (F8)(high << 16);
      const F8 odd_low = (F8)(low & 0xFFFF0000u), odd_high = (F8)(high & 0xFFFF0000u);
      float* row = dst + 2 * kp * kWideColumns;
      std::memcpy(row, &even_low, sizeof even_low);
      std::memcpy(row + kPortableLanes, &even_high, sizeof even_high);
      std::memcpy(row + kWideColumns, &odd_low, sizeof odd_low);
      std::memcpy(row + kWideColumns + kPortableLanes, &odd_high, sizeof odd_high);
    }
  }
}

// Rows [0, R) of x (fp32 values, `x_stride` apart) times `k_count` rows of one widened
// 16-column chunk, added to (or, for the first K block, stored in) R x 16 fp32 sums.
template <int R>
inline void WideTile(const float* x, int64_t x_stride, int64_t k_count, const float* wide,
                     float* sums, int64_t sums_stride, bool accumulate) {
  F8 acc[R][2] = {};
  if (accumulate) {
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < 2; ++c) {
        std::memcpy(&acc[r][c], sums + r * sums_stride + c * kPortableLanes, sizeof acc[r][c]);
      }
    }
  }
  for (int64_t k = 0; k < k_count; ++k) {
    F8 low, high;
    std::memcpy(&low, wide + k * kWideColumns, sizeof low);
    std::memcpy(&high, wide + k * kWideColumns + kPortableLanes, sizeof high);
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * x_stride + k];
      acc[r][0] += xv * low;
      acc[r][1] += xv * high;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < 2; ++c) {
      std::memcpy(sums + r * sums_stride + c * kPortableLanes, &acc[r][c], sizeof acc[r][c]);
    }
  }
}

inline void WideTileAnyRows(int rows, const float* x, int64_t x_stride, int64_t k_count,
                            const float* wide, float* sums, int64_t sums_stride,
                            bool accumulate) {
  switch (rows) {
    case 6: return WideTile<6>(x, x_stride, k_count, wide, sums, sums_stride, accumulate);
    case 5: return WideTile<5>(x, x_stride, k_count, wide, sums, sums_stride, accumulate);
    case 4: return WideTile<4>(x, x_stride, k_count, wide, sums, sums_stride, accumulate);
    case 3: return WideTile<3>(x, x_stride, k_count, wide, sums, sums_stride, accumulate);
    case 2: return WideTile<2>(x, x_stride, k_count, wide, sums, sums_stride, accumulate);
    default: return WideTile<1>(x, x_stride, k_count, wide, sums, sums_stride, accumulate);
  }
}

inline bool WidensItem(int64_t rows) { return rows >= kWidenMinRows; }

// Micro-kernel steps (AheadPrefetcher::Step calls) of an item of `rows` rows and `vectors`
// 16-column vectors: on the widened path one per pair of the widening pass and one per
// chunk and K block.
inline int64_t ItemSteps(int64_t rows, int vectors, int64_t pairs) {
  if (!WidensItem(rows)) return (rows + kRows - 1) / kRows * pairs;
  return (pairs + (2 * pairs + kWideKBlock - 1) / kWideKBlock) * vectors;
}

// Rows [r_begin, r_end) of y, columns [n0, n0 + 16 * vectors), through the widened block:
// K in blocks of kWideKBlock, so that a chunk's block of weights (12 KB) stays in L1 while
// every row tile of the item passes over it; the sums stay fp32 until the last block.
// Items are numbered row chunk fastest, so a thread's next item is mostly the same block's
// next rows: the widened block is kept per thread and reused while the call (numbered, so a
// later call's weights at the same address are widened afresh) and the block are the same.
template <typename TY>
void WideRowsOfBlock(uint64_t call, int vectors, const uint32_t* xp, int64_t pairs,
                     int64_t r_begin, int64_t r_end, const uint32_t* packed,
                     int64_t packed_stride, TY* y, int64_t N, int64_t n0,
                     AheadPrefetcher& ahead) {
  const int64_t width = 2 * pairs, columns = vectors * kWideColumns, rows = r_end - r_begin;
  thread_local std::vector<float> wide, sums;
  thread_local uint64_t widened_call = 0;
  thread_local const uint32_t* widened_block = nullptr;
  if (sums.size() < static_cast<size_t>(rows * columns)) sums.resize(rows * columns);
  if (widened_call != call || widened_block != packed) {
    if (wide.size() < static_cast<size_t>(width * columns)) wide.resize(width * columns);
    WidenBlock(packed, packed_stride, pairs, vectors, wide.data(), ahead);
    widened_call = call;
    widened_block = packed;
  }
  const float* x = reinterpret_cast<const float*>(xp) + r_begin * width;
  for (int64_t k0 = 0; k0 < width; k0 += kWideKBlock) {
    const int64_t k_count = std::min<int64_t>(kWideKBlock, width - k0);
    for (int c = 0; c < vectors; ++c) {
      ahead.Step();
      const float* chunk = wide.data() + (c * width + k0) * kWideColumns;
      for (int64_t r = 0; r < rows; r += kWideRows) {
        WideTileAnyRows(static_cast<int>(std::min<int64_t>(kWideRows, rows - r)),
                        x + r * width + k0, width, k_count, chunk,
                        sums.data() + r * columns + c * kWideColumns, columns, k0 > 0);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = sums.data() + r * columns;
    TY* dst = y + (r_begin + r) * N + n0;
    if constexpr (sizeof(TY) == 4) {
      std::memcpy(dst, src, columns * sizeof(float));
    } else {
      for (int64_t j = 0; j < columns; ++j) dst[j] = F32ToBf16(src[j]);
    }
  }
}

// Words of x's packed rows (PackRows) for `rows` rows of `pairs` pairs.
inline int64_t XWords(int64_t rows, int64_t pairs) { return rows * pairs * kXWordsPerPair; }

// x's real rows rounded to bf16 and stored as fp32 values, K padded to even with a zero:
// xp (as float)[r * 2 * pairs + k] = bf16(x[r, k]).
template <typename TX>
void PackRows(const TX* x, int64_t rows, int64_t K, uint32_t* xp) {
  const int64_t width = 2 * ((K + 1) / 2);
  esurge_cpu::ParallelFor((rows + 15) / 16, [&](int64_t block) {
    const int64_t end = std::min<int64_t>(rows, (block + 1) * 16);
    for (int64_t r = block * 16; r < end; ++r) {
      uint32_t* dst = xp + r * width;
      const TX* src = x + r * K;
      int64_t k = 0;
      if constexpr (sizeof(TX) == 4) {
        // Round to nearest even; a NaN stays a (quiet) NaN, infinities stay infinite.
        for (; k + kPortableLanes <= K; k += kPortableLanes) {
          U8 bits;
          std::memcpy(&bits, src + k, sizeof bits);
          const U8 rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
          const U8 special = (bits & 0x7F800000u) == 0x7F800000u;
          const U8 quiet = ((bits & 0xFFFFu) != 0u) & 0x00400000u;
          const U8 kept = (bits & 0xFFFF0000u) | quiet;
          const U8 out = (special & kept) | (~special & rounded);
          std::memcpy(dst + k, &out, sizeof out);
        }
        for (; k < K; ++k) dst[k] = static_cast<uint32_t>(F32ToBf16(src[k])) << 16;
      } else {
        for (; k < K; ++k) dst[k] = static_cast<uint32_t>(src[k]) << 16;
      }
      if (K % 2) dst[K] = 0;
    }
  });
}

#endif  // ESURGE_HAS_BF16_PAIRS

// x's real rows rounded to bf16 as plain rows for the tile unit (amx_tiles.h): xb[r * K + k],
// zero rows up to whole tiles.
template <typename TX>
void PackRowsForTiles(const TX* x, int64_t rows, int64_t K, uint16_t* xb) {
#if ESURGE_HAS_AMX
  const int64_t padded = esurge_cpu::amx::PaddedRows(rows);
  esurge_cpu::ParallelFor(padded / esurge_cpu::amx::kTileRows, [&](int64_t t) {
    for (int64_t r = t * esurge_cpu::amx::kTileRows; r < (t + 1) * esurge_cpu::amx::kTileRows;
         ++r) {
      if (r < rows) {
        esurge_cpu::amx::StoreRowBf16(x + r * K, K, xb + r * K);
      } else {
        std::memset(xb + r * K, 0, K * sizeof(uint16_t));
      }
    }
  });
#else
  (void)x, (void)rows, (void)K, (void)xb;
#endif
}

template <int V, typename TY>
void RowsOfBlock(const uint32_t* xp, int64_t pairs, int64_t r_begin, int64_t r_end,
                 const uint32_t* packed, int64_t packed_stride, TY* y, int64_t N, int64_t n0,
                 AheadPrefetcher& ahead) {
  int64_t r = r_begin;
  for (; r + kRows <= r_end; r += kRows) {
    MicroKernel<kRows, V>(xp, pairs, r, packed, packed_stride, y, N, n0, ahead);
  }
  switch (r_end - r) {
    case 5: return MicroKernel<5, V>(xp, pairs, r, packed, packed_stride, y, N, n0, ahead);
    case 4: return MicroKernel<4, V>(xp, pairs, r, packed, packed_stride, y, N, n0, ahead);
    case 3: return MicroKernel<3, V>(xp, pairs, r, packed, packed_stride, y, N, n0, ahead);
    case 2: return MicroKernel<2, V>(xp, pairs, r, packed, packed_stride, y, N, n0, ahead);
    case 1: return MicroKernel<1, V>(xp, pairs, r, packed, packed_stride, y, N, n0, ahead);
    default: return;
  }
}

template <typename TY>
void RowsOfBlockAnyWidth(int vectors, const uint32_t* xp, int64_t pairs, int64_t r_begin,
                         int64_t r_end, const uint32_t* packed, int64_t packed_stride, TY* y,
                         int64_t N, int64_t n0, AheadPrefetcher& ahead) {
  switch (vectors) {
    case 4:
      return RowsOfBlock<4>(xp, pairs, r_begin, r_end, packed, packed_stride, y, N, n0, ahead);
    case 3:
      return RowsOfBlock<3>(xp, pairs, r_begin, r_end, packed, packed_stride, y, N, n0, ahead);
    case 2:
      return RowsOfBlock<2>(xp, pairs, r_begin, r_end, packed, packed_stride, y, N, n0, ahead);
    default:
      return RowsOfBlock<1>(xp, pairs, r_begin, r_end, packed, packed_stride, y, N, n0, ahead);
  }
}

// Rows per pass and micro-kernel steps (AheadPrefetcher::Step calls) of an item of `rows`
// rows and `vectors` vectors, on the tile unit or not.
inline int64_t PassRows(bool tiles) { return tiles ? esurge_cpu::amx::kPassRows : kRows; }
inline int64_t StepsOfItem(bool tiles, int64_t rows, int vectors, int64_t pairs) {
  if (!tiles) return ItemSteps(rows, vectors, pairs);
  return (rows + esurge_cpu::amx::kPassRows - 1) / esurge_cpu::amx::kPassRows *
         ((vectors + 1) / 2) * (pairs / esurge_cpu::amx::kTilePairs);
}

// Rows [r_begin, r_end) of y, columns [n0, n0 + 16 * vectors), on the tile unit: x as the bf16
// rows of PackRowsForTiles (in `xp`), the block's pairs `packed_stride` words apart.
// `stream`: StreamsOutput(y, rows, N) of the whole product (amx_tiles.h).
template <typename TY>
void TileRowsOfBlock(const uint32_t* xp, int64_t K, int64_t r_begin, int64_t r_end,
                     const uint32_t* packed, int64_t packed_stride, int vectors, TY* y, int64_t N,
                     int64_t n0, bool stream, AheadPrefetcher& ahead) {
#if ESURGE_HAS_AMX
  esurge_cpu::amx::RowsOfBlock(reinterpret_cast<const uint16_t*>(xp), K, r_begin, r_end, packed,
                               packed_stride, vectors, y, N, n0, stream, [&] { ahead.Step(); });
#else
  (void)xp, (void)K, (void)r_begin, (void)r_end, (void)packed, (void)packed_stride;
  (void)vectors, (void)y, (void)N, (void)n0, (void)stream, (void)ahead;
#endif
}

// Whether a product of `rows` rows into y streams its sums (amx_tiles.h; tile unit only).
template <typename TY>
bool StreamsTileOutput(bool tiles, const TY* y, int64_t rows, int64_t N) {
  return tiles && esurge_cpu::amx::StreamsOutput(y, rows, N);
}

#if ESURGE_HAS_BF16_PAIRS

// `tiles`: x is packed for the tile unit (PackRowsForTiles) and the items run there.
template <typename TY>
void Bf16PairMatmul(const uint32_t* xp, int64_t rows, int64_t K, const uint16_t* w, int64_t N,
                    bool transpose_w, bool tiles, TY* y) {
  const int64_t pairs = (K + 1) / 2;
  const int64_t vectors_total = N / kLanes;
  const int64_t blocks = (vectors_total + kBlockVectors - 1) / kBlockVectors;
  // Enough items to keep every thread busy: split the rows too when there are few column
  // blocks (each such item packs its block again).
  const int64_t threads = esurge_cpu::PoolSize();
  const int64_t pass_rows = PassRows(tiles);
  const int64_t row_passes = (rows + pass_rows - 1) / pass_rows;
  const int64_t row_chunks =
      std::clamp<int64_t>((4 * threads + blocks - 1) / blocks, 1, row_passes);
  const int64_t chunk_rows = ((row_passes + row_chunks - 1) / row_chunks) * pass_rows;
  const int64_t items = blocks * row_chunks;
  struct ItemSpan {
    int64_t r_begin, r_end, n0;
    int vectors;
  };
  auto span = [&](int64_t item) {
    const int64_t block = item / row_chunks, chunk = item % row_chunks;
    const int64_t r_begin = chunk * chunk_rows;
    return ItemSpan{
        r_begin, std::min<int64_t>(rows, r_begin + chunk_rows), block * kBlockVectors * kLanes,
        static_cast<int>(std::min<int64_t>(kBlockVectors, vectors_total - block * kBlockVectors))};
  };
  // Items are numbered row chunk fastest, and ParallelFor gives each thread a contiguous share
  // of them, so a thread's next item is mostly the same block's next rows: the re-arranged
  // block is kept per thread while the call (numbered, so a later call's weights at the same
  // address are packed afresh) and the block are the same. While computing an item whose
  // successor is another block, a thread prefetches that block's weights.
  const uint64_t call = g_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  const bool stream = StreamsTileOutput(tiles, y, rows, N);
  esurge_cpu::ParallelFor(items, [&](int64_t item) {
    thread_local std::vector<uint32_t> buffer;
    thread_local uint64_t packed_call = 0;
    thread_local int64_t packed_n0 = -1;
    const size_t need = static_cast<size_t>(pairs * kBlockVectors * kLanes);
    if (buffer.size() < need) buffer.resize(need);
    const ItemSpan it = span(item);
    if (it.r_begin >= it.r_end) return;
    if (packed_call != call || packed_n0 != it.n0) {
      if (transpose_w) {
        PackNT(w, K, it.n0, it.vectors, buffer.data());
      } else {
        PackNN(w, K, N, it.n0, it.vectors, buffer.data());
      }
      packed_call = call;
      packed_n0 = it.n0;
    }
    AheadPrefetcher ahead;
    const ItemSpan next = span(std::min(item + 1, items - 1));
    if (next.n0 != it.n0) {
      const int64_t width = next.vectors * kLanes;
      ahead = transpose_w ? AheadPrefetcher(w + next.n0 * K, 1, width * K * 2, 0)
                          : AheadPrefetcher(w + next.n0, K, width * 2, N * 2);
      const int64_t steps =
          tiles ? StepsOfItem(true, it.r_end - it.r_begin, it.vectors, pairs)
                : (it.r_end - it.r_begin + kRows - 1) / kRows * pairs;
      ahead.set_lines_per_step((ahead.lines() + steps - 1) / std::max<int64_t>(steps, 1));
    }
    if (tiles) {
      return TileRowsOfBlock(xp, K, it.r_begin, it.r_end, buffer.data(), it.vectors * kLanes,
                             it.vectors, y, N, it.n0, stream, ahead);
    }
    RowsOfBlockAnyWidth(it.vectors, xp, pairs, it.r_begin, it.r_end, buffer.data(),
                        it.vectors * kLanes, y, N, it.n0, ahead);
  });
}

#endif  // ESURGE_HAS_BF16_PAIRS

// The same product with W packed at load (PackWeights in bf16_pair_matmul.py): block b holds
// columns [64b, 64b + 64) as `pairs` rows of 64 words in pair order, one contiguous run, the
// last block zero-padded to 64 columns. Nothing is re-arranged per call, and each item streams
// one contiguous piece of memory. An item covers `item_vectors` vectors of one block (fewer
// than 4 when there are too few blocks to keep every thread busy) and a chunk of rows.
//
// ParallelFor hands each thread a contiguous share of the items. On the AVX-512 path they are
// numbered row chunk fastest, so a thread's next item mostly reads the same block of weights.
// On the tile unit they are numbered column fastest: a thread runs one chunk of rows (about
// kTileChunkBytes of x, kept in its L2) across every column block, the weights streaming past
// from the shared cache, instead of streaming x through its L2 once per block. Measured on the
// Intel kind (docs/PERFORMANCE.md step 34), 30 products of 576 x 1536 at 2048 rows: 1352-1397
// GFLOP/s row chunk fastest (128-row chunks), 1747-1861 column fastest (512-row chunks).
class PackedItems {
 public:
  struct Span {
    int64_t r_begin, r_end, v0;
    int vectors;
  };

  // The items of a product of `rows` rows, depth K and `vectors_total` vectors of columns.
  PackedItems(int64_t rows, int64_t K, int64_t vectors_total, bool tiles)
      : rows_(rows), vectors_total_(vectors_total), tiles_(tiles) {
    const int64_t threads = esurge_cpu::PoolSize();
    while (item_vectors_ > 1 && vectors_total / item_vectors_ < 2 * threads) item_vectors_ /= 2;
    column_items_ = (vectors_total + item_vectors_ - 1) / item_vectors_;
    const int64_t pass_rows = PassRows(tiles);
    const int64_t chunk_passes = tiles ? TileChunkPasses(K) : kPackedChunkPasses;
    const int64_t row_passes = (rows + pass_rows - 1) / pass_rows;
    row_chunks_ = std::clamp<int64_t>(std::max((4 * threads + column_items_ - 1) / column_items_,
                                               (row_passes + chunk_passes - 1) / chunk_passes),
                                      1, row_passes);
    chunk_rows_ = ((row_passes + row_chunks_ - 1) / row_chunks_) * pass_rows;
  }

  int64_t count() const { return column_items_ * row_chunks_; }

  Span operator()(int64_t item) const {
    const int64_t column_item = tiles_ ? item % column_items_ : item / row_chunks_;
    const int64_t chunk = tiles_ ? item / column_items_ : item % row_chunks_;
    const int64_t r_begin = chunk * chunk_rows_;
    const int64_t v0 = column_item * item_vectors_;
    return Span{r_begin, std::min<int64_t>(rows_, r_begin + chunk_rows_), v0,
                static_cast<int>(std::min<int64_t>(item_vectors_, vectors_total_ - v0))};
  }

 private:
  int64_t rows_, vectors_total_;
  bool tiles_;
  int item_vectors_ = kBlockVectors;
  int64_t column_items_ = 0, row_chunks_ = 0, chunk_rows_ = 0;
};

// The first word of vector v0's columns in the packed weights `wp` (blocks of `pairs` rows).
inline const uint32_t* PackedColumns(const uint32_t* wp, int64_t pairs, int64_t v0) {
  return wp + (v0 / kBlockVectors) * pairs * kBlockVectors * kLanes +
         (v0 % kBlockVectors) * kLanes;
}

// A prefetcher of `vectors` vectors of packed columns starting at `first`, spread over `steps`
// micro-kernel steps.
inline AheadPrefetcher PackedPrefetcher(const uint32_t* first, int64_t pairs, int vectors,
                                        int64_t steps) {
  AheadPrefetcher ahead(first, pairs, vectors * kLanes * 4, kBlockVectors * kLanes * 4);
  ahead.set_lines_per_step((ahead.lines() + steps - 1) / std::max<int64_t>(steps, 1));
  return ahead;
}

// Rows [r_begin, r_end) x `vectors` vectors of packed columns `packed` into y (row stride N,
// columns from n0), on whichever path the product takes. `call` numbers the product (the
// portable path's widened blocks), `stream` as in TileRowsOfBlock.
template <typename TY>
void PackedRowsOfBlock(uint64_t call, bool tiles, const uint32_t* xp, int64_t K, int64_t r_begin,
                       int64_t r_end, const uint32_t* packed, int vectors, TY* y, int64_t N,
                       int64_t n0, bool stream, AheadPrefetcher& ahead) {
  const int64_t pairs = (K + 1) / 2;
  if (tiles) {
    return TileRowsOfBlock(xp, K, r_begin, r_end, packed, kBlockVectors * kLanes, vectors, y, N,
                           n0, stream, ahead);
  }
#if !ESURGE_HAS_BF16_PAIRS
  if (WidensItem(r_end - r_begin)) {
    return WideRowsOfBlock(call, vectors, xp, pairs, r_begin, r_end, packed,
                           kBlockVectors * kLanes, y, N, n0, ahead);
  }
#else
  (void)call;
#endif
  RowsOfBlockAnyWidth(vectors, xp, pairs, r_begin, r_end, packed, kBlockVectors * kLanes, y, N,
                      n0, ahead);
}

template <typename TY>
void Bf16PackedMatmul(const uint32_t* xp, int64_t rows, int64_t K, const uint32_t* wp, int64_t N,
                      bool tiles, TY* y) {
  const int64_t pairs = (K + 1) / 2;
  const PackedItems items(rows, K, N / kLanes, tiles);
  const uint64_t call = g_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  const bool stream = StreamsTileOutput(tiles, y, rows, N);
  esurge_cpu::ParallelFor(items.count(), [&](int64_t item) {
    const PackedItems::Span it = items(item);
    if (it.r_begin >= it.r_end) return;
    AheadPrefetcher ahead;
    const PackedItems::Span next = items(std::min(item + 1, items.count() - 1));
    if (next.v0 != it.v0) {
      ahead = PackedPrefetcher(PackedColumns(wp, pairs, next.v0), pairs, next.vectors,
                               StepsOfItem(tiles, it.r_end - it.r_begin, it.vectors, pairs));
    }
    PackedRowsOfBlock(call, tiles, xp, K, it.r_begin, it.r_end, PackedColumns(wp, pairs, it.v0),
                      it.vectors, y, N, it.v0 * kLanes, stream, ahead);
  });
}

#if ESURGE_HAS_BF16_PAIRS

// y = act(x W_gate) * (x W_up) for the packed fused weight [K, N] whose first N / 2 columns
// are the gate's and the rest the up projection's (N / 2 a multiple of 64, so each block is
// one or the other), y [rows, N / 2]. An item computes its columns of both products into the
// thread's scratch rows (kept in cache) and writes act(gate) * up: y is written once, at half
// the width of the two products, and XLA's pass over them is gone.
//
// A product of few rows (StreamsGatedHalves) is bound by reading the weights, and an item's
// gate and up blocks lie N / 2 columns apart: each thread would read two interleaved streams,
// 73 KB at a time for SmolLM2. There both halves are computed as one plain product into
// scratch rows, each thread reading one contiguous run of blocks, and the activation is
// applied after; the result is bitwise the same. Measured on the 2-core Zen 4 kind (64 chained
// 576 x 3072 products, the two ways alternated in one process, docs/PERFORMANCE.md step 41):
// best call 118-123 against 126-128 us at one row, 132-137 against 137-143 at four to six.
constexpr int64_t kStreamedGatedRows = 6;
inline bool StreamsGatedHalves(bool tiles, int64_t rows) {
  return !tiles && rows <= kStreamedGatedRows;
}

// dst[c] = act(gate[c]) * up[c] for `columns` columns (a multiple of 16), fp32 sums in, TY
// out; `stream` (fp32 only) writes past the caches.
template <esurge_cpu::gate::Activation kAct, typename TY>
inline void StoreGated(const float* gate, const float* up, int64_t columns, TY* dst,
                       bool stream) {
  for (int64_t c = 0; c < columns; c += kLanes) {
    const __m512 out =
        esurge_cpu::gate::Gated16<kAct>(_mm512_loadu_ps(gate + c), _mm512_loadu_ps(up + c));
    if constexpr (sizeof(TY) == 4) {
      if (stream) {
        _mm512_stream_ps(dst + c, out);
      } else {
        _mm512_storeu_ps(dst + c, out);
      }
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c), (__m256i)_mm512_cvtneps_pbh(out));
    }
  }
}

template <esurge_cpu::gate::Activation kAct, typename TY>
void Bf16PackedGatedMatmul(const uint32_t* xp, int64_t rows, int64_t K, const uint32_t* wp,
                           int64_t N, bool tiles, TY* y) {
  const int64_t pairs = (K + 1) / 2;
  const int64_t half = N / 2, half_vectors = half / kLanes;
  if (StreamsGatedHalves(tiles, rows)) {
    thread_local std::vector<float> both;  // rows x N: gate columns, then up columns
    if (both.size() < static_cast<size_t>(rows * N)) both.resize(rows * N);
    Bf16PackedMatmul(xp, rows, K, wp, N, /*tiles=*/false, both.data());
    for (int64_t r = 0; r < rows; ++r) {
      const float* gate = both.data() + r * N;
      StoreGated<kAct>(gate, gate + half, half, y + r * half, /*stream=*/false);
    }
    return;
  }
  const PackedItems items(rows, K, half_vectors, tiles);
  const uint64_t call = g_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  const bool stream = esurge_cpu::amx::StreamsOutput(y, rows, half);
  constexpr int64_t kWidth = kBlockVectors * kLanes;  // scratch row stride
  esurge_cpu::ParallelFor(items.count(), [&](int64_t item) {
    const PackedItems::Span it = items(item);
    if (it.r_begin >= it.r_end) return;
    thread_local std::vector<float> gate, up;  // rows [0, r_end) x kWidth; [r_begin, r_end) used
    const size_t need = static_cast<size_t>(it.r_end * kWidth);
    if (gate.size() < need) gate.resize(need), up.resize(need);
    const int64_t steps = StepsOfItem(tiles, it.r_end - it.r_begin, it.vectors, pairs);
    const uint32_t* gate_columns = PackedColumns(wp, pairs, it.v0);
    const uint32_t* up_columns = PackedColumns(wp, pairs, half_vectors + it.v0);
    // While the gate's columns are computed, the up projection's are fetched, and while those
    // are, the next item's gate columns.
    AheadPrefetcher ahead = PackedPrefetcher(up_columns, pairs, it.vectors, steps);
    PackedRowsOfBlock(call, tiles, xp, K, it.r_begin, it.r_end, gate_columns, it.vectors,
                      gate.data(), kWidth, 0, /*stream=*/false, ahead);
    const PackedItems::Span next = items(std::min(item + 1, items.count() - 1));
    ahead = next.v0 != it.v0 ? PackedPrefetcher(PackedColumns(wp, pairs, next.v0), pairs,
                                                next.vectors, steps)
                             : AheadPrefetcher();
    PackedRowsOfBlock(call, tiles, xp, K, it.r_begin, it.r_end, up_columns, it.vectors,
                      up.data(), kWidth, 0, /*stream=*/false, ahead);
    for (int64_t r = it.r_begin; r < it.r_end; ++r) {
      StoreGated<kAct>(gate.data() + r * kWidth, up.data() + r * kWidth, it.vectors * kLanes,
                       y + r * half + it.v0 * kLanes, stream);
    }
    if (stream) _mm_sfence();
  });
}

#endif  // ESURGE_HAS_BF16_PAIRS

bool IsF32OrBf16(ffi::DataType t) { return t == ffi::DataType::F32 || t == ffi::DataType::BF16; }

// x's first `rows` rows in the layout the product reads: PackRowsForTiles' with `tiles`, else
// PackRows'. The buffer is the calling thread's, reused by its next call, and starts on a
// cache line (a tile row of x then is one line; measured 8-10% faster than std::vector's
// 16-byte alignment, docs/PERFORMANCE.md step 34).
const uint32_t* PackedX(const ffi::AnyBuffer& x, int64_t rows, int64_t K, bool tiles) {
  constexpr size_t kLineWords = 64 / sizeof(uint32_t);
  thread_local std::vector<uint32_t> words;
  const int64_t pairs = (K + 1) / 2;
  const size_t need = static_cast<size_t>(
      tiles ? esurge_cpu::amx::PaddedRows(rows) * pairs : XWords(rows, pairs));
  if (words.size() < need + kLineWords) words.resize(need + kLineWords);
  const size_t misalignment = reinterpret_cast<uintptr_t>(words.data()) % 64 / sizeof(uint32_t);
  uint32_t* const first = words.data() + (kLineWords - misalignment) % kLineWords;
  const bool f32 = x.element_type() == ffi::DataType::F32;
  const void* data = x.untyped_data();
  if (tiles) {
    auto* xb = reinterpret_cast<uint16_t*>(first);
    if (f32) {
      PackRowsForTiles(static_cast<const float*>(data), rows, K, xb);
    } else {
      PackRowsForTiles(static_cast<const uint16_t*>(data), rows, K, xb);
    }
  } else if (f32) {
    PackRows(static_cast<const float*>(data), rows, K, first);
  } else {
    PackRows(static_cast<const uint16_t*>(data), rows, K, first);
  }
  return first;
}

ffi::Error Bf16PairMatmulImpl(ffi::AnyBuffer x, ffi::AnyBuffer w,
                              ffi::Buffer<ffi::S32> num_rows, ffi::Result<ffi::AnyBuffer> y,
                              bool transpose_w, ffi::ThreadPool thread_pool) {
  esurge_cpu::XlaThreadPoolScope pool_scope(thread_pool, esurge_cpu::LeadingDimension(x));
#if !ESURGE_HAS_BF16_PAIRS
  return ffi::Error(ffi::ErrorCode::kUnimplemented,
      "bf16_pair_matmul (cpu): this CPU has no AVX512-BF16; use the xla matmul backend");
#else
  const auto x_dims = x.dimensions();
  const auto w_dims = w.dimensions();
  const auto y_dims = y->dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 2 || y_dims.size() != 2 ||
      num_rows.element_count() != 1) {
    return ffi::Error::InvalidArgument("bf16_pair_matmul (cpu): x, w and y must be matrices");
  }
  const int64_t M = x_dims[0], K = x_dims[1];
  const int64_t N = transpose_w ? w_dims[0] : w_dims[1];
  if ((transpose_w ? w_dims[1] : w_dims[0]) != K || y_dims[0] != M || y_dims[1] != N) {
    return ffi::Error::InvalidArgument("bf16_pair_matmul (cpu): shapes do not agree");
  }
  if (N % kLanes != 0) {
    return ffi::Error::InvalidArgument("bf16_pair_matmul (cpu): N must be a multiple of 16, got " +
                                       std::to_string(N));
  }
  if (w.element_type() != ffi::DataType::BF16 || !IsF32OrBf16(x.element_type()) ||
      !IsF32OrBf16(y->element_type())) {
    return ffi::Error::InvalidArgument(
        "bf16_pair_matmul (cpu): w must be bfloat16, x and y float32 or bfloat16");
  }
  const int64_t rows = std::clamp<int64_t>(num_rows.typed_data()[0], 0, M);
  const size_t row_bytes = y->size_bytes() / std::max<int64_t>(M, 1);
  std::memset(static_cast<char*>(y->untyped_data()) + rows * row_bytes, 0,
              (M - rows) * row_bytes);
  if (rows == 0 || N == 0 || K == 0) {
    std::memset(y->untyped_data(), 0, rows * row_bytes);
    return ffi::Error::Success();
  }
  const bool tiles = esurge_cpu::amx::Takes(rows, K);
  const uint32_t* xp = PackedX(x, rows, K, tiles);
  const auto* wd = static_cast<const uint16_t*>(w.untyped_data());
  if (y->element_type() == ffi::DataType::F32) {
    Bf16PairMatmul(xp, rows, K, wd, N, transpose_w, tiles,
                   static_cast<float*>(y->untyped_data()));
  } else {
    Bf16PairMatmul(xp, rows, K, wd, N, transpose_w, tiles,
                   static_cast<uint16_t*>(y->untyped_data()));
  }
  return ffi::Error::Success();
#endif
}

// The sizes of a call on packed weights: x [M, K], w_packed [blocks, pairs, 64] holding N
// columns, y [M, N] (y [M, N / 2] for the gated product), `rows` real rows.
struct PackedCall {
  int64_t M, K, N, rows;
};

// Checks a call's shapes and dtypes, zeroes y's padding rows and sizes the call; an error
// (named `name`) for what the kernel does not take.
ffi::Error PreparePackedCall(const char* name, const ffi::AnyBuffer& x,
                             const ffi::Buffer<ffi::U32>& w_packed,
                             const ffi::Buffer<ffi::S32>& num_rows, ffi::AnyBuffer& y, bool gated,
                             PackedCall* call) {
  const std::string what = std::string(name) + " (cpu): ";
  const auto x_dims = x.dimensions();
  const auto w_dims = w_packed.dimensions();
  const auto y_dims = y.dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 3 || y_dims.size() != 2 ||
      num_rows.element_count() != 1) {
    return ffi::Error::InvalidArgument(what +
                                       "x and y must be matrices, w_packed [blocks, pairs, 64]");
  }
  const int64_t M = x_dims[0], K = x_dims[1], N = gated ? 2 * y_dims[1] : y_dims[1];
  const int64_t block_columns = kBlockVectors * kLanes;
  if (y_dims[0] != M || w_dims[0] != (N + block_columns - 1) / block_columns ||
      w_dims[1] != (K + 1) / 2 || w_dims[2] != block_columns) {
    return ffi::Error::InvalidArgument(what + "shapes do not agree");
  }
  const int64_t multiple = gated ? 2 * block_columns : kLanes;
  if (N % multiple != 0) {
    return ffi::Error::InvalidArgument(what + "N must be a multiple of " +
                                       std::to_string(multiple) + ", got " + std::to_string(N));
  }
  if (!IsF32OrBf16(x.element_type()) || !IsF32OrBf16(y.element_type())) {
    return ffi::Error::InvalidArgument(what + "x and y must be float32 or bfloat16");
  }
  const int64_t rows = std::clamp<int64_t>(num_rows.typed_data()[0], 0, M);
  const size_t row_bytes = y.size_bytes() / std::max<int64_t>(M, 1);
  std::memset(static_cast<char*>(y.untyped_data()) + rows * row_bytes, 0, (M - rows) * row_bytes);
  if (N == 0 || K == 0) std::memset(y.untyped_data(), 0, rows * row_bytes);
  *call = PackedCall{M, K, N, (N == 0 || K == 0) ? 0 : rows};
  return ffi::Error::Success();
}

// Checks and prepares a call on packed weights (PreparePackedCall), packs x and runs
// `product(xp, call, tiles, y)` with y typed as the output's dtype (float or uint16_t).
template <typename Product>
ffi::Error RunPackedCall(const char* name, const ffi::AnyBuffer& x,
                         const ffi::Buffer<ffi::U32>& w_packed,
                         const ffi::Buffer<ffi::S32>& num_rows, ffi::AnyBuffer& y, bool gated,
                         Product&& product) {
  PackedCall call;
  if (ffi::Error error = PreparePackedCall(name, x, w_packed, num_rows, y, gated, &call);
      error.failure()) {
    return error;
  }
  if (call.rows == 0) return ffi::Error::Success();
  const bool tiles = esurge_cpu::amx::Takes(call.rows, call.K);
  const uint32_t* xp = PackedX(x, call.rows, call.K, tiles);
  if (y.element_type() == ffi::DataType::F32) {
    product(xp, call, tiles, static_cast<float*>(y.untyped_data()));
  } else {
    product(xp, call, tiles, static_cast<uint16_t*>(y.untyped_data()));
  }
  return ffi::Error::Success();
}

ffi::Error Bf16PackedMatmulImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::U32> w_packed,
                                ffi::Buffer<ffi::S32> num_rows, ffi::Result<ffi::AnyBuffer> y,
                                ffi::ThreadPool thread_pool) {
  esurge_cpu::XlaThreadPoolScope pool_scope(thread_pool, esurge_cpu::LeadingDimension(x));
  const uint32_t* wp = w_packed.typed_data();
  return RunPackedCall("bf16_packed_matmul", x, w_packed, num_rows, *y, /*gated=*/false,
                       [&](const uint32_t* xp, const PackedCall& call, bool tiles, auto* out) {
                         Bf16PackedMatmul(xp, call.rows, call.K, wp, call.N, tiles, out);
                       });
}

ffi::Error Bf16PackedGatedMatmulImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::U32> w_packed,
                                     ffi::Buffer<ffi::S32> num_rows, ffi::Result<ffi::AnyBuffer> y,
                                     int32_t activation, ffi::ThreadPool thread_pool) {
  esurge_cpu::XlaThreadPoolScope pool_scope(thread_pool, esurge_cpu::LeadingDimension(x));
#if !ESURGE_HAS_BF16_PAIRS
  (void)w_packed, (void)num_rows, (void)y, (void)activation;
  return ffi::Error(ffi::ErrorCode::kUnimplemented,
                    "bf16_packed_gated_matmul (cpu): this CPU has no AVX512-BF16");
#else
  using esurge_cpu::gate::Activation;
  if (!esurge_cpu::gate::IsKnown(activation)) {
    return ffi::Error::InvalidArgument("bf16_packed_gated_matmul (cpu): unknown activation " +
                                       std::to_string(activation));
  }
  const uint32_t* wp = w_packed.typed_data();
  return RunPackedCall(
      "bf16_packed_gated_matmul", x, w_packed, num_rows, *y, /*gated=*/true,
      [&](const uint32_t* xp, const PackedCall& call, bool tiles, auto* out) {
        if (static_cast<Activation>(activation) == Activation::kSilu) {
          Bf16PackedGatedMatmul<Activation::kSilu>(xp, call.rows, call.K, wp, call.N, tiles, out);
        } else {
          Bf16PackedGatedMatmul<Activation::kGeluTanh>(xp, call.rows, call.K, wp, call.N, tiles,
                                                       out);
        }
      });
#endif
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeBf16PackedMatmul, Bf16PackedMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ctx<ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeBf16PackedGatedMatmul, Bf16PackedGatedMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int32_t>("activation")
                                  .Ctx<ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsurgeBf16PairMatmul, Bf16PairMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transpose_w")
                                  .Ctx<ffi::ThreadPool>());
