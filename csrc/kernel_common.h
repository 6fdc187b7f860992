// Building blocks under the time-loop skeleton (recurrence.h): an aligned scratch
// buffer, the packed weight layout with its register-blocked SIMD micro-kernel, the
// split of unit blocks between threads, and the vectorised nonlinearities.
//
// This header is included (through recurrence.h) by sequence.cpp and stream.cpp, and
// each of those files is compiled once per instruction set with RNNKIT_ISA_NS (namespace name) and RNNKIT_VBYTES
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
#include <type_traits>

#include "parallel.h"
#include "rnnkit.h"

#ifndef RNNKIT_ISA_NS
#error "RNNKIT_ISA_NS must name the instruction-set namespace"
#endif
#ifndef RNNKIT_VBYTES
#error "RNNKIT_VBYTES must give the SIMD width in bytes"
#endif

// The small vector helpers below are forced inline: the cells' pointwise lambdas call
// them per lane chunk, and a call there would cost more than the arithmetic.
#ifndef RNNKIT_INLINE
#define RNNKIT_INLINE inline __attribute__((always_inline))
#endif

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// ---- SIMD vector type (GCC/Clang vector extensions) --------------------------------
template <typename S> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(RNNKIT_VBYTES))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(RNNKIT_VBYTES))); };

// Unaligned vector access typed as S (a memcpy would be an access to any type, after
// which the compiler must reload every size and pointer it holds in memory).
template <typename V, typename S> static RNNKIT_INLINE V loadu(const S* p) {
  typedef S U __attribute__((vector_size(sizeof(V)), aligned(sizeof(S))));
  return V(*reinterpret_cast<const U*>(p));
}
template <typename V, typename S> static RNNKIT_INLINE void storeu(S* p, V v) {
  typedef S U __attribute__((vector_size(sizeof(V)), aligned(sizeof(S))));
  *reinterpret_cast<U*>(p) = U(v);
}

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

// Whether batch row b is inside its sequence at step t (lengths null: always).
static RNNKIT_INLINE bool active(const int64_t* lengths, int64_t b, int64_t t) { return !lengths || t < lengths[b]; }

// ---- Packed weights for C = A W^T ---------------------------------------------------
// W is logically (N, K); row n starts at w + row_offset(n) (or is all zero when
// row_offset(n) < 0) and its elements are sk apart. Plain row-major W_hh has
// row_offset(n) = n * K, sk = 1; its transpose (for backward) row_offset(n) = n,
// sk = N'. Layout: ceil(N / NR) panels, each K rows of NR contiguous values, so the
// micro-kernel streams a panel with vector loads.
template <typename S> struct Packed {
  typedef typename VecOf<S>::type V;
  static constexpr int L = sizeof(V) / sizeof(S);   // lanes per vector
  static constexpr int NR = 2 * L;                   // panel width: two vectors
  static constexpr int MR = RNNKIT_VBYTES == 64 ? 8 : 6;  // rows per micro-tile (fits the registers)
  // K is processed in chunks whose panel slice (KC x NR) stays in L1 across row blocks.
  static constexpr int KC = 16384 / (NR * int(sizeof(S)));

  int64_t N, K, panels;
  Buffer<S> data;

  template <typename RowOffset, typename = typename std::enable_if<!std::is_integral<RowOffset>::value>::type>
  Packed(const S* w, int64_t N_, int64_t K_, int64_t sk, RowOffset row_offset)
      : N(N_), K(K_), panels((N_ + NR - 1) / NR), data(panels * K_ * NR) {
    fill_rows(w, sk, row_offset);
  }
  // Row-major-with-strides convenience: element (n, k) at w[n * sn + k * sk].
  Packed(const S* w, int64_t N_, int64_t K_, int64_t sn, int64_t sk)
      : N(N_), K(K_), panels((N_ + NR - 1) / NR), data(panels * K_ * NR) {
    if (sn != 1 || sk == 1) {
      fill_rows(w, sk, [sn](int64_t n) { return n * sn; });
      return;
    }
    // Columns contiguous (a transposed view, e.g. W_ih^T for dx = da W_ih): read along n,
    // so both the reads and the writes stream (row by row they would stride by sk). The
    // buffer starts zeroed: the lanes past N stay zero.
    for (int64_t p = 0; p < panels; ++p) {
      S* dst = data.data() + p * K * NR;
      const S* src = w + p * NR;
      const int64_t nr = N - p * NR < NR ? N - p * NR : NR;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < nr; ++j) dst[k * NR + j] = src[k * sk + j];
    }
  }

 private:
  template <typename RowOffset> void fill_rows(const S* w, int64_t sk, RowOffset row_offset) {
    for (int64_t p = 0; p < panels; ++p) {
      S* dst = data.data() + p * K * NR;
      for (int j = 0; j < NR; ++j) {
        const int64_t n = p * NR + j;
        const int64_t off = n < N ? row_offset(n) : -1;
        for (int64_t k = 0; k < K; ++k) dst[k * NR + j] = off >= 0 ? w[off + k * sk] : S(0);
      }
    }
  }
};

