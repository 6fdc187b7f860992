// Runtime choice of instruction set. The kernels are compiled once per ISA (see
// CMakeLists.txt); this file only asks the CPU what it supports.
#include "rnnkit.h"

namespace rnnkit {

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::generic: return true;
#if defined(RNNKIT_HAVE_AVX2)
    case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#if defined(RNNKIT_HAVE_AVX512)
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
#endif
    default: return false;
  }
}

Isa best_isa() {
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::generic;
}

}  // namespace rnnkit
