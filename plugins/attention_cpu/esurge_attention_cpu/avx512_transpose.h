// A 16 x 16 transpose of 32-bit words in AVX-512 registers, shared by the kernels that
// re-arrange weights (bf16_pair_matmul.cc) and attention probabilities (amx_attention.h).

#ifndef ESURGE_AVX512_TRANSPOSE_H_
#define ESURGE_AVX512_TRANSPOSE_H_

#if defined(__AVX512F__)
#include <immintrin.h>

namespace esurge_cpu {

// Transposes a 16 x 16 tile of 32-bit words in registers: row c of the result is column c.
inline void Transpose16x16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4i + c]: column 4l + c of rows 4i..4i+3 in 128-bit lane l.
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // t[c] (c < 4): columns c and 8 + c; t[4 + c]: columns 4 + c and 12 + c; rows 0-7, then
  // the same for rows 8-15 in t[8 + ...].
  for (int h = 0; h < 2; ++h) {
    for (int c = 0; c < 4; ++c) {
      t[8 * h + c] = _mm512_shuffle_i32x4(u[8 * h + c], u[8 * h + 4 + c], 0x88);
      t[8 * h + 4 + c] = _mm512_shuffle_i32x4(u[8 * h + c], u[8 * h + 4 + c], 0xdd);
    }
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0xdd);
  }
}

}  // namespace esurge_cpu

#endif  // __AVX512F__

#endif  // ESURGE_AVX512_TRANSPOSE_H_
