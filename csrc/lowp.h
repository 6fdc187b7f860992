// Reduced-precision weights for inference: another packed-weight type beside Packed<S>
// (kernel_common.h), with its own gemm_panels, so every cell (csrc/cells/*.h, whose
// packed type is a template parameter) runs on it unchanged through Step::product.
//
//   int8 (torch.ao's dynamic quantisation):
//     weights     q_w[n][k] = round(W[n][k] / s_w[n]),  s_w[n] = max_k |W[n][k]| / 127
//                 (symmetric, per output row n; round half to even; |q_w| <= 127)
//     activations every product quantises its fp32 input rows on the fly, per row b
//                 (dynamic, symmetric): q_a[b][k] = round(a[b][k] * (127 / m_b)),
//                 m_b = max_k |a[b][k]|, s_a[b] = m_b / 127 (all in float32)
//     product     C[b][n] = float(sum_k q_a[b][k] q_w[n][k]) * (s_a[b] * s_w[n])
//     The integer sum is exact (int32): AVX512-VNNI's vpdpbusd (u8 x s8; q_a is stored
//     as q_a + 128 and 128 sum_k q_w[n][k] subtracted) and the portable code give the
//     same integers, so the same result bit for bit.
//   bf16:
//     weights and the product's input rows rounded to bfloat16 (nearest even; a
//     subnormal flushes to zero), products exact in float32, accumulated in float32
//     in a fixed order: per output, group pairs (k = 2g, 2g+1) in g order, the odd
//     term added first (vdpbf16ps's order; AVX512-BF16 where the CPU has it, the
//     portable emulation elsewhere), in 4 interleaved chains for tiles of <= 2 rows
//     (g mod 4, summed (c0 + c1) + (c2 + c3) at the end), 1 chain otherwise.
// Activations, states and every cell's pointwise math stay float32.
//
// Layout: the panels of Packed<float> (NR columns, the same unit blocks), with K in
// groups of KG = 4 (int8) or 2 (bf16) values packed into 32 bits (value kk of a group
// at bits [kk*32/KG, ...)): panel p holds groups g = 0 .. KGn-1, each NR words.
#pragma once

#include "kernel_common.h"

namespace rnnkit {

// The CPU's dot-product tiles (lowp_dot.cpp, compiled with AVX512-VNNI / AVX512-BF16
// and called only when lowp_dot_supported (rnnkit.h) says the CPU has them; panels of
// 32 columns). acc: (mr, 32)
// int32 (int8) or float (bf16) partial products of mr rows of A (kg groups each, lda
// words apart) and one panel.
void lowp_tile_vnni(int mr, int64_t kg, const uint32_t* A, int64_t lda, const uint32_t* panel, int32_t* acc);
void lowp_tile_bf16(int mr, int64_t kg, const uint32_t* A, int64_t lda, const uint32_t* panel, float* acc);

namespace RNNKIT_ISA_NS {

// ---- bfloat16 and int8 conversions (one definition, used by weights and activations)
static inline uint32_t bf16_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu)) return (b >> 16) | 0x40u;  // NaN stays NaN
  if ((b & 0x7f800000u) == 0) b &= 0x80000000u;  // subnormal -> signed zero
  b += 0x7fffu + ((b >> 16) & 1u);               // round to nearest even
  return b >> 16;
}
static inline int32_t q8(float x, float inv) {  // round half to even, |q| <= 127 (NaN: -127, never cast)
  const float q = std::nearbyint(x * inv);
  return int32_t(q >= -127.0f ? (q <= 127.0f ? q : 127.0f) : -127.0f);
}

// Set while a layer's cells are being built: whether its Lowp weights use the CPU's dot
// instructions (construction only; a built plan carries its own choice). Per thread, so
// two threads building at once do not see each other's; set it through LowpBuilding,
// which puts it back however the construction ends (an exception included).
inline thread_local bool lowp_building_native = true;
struct LowpBuilding {
  explicit LowpBuilding(bool native) : previous(lowp_building_native) { lowp_building_native = native; }
  ~LowpBuilding() { lowp_building_native = previous; }
  LowpBuilding(const LowpBuilding&) = delete;
  LowpBuilding& operator=(const LowpBuilding&) = delete;
  const bool previous;
};

