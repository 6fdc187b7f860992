// Whether the CPU has the dot-product instructions of lowp_dot.cpp (compiled for the
// baseline instruction set: safe to call on any CPU).
#include "rnnkit.h"

namespace rnnkit {

bool lowp_dot_supported(Precision p) {
#if defined(RNNKIT_HAVE_AVX512)
  if (!isa_supported(Isa::avx512)) return false;
  return p == Precision::int8 ? __builtin_cpu_supports("avx512vnni") != 0 : __builtin_cpu_supports("avx512bf16") != 0;
#else
  (void)p;
  return false;
#endif
}

}  // namespace rnnkit
