// Building blocks shared by the architecture kernels: an aligned scratch buffer,
// the packed weight layout with its register-blocked SIMD micro-kernel, and the
// scalar nonlinearities.
//
// This header is included by every <arch>.cpp, and each of those files is compiled
// once per instruction set with RNNKIT_ISA_NS (namespace name) and RNNKIT_VBYTES
// (SIMD register width in bytes: 64 AVX-512, 32 AVX2, 16 generic) defined by
// CMakeLists.txt. Everything here lives inside that per-ISA namespace, and no
// standard-library template is instantiated, so the per-ISA copies cannot be
// merged by the linker into one built for the wrong CPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "rnnkit.h"

#ifndef RNNKIT_ISA_NS
#error "RNNKIT_ISA_NS must name the instruction-set namespace"
#endif
#ifndef RNNKIT_VBYTES
#error "RNNKIT_VBYTES must give the SIMD width in bytes"
#endif

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// ---- SIMD vector type (GCC/Clang vector extensions) --------------------------------
template <typename S> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(RNNKIT_VBYTES))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(RNNKIT_VBYTES))); };

template <typename V, typename S> static inline V loadu(const S* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename S> static inline void storeu(S* p, V v) { std::memcpy(p, &v, sizeof(V)); }

// ---- Scratch memory: 64-byte aligned, zero-initialised, freed on scope exit --------
template <typename S> class Buffer {
 public:
  explicit Buffer(int64_t n) : n_(n > 0 ? n : 1) {
    size_t bytes = ((size_t(n_) * sizeof(S) + 63) / 64) * 64;
    p_ = static_cast<S*>(std::aligned_alloc(64, bytes));
    if (!p_) throw std::bad_alloc();
    std::memset(p_, 0, bytes);
  }
  ~Buffer() { std::free(p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  S* data() { return p_; }
  const S* data() const { return p_; }
  S& operator[](int64_t i) { return p_[i]; }

 private:
  int64_t n_;
  S* p_;
};

// ---- Packed weights for C = A W^T ---------------------------------------------------
// W is logically (N, K) with element (n, k) at w[n * sn + k * sk], so one routine
// packs both W_hh (forward, sn = K, sk = 1) and W_hh^T (backward, sn = 1, sk = N').
// Layout: ceil(N / NR) panels, each K rows of NR contiguous values (n fastest),
// zero-padded past N, so the micro-kernel streams a panel with aligned loads.
template <typename S> struct Packed {
  typedef typename VecOf<S>::type V;
  static constexpr int L = sizeof(V) / sizeof(S);  // lanes per vector
  static constexpr int NR = 2 * L;                  // panel width: two vectors
  static constexpr int MR = 6;                      // rows per micro-tile

  int64_t N, K, panels;
  Buffer<S> data;

  Packed(const S* w, int64_t N_, int64_t K_, int64_t sn, int64_t sk)
      : N(N_), K(K_), panels((N_ + NR - 1) / NR), data(panels * K_ * NR) {
    for (int64_t p = 0; p < panels; ++p) {
      S* dst = data.data() + p * K * NR;
      for (int64_t k = 0; k < K; ++k)
        for (int j = 0; j < NR; ++j) {
          int64_t n = p * NR + j;
          dst[k * NR + j] = n < N ? w[n * sn + k * sk] : S(0);
        }
    }
  }
};

// C[0:mr, 0:nr] (+)= A[0:mr, :] * panel, for one panel; MR_ is the compile-time row
// count (mr == MR_), nr <= NR columns are stored.
template <typename S, int MR_>
static inline void micro_kernel(int64_t K, const S* A, int64_t lda, const S* panel, S* C, int64_t ldc,
                                int nr, bool accumulate) {
  typedef typename VecOf<S>::type V;
  constexpr int L = sizeof(V) / sizeof(S);
  V c0[MR_], c1[MR_];
  for (int i = 0; i < MR_; ++i) {
    c0[i] = V{};
    c1[i] = V{};
  }
  for (int64_t k = 0; k < K; ++k) {
    const V b0 = loadu<V>(panel + k * 2 * L);
    const V b1 = loadu<V>(panel + k * 2 * L + L);
    for (int i = 0; i < MR_; ++i) {
      const S a = A[i * lda + k];
      c0[i] += a * b0;
      c1[i] += a * b1;
    }
  }
  if (nr == 2 * L) {
    for (int i = 0; i < MR_; ++i) {
      S* c = C + i * ldc;
      if (accumulate) {
        c0[i] += loadu<V>(c);
        c1[i] += loadu<V>(c + L);
      }
      storeu(c, c0[i]);
      storeu(c + L, c1[i]);
    }
  } else {
    S tile[2 * L];
    for (int i = 0; i < MR_; ++i) {
      storeu(tile, c0[i]);
      storeu(tile + L, c1[i]);
      S* c = C + i * ldc;
      for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tile[j] : tile[j];
    }
  }
}

// C (M, N) (+)= A (M, K) W^T, with W packed. Rows of A and C have strides lda, ldc.
template <typename S>
static void gemm_packed(int64_t M, const S* A, int64_t lda, const Packed<S>& W, S* C, int64_t ldc,
                        bool accumulate) {
  constexpr int NR = Packed<S>::NR, MR = Packed<S>::MR;
  const int64_t K = W.K;
  for (int64_t p = 0; p < W.panels; ++p) {
    const S* panel = W.data.data() + p * K * NR;
    const int nr = int(W.N - p * NR < NR ? W.N - p * NR : NR);
    S* Cp = C + p * NR;
    int64_t i = 0;
    for (; i + MR <= M; i += MR) micro_kernel<S, MR>(K, A + i * lda, lda, panel, Cp + i * ldc, ldc, nr, accumulate);
    switch (M - i) {
      case 5: micro_kernel<S, 5>(K, A + i * lda, lda, panel, Cp + i * ldc, ldc, nr, accumulate); break;
      case 4: micro_kernel<S, 4>(K, A + i * lda, lda, panel, Cp + i * ldc, ldc, nr, accumulate); break;
      case 3: micro_kernel<S, 3>(K, A + i * lda, lda, panel, Cp + i * ldc, ldc, nr, accumulate); break;
      case 2: micro_kernel<S, 2>(K, A + i * lda, lda, panel, Cp + i * ldc, ldc, nr, accumulate); break;
      case 1: micro_kernel<S, 1>(K, A + i * lda, lda, panel, Cp + i * ldc, ldc, nr, accumulate); break;
      default: break;
    }
  }
}

// ---- Nonlinearities -----------------------------------------------------------------
template <typename S> static inline S sigmoid(S x) { return S(1) / (S(1) + std::exp(-x)); }

template <typename S> static inline S activate(Act f, S a) {
  switch (f) {
    case Act::tanh: return std::tanh(a);
    case Act::relu: return a < S(0) ? S(0) : a;  // NaN passes through, as torch.relu
    case Act::sigmoid: return sigmoid(a);
    default: return a;
  }
}

// f'(a) written in terms of the activation's output y = f(a).
template <typename S> static inline S derivative_from_output(Act f, S y) {
  switch (f) {
    case Act::tanh: return S(1) - y * y;
    case Act::relu: return y > S(0) ? S(1) : S(0);
    case Act::sigmoid: return y * (S(1) - y);
    default: return S(1);
  }
}

static inline bool active(const int64_t* lengths, int64_t b, int64_t t) { return !lengths || t < lengths[b]; }

template <typename S> static inline void copy_or_zero(S* dst, const S* src, int64_t n) {
  if (src)
    std::memcpy(dst, src, size_t(n) * sizeof(S));
  else
    std::memset(dst, 0, size_t(n) * sizeof(S));
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
