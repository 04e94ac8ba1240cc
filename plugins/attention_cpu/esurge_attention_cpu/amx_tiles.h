// Weight products on the AMX tile unit of Intel CPUs (Sapphire Rapids and later), for the bf16
// kernels of bf16_pair_matmul.cc.
//
// TDPBF16PS multiplies a 16 x 32 tile of bf16 x (A: 16 rows of 32 k values, 64 bytes each)
// by a 32 x 16 tile of bf16 W in pair order (B: 16 rows of 16 pairs (W[2kp, n], W[2kp + 1, n]),
// 64 bytes each) and adds the 16 x 16 fp32 sums into a C tile: 8192 products per instruction,
// 16 times the work of the AVX-512 dot-product instruction per cycle. The packed weight
// layout of the kernels (rows of pairs, `stride` words apart) is already B's layout, so a
// B tile is one strided load from it; x is stored once per call as plain bf16 rows, padded
// to whole tiles of 16 rows with zeros.
//
// A pass covers 32 rows x 32 columns with the eight tile registers: four C tiles (tmm0-3), two
// A tiles (tmm4-5) and two B tiles (tmm6-7), the usual 2 x 2 blocking, over all of K. The sums
// leave the tiles as fp32 (stored straight into an fp32 y when all 16 rows are real) and are
// rounded to bf16 for a bf16 y.
//
// An fp32 y too large to stay in the caches (a prefill step's: 2048 rows of 1536 columns are
// 12 MB) is written with streaming stores instead, through a 1 KB buffer: a TILESTORED into
// lines that are not cached waits for each line to be read in first, and the next pass's
// products wait for the store. Measured on the Intel kind (docs/PERFORMANCE.md step 34): 30
// products of 576 x 1536 at 512 rows, each into its own y, 550-620 GFLOP/s on one core with
// TILESTORED, 874-920 with streaming stores.
//
// Linux hands out the tile state only to a process that asked for it (arch_prctl
// ARCH_REQ_XCOMP_PERM); Usable() asks once per process and answers false where the kernel,
// the hypervisor or $ESURGE_CPU_AMX=0 says no, and the callers then use the AVX-512 path. Each
// work item loads the tile configuration and releases the tiles when done, so nothing is
// assumed about what another library left in the tile registers of a shared thread.

#ifndef ESURGE_AMX_TILES_H_
#define ESURGE_AMX_TILES_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && \
    defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ESURGE_HAS_AMX 1
#else
#define ESURGE_HAS_AMX 0
#endif

namespace esurge_cpu::amx {

constexpr int kTileRows = 16;          // rows of x (and of y) per tile
constexpr int kTileColumns = 16;       // output columns per tile
constexpr int kTilePairs = 16;         // pairs of K per tile (32 k values)
constexpr int kPassRows = 2 * kTileRows;

// Whether the tile path can run in this process (asked once).
inline bool Usable() {
#if ESURGE_HAS_AMX
  static const bool usable = [] {
    const char* env = std::getenv("ESURGE_CPU_AMX");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
#else
  return false;
#endif
}

// Whether a product of `rows` rows and depth K runs on the tiles: K in whole tiles, and enough
// rows that the 16-row tiles are not mostly padding (below, the AVX-512 kernel's 6-row passes
// waste less; measured in docs/PERFORMANCE.md step 31).
constexpr int64_t kMinRows = 8;
inline bool Takes(int64_t rows, int64_t K) {
  return rows >= kMinRows && K % (2 * kTilePairs) == 0 && Usable();
}

// Rows of x's bf16 copy (Takes() products): `rows` rounded up to whole tiles.
inline int64_t PaddedRows(int64_t rows) { return (rows + kTileRows - 1) / kTileRows * kTileRows; }

// An fp32 y of at least this many bytes is written with streaming stores (see the top).
constexpr int64_t kStreamedOutputBytes = int64_t{1} << 20;

// Whether a product's sums go into y [rows, N] with streaming stores: an fp32 y of at least
// kStreamedOutputBytes whose rows of 16-column vectors all start on a cache line.
template <typename TY>
inline bool StreamsOutput(const TY* y, int64_t rows, int64_t N) {
  return sizeof(TY) == 4 && rows * N * static_cast<int64_t>(sizeof(TY)) >= kStreamedOutputBytes &&
         N % kTileColumns == 0 && reinterpret_cast<uintptr_t>(y) % 64 == 0;
}

#if ESURGE_HAS_AMX

// Sets every tile to 16 rows of 64 bytes for the life of the object (one work item).
class TileScope {
 public:
  TileScope() {
    alignas(64) uint8_t config[64] = {};
    config[0] = 1;  // palette 1
    for (int t = 0; t < 8; ++t) {
      const uint16_t bytes = 64;
      std::memcpy(config + 16 + 2 * t, &bytes, sizeof bytes);
      config[48 + t] = kTileRows;
    }
    _tile_loadconfig(config);
  }
  ~TileScope() { _tile_release(); }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;
};

// Row r of x as bf16: xb[r * K + k]; rows from `rows` to PaddedRows(rows) are zero.
template <typename TX>
inline void StoreRowBf16(const TX* src, int64_t K, uint16_t* dst) {
  if constexpr (sizeof(TX) == 4) {
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + k));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), (__m256i)rounded);
    }
    for (; k < K; ++k) {  // K is a multiple of 32 here; kept for completeness
      const __m128bh one = _mm_cvtneps_pbh(_mm_set1_ps(src[k]));
      uint16_t value;
      std::memcpy(&value, &one, sizeof value);
      dst[k] = value;
    }
  } else {
    std::memcpy(dst, src, K * sizeof(uint16_t));
  }
}

