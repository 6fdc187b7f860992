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

template <typename S>
static void lstm_forward_impl(int64_t T, int64_t B, int64_t H, const S* xw, const S* w_hh, const S* h0,
                              const S* c0, const int64_t* lengths, S* hs, S* cs, S* gates, S* out) {
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  constexpr int64_t L = sizeof(V) / sizeof(S);
  const int64_t BH = B * H, G = 4 * H;
  const Packed<S> W(w_hh, G, H, H, 1);  // C = h W_hh^T, (B, 4H)
  Buffer<S> a(B * G);                    // (B, 4H) recurrent part of the pre-activations
  copy_or_zero(hs, h0, BH);
  copy_or_zero(cs, c0, BH);
  for (int64_t t = 0; t < T; ++t) {
    const S* h_prev = hs + t * BH;  // (B, H)
    const S* c_prev = cs + t * BH;  // (B, H)
    S* h = hs + (t + 1) * BH;
    S* c = cs + (t + 1) * BH;
    gemm_packed(B, h_prev, H, W, a.data(), G, false);
    for (int64_t b = 0; b < B; ++b) {
      const S* x = xw + (t * B + b) * G;  // (4H)
      const S* r = a.data() + b * G;      // (4H)
      S* gt = gates + (t * B + b) * G;    // (4H)
      const int64_t o = b * H;
      if (!active(lengths, b, t)) {
        std::memcpy(h + o, h_prev + o, size_t(H) * sizeof(S));
        std::memcpy(c + o, c_prev + o, size_t(H) * sizeof(S));
        std::memset(gt, 0, size_t(G) * sizeof(S));
        if (out) std::memset(out + t * BH + o, 0, size_t(H) * sizeof(S));
        continue;
      }
      for (int64_t j = 0; j < H; j += L) {
        const int n = lanes_left<S>(H, j);
        const V i_ = M::sigmoid(ld(x + j, n) + ld(r + j, n));
        const V f_ = M::sigmoid(ld(x + H + j, n) + ld(r + H + j, n));
        const V g_ = M::tanh(ld(x + 2 * H + j, n) + ld(r + 2 * H + j, n));
        const V o_ = M::sigmoid(ld(x + 3 * H + j, n) + ld(r + 3 * H + j, n));
        const V c_ = f_ * ld(c_prev + o + j, n) + i_ * g_;
        st(c + o + j, c_, n);
        st(h + o + j, o_ * M::tanh(c_), n);
        st(gt + j, i_, n);
        st(gt + H + j, f_, n);
        st(gt + 2 * H + j, g_, n);
        st(gt + 3 * H + j, o_, n);
      }
      if (out) std::memcpy(out + t * BH + o, h + o, size_t(H) * sizeof(S));
    }
  }
}

template <typename S>
static void lstm_backward_impl(int64_t T, int64_t B, int64_t H, const S* w_hh, const S* cs, const S* gates,
                               const int64_t* lengths, const S* d_out, const S* dh_n, const S* dc_n, S* da,
                               S* dh0, S* dc0, S* dhs, S* dcs) {
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  constexpr int64_t L = sizeof(V) / sizeof(S);
  const int64_t BH = B * H, G = 4 * H;
  const Packed<S> Wt(w_hh, H, G, 1, H);  // C = da W_hh, (B, H)
  Buffer<S> dh(BH), dc(BH), dh_prev(BH);
  copy_or_zero(dh.data(), dh_n, BH);
  copy_or_zero(dc.data(), dc_n, BH);
  for (int64_t t = T - 1; t >= 0; --t) {
    const S* c = cs + (t + 1) * BH;
    const S* c_prev = cs + t * BH;
    S* da_t = da + t * B * G;  // (B, 4H)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = b * H;
      S* d = da_t + b * G;
      if (!active(lengths, b, t)) {
        std::memset(d, 0, size_t(G) * sizeof(S));
        if (dcs) std::memcpy(dcs + t * BH + o, dc.data() + o, size_t(H) * sizeof(S));
        continue;
      }
      const S* gt = gates + (t * B + b) * G;
      for (int64_t j = 0; j < H; j += L) {
        const int n = lanes_left<S>(H, j);
        const int64_t k = o + j;
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
        if (dcs) st(dcs + t * BH + k, dct, n);
        st(dc.data() + k, dct * f_, n);
      }
    }
    if (dhs) std::memcpy(dhs + t * BH, dh.data(), size_t(BH) * sizeof(S));
    gemm_packed(B, da_t, G, Wt, dh_prev.data(), H, false);
    for (int64_t b = 0; b < B; ++b)
      if (active(lengths, b, t)) std::memcpy(dh.data() + b * H, dh_prev.data() + b * H, size_t(H) * sizeof(S));
  }
  std::memcpy(dh0, dh.data(), size_t(BH) * sizeof(S));
  std::memcpy(dc0, dc.data(), size_t(BH) * sizeof(S));
}

#define RNNKIT_DEFINE(S)                                                                                       \
  void lstm_forward(int64_t T, int64_t B, int64_t H, const S* xw, const S* w_hh, const S* h0, const S* c0,    \
                    const int64_t* lengths, S* hs, S* cs, S* gates, S* out, int) {                            \
    lstm_forward_impl(T, B, H, xw, w_hh, h0, c0, lengths, hs, cs, gates, out);                                \
  }                                                                                                            \
  void lstm_backward(int64_t T, int64_t B, int64_t H, const S* w_hh, const S*, const S* cs, const S* gates,   \
                     const int64_t* lengths, const S* d_out, const S* dh_n, const S* dc_n, S* da, S* dh0,     \
                     S* dc0, S* dhs, S* dcs, int) {                                                           \
    lstm_backward_impl(T, B, H, w_hh, cs, gates, lengths, d_out, dh_n, dc_n, da, dh0, dc0, dhs, dcs);         \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
