// The CPU's dot-product instructions for the reduced-precision tiles of lowp.h:
// AVX512-VNNI vpdpbusd (u8 x s8 -> int32) and AVX512-BF16 vdpbf16ps (bf16 pairs ->
// float32). This file alone is compiled with those instruction sets (CMakeLists.txt);
// its functions are called only after lowp_dot_supported (lowp_cpu.cpp) has said the
// CPU has them, so the module loads and runs on any x86-64. The tile code is lowp.h's,
// with these policies in place of the portable ones: the same sums in the same order.
#include <immintrin.h>

#include "lowp.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {
namespace {

struct VnniDot {
  typedef int32_t V __attribute__((vector_size(64)));
  typedef uint32_t U __attribute__((vector_size(64)));
  static RNNKIT_INLINE V dot(V acc, uint32_t a, U w) {
    return V(_mm512_dpbusd_epi32(__m512i(acc), _mm512_set1_epi32(int(a)), __m512i(w)));
  }
};

struct Bf16Dot {
  typedef float V __attribute__((vector_size(64)));
  typedef uint32_t U __attribute__((vector_size(64)));
  static RNNKIT_INLINE V dot(V acc, uint32_t a, U w) {
    return V(_mm512_dpbf16_ps(__m512(acc), __m512bh(_mm512_set1_epi32(int(a))), __m512bh(w)));
  }
};

}  // namespace
}  // namespace RNNKIT_ISA_NS

void lowp_tile_vnni(int mr, int64_t kg, const uint32_t* A, int64_t lda, const uint32_t* panel, int32_t* acc) {
  RNNKIT_ISA_NS::lowp_tile_rows<Precision::int8, RNNKIT_ISA_NS::VnniDot>(mr, kg, A, lda, panel, acc);
}

void lowp_tile_bf16(int mr, int64_t kg, const uint32_t* A, int64_t lda, const uint32_t* panel, float* acc) {
  RNNKIT_ISA_NS::lowp_tile_rows<Precision::bf16, RNNKIT_ISA_NS::Bf16Dot>(mr, kg, A, lda, panel, acc);
}

}  // namespace rnnkit