// Hidden units are grouped in blocks of UB = NR. pack_gates orders the G gate rows of
// W_hh (G*H, K) block by block: block u holds gate 0 of units [u*UB, u*UB+UB), then
// gate 1, ... so one thread owning a block finds all gates of its units in its own
// panels [u*G, u*G+G) (a partial last block is zero-padded).
template <typename S> static inline int64_t unit_blocks(int64_t H) { return (H + Packed<S>::NR - 1) / Packed<S>::NR; }

template <typename S> static Packed<S> pack_gates(const S* w, int64_t G, int64_t H, int64_t K) {
  constexpr int64_t UB = Packed<S>::NR;
  return Packed<S>(w, unit_blocks<S>(H) * G * UB, K, 1, [=](int64_t n) -> int64_t {
    const int64_t u = n / (G * UB), r = n % (G * UB), g = r / UB, j = u * UB + r % UB;
    return j < H ? (g * H + j) * K : -1;
  });
}

// C[0:mr, 0:nr] (+)= A[0:mr, 0:K] * panel, for one panel slice of K rows; MR_ is the
// compile-time row count, nr <= NR columns are stored.
template <typename S, int MR_>
static inline void micro_kernel(int64_t K, const S* A, int64_t lda, const S* panel, S* C, int64_t ldc,
                                int nr, bool accumulate) {
  typedef typename VecOf<S>::type V;
  constexpr int L = sizeof(V) / sizeof(S);
  // The accumulators must live in registers: every loop over i below is unrolled, so
  // the compiler keeps c0 / c1 in 2 * MR_ vector registers instead of zeroing a stack
  // array (rep stos) and spilling it after the k loop (the two rep stos alone took 4 % of
  // a one-thread LSTM inference profile at H = 256, B = 64).
  V c0[MR_], c1[MR_];
#pragma GCC unroll 16
  for (int i = 0; i < MR_; ++i) {
    c0[i] = V{};
    c1[i] = V{};
  }
  int64_t k = 0;
  if constexpr (MR_ == 1) {
    // One row (batch 1, streaming): two accumulators would wait on the FMA latency
    // every step; four independent pairs over k keep the units busy.
    V e0 = V{}, e1 = V{}, f0 = V{}, f1 = V{}, g0 = V{}, g1 = V{};
    for (; k + 4 <= K; k += 4) {
      const S* p = panel + k * 2 * L;
      c0[0] += A[k] * loadu<V>(p);
      c1[0] += A[k] * loadu<V>(p + L);
      e0 += A[k + 1] * loadu<V>(p + 2 * L);
      e1 += A[k + 1] * loadu<V>(p + 3 * L);
      f0 += A[k + 2] * loadu<V>(p + 4 * L);
      f1 += A[k + 2] * loadu<V>(p + 5 * L);
      g0 += A[k + 3] * loadu<V>(p + 6 * L);
      g1 += A[k + 3] * loadu<V>(p + 7 * L);
    }
    c0[0] += (e0 + f0) + g0;
    c1[0] += (e1 + f1) + g1;
  }
  for (; k < K; ++k) {
    const V b0 = loadu<V>(panel + k * 2 * L);
    const V b1 = loadu<V>(panel + k * 2 * L + L);
#pragma GCC unroll 16
    for (int i = 0; i < MR_; ++i) {
      const S a = A[i * lda + k];
      c0[i] += a * b0;
      c1[i] += a * b1;
    }
  }
  if (nr == 2 * L) {
#pragma GCC unroll 16
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
#pragma GCC unroll 16
    for (int i = 0; i < MR_; ++i) {
      storeu(tile, c0[i]);
      storeu(tile + L, c1[i]);
      S* c = C + i * ldc;
      for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tile[j] : tile[j];
    }
  }
}

