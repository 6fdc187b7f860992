// GRU (SPEC.md section 4), gate rows stacked r, z, n as torch.nn.GRU.
//
// reset_after (torch / cuDNN form), with q = W_hn h_{t-1} + b_hn:
//   r = s(xw_r + W_hr h),  z = s(xw_z + W_hz h),  n = tanh(xw_n + r q)
//   h_t = (1 - z) n + z h_{t-1}
// backward: dz = dh (h_prev - n), dn = dh (1 - z), da_n = dn (1 - n^2),
//   dr = da_n q, da_r = dr r(1-r), da_z = dz z(1-z),
//   hidden-side n gradient da_hn = da_n r,
//   dh_prev = dh z + [da_r, da_z, da_hn] W_hh.
//
// reset_before (the seeds' form), with u = r h_{t-1}:
//   n = tanh(xw_n + W_hn u),  h_t = (1 - z) h_{t-1} + z n
// backward: dz = dh (n - h_prev), dn = dh z, da_n = dn (1 - n^2),
//   du = da_n W_hn,  dr = du h_prev,  da_r = dr r(1-r),  da_z = dz z(1-z),
//   dh_prev = dh (1 - z) + du r + [da_r, da_z] W_h[rz].
#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// Threads own blocks of hidden units (see lstm.cpp). reset_after needs one barrier
// per step; reset_before two, since W_hn (r * h_prev) reads r * h_prev of every unit.
template <typename S>
static void gru_forward_impl(int64_t T, int64_t B, int64_t H, bool reset_after, const S* xw, const S* w_hh,
                             const S* b_hn, const S* h0, const int64_t* lengths, S* hs, S* gates, S* hn,
                             S* out, int nthreads) {
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  constexpr int64_t L = sizeof(V) / sizeof(S), UB = Packed<S>::NR;
  const int64_t BH = B * H, G = 3 * H, nb = unit_blocks<S>(H);
  const int64_t GR = reset_after ? 3 : 2;  // gates in the first product
  const int64_t NP = nb * GR * UB;
  const Packed<S> W = pack_gates(w_hh, GR, H, H);                          // r, z (, n) on h_prev
  const Packed<S> Wn = pack_gates(w_hh + 2 * H * H, reset_after ? 0 : 1, H, H);  // n on r * h_prev
  Buffer<S> a(B * NP);       // (B, NP) recurrent parts, unit-block order
  Buffer<S> an(B * nb * UB);  // (B, nb*UB) reset_before: W_hn (r * h_prev)
  Buffer<S> u(BH);           // (B, H)  reset_before: r * h_prev
  copy_or_zero(hs, h0, BH);
  auto body = [&](int tid, int nt, Barrier* barrier) {
    const Range units = share(nb, tid, nt);
    for (int64_t t = 0; t < T; ++t) {
      const S* h_prev = hs + t * BH;
      S* h = hs + (t + 1) * BH;
      S* q = hn + t * BH;  // (B, H) saved hidden-side n term
      gemm_panels(B, h_prev, H, W, units.first * GR, units.last * GR, a.data(), NP, false);
      if (!reset_after) {
        for (int64_t b = 0; b < B; ++b) {
          const S* x = xw + (t * B + b) * G;
          for (int64_t blk = units.first; blk < units.last; ++blk) {
            const S* r = a.data() + b * NP + blk * GR * UB;
            const int64_t j0 = blk * UB, width = H - j0 < UB ? H - j0 : UB;
            for (int64_t jj = 0; jj < width; jj += L) {
              const int n = lanes_left<S>(width, jj);
              const int64_t j = j0 + jj;
              st(u.data() + b * H + j, M::sigmoid(ld(x + j, n) + ld(r + jj, n)) * ld(h_prev + b * H + j, n), n);
            }
          }
        }
        barrier_wait(barrier);  // u complete
        gemm_panels(B, u.data(), H, Wn, units.first, units.last, an.data(), nb * UB, false);
      }
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = b * H;
        const S* x = xw + (t * B + b) * G;
        S* gt = gates + (t * B + b) * G;
        const bool on = active(lengths, b, t);
        for (int64_t blk = units.first; blk < units.last; ++blk) {
          const S* r = a.data() + b * NP + blk * GR * UB;
          const S* rn = reset_after ? r + 2 * UB : an.data() + b * nb * UB + blk * UB;
          const int64_t j0 = blk * UB, width = H - j0 < UB ? H - j0 : UB;
          for (int64_t jj = 0; jj < width; jj += L) {
            const int n = lanes_left<S>(width, jj);
            const int64_t j = j0 + jj;
            if (!on) {
              st(h + o + j, ld(h_prev + o + j, n), n);
              for (int g = 0; g < 3; ++g) st(gt + g * H + j, V{}, n);
              st(q + o + j, V{}, n);
              if (out) st(out + t * BH + o + j, V{}, n);
              continue;
            }
            const V r_ = M::sigmoid(ld(x + j, n) + ld(r + jj, n));
            const V z_ = M::sigmoid(ld(x + H + j, n) + ld(r + UB + jj, n));
            const V hp = ld(h_prev + o + j, n);
            V n_, h_;
            if (reset_after) {
              V qj = ld(rn + jj, n);
              if (b_hn) qj += ld(b_hn + j, n);
              n_ = M::tanh(ld(x + 2 * H + j, n) + r_ * qj);
              h_ = (S(1) - z_) * n_ + z_ * hp;
              st(q + o + j, qj, n);
            } else {
              n_ = M::tanh(ld(x + 2 * H + j, n) + ld(rn + jj, n));
              h_ = (S(1) - z_) * hp + z_ * n_;
              st(q + o + j, ld(u.data() + o + j, n), n);
            }
            st(h + o + j, h_, n);
            st(gt + j, r_, n);
            st(gt + H + j, z_, n);
            st(gt + 2 * H + j, n_, n);
            if (out) st(out + t * BH + o + j, h_, n);
          }
        }
      }
      barrier_wait(barrier);  // h_t complete
    }
  };
  run_team(team_size(nthreads, nb), body);
}

