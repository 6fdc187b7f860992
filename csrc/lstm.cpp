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
      for (int64_t j = 0; j < H; ++j) {
        const S i_ = sigmoid(x[j] + r[j]);
        const S f_ = sigmoid(x[H + j] + r[H + j]);
        const S g_ = std::tanh(x[2 * H + j] + r[2 * H + j]);
        const S o_ = sigmoid(x[3 * H + j] + r[3 * H + j]);
        const S c_ = f_ * c_prev[o + j] + i_ * g_;
        c[o + j] = c_;
        h[o + j] = o_ * std::tanh(c_);
        gt[j] = i_;
        gt[H + j] = f_;
        gt[2 * H + j] = g_;
        gt[3 * H + j] = o_;
      }
      if (out) std::memcpy(out + t * BH + o, h + o, size_t(H) * sizeof(S));
    }
  }
}

template <typename S>
static void lstm_backward_impl(int64_t T, int64_t B, int64_t H, const S* w_hh, const S* cs, const S* gates,
                               const int64_t* lengths, const S* d_out, const S* dh_n, const S* dc_n, S* da,
                               S* dh0, S* dc0, S* dhs, S* dcs) {
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
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = o + j;
        if (d_out) dh[k] += d_out[t * BH + k];
        const S i_ = gt[j], f_ = gt[H + j], g_ = gt[2 * H + j], o_ = gt[3 * H + j];
        const S tc = std::tanh(c[k]);
        const S dct = dc[k] + dh[k] * o_ * (S(1) - tc * tc);
        d[j] = dct * g_ * i_ * (S(1) - i_);
        d[H + j] = dct * c_prev[k] * f_ * (S(1) - f_);
        d[2 * H + j] = dct * i_ * (S(1) - g_ * g_);
        d[3 * H + j] = dh[k] * tc * o_ * (S(1) - o_);
        if (dcs) dcs[t * BH + k] = dct;
        dc[k] = dct * f_;
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