template <typename S, int MR_>
static inline void row_blocks(int64_t M, int64_t K, const S* A, int64_t lda, const S* panel, S* C, int64_t ldc,
                              int nr, bool accumulate) {
  int64_t i = 0;
  for (; i + MR_ <= M; i += MR_) micro_kernel<S, MR_>(K, A + i * lda, lda, panel, C + i * ldc, ldc, nr, accumulate);
  const S* a = A + i * lda;
  S* c = C + i * ldc;
  switch (M - i) {
    case 7: micro_kernel<S, 7>(K, a, lda, panel, c, ldc, nr, accumulate); break;
    case 6: micro_kernel<S, 6>(K, a, lda, panel, c, ldc, nr, accumulate); break;
    case 5: micro_kernel<S, 5>(K, a, lda, panel, c, ldc, nr, accumulate); break;
    case 4: micro_kernel<S, 4>(K, a, lda, panel, c, ldc, nr, accumulate); break;
    case 3: micro_kernel<S, 3>(K, a, lda, panel, c, ldc, nr, accumulate); break;
    case 2: micro_kernel<S, 2>(K, a, lda, panel, c, ldc, nr, accumulate); break;
    case 1: micro_kernel<S, 1>(K, a, lda, panel, c, ldc, nr, accumulate); break;
    default: break;
  }
}

// C[:, p0*NR : p1*NR] (+)= A (M, K) W^T for the packed panels [p0, p1) (columns past
// W.N are not stored). Rows of A and C have strides lda, ldc. The summation order of
// every element is fixed (k ascending in KC chunks), whatever the panel range and the
// row blocking, so a result does not depend on how the panels are split between threads.
// Up to MC rows (a recurrence step: M = B): panel by panel, each KC slice of it (in L1)
// passing over all rows, whose A stays in L1/L2. More rows (an input projection over
// all T*B steps): in blocks of MC rows whose A slice (MC x KC, 128 KiB) stays in L2
// while every panel slice passes over it, as matmul_nt (gemm.cpp) blocks; panel by
// panel there, A would stream from L3 or memory once per panel.
template <typename S>
static void gemm_panels(int64_t M, const S* A, int64_t lda, const Packed<S>& W, int64_t p0, int64_t p1, S* C,
                        int64_t ldc, bool accumulate) {
  constexpr int NR = Packed<S>::NR, MR = Packed<S>::MR, KC = Packed<S>::KC;
  constexpr int64_t MC = (131072 / (KC * int64_t(sizeof(S))) / MR) * MR;
  const int64_t K = W.K;
  const int64_t stored = (W.N + NR - 1) / NR;  // panels past W.N store nothing
  if (p1 > stored) p1 = stored;
  if (M <= MC) {
    for (int64_t p = p0; p < p1; ++p) {
      const int nr = int(W.N - p * NR < NR ? W.N - p * NR : NR);
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = K - k0 < KC ? K - k0 : KC;
        const S* panel = W.data.data() + (p * K + k0) * NR;
        row_blocks<S, MR>(M, kc, A + k0, lda, panel, C + p * NR, ldc, nr, accumulate || k0 > 0);
      }
    }
    return;
  }
  for (int64_t m0 = 0; m0 < M; m0 += MC) {
    const int64_t mc = M - m0 < MC ? M - m0 : MC;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = K - k0 < KC ? K - k0 : KC;
      for (int64_t p = p0; p < p1; ++p) {
        const int nr = int(W.N - p * NR < NR ? W.N - p * NR : NR);
        const S* panel = W.data.data() + (p * K + k0) * NR;
        row_blocks<S, MR>(mc, kc, A + m0 * lda + k0, lda, panel, C + m0 * ldc + p * NR, ldc, nr,
                          accumulate || k0 > 0);
      }
    }
  }
}

