// Elman RNN (SPEC.md section 1):  a_t = xw_t + W_hh h_{t-1},  h_t = f(a_t).
// Backward (section 5): da_t = dh_t * f'(a_t),  dh_{t-1} = da_t W_hh.
#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// Threads own blocks of hidden units; one barrier per step (see lstm.cpp).
template <typename S>
static void elman_forward_impl(int64_t T, int64_t B, int64_t H, Act f, const S* xw, const S* w_hh,
                               const S* h0, const int64_t* lengths, S* hs, S* out, int nthreads) {
  typedef typename VecOf<S>::type V;
  constexpr int64_t L = sizeof(V) / sizeof(S), UB = Packed<S>::NR;
  const int64_t BH = B * H, nb = unit_blocks<S>(H), NP = nb * UB;
  const Packed<S> W = pack_gates(w_hh, 1, H, H);  // C = h W_hh^T
  Buffer<S> a(B * NP);                             // (B, NP) recurrent part of a_t
  copy_or_zero(hs, h0, BH);
  auto body = [&](int tid, int nt, Barrier* barrier) {
    const UnitSlice units = unit_slice<S>(H, tid, nt);
    for (int64_t t = 0; t < T; ++t) {
      const S* h_prev = hs + t * BH;  // (B, H)
      S* h = hs + (t + 1) * BH;       // (B, H)
      const S* x = xw + t * BH;       // (B, H)
      gemm_panels(B, h_prev, H, W, units.first, units.last, a.data(), NP, false);
      for (int64_t b = 0; b < B; ++b) {
        const bool on = active(lengths, b, t);
        for (int64_t j = units.j_first; j < units.j_last; j += L) {
          const int n = lanes_left<S>(units.j_last, j);
          const int64_t k = b * H + j;
          const V h_ = on ? vactivate<S>(f, ld(x + k, n) + ld(a.data() + b * NP + j, n)) : ld(h_prev + k, n);
          st(h + k, h_, n);
          if (out) st(out + t * BH + k, on ? h_ : V{}, n);
        }
      }
      barrier_wait(barrier);
    }
  };
  run_team(team_size(nthreads, nb), body);
}

template <typename S>
static void elman_backward_impl(int64_t T, int64_t B, int64_t H, Act f, const S* w_hh, const S* hs,
                                const int64_t* lengths, const S* d_out, const S* dh_n, S* da, S* dh0,
                                S* dhs, int nthreads) {
  typedef typename VecOf<S>::type V;
  constexpr int64_t L = sizeof(V) / sizeof(S);
  const int64_t BH = B * H, nb = unit_blocks<S>(H);
  const Packed<S> Wt(w_hh, H, H, 1, H);  // C = da W_hh; panel p = unit block p
  Buffer<S> dh(BH), dh_prev(BH);         // (B, H) each
  copy_or_zero(dh.data(), dh_n, BH);
  auto body = [&](int tid, int nt, Barrier* barrier) {
    const UnitSlice units = unit_slice<S>(H, tid, nt);
    for (int64_t t = T - 1; t >= 0; --t) {
      const S* h = hs + (t + 1) * BH;
      S* da_t = da + t * BH;
      for (int64_t b = 0; b < B; ++b) {
        const bool on = active(lengths, b, t);
        for (int64_t j = units.j_first; j < units.j_last; j += L) {
          const int n = lanes_left<S>(units.j_last, j);
          const int64_t k = b * H + j;
          V dh_ = ld(dh.data() + k, n);
          if (on && d_out) {
            dh_ += ld(d_out + t * BH + k, n);
            st(dh.data() + k, dh_, n);
          }
          if (dhs) st(dhs + t * BH + k, dh_, n);
          V d = V{};
          if (on) {
            const V y = ld(h + k, n);
            switch (f) {
              case Act::tanh: d = dh_ * (S(1) - y * y); break;
              case Act::relu: d = y > S(0) ? dh_ : V{}; break;
              default: d = dh_; break;
            }
          }
          st(da_t + k, d, n);
        }
      }
      barrier_wait(barrier);  // da_t complete
      gemm_panels(B, da_t, H, Wt, units.first, units.last, dh_prev.data(), H, false);
      carry_active_rows(dh.data(), dh_prev.data(), lengths, t, B, H, units);
    }
  };
  run_team(team_size(nthreads, nb), body);
  std::memcpy(dh0, dh.data(), size_t(BH) * sizeof(S));
}

#define RNNKIT_DEFINE(S)                                                                                     \
  void elman_forward(int64_t T, int64_t B, int64_t H, Act f, const S* xw, const S* w_hh, const S* h0,       \
                     const int64_t* lengths, S* hs, S* out, int nt) {                                       \
    elman_forward_impl(T, B, H, f, xw, w_hh, h0, lengths, hs, out, nt);                                     \
  }                                                                                                          \
  void elman_backward(int64_t T, int64_t B, int64_t H, Act f, const S* w_hh, const S* hs,                   \
                      const int64_t* lengths, const S* d_out, const S* dh_n, S* da, S* dh0, S* dhs, int nt) { \
    elman_backward_impl(T, B, H, f, w_hh, hs, lengths, d_out, dh_n, da, dh0, dhs, nt);                      \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
