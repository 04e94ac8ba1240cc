// The packed bf16 kernel alone, without XLA: 30 products of K x N weights (SmolLM2's MLP
// shape by default) at each row count given, fp32 in and out, x packed in every product as
// the FFI call does, each product into its own y and every buffer 64-byte aligned, as in a
// model run by XLA (before step 34 the harness reused one y, which stayed in the caches, and
// its weights were 16 bytes off a cache line, which halved the tile path's rate). Prints
// GFLOP/s per row count (best of 20 rounds). Used for docs/PERFORMANCE.md steps 29 and 34:
//
//   INC=$(.venv/bin/python -c "import jax.ffi; print(jax.ffi.include_dir())")
//   g++ -O3 -march=native -fno-math-errno -fno-trapping-math -fassociative-math \
//     -fno-signed-zeros -freciprocal-math -std=c++20 -pthread -I"$INC" \
//     -Iplugins/attention_cpu/esurge_attention_cpu benchmarks/packed_kernel_harness.cc \
//     -o /tmp/packed_kernel_harness
//   /tmp/packed_kernel_harness 16 64 128 256 2048
//   K=1536 N=576 /tmp/packed_kernel_harness 64 2048    # another shape
//
// ESURGE_CPU_KERNEL_THREADS=1 times one thread, ESURGE_CPU_AMX=0 the AVX-512 path on a CPU
// with AMX. It includes the kernel's source, so building
// it from an older checkout times that version.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "bf16_pair_matmul.cc"

// 64-byte aligned storage, as XLA gives its buffers: the tile loads of weights 16 bytes off a
// cache line (std::vector's usual alignment) run at half the rate.
template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const Aligned64&) const { return true; }
};
template <typename T>
using AlignedVector = std::vector<T, Aligned64<T>>;

int main(int argc, char** argv) {
  const int64_t K = std::atol(std::getenv("K") ? std::getenv("K") : "576");
  const int64_t N = std::atol(std::getenv("N") ? std::getenv("N") : "1536");
  constexpr int kProducts = 30;
  const int64_t pairs = (K + 1) / 2, blocks = (N + 63) / 64;
  std::mt19937 rng(0);
  std::vector<AlignedVector<uint32_t>> weights(kProducts,
                                               AlignedVector<uint32_t>(blocks * pairs * 64));
  for (auto& w : weights) {
    for (auto& word : w) word = (rng() & 0x3fff3fffu) | 0x3c003c00u;  // normal bf16 pairs
  }
  for (int a = 1; a < argc; ++a) {
    const int64_t rows = std::atol(argv[a]);
    AlignedVector<float> x(rows * K);
    for (auto& v : x) v = (rng() % 1000) / 1000.0f - 0.5f;
    AlignedVector<uint32_t> packed_x((rows + 32) * pairs * 2);  // enough for every layout
    const bool tiles = esurge_cpu::amx::Takes(rows, K);
    // Each product writes its own y, as in a model, where the output is not in the caches.
    std::vector<AlignedVector<float>> ys(kProducts, AlignedVector<float>(rows * N));
    double best = 1e9;
    for (int round = 0; round < 20; ++round) {
      const auto start = std::chrono::steady_clock::now();
      for (int p = 0; p < kProducts; ++p) {
        if (tiles) {
          PackRowsForTiles(x.data(), rows, K, reinterpret_cast<uint16_t*>(packed_x.data()));
        } else {
          PackRows(x.data(), rows, K, packed_x.data());
        }
        Bf16PackedMatmul(packed_x.data(), rows, K, weights[p].data(), N, tiles, ys[p].data());
      }
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      best = std::min(best, took.count());
    }
    std::printf("%ld rows: %.0f GFLOP/s%s\n", static_cast<long>(rows),
                2.0 * rows * K * N * kProducts / best / 1e9, tiles ? " (AMX tiles)" : "");
  }
}