template <Precision P> struct Lowp {
  static constexpr int NR = Packed<float>::NR;
  static constexpr int KG = P == Precision::int8 ? 4 : 2;  // K values per 32-bit group
  typedef typename std::conditional<P == Precision::int8, int32_t, float>::type Acc;

  int64_t N, K, KGn, panels;
  bool native;            // the CPU's dot instructions (lowp_dot.cpp), else the portable tiles
  Buffer<uint32_t> data;  // (panels, KGn, NR) groups
  Buffer<float> scale;    // int8: (panels*NR) s_w per output row
  Buffer<int32_t> corr;   // int8: (panels*NR) 128 sum_k q_w[n][k]

  // From the float layout (any of kernel_common.h's packings): same panels and columns.
  explicit Lowp(const Packed<float>& src)
      : N(src.N), K(src.K), KGn((src.K + KG - 1) / KG), panels(src.panels),
        native(lowp_building_native && NR == 32 && lowp_dot_supported(P)), data(panels * KGn * NR),
        scale(panels * NR), corr(panels * NR) {
    for (int64_t p = 0; p < panels; ++p) {
      const float* w = src.data.data() + p * K * NR;
      uint32_t* dst = data.data() + p * KGn * NR;
      for (int j = 0; j < NR; ++j) {
        float inv = 0.0f;
        int32_t sum = 0;
        if (P == Precision::int8) {  // a row holding inf or NaN gets scale NaN: its outputs are NaN
          float m = 0.0f;
          bool finite = true;
          for (int64_t k = 0; k < K; ++k) {
            const float v = std::fabs(w[k * NR + j]);
            m = v > m ? v : m;
            finite = finite && v <= 3.402823466e38f;
          }
          inv = m > 0.0f && finite ? 127.0f / m : 0.0f;
          scale[p * NR + j] = finite ? m / 127.0f : __builtin_nanf("");
        }
        for (int64_t g = 0; g < KGn; ++g) {
          uint32_t word = 0;
          for (int kk = 0; kk < KG; ++kk) {
            const int64_t k = g * KG + kk;
            const float v = k < K ? w[k * NR + j] : 0.0f;
            if (P == Precision::int8) {
              const int32_t q = q8(v, inv);
              sum += q;
              word |= (uint32_t(q) & 0xffu) << (8 * kk);
            } else {
              word |= bf16_bits(v) << (16 * kk);
            }
          }
          dst[g * NR + j] = word;
        }
        corr[p * NR + j] = 128 * sum;
      }
    }
  }
};

// ---- The portable tiles: the same sums as the CPU's instructions ---------------------------
template <Precision P> struct PortableDot;
template <> struct PortableDot<Precision::int8> {
  typedef int32_t V __attribute__((vector_size(RNNKIT_VBYTES)));
  typedef uint32_t U __attribute__((vector_size(RNNKIT_VBYTES)));
  // acc + sum_kk u8(a, kk) * s8(w, kk), as vpdpbusd (K <= 65536: no int32 sum can wrap)
  static RNNKIT_INLINE V dot(V acc, uint32_t a, U w) {
    for (int kk = 0; kk < 4; ++kk) acc += int32_t((a >> (8 * kk)) & 0xffu) * (V(w << (24 - 8 * kk)) >> 24);
    return acc;
  }
};
template <> struct PortableDot<Precision::bf16> {
  typedef float V __attribute__((vector_size(RNNKIT_VBYTES)));
  typedef uint32_t U __attribute__((vector_size(RNNKIT_VBYTES)));
  // (acc + a_odd w_odd) + a_even w_even, as vdpbf16ps (each product exact in float32)
  static RNNKIT_INLINE V dot(V acc, uint32_t a, U w) {
    const uint32_t ao_bits = a & 0xffff0000u, ae_bits = a << 16;
    float ao, ae;
    std::memcpy(&ao, &ao_bits, 4);
    std::memcpy(&ae, &ae_bits, 4);
    acc = acc + ao * V(w & 0xffff0000u);
    return acc + ae * V(w << 16);
  }
};

