// exp(x) on 16 fp32 lanes, shared by the attention kernels' softmax (amx_attention.h,
// amx_decode_attention.h) and the gated MLP's activations (gate_activations.h).

#ifndef ESURGE_AVX512_EXP_H_
#define ESURGE_AVX512_EXP_H_

#if defined(__AVX512F__)
#include <immintrin.h>

namespace esurge_cpu {

// exp(x) for every fp32 x: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' expf polynomial
// (about 1 ulp), times 2^n by VSCALEFPS, which gives inf past the top of the range, 0 (through
// the subnormals) below it, and keeps NaN.
inline __m512 Exp16(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// exp(x) for x <= 0 (softmax arguments, possibly -inf or -1e30 for masked scores), clamped at
// -87 (exp(-87) = 1.6e-38, next to fp32's smallest normal) so the reduction stays finite.
inline __m512 ExpNonPositive16(__m512 x) {
  return Exp16(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)));
}

}  // namespace esurge_cpu

#endif  // __AVX512F__

#endif  // ESURGE_AVX512_EXP_H_
