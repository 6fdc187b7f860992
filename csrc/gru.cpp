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

template <typename S>
static void gru_forward_impl(int64_t T, int64_t B, int64_t H, bool reset_after, const S* xw, const S* w_hh,
                             const S* b_hn, const S* h0, const int64_t* lengths, S* hs, S* gates, S* hn,
                             S* out) {
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  constexpr int64_t L = sizeof(V) / sizeof(S);
  const int64_t BH = B * H, G = 3 * H;
  // reset_after: one product with all of W_hh; reset_before: W_h[rz] on h, then W_hn on r h.
  const Packed<S> W_all(w_hh, reset_after ? G : 2 * H, H, H, 1);
  const Packed<S> W_n(w_hh + 2 * H * H, reset_after ? 0 : H, H, H, 1);
  Buffer<S> a(B * G);  // (B, 3H) recurrent parts of the pre-activations
  Buffer<S> u(BH);     // (B, H)  r h_prev (reset_before)
  copy_or_zero(hs, h0, BH);
  for (int64_t t = 0; t < T; ++t) {
    const S* h_prev = hs + t * BH;
    S* h = hs + (t + 1) * BH;
    S* q = hn + t * BH;  // (B, H) saved hidden-side n term
    gemm_packed(B, h_prev, H, W_all, a.data(), G, false);
    if (!reset_after) {
      for (int64_t b = 0; b < B; ++b) {
        const S* x = xw + (t * B + b) * G;
        const S* r = a.data() + b * G;
        for (int64_t j = 0; j < H; j += L) {
          const int n = lanes_left<S>(H, j);
          st(u.data() + b * H + j, M::sigmoid(ld(x + j, n) + ld(r + j, n)) * ld(h_prev + b * H + j, n), n);
        }
      }
      gemm_packed(B, u.data(), H, W_n, a.data() + 2 * H, G, false);
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = b * H;
      const S* x = xw + (t * B + b) * G;
      const S* r = a.data() + b * G;
      S* gt = gates + (t * B + b) * G;
      if (!active(lengths, b, t)) {
        std::memcpy(h + o, h_prev + o, size_t(H) * sizeof(S));
        std::memset(gt, 0, size_t(G) * sizeof(S));
        std::memset(q + o, 0, size_t(H) * sizeof(S));
        if (out) std::memset(out + t * BH + o, 0, size_t(H) * sizeof(S));
        continue;
      }
      for (int64_t j = 0; j < H; j += L) {
        const int n = lanes_left<S>(H, j);
        const V r_ = M::sigmoid(ld(x + j, n) + ld(r + j, n));
        const V z_ = M::sigmoid(ld(x + H + j, n) + ld(r + H + j, n));
        const V hp = ld(h_prev + o + j, n);
        V n_;
        if (reset_after) {
          V qj = ld(r + 2 * H + j, n);
          if (b_hn) qj += ld(b_hn + j, n);
          n_ = M::tanh(ld(x + 2 * H + j, n) + r_ * qj);
          st(h + o + j, (S(1) - z_) * n_ + z_ * hp, n);
          st(q + o + j, qj, n);
        } else {
          n_ = M::tanh(ld(x + 2 * H + j, n) + ld(r + 2 * H + j, n));
          st(h + o + j, (S(1) - z_) * hp + z_ * n_, n);
          st(q + o + j, ld(u.data() + o + j, n), n);
        }
        st(gt + j, r_, n);
        st(gt + H + j, z_, n);
        st(gt + 2 * H + j, n_, n);
      }
      if (out) std::memcpy(out + t * BH + o, h + o, size_t(H) * sizeof(S));
    }
  }
}

