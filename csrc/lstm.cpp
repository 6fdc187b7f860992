// LSTM (SPEC.md section 3), gate rows stacked i, f, g, o as torch.nn.LSTM:
//   [i f g o] = [s s tanh s](xw_t + W_hh h_{t-1})
//   c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)
// Backward (section 5), with dc arriving from t+1:
//   dc   = dc + dh o (1 - tanh^2 c_t)
//   da_i = dc g i(1-i),  da_f = dc c_{t-1} f(1-f),  da_g = dc i (1-g^2),
//   da_o = dh tanh(c_t) o(1-o),  dc_{t-1} = dc f,  dh_{t-1} = da W_hh.
#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// Threads own blocks of hidden units (see pack_gates): per step each computes its
// columns of h_{t-1} W_hh^T and the fused gate epilogue for its units, then all meet
// at one barrier, since step t+1 reads every unit of h_t.
template <typename S>
static void lstm_forward_impl(int64_t T, int64_t B, int64_t H, const S* xw, const S* w_hh, const S* h0,
                              const S* c0, const int64_t* lengths, S* hs, S* cs, S* gates, S* out, int nthreads) {
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  constexpr int64_t L = sizeof(V) / sizeof(S), UB = Packed<S>::NR;
  const int64_t BH = B * H, G = 4 * H, nb = unit_blocks<S>(H), NP = nb * 4 * UB;
  const Packed<S> W = pack_gates(w_hh, 4, H, H);
  Buffer<S> a(B * NP);  // (B, NP) recurrent parts of the pre-activations, unit-block order
  copy_or_zero(hs, h0, BH);
  copy_or_zero(cs, c0, BH);
  auto body = [&](int tid, int nt, Barrier* barrier) {
    const Range units = share(nb, tid, nt);
    for (int64_t t = 0; t < T; ++t) {
      const S* h_prev = hs + t * BH;  // (B, H)
      const S* c_prev = cs + t * BH;  // (B, H)
      S* h = hs + (t + 1) * BH;
      S* c = cs + (t + 1) * BH;
      gemm_panels(B, h_prev, H, W, units.first * 4, units.last * 4, a.data(), NP, false);
      for (int64_t b = 0; b < B; ++b) {
        const S* x = xw + (t * B + b) * G;  // (4H) input parts, gate-major
        S* gt = gates + (t * B + b) * G;    // (4H) activated gates, gate-major
        const int64_t o = b * H;
        const bool on = active(lengths, b, t);
        for (int64_t u = units.first; u < units.last; ++u) {
          const S* r = a.data() + b * NP + u * 4 * UB;  // gate g of unit u*UB+jj at r[g*UB+jj]
          const int64_t j0 = u * UB, width = H - j0 < UB ? H - j0 : UB;
          for (int64_t jj = 0; jj < width; jj += L) {
            const int n = lanes_left<S>(width, jj);
            const int64_t j = j0 + jj;
            if (!on) {
              st(h + o + j, ld(h_prev + o + j, n), n);
              st(c + o + j, ld(c_prev + o + j, n), n);
              for (int g = 0; g < 4; ++g) st(gt + g * H + j, V{}, n);
              if (out) st(out + t * BH + o + j, V{}, n);
              continue;
            }
            const V i_ = M::sigmoid(ld(x + j, n) + ld(r + jj, n));
            const V f_ = M::sigmoid(ld(x + H + j, n) + ld(r + UB + jj, n));
            const V g_ = M::tanh(ld(x + 2 * H + j, n) + ld(r + 2 * UB + jj, n));
            const V o_ = M::sigmoid(ld(x + 3 * H + j, n) + ld(r + 3 * UB + jj, n));
            const V c_ = f_ * ld(c_prev + o + j, n) + i_ * g_;
            const V h_ = o_ * M::tanh(c_);
            st(c + o + j, c_, n);
            st(h + o + j, h_, n);
            st(gt + j, i_, n);
            st(gt + H + j, f_, n);
            st(gt + 2 * H + j, g_, n);
            st(gt + 3 * H + j, o_, n);
            if (out) st(out + t * BH + o + j, h_, n);
          }
        }
      }
      barrier_wait(barrier);
    }
  };
  run_team(team_size(nthreads, nb), body);
}

