// The big per-sequence products of rnnkit.h (the input projection, dx, dW_ih, dW_hh)
// on the core's own packed micro-kernel (kernel_common.h): C = A W^T (+ bias).
//
// W is packed into NR-wide panels once per call; A is read in place when its rows are
// contiguous and copied to row-major otherwise (the weight gradients read da^T). Rows
// of C are cut into blocks of MC rows whose A slice stays in L2 while every panel of W
// passes over it; a team of threads shares the rows. Each element of C is summed
// over k in the same order (ascending, in KC chunks) whatever the blocking and the
// team, so the result does not depend on the thread count.
#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

namespace {

// A (M, K), element (m, k) at a[m * sam + k * sak], copied to row-major: tiles of 32 x 32
// so both the reads and the writes stay within a few cache lines.
template <typename S> void to_rows(int64_t M, int64_t K, const S* a, int64_t sam, int64_t sak, S* dst) {
  constexpr int64_t TILE = 32;
  for (int64_t k0 = 0; k0 < K; k0 += TILE)
    for (int64_t m0 = 0; m0 < M; m0 += TILE) {
      const int64_t k1 = k0 + TILE < K ? k0 + TILE : K, m1 = m0 + TILE < M ? m0 + TILE : M;
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t k = k0; k < k1; ++k) dst[m * K + k] = a[m * sam + k * sak];
    }
}

}  // namespace

template <typename S>
static void matmul_nt_impl(int64_t M, int64_t N, int64_t K, const S* a, int64_t sam, int64_t sak, const S* w,
                           int64_t swn, int64_t swk, const S* bias, S* c, int nthreads) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // an empty sum: C = bias (or 0)
    for (int64_t m = 0; m < M; ++m) copy_or_zero(c + m * N, bias, N);
    return;
  }
  constexpr int64_t MR = Packed<S>::MR;
  const Packed<S> W(w, N, K, swn, swk);
  const S* A = a;
  int64_t lda = sam;
  Buffer<S> rows_copy(sak == 1 ? 1 : M * K);
  if (sak != 1) {
    to_rows(M, K, a, sam, sak, rows_copy.data());
    A = rows_copy.data();
    lda = K;
  }
  // Rows per block: an A slice of MC x KC values (128 KiB) stays in L2 while every panel
  // slice of W (KC x NR, in L1) passes over it.
  constexpr int64_t NR = Packed<S>::NR, KC = Packed<S>::KC;
  constexpr int64_t MC = (131072 / (KC * int64_t(sizeof(S))) / MR) * MR;
  // The team shares whole micro-tiles of rows; no team for a small product.
  const int64_t tiles = (M + MR - 1) / MR;
  int nt = nthreads < tiles ? nthreads : int(tiles);
  if (M * N * K < (int64_t(1) << 21)) nt = 1;
  auto body = [&](int tid, int n, Barrier*) {
    const Range r = share(tiles, tid, n);
    const int64_t row_end = r.last * MR < M ? r.last * MR : M;
    for (int64_t m0 = r.first * MR; m0 < row_end; m0 += MC) {
      const int64_t mc = row_end - m0 < MC ? row_end - m0 : MC;
      S* cb = c + m0 * N;
      if (bias)
        for (int64_t m = 0; m < mc; ++m) std::memcpy(cb + m * N, bias, size_t(N) * sizeof(S));
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = K - k0 < KC ? K - k0 : KC;
        for (int64_t p = 0; p < W.panels; ++p) {
          const int nr = int(N - p * NR < NR ? N - p * NR : NR);
          const S* panel = W.data.data() + (p * K + k0) * NR;
          row_blocks<S, Packed<S>::MR>(mc, kc, A + m0 * lda + k0, lda, panel, cb + p * NR, N, nr, bias || k0 > 0);
        }
      }
    }
  };
  run_team(nt < 1 ? 1 : nt, body);
}

#define RNNKIT_DEFINE(S)                                                                                    \
  void matmul_nt(int64_t M, int64_t N, int64_t K, const S* a, int64_t sam, int64_t sak, const S* w,        \
                 int64_t swn, int64_t swk, const S* bias, S* c, int nt) {                                  \
    matmul_nt_impl<S>(M, N, K, a, sam, sak, w, swn, swk, bias, c, nt);                                     \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)
#undef RNNKIT_DEFINE

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
