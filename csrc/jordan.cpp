// Jordan RNN (SPEC.md section 2): the state fed back is the previous output.
//   a_t = xw_t + W_yh y_{t-1},  h_t = f(a_t),  y_t = g(W_hy h_t + b_hy)
// Backward, with dy arriving from the output and from step t+1:
//   do = dy g'(o),  dh = do W_hy,  da = dh f'(a),  dy_{t-1} = da W_yh.
#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S>
static void jordan_forward_impl(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g, const S* xw,
                                const S* w_yh, const S* w_hy, const S* b_hy, const S* y0,
                                const int64_t* lengths, S* hs, S* ys, S* out) {
  constexpr int64_t L = sizeof(typename VecOf<S>::type) / sizeof(S);
  const int64_t BH = B * H, BO = B * O;
  const Packed<S> Wyh(w_yh, H, O, O, 1);  // a += y W_yh^T, (B, H)
  const Packed<S> Why(w_hy, O, H, H, 1);  // o  = h W_hy^T, (B, O)
  Buffer<S> a(BH), o(BO);
  copy_or_zero(ys, y0, BO);
  for (int64_t t = 0; t < T; ++t) {
    const S* y_prev = ys + t * BO;
    S* y = ys + (t + 1) * BO;
    S* h = hs + t * BH;
    gemm_packed(B, y_prev, O, Wyh, a.data(), H, false);
    for (int64_t k = 0; k < BH; k += L) {
      const int n = lanes_left<S>(BH, k);
      st(h + k, vactivate<S>(f, ld(xw + t * BH + k, n) + ld(a.data() + k, n)), n);
    }
    gemm_packed(B, h, H, Why, o.data(), O, false);
    for (int64_t b = 0; b < B; ++b) {
      const bool on = active(lengths, b, t);
      if (!on) std::memset(h + b * H, 0, size_t(H) * sizeof(S));
      for (int64_t j = 0; j < O; ++j) {
        const int64_t k = b * O + j;
        y[k] = on ? activate(g, o[k] + (b_hy ? b_hy[j] : S(0))) : y_prev[k];
        if (out) out[t * BO + k] = on ? y[k] : S(0);
      }
    }
  }
}

template <typename S>
static void jordan_backward_impl(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g, const S* w_yh,
                                 const S* w_hy, const S* hs, const S* ys, const int64_t* lengths,
                                 const S* d_out, const S* dy_n, S* da, S* d_o, S* dy0, S* dys) {
  const int64_t BH = B * H, BO = B * O;
  const Packed<S> WhyT(w_hy, H, O, 1, H);  // dh = do W_hy, (B, H)
  const Packed<S> WyhT(w_yh, O, H, 1, O);  // dy_prev = da W_yh, (B, O)
  Buffer<S> dy(BO), dh(BH), dy_prev(BO);
  copy_or_zero(dy.data(), dy_n, BO);
  for (int64_t t = T - 1; t >= 0; --t) {
    const S* h = hs + t * BH;
    const S* y = ys + (t + 1) * BO;
    S* do_t = d_o + t * BO;
    S* da_t = da + t * BH;
    for (int64_t b = 0; b < B; ++b) {
      const bool on = active(lengths, b, t);
      for (int64_t j = 0; j < O; ++j) {
        const int64_t k = b * O + j;
        if (on && d_out) dy[k] += d_out[t * BO + k];
        do_t[k] = on ? dy[k] * derivative_from_output(g, y[k]) : S(0);
      }
    }
    if (dys) std::memcpy(dys + t * BO, dy.data(), size_t(BO) * sizeof(S));
    gemm_packed(B, do_t, O, WhyT, dh.data(), H, false);
    for (int64_t k = 0; k < BH; ++k) da_t[k] = dh[k] * derivative_from_output(f, h[k]);
    gemm_packed(B, da_t, H, WyhT, dy_prev.data(), O, false);
    for (int64_t b = 0; b < B; ++b)
      if (active(lengths, b, t)) std::memcpy(dy.data() + b * O, dy_prev.data() + b * O, size_t(O) * sizeof(S));
  }
  std::memcpy(dy0, dy.data(), size_t(BO) * sizeof(S));
}

#define RNNKIT_DEFINE(S)                                                                                         \
  void jordan_forward(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g, const S* xw, const S* w_yh,     \
                      const S* w_hy, const S* b_hy, const S* y0, const int64_t* lengths, S* hs, S* ys, S* out,  \
                      int) {                                                                                     \
    jordan_forward_impl(T, B, H, O, f, g, xw, w_yh, w_hy, b_hy, y0, lengths, hs, ys, out);                      \
  }                                                                                                              \
  void jordan_backward(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g, const S* w_yh, const S* w_hy,  \
                       const S* hs, const S* ys, const int64_t* lengths, const S* d_out, const S* dy_n, S* da,  \
                       S* d_o, S* dy0, S* dys, int) {                                                           \
    jordan_backward_impl(T, B, H, O, f, g, w_yh, w_hy, hs, ys, lengths, d_out, dy_n, da, d_o, dy0, dys);        \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