template <typename S>
static void gru_backward_impl(int64_t T, int64_t B, int64_t H, bool reset_after, const S* w_hh, const S* hs,
                              const S* gates, const S* hn, const int64_t* lengths, const S* d_out,
                              const S* dh_n, S* da, S* da_hn, S* dh0, S* dhs) {
  const int64_t BH = B * H, G = 3 * H;
  // reset_after: dh_prev += [da_r, da_z, da_hn] W_hh (K = 3H);
  // reset_before: du = da_n W_hn (K = H), then dh_prev += [da_r, da_z] W_h[rz] (K = 2H).
  const Packed<S> Wt_all(w_hh, H, reset_after ? G : 2 * H, 1, H);
  const Packed<S> Wt_n(w_hh + 2 * H * H, reset_after ? 0 : H, H, 1, H);
  Buffer<S> dh(BH), dh_prev(BH), du(BH);
  Buffer<S> d_rec(B * G);  // (B, 3H) gradient of the recurrent products' outputs
  copy_or_zero(dh.data(), dh_n, BH);
  for (int64_t t = T - 1; t >= 0; --t) {
    const S* h_prev = hs + t * BH;
    const S* q = hn + t * BH;
    S* da_t = da + t * B * G;
    S* dq_t = da_hn + t * BH;
    for (int64_t b = 0; b < B; ++b) {
      const bool on = active(lengths, b, t);
      const int64_t o = b * H;
      if (on && d_out)
        for (int64_t j = 0; j < H; ++j) dh[o + j] += d_out[t * BH + o + j];
      if (!on) {
        std::memset(da_t + b * G, 0, size_t(G) * sizeof(S));
        std::memset(dq_t + o, 0, size_t(H) * sizeof(S));
        std::memset(d_rec.data() + b * G, 0, size_t(G) * sizeof(S));
        std::memset(dh_prev.data() + o, 0, size_t(H) * sizeof(S));
      }
    }
    if (dhs) std::memcpy(dhs + t * BH, dh.data(), size_t(BH) * sizeof(S));
    for (int64_t b = 0; b < B; ++b) {
      if (!active(lengths, b, t)) continue;
      const int64_t o = b * H;
      const S* gt = gates + (t * B + b) * G;
      S* d = da_t + b * G;
      S* dr = d_rec.data() + b * G;
      for (int64_t j = 0; j < H; ++j) {
        const S r_ = gt[j], z_ = gt[H + j], n_ = gt[2 * H + j], hp = h_prev[o + j], g = dh[o + j];
        if (reset_after) {
          const S da_n = g * (S(1) - z_) * (S(1) - n_ * n_);
          d[j] = da_n * q[o + j] * r_ * (S(1) - r_);
          d[H + j] = g * (hp - n_) * z_ * (S(1) - z_);
          d[2 * H + j] = da_n;
          dq_t[o + j] = da_n * r_;
          dh_prev[o + j] = g * z_;
        } else {
          d[2 * H + j] = g * z_ * (S(1) - n_ * n_);
          d[H + j] = g * (n_ - hp) * z_ * (S(1) - z_);
          dq_t[o + j] = d[2 * H + j];
          dh_prev[o + j] = g * (S(1) - z_);
        }
      }
      if (reset_after) {
        std::memcpy(dr, d, size_t(2 * H) * sizeof(S));
        std::memcpy(dr + 2 * H, dq_t + o, size_t(H) * sizeof(S));
      }
    }
    if (reset_after) {
      gemm_packed(B, d_rec.data(), G, Wt_all, dh_prev.data(), H, true);
    } else {
      gemm_packed(B, dq_t, H, Wt_n, du.data(), H, false);  // du = da_n W_hn
      for (int64_t b = 0; b < B; ++b) {
        if (!active(lengths, b, t)) continue;
        const int64_t o = b * H;
        const S* gt = gates + (t * B + b) * G;
        S* d = da_t + b * G;
        for (int64_t j = 0; j < H; ++j) {
          const S r_ = gt[j];
          d[j] = du[o + j] * h_prev[o + j] * r_ * (S(1) - r_);
          dh_prev[o + j] += du[o + j] * r_;
        }
      }
      // [da_r, da_z] are the first 2H columns of da_t (row stride 3H).
      gemm_packed(B, da_t, G, Wt_all, dh_prev.data(), H, true);
    }
    for (int64_t b = 0; b < B; ++b)
      if (active(lengths, b, t)) std::memcpy(dh.data() + b * H, dh_prev.data() + b * H, size_t(H) * sizeof(S));
  }
  std::memcpy(dh0, dh.data(), size_t(BH) * sizeof(S));
}

#define RNNKIT_DEFINE(S)                                                                                        \
  void gru_forward(int64_t T, int64_t B, int64_t H, bool reset_after, const S* xw, const S* w_hh,              \
                   const S* b_hn, const S* h0, const int64_t* lengths, S* hs, S* gates, S* hn, S* out, int) { \
    gru_forward_impl(T, B, H, reset_after, xw, w_hh, b_hn, h0, lengths, hs, gates, hn, out);                   \
  }                                                                                                             \
  void gru_backward(int64_t T, int64_t B, int64_t H, bool reset_after, const S* w_hh, const S* hs,             \
                    const S* gates, const S* hn, const int64_t* lengths, const S* d_out, const S* dh_n,        \
                    S* da, S* da_hn, S* dh0, S* dhs, int) {                                                    \
    gru_backward_impl(T, B, H, reset_after, w_hh, hs, gates, hn, lengths, d_out, dh_n, da, da_hn, dh0, dhs);  \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