// acc (MR_, NR) = rows of A times one panel, kg groups; chains as described at the top.
template <Precision P, int MR_, class D = PortableDot<P>>
static inline void lowp_tile(int64_t kg, const uint32_t* A, int64_t lda, const uint32_t* panel,
                             typename Lowp<P>::Acc* acc) {
  typedef typename D::V V;
  typedef typename D::U U;
  constexpr int L = sizeof(V) / 4, NR = Lowp<P>::NR, NV = NR / L;  // vectors per panel row
  constexpr int CH = MR_ <= 2 ? 4 : 1;                               // chains
  V c[CH][MR_][NV];
  for (int h = 0; h < CH; ++h)
    for (int i = 0; i < MR_; ++i)
      for (int v = 0; v < NV; ++v) c[h][i][v] = V{};
  int64_t g = 0;
  for (; g + CH <= kg; g += CH)
    for (int h = 0; h < CH; ++h) {
      U w[NV];
      for (int v = 0; v < NV; ++v) w[v] = loadu<U>(panel + (g + h) * NR + v * L);
      for (int i = 0; i < MR_; ++i)
        for (int v = 0; v < NV; ++v) c[h][i][v] = D::dot(c[h][i][v], A[i * lda + g + h], w[v]);
    }
  for (int h = 0; g < kg; ++g, ++h) {  // the last kg mod CH groups continue chains 0, 1, ...
    U w[NV];
    for (int v = 0; v < NV; ++v) w[v] = loadu<U>(panel + g * NR + v * L);
    for (int i = 0; i < MR_; ++i)
      for (int v = 0; v < NV; ++v) c[h][i][v] = D::dot(c[h][i][v], A[i * lda + g], w[v]);
  }
  for (int i = 0; i < MR_; ++i)
    for (int v = 0; v < NV; ++v) {
      const V s = CH == 4 ? (c[0][i][v] + c[1 % CH][i][v]) + (c[2 % CH][i][v] + c[3 % CH][i][v]) : c[0][i][v];
      storeu(acc + i * NR + v * L, s);
    }
}

// mr <= MR rows; D: the dot policy (the portable one, or lowp_dot.cpp's instructions).
template <Precision P, class D = PortableDot<P>>
static inline void lowp_tile_rows(int mr, int64_t kg, const uint32_t* A, int64_t lda, const uint32_t* panel,
                                  typename Lowp<P>::Acc* acc) {
  switch (mr) {
    case 1: return lowp_tile<P, 1, D>(kg, A, lda, panel, acc);
    case 2: return lowp_tile<P, 2, D>(kg, A, lda, panel, acc);
    case 3: return lowp_tile<P, 3, D>(kg, A, lda, panel, acc);
    case 4: return lowp_tile<P, 4, D>(kg, A, lda, panel, acc);
    case 5: return lowp_tile<P, 5, D>(kg, A, lda, panel, acc);
    case 6: return lowp_tile<P, 6, D>(kg, A, lda, panel, acc);
    case 7: return lowp_tile<P, 7, D>(kg, A, lda, panel, acc);
    default: return lowp_tile<P, 8, D>(kg, A, lda, panel, acc);
  }
}

// Row i of A (K floats) -> its groups (kgn words) and, for int8, s_a (NaN when the row is
// not finite, so that its outputs are NaN rather than silently wrong).
template <Precision P> static inline void lowp_row(const float* a, int64_t K, int64_t kgn, uint32_t* q, float* s) {
  constexpr int KG = Lowp<P>::KG;
  float inv = 0.0f;
  if (P == Precision::int8) {
    float m = 0.0f;
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      const float v = std::fabs(a[k]);
      m = v > m ? v : m;
      finite = finite && v <= 3.402823466e38f;
    }
    inv = m > 0.0f && finite ? 127.0f / m : 0.0f;
    *s = finite ? m / 127.0f : __builtin_nanf("");
  }
  for (int64_t g = 0; g < kgn; ++g) {
    uint32_t word = 0;
    for (int kk = 0; kk < KG; ++kk) {
      const int64_t k = g * KG + kk;
      const float v = k < K ? a[k] : 0.0f;
      word |= P == Precision::int8 ? (uint32_t(q8(v, inv) + 128) << (8 * kk)) : (bf16_bits(v) << (16 * kk));
    }
    q[g] = word;
  }
}

