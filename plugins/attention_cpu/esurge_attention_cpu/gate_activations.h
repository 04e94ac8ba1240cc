// The activations of a gated MLP (SwiGLU, GeGLU) on 16 fp32 lanes, for the fused gate/up
// product of bf16_pair_matmul.cc: act(gate) * up computed where the two products leave the
// kernel, instead of by XLA over their written-out results.
//
// They follow the formulas of jax.nn (silu(g) = g * sigmoid(g); gelu(g, approximate=True) =
// g / 2 * (1 + tanh(sqrt(2 / pi) * (g + 0.044715 g^3)))) with one exponential each: within
// 1e-5 of the float64 formulas (tests/matmul/test_cpu_gated_matmul.py), and closer than XLA's
// tanh-GELU, whose 1 + tanh(u) cancels where u is negative (8e-3 relative there, against 1e-6).

#ifndef ESURGE_GATE_ACTIVATIONS_H_
#define ESURGE_GATE_ACTIVATIONS_H_

#include <cstdint>

#include "avx512_exp.h"

namespace esurge_cpu::gate {

// The activation codes the FFI call passes (bf16_pair_matmul.py's GATE_ACTIVATIONS).
enum class Activation : int32_t { kSilu = 0, kGeluTanh = 1 };

inline bool IsKnown(int32_t code) {
  return code == static_cast<int32_t>(Activation::kSilu) ||
         code == static_cast<int32_t>(Activation::kGeluTanh);
}

#if defined(__AVX512F__)

// silu(g) = g / (1 + e^-g).
inline __m512 Silu16(__m512 g) {
  const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
  return _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// gelu(g, approximate=True) = g / 2 * (1 + tanh(u)), u = sqrt(2 / pi) * (g + 0.044715 g^3),
// computed as g / (1 + e^(-2u)) (1 + tanh(u) = 2 sigmoid(2u)): no cancellation where the
// result is small, and exact at both ends (e^(-2u) = inf gives 0, 0 gives g).
inline __m512 GeluTanh16(__m512 g) {
  const __m512 g3 = _mm512_mul_ps(_mm512_mul_ps(g, g), g);
  const __m512 minus_two_u = _mm512_mul_ps(_mm512_set1_ps(-1.5957691216057308f),
                                           _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), g3, g));
  const __m512 e = Exp16(minus_two_u);
  return _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// act(gate) * up.
template <Activation kAct>
inline __m512 Gated16(__m512 gate, __m512 up) {
  if constexpr (kAct == Activation::kSilu) {
    return _mm512_mul_ps(Silu16(gate), up);
  } else {
    return _mm512_mul_ps(GeluTanh16(gate), up);
  }
}

#endif  // __AVX512F__

}  // namespace esurge_cpu::gate

#endif  // ESURGE_GATE_ACTIVATIONS_H_