// ---- Threads --------------------------------------------------------------------------
// body(tid, nthreads, barrier) runs on a team of nthreads (see parallel.h; may_shrink:
// the body splits its work by barrier_team after every barrier).
template <typename F> static void run_team(int nthreads, F& body, bool may_shrink = false) {
  parallel_run(
      nthreads, [](void* ctx, int tid, int n, Barrier* b) { (*static_cast<F*>(ctx))(tid, n, b); }, &body,
      may_shrink);
}

// The range [first, last) of `count` items that member tid of an n-thread team owns.
struct Range {
  int64_t first, last;
};
// A member outside the team (tid >= n, after the team shrank) owns nothing.
static inline Range share(int64_t count, int tid, int n) {
  if (tid >= n) return {count, count};
  return {count * tid / n, count * (tid + 1) / n};
}

// The unit blocks [first, last) a team member owns, and the hidden units they cover.
struct UnitSlice {
  int64_t first, last;    // unit blocks
  int64_t j_first, j_last;  // hidden units (the last block may be partial)
};
template <typename S> static inline UnitSlice unit_slice(int64_t H, int tid, int n) {
  const Range r = share(unit_blocks<S>(H), tid, n);
  const int64_t UB = Packed<S>::NR, end = r.last * UB < H ? r.last * UB : H;
  const int64_t begin = r.first * UB < end ? r.first * UB : end;  // an empty share: j_first == j_last
  return {r.first, r.last, begin, end};
}

// A team no larger than the number of unit blocks (each thread needs work).
static inline int team_size(int nthreads, int64_t blocks) {
  return int(blocks < 1 ? 1 : (nthreads < blocks ? nthreads : blocks));
}

// ---- Vectorised nonlinearities -------------------------------------------------------
// float: Cephes-style exp (range reduction + degree-6 polynomial) and tanh (odd
// polynomial for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1) beyond), all lanes at once;
// error a few ulp, checked against libm by tests/test_vector_math.py. double: libm
// lane by lane (the float64 path exists for exactness checks, not speed).
// NaN propagates (every clamp is a comparison that is false for NaN).
template <typename S> struct IntVecOf;
template <> struct IntVecOf<float> { typedef uint32_t type __attribute__((vector_size(RNNKIT_VBYTES))); };
template <> struct IntVecOf<double> { typedef uint64_t type __attribute__((vector_size(RNNKIT_VBYTES))); };

template <typename S> struct VMath;