// C[:, p0*NR : p1*NR] (+)= A (M, K) W^T with reduced-precision W: the overload of
// kernel_common.h's gemm_panels that Step::product calls for Lowp weights. Rows are
// converted a chunk at a time (up to CHUNK blocks of MR rows; on the stack up to 2048
// groups in all, on the heap beyond), then each panel of the range is multiplied by
// every block of the chunk while it is in cache: an input projection over T*B rows
// streams W_ih once per chunk, not once per MR rows. The result of an element depends on
// neither the panel range nor the chunking (each is one tile over all of K).
// K <= 65536 for int8 (the binding checks it), so that no int32 sum can wrap.
template <Precision P>
static void gemm_panels(int64_t M, const float* A, int64_t lda, const Lowp<P>& W, int64_t p0, int64_t p1, float* C,
                        int64_t ldc, bool accumulate) {
  constexpr int NR = Lowp<P>::NR, MR = Packed<float>::MR, CHUNK = 8;
  constexpr int64_t kStack = 2048;
  typedef typename Lowp<P>::Acc Acc;
  const int64_t kgn = W.KGn;
  const int64_t blocks = (M + MR - 1) / MR, chunk = blocks < CHUNK ? blocks : CHUNK;  // MR-row blocks per chunk
  alignas(64) uint32_t stack[MR * kStack];
  uint32_t* q = stack;
  Buffer<uint32_t>* heap = nullptr;
  if (chunk * kgn > kStack) {
    heap = new Buffer<uint32_t>(chunk * MR * kgn);
    q = heap->data();
  }
  alignas(64) Acc acc[MR * NR];
  float sa[CHUNK * MR];
  for (int64_t c0 = 0; c0 < M; c0 += chunk * MR) {
    const int64_t rows = M - c0 < chunk * MR ? M - c0 : chunk * MR;
    for (int64_t i = 0; i < rows; ++i) lowp_row<P>(A + (c0 + i) * lda, W.K, kgn, q + i * kgn, &sa[i]);
    for (int64_t p = p0; p < p1; ++p) {
      const int nr = int(W.N - p * NR < NR ? W.N - p * NR : NR);
      if (nr <= 0) break;
      const uint32_t* panel = W.data.data() + p * kgn * NR;
      for (int64_t i0 = 0; i0 < rows; i0 += MR) {
        const int mr = int(rows - i0 < MR ? rows - i0 : MR);
        const uint32_t* qb = q + i0 * kgn;
#if RNNKIT_VBYTES == 64
        if (W.native) {
          if (P == Precision::int8)
            lowp_tile_vnni(mr, kgn, qb, kgn, panel, reinterpret_cast<int32_t*>(acc));
          else
            lowp_tile_bf16(mr, kgn, qb, kgn, panel, reinterpret_cast<float*>(acc));
        } else
#endif
          lowp_tile_rows<P>(mr, kgn, qb, kgn, panel, acc);
        for (int i = 0; i < mr; ++i) {
          float* c = C + (c0 + i0 + i) * ldc + p * NR;
          for (int j = 0; j < nr; ++j) {
            float y;
            if (P == Precision::int8)
              y = float(int32_t(acc[i * NR + j]) - W.corr.data()[p * NR + j]) *
                  (sa[i0 + i] * W.scale.data()[p * NR + j]);
            else
              y = float(acc[i * NR + j]);
            c[j] = accumulate ? c[j] + y : y;
          }
        }
      }
    }
  }
  delete heap;
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
