// The read rate two threads reach over a buffer far larger than the caches, reading it as the
// packed weight products do (64-byte loads fed to VDPBF16PS), with and without software
// prefetch (to L1, L2 or non-temporal) at a few distances: the ceiling the products of a
// batch-1 decode step stream against (docs/PERFORMANCE.md step 49). Needs AVX512-BF16.
//
//   g++ -O3 -march=native -o /tmp/read_bandwidth benchmarks/read_bandwidth.cc -lpthread
//   /tmp/read_bandwidth
//
// Prints, per pattern, the best and median rate of 15 reads of 256 MB, three rounds.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBytes = size_t{256} << 20;
constexpr int kThreads = 2, kReads = 15, kRounds = 3;
enum Prefetch { kNone, kL1, kNonTemporal, kL2 };
const char* const kNames[] = {"plain", "prefetch T0", "prefetch NTA", "prefetch T1"};

volatile float g_sink[kThreads * 16];  // keeps the sums, so the reads are not optimised away

template <Prefetch kPrefetch>
void PrefetchLines(const char* p) {
  for (int line = 0; line < 256; line += 64) {
    if constexpr (kPrefetch == kL1) _mm_prefetch(p + line, _MM_HINT_T0);
    if constexpr (kPrefetch == kNonTemporal) _mm_prefetch(p + line, _MM_HINT_NTA);
    if constexpr (kPrefetch == kL2) _mm_prefetch(p + line, _MM_HINT_T1);
  }
}

template <Prefetch kPrefetch>
float ReadRange(const char* p, size_t bytes, size_t distance) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // bf16 (1, 1)
  for (size_t i = 0; i < bytes; i += 256) {
    if constexpr (kPrefetch != kNone) PrefetchLines<kPrefetch>(p + i + distance);
    for (int v = 0; v < 4; ++v) {
      acc[v] = _mm512_dpbf16_ps(acc[v], x, (__m512bh)_mm512_loadu_si512(p + i + 64 * v));
    }
  }
  return _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

float Read(Prefetch prefetch, const char* p, size_t bytes, size_t distance) {
  switch (prefetch) {
    case kL1: return ReadRange<kL1>(p, bytes, distance);
    case kNonTemporal: return ReadRange<kNonTemporal>(p, bytes, distance);
    case kL2: return ReadRange<kL2>(p, bytes, distance);
    default: return ReadRange<kNone>(p, bytes, distance);
  }
}

}  // namespace

int main() {
  // Room past the end for the furthest prefetch (never read).
  char* buffer = static_cast<char*>(std::aligned_alloc(4096, kBytes + (64 << 10)));
  std::memset(buffer, 1, kBytes + (64 << 10));
  for (int round = 0; round < kRounds; ++round) {
    for (Prefetch prefetch : {kNone, kL1, kNonTemporal, kL2}) {
      for (size_t distance : {512, 2048, 8192}) {
        if (prefetch == kNone && distance != 512) continue;
        std::vector<double> seconds;
        for (int r = 0; r < kReads; ++r) {
          const auto start = std::chrono::steady_clock::now();
          std::thread threads[kThreads];
          for (int t = 0; t < kThreads; ++t) {
            threads[t] = std::thread([=] {
              g_sink[t * 16] =
                  Read(prefetch, buffer + t * (kBytes / kThreads), kBytes / kThreads, distance);
            });
          }
          for (auto& thread : threads) thread.join();
          seconds.push_back(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        std::sort(seconds.begin(), seconds.end());
        std::printf("%-13s distance %5zu B: best %.1f GB/s, median %.1f GB/s\n",
                    kNames[prefetch], prefetch == kNone ? size_t{0} : distance,
                    kBytes / seconds.front() / 1e9, kBytes / seconds[kReads / 2] / 1e9);
      }
    }
  }
  std::free(buffer);
}
