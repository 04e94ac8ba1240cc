// Rounding activations to bf16 the way the weight products read them: shared by the packed
// products (bf16_pair_matmul.cc) and the greedy LM head (greedy_head.cc), whose exact logits
// must be bitwise the products' own; F32ToBf16 also by small_matmul.cc.

#ifndef ESURGE_BF16_ROWS_H_
#define ESURGE_BF16_ROWS_H_

#include <cstdint>
#include <cstring>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace esurge_cpu {

inline uint16_t F32ToBf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7F800000u) == 0x7F800000u) {
    return static_cast<uint16_t>((bits >> 16) | ((bits & 0xFFFFu) ? 0x40u : 0u));
  }
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

#if defined(__AVX512BF16__) && defined(__AVX512F__)
// One row of K values (fp32, rounded 16 at a time by VCVTNEPS2BF16 and the tail by
// F32ToBf16; or bf16, copied) into bf16[0, K), and a zero at bf16[K] when K is odd (so the
// row reads as whole pairs).
template <typename TX>
inline void RoundRowToBf16(const TX* src, int64_t K, uint16_t* bf16) {
  int64_t k = 0;
  if constexpr (sizeof(TX) == 4) {
    for (; k + 16 <= K; k += 16) {
      const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + k));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(bf16 + k), (__m256i)rounded);
    }
    for (; k < K; ++k) bf16[k] = F32ToBf16(src[k]);
  } else {
    std::memcpy(bf16, src, K * sizeof(uint16_t));
  }
  if (K % 2) bf16[K] = 0;
}
#endif

}  // namespace esurge_cpu

#endif  // ESURGE_BF16_ROWS_H_