template <typename S>
static void gru_backward_impl(int64_t T, int64_t B, int64_t H, bool reset_after, const S* w_hh, const S* hs,
                              const S* gates, const S* hn, const int64_t* lengths, const S* d_out,
                              const S* dh_n, S* da, S* da_hn, S* dh0, S* dhs, int nthreads) {
  typedef typename VecOf<S>::type V;
  constexpr int64_t L = sizeof(V) / sizeof(S);
  const int64_t BH = B * H, G = 3 * H, nb = unit_blocks<S>(H);
  // dh_prev += [da_r, da_z] W_h[rz] and the n term: reset_after da_hn W_hn into dh_prev;
  // reset_before du = da_n W_hn first (then dr = du h_prev, dh_prev += du r).
  const Packed<S> Wt_rz(w_hh, H, 2 * H, 1, H);
  const Packed<S> Wt_n(w_hh + 2 * H * H, H, H, 1, H);
  Buffer<S> dh(BH), dh_prev(BH), du(BH);
  copy_or_zero(dh.data(), dh_n, BH);
  auto body = [&](int tid, int nt, Barrier* barrier) {
    const UnitSlice units = unit_slice<S>(H, tid, nt);
    for (int64_t t = T - 1; t >= 0; --t) {
      const S* h_prev = hs + t * BH;
      const S* q = hn + t * BH;
      S* da_t = da + t * B * G;
      S* dq_t = da_hn + t * BH;
      for (int64_t b = 0; b < B; ++b) {
        const bool on = active(lengths, b, t);
        const int64_t o = b * H;
        const S* gt = gates + (t * B + b) * G;
        S* d = da_t + b * G;
        for (int64_t j = units.j_first; j < units.j_last; j += L) {
          const int n = lanes_left<S>(units.j_last, j);
          const int64_t k = o + j;
          V g = ld(dh.data() + k, n);
          if (on && d_out) {
            g += ld(d_out + t * BH + k, n);
            st(dh.data() + k, g, n);
          }
          if (dhs) st(dhs + t * BH + k, g, n);
          if (!on) {
            for (int gi = 0; gi < 3; ++gi) st(d + gi * H + j, V{}, n);
            st(dq_t + k, V{}, n);
            st(dh_prev.data() + k, V{}, n);
            continue;
          }
          const V r_ = ld(gt + j, n), z_ = ld(gt + H + j, n), n_ = ld(gt + 2 * H + j, n), hp = ld(h_prev + k, n);
          if (reset_after) {
            const V da_n = g * (S(1) - z_) * (S(1) - n_ * n_);
            st(d + j, da_n * ld(q + k, n) * r_ * (S(1) - r_), n);
            st(d + H + j, g * (hp - n_) * z_ * (S(1) - z_), n);
            st(d + 2 * H + j, da_n, n);
            st(dq_t + k, da_n * r_, n);
            st(dh_prev.data() + k, g * z_, n);
          } else {
            const V da_n = g * z_ * (S(1) - n_ * n_);
            st(d + H + j, g * (n_ - hp) * z_ * (S(1) - z_), n);
            st(d + 2 * H + j, da_n, n);
            st(dq_t + k, da_n, n);
            st(dh_prev.data() + k, g * (S(1) - z_), n);
          }
        }
      }
      barrier_wait(barrier);  // da_t (r, z, n for reset_after; z, n otherwise) and dq_t complete
      if (reset_after) {
        gemm_panels(B, dq_t, H, Wt_n, units.first, units.last, dh_prev.data(), H, true);
      } else {
        gemm_panels(B, dq_t, H, Wt_n, units.first, units.last, du.data(), H, false);  // du = da_n W_hn
        for (int64_t b = 0; b < B; ++b) {
          if (!active(lengths, b, t)) continue;
          const int64_t o = b * H;
          const S* gt = gates + (t * B + b) * G;
          S* d = da_t + b * G;
          for (int64_t j = units.j_first; j < units.j_last; j += L) {
            const int n = lanes_left<S>(units.j_last, j);
            const int64_t k = o + j;
            const V r_ = ld(gt + j, n), du_ = ld(du.data() + k, n);
            st(d + j, du_ * ld(h_prev + k, n) * r_ * (S(1) - r_), n);
            st(dh_prev.data() + k, ld(dh_prev.data() + k, n) + du_ * r_, n);
          }
        }
        barrier_wait(barrier);  // da_r complete
      }
      // [da_r, da_z] are the first 2H columns of da_t (row stride 3H).
      gemm_panels(B, da_t, G, Wt_rz, units.first, units.last, dh_prev.data(), H, true);
      carry_active_rows(dh.data(), dh_prev.data(), lengths, t, B, H, units);
    }
  };
  run_team(team_size(nthreads, nb), body);
  std::memcpy(dh0, dh.data(), size_t(BH) * sizeof(S));
}

#define RNNKIT_DEFINE(S)                                                                                        \
  void gru_forward(int64_t T, int64_t B, int64_t H, bool reset_after, const S* xw, const S* w_hh,              \
                   const S* b_hn, const S* h0, const int64_t* lengths, S* hs, S* gates, S* hn, S* out, int nt) { \
    gru_forward_impl(T, B, H, reset_after, xw, w_hh, b_hn, h0, lengths, hs, gates, hn, out, nt);               \
  }                                                                                                             \
  void gru_backward(int64_t T, int64_t B, int64_t H, bool reset_after, const S* w_hh, const S* hs,             \
                    const S* gates, const S* hn, const int64_t* lengths, const S* d_out, const S* dh_n,        \
                    S* da, S* da_hn, S* dh0, S* dhs, int nt) {                                                 \
    gru_backward_impl(T, B, H, reset_after, w_hh, hs, gates, hn, lengths, d_out, dh_n, da, da_hn, dh0, dhs, nt); \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