template <> struct VMath<float> {
  typedef VecOf<float>::type V;
  typedef IntVecOf<float>::type U;
  typedef int32_t I __attribute__((vector_size(RNNKIT_VBYTES)));

  static RNNKIT_INLINE V exp(V x) {
    x = x > V{} + 88.0f ? V{} + 88.0f : x;    // keeps 2^n finite
    x = x < V{} - 87.3f ? V{} - 87.3f : x;    // keeps 2^n normal
    const V fx = x * 1.44269504088896341f + 0.5f;
    V n = __builtin_convertvector(__builtin_convertvector(fx, I), V);  // trunc
    n = n > fx ? n - 1.0f : n;                                         // floor
    x = x - n * 0.693359375f - n * -2.12194440e-4f;
    const V z = x * x;
    V y = ((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x + 4.1665795894e-2f) * x +
           1.6666665459e-1f) * x + 5.0000001201e-1f;
    y = y * z + x + 1.0f;
    const U bits = (__builtin_convertvector(__builtin_convertvector(n, I), U) + 127u) << 23;
    V scale;
    std::memcpy(&scale, &bits, sizeof(V));
    return y * scale;
  }
  static RNNKIT_INLINE V sigmoid(V x) { return 1.0f / (1.0f + exp(-x)); }
  static RNNKIT_INLINE V tanh(V x) {
    const V ax = x < 0.0f ? -x : x;
    const V z = x * x;
    const V small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                      1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    V big = 1.0f - 2.0f / (exp(ax + ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;  // NaN: ax < 0.625 is false, big is NaN
  }
};

template <> struct VMath<double> {
  typedef VecOf<double>::type V;
  static constexpr int L = sizeof(V) / sizeof(double);
  template <typename F> static inline V map(V x, F f) {
    for (int i = 0; i < L; ++i) x[i] = f(x[i]);
    return x;
  }
  static RNNKIT_INLINE V exp(V x) { return map(x, [](double v) { return std::exp(v); }); }
  static RNNKIT_INLINE V sigmoid(V x) { return map(x, [](double v) { return 1.0 / (1.0 + std::exp(-v)); }); }
  static RNNKIT_INLINE V tanh(V x) { return map(x, [](double v) { return std::tanh(v); }); }
};

template <typename S> static RNNKIT_INLINE typename VecOf<S>::type vactivate(Act f, typename VecOf<S>::type a) {
  typedef typename VecOf<S>::type V;
  switch (f) {
    case Act::tanh: return VMath<S>::tanh(a);
    case Act::relu: return a < S(0) ? V{} : a;  // NaN passes through, as torch.relu
    case Act::sigmoid: return VMath<S>::sigmoid(a);
    default: return a;
  }
}

// Loads / stores n <= lanes values; a partial chunk is assembled lane by lane (zeros
// past n), so the tail of a row is computed by exactly the same vector code as its
// body. Element accesses typed S, not memcpy: see loadu.
template <typename S> static RNNKIT_INLINE typename VecOf<S>::type ld(const S* p, int n) {
  typedef typename VecOf<S>::type V;
  if (n == int(sizeof(V) / sizeof(S))) return loadu<V>(p);
  V v{};
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
template <typename S> static RNNKIT_INLINE void st(S* p, typename VecOf<S>::type v, int n) {
  typedef typename VecOf<S>::type V;
  if (n == int(sizeof(V) / sizeof(S))) return storeu(p, v);
  for (int i = 0; i < n; ++i) p[i] = v[i];
}
template <typename S> static RNNKIT_INLINE int lanes_left(int64_t n, int64_t j) {
  constexpr int64_t L = sizeof(typename VecOf<S>::type) / sizeof(S);
  return int(n - j < L ? n - j : L);
}

// d * f'(a) written in terms of the activation's output y = f(a), all lanes at once.
template <typename S>
static RNNKIT_INLINE typename VecOf<S>::type grad_through(Act f, typename VecOf<S>::type y, typename VecOf<S>::type d) {
  typedef typename VecOf<S>::type V;
  switch (f) {
    case Act::tanh: return d * (S(1) - y * y);
    case Act::relu: return y > S(0) ? d : V{};
    case Act::sigmoid: return d * (y * (S(1) - y));
    default: return d;
  }
}

template <typename S> static inline void copy_or_zero(S* dst, const S* src, int64_t n) {
  if (src)
    std::memcpy(dst, src, size_t(n) * sizeof(S));
  else
    std::memset(dst, 0, size_t(n) * sizeof(S));
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