// Backward: each thread does the element-wise chain rule for its units (writing
// da_t), all meet at a barrier, then each computes its units' columns of
// dh_{t-1} = da_t W_hh, which only it reads at the next step.
template <typename S>
static void lstm_backward_impl(int64_t T, int64_t B, int64_t H, const S* w_hh, const S* cs, const S* gates,
                               const int64_t* lengths, const S* d_out, const S* dh_n, const S* dc_n, S* da,
                               S* dh0, S* dc0, S* dhs, S* dcs, int nthreads) {
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  constexpr int64_t L = sizeof(V) / sizeof(S);
  const int64_t BH = B * H, G = 4 * H, nb = unit_blocks<S>(H);
  const Packed<S> Wt(w_hh, H, G, 1, H);  // C = da W_hh, (B, H); panel p = unit block p
  Buffer<S> dh(BH), dc(BH), dh_prev(BH);
  copy_or_zero(dh.data(), dh_n, BH);
  copy_or_zero(dc.data(), dc_n, BH);
  auto body = [&](int tid, int nt, Barrier* barrier) {
    const UnitSlice units = unit_slice<S>(H, tid, nt);
    for (int64_t t = T - 1; t >= 0; --t) {
      const S* c = cs + (t + 1) * BH;
      const S* c_prev = cs + t * BH;
      S* da_t = da + t * B * G;  // (B, 4H)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = b * H;
        S* d = da_t + b * G;
        const bool on = active(lengths, b, t);
        const S* gt = gates + (t * B + b) * G;
        for (int64_t j = units.j_first; j < units.j_last; j += L) {
          const int n = lanes_left<S>(units.j_last, j);
          const int64_t k = o + j;
          if (!on) {
            for (int g = 0; g < 4; ++g) st(d + g * H + j, V{}, n);
            if (dhs) st(dhs + t * BH + k, ld(dh.data() + k, n), n);
            if (dcs) st(dcs + t * BH + k, ld(dc.data() + k, n), n);
            continue;
          }
          V dh_ = ld(dh.data() + k, n);
          if (d_out) {
            dh_ += ld(d_out + t * BH + k, n);
            st(dh.data() + k, dh_, n);
          }
          const V i_ = ld(gt + j, n), f_ = ld(gt + H + j, n), g_ = ld(gt + 2 * H + j, n), o_ = ld(gt + 3 * H + j, n);
          const V tc = M::tanh(ld(c + k, n));
          const V dct = ld(dc.data() + k, n) + dh_ * o_ * (S(1) - tc * tc);
          st(d + j, dct * g_ * i_ * (S(1) - i_), n);
          st(d + H + j, dct * ld(c_prev + k, n) * f_ * (S(1) - f_), n);
          st(d + 2 * H + j, dct * i_ * (S(1) - g_ * g_), n);
          st(d + 3 * H + j, dh_ * tc * o_ * (S(1) - o_), n);
          if (dhs) st(dhs + t * BH + k, dh_, n);
          if (dcs) st(dcs + t * BH + k, dct, n);
          st(dc.data() + k, dct * f_, n);
        }
      }
      barrier_wait(barrier);  // da_t complete
      gemm_panels(B, da_t, G, Wt, units.first, units.last, dh_prev.data(), H, false);
      carry_active_rows(dh.data(), dh_prev.data(), lengths, t, B, H, units);
    }
  };
  run_team(team_size(nthreads, nb), body);
  std::memcpy(dh0, dh.data(), size_t(BH) * sizeof(S));
  std::memcpy(dc0, dc.data(), size_t(BH) * sizeof(S));
}

#define RNNKIT_DEFINE(S)                                                                                       \
  void lstm_forward(int64_t T, int64_t B, int64_t H, const S* xw, const S* w_hh, const S* h0, const S* c0,    \
                    const int64_t* lengths, S* hs, S* cs, S* gates, S* out, int nt) {                         \
    lstm_forward_impl(T, B, H, xw, w_hh, h0, c0, lengths, hs, cs, gates, out, nt);                            \
  }                                                                                                            \
  void lstm_backward(int64_t T, int64_t B, int64_t H, const S* w_hh, const S*, const S* cs, const S* gates,   \
                     const int64_t* lengths, const S* d_out, const S* dh_n, const S* dc_n, S* da, S* dh0,     \
                     S* dc0, S* dhs, S* dcs, int nt) {                                                        \
    lstm_backward_impl(T, B, H, w_hh, cs, gates, lengths, d_out, dh_n, dc_n, da, dh0, dc0, dhs, dcs, nt);     \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