// Writes the 16 x 16 fp32 sums `sums` (64 bytes per row) of y's rows [r0, r0 + real_rows),
// columns [n0, n0 + 16).
template <typename TY>
inline void WriteSums(const float* sums, int64_t real_rows, TY* y, int64_t N, int64_t r0,
                      int64_t n0) {
  for (int64_t r = 0; r < real_rows; ++r) {
    TY* dst = y + (r0 + r) * N + n0;
    const __m512 row = _mm512_load_ps(sums + r * kTileColumns);
    if constexpr (sizeof(TY) == 4) {
      _mm512_storeu_ps(dst, row);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), (__m256i)_mm512_cvtneps_pbh(row));
    }
  }
}

// TILESTORED of C tile `kTile` (GCC's intrinsic wants the register number as a literal).
template <int kTile>
inline void StoreTileRegister(void* base, int64_t stride) {
  static_assert(kTile >= 0 && kTile < 4);
  if constexpr (kTile == 0) _tile_stored(0, base, stride);
  if constexpr (kTile == 1) _tile_stored(1, base, stride);
  if constexpr (kTile == 2) _tile_stored(2, base, stride);
  if constexpr (kTile == 3) _tile_stored(3, base, stride);
}

// Moves C tile `kTile` (rows [r0, r0 + 16) of the pass, columns [n0, n0 + 16)) into y: when its
// 16 rows are all real, straight into an fp32 y, or with streaming stores where `stream` (an
// fp32 y of at least kStreamedOutputBytes, 64-byte aligned); else through a buffer.
template <int kTile, typename TY>
inline void StoreTile(TY* y, int64_t N, int64_t rows, int64_t r0, int64_t n0, bool stream) {
  if (r0 >= rows) return;
  alignas(64) float sums[kTileRows * kTileColumns];
  if constexpr (sizeof(TY) == 4) {
    if (r0 + kTileRows <= rows) {
      if (!stream) {
        StoreTileRegister<kTile>(y + r0 * N + n0, N * sizeof(float));
        return;
      }
      StoreTileRegister<kTile>(sums, kTileColumns * sizeof(float));
      for (int64_t r = 0; r < kTileRows; ++r) {
        _mm512_stream_ps(y + (r0 + r) * N + n0, _mm512_load_ps(sums + r * kTileColumns));
      }
      return;
    }
  }
  StoreTileRegister<kTile>(sums, kTileColumns * sizeof(float));
  WriteSums(sums, std::min<int64_t>(kTileRows, rows - r0), y, N, r0, n0);
}

// y[r, n0 : n0 + 16 * vectors] for r in [r_begin, r_end) (r_begin a multiple of 16; the rows
// of a last partial tile are computed from x's zero padding but not written): x in bf16 rows
// `xb` (K values each), the weights of these columns as rows of pairs `packed`, `stride` words
// apart (K / 2 rows). `step()` runs once per K tile of every pass (the callers' prefetcher).
// `stream`: StreamsOutput() of the whole y (the item ends with a store fence then, so its
// streamed sums are visible to whichever thread reads y after the ParallelFor).
template <typename TY, typename Step>
void RowsOfBlock(const uint16_t* xb, int64_t K, int64_t r_begin, int64_t r_end,
                 const uint32_t* packed, int64_t stride, int vectors, TY* y, int64_t N,
                 int64_t n0, bool stream, Step&& step) {
  const TileScope tiles;
  const int64_t x_bytes = K * sizeof(uint16_t), w_bytes = stride * sizeof(uint32_t);
  const int64_t pairs = K / 2;
  for (int64_t r = r_begin; r < r_end; r += kPassRows) {
    const uint16_t* x0 = xb + r * K;
    const uint16_t* x1 = x0 + kTileRows * K;
    const bool two_row_tiles = r + kTileRows < r_end;
    for (int v = 0; v < vectors; v += 2) {
      const bool two_column_tiles = v + 1 < vectors;
      const uint32_t* w0 = packed + v * kTileColumns;
      const uint32_t* w1 = w0 + kTileColumns;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t kp = 0; kp < pairs; kp += kTilePairs) {
        step();
        _tile_loadd(4, x0 + 2 * kp, x_bytes);
        _tile_loadd(6, w0 + kp * stride, w_bytes);
        _tile_dpbf16ps(0, 4, 6);
        if (two_column_tiles) {
          _tile_loadd(7, w1 + kp * stride, w_bytes);
          _tile_dpbf16ps(1, 4, 7);
        }
        if (two_row_tiles) {
          _tile_loadd(5, x1 + 2 * kp, x_bytes);
          _tile_dpbf16ps(2, 5, 6);
          if (two_column_tiles) _tile_dpbf16ps(3, 5, 7);
        }
      }
      const int64_t n = n0 + v * kTileColumns;
      StoreTile<0>(y, N, r_end, r, n, stream);
      if (two_column_tiles) StoreTile<1>(y, N, r_end, r, n + kTileColumns, stream);
      if (two_row_tiles) {
        StoreTile<2>(y, N, r_end, r + kTileRows, n, stream);
        if (two_column_tiles) {
          StoreTile<3>(y, N, r_end, r + kTileRows, n + kTileColumns, stream);
        }
      }
    }
  }
  if (stream) _mm_sfence();
}

#endif  // ESURGE_HAS_AMX

}  // namespace esurge_cpu::amx

#endif  // ESURGE_AMX_TILES_H_
