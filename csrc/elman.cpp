// Elman RNN (SPEC.md section 1):  a_t = xw_t + W_hh h_{t-1},  h_t = f(a_t).
// Backward (section 5): da_t = dh_t * f'(a_t),  dh_{t-1} = da_t W_hh.
#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S>
static void elman_forward_impl(int64_t T, int64_t B, int64_t H, Act f, const S* xw, const S* w_hh,
                               const S* h0, const int64_t* lengths, S* hs, S* out) {
  constexpr int64_t L = sizeof(typename VecOf<S>::type) / sizeof(S);
  const int64_t BH = B * H;
  const Packed<S> W(w_hh, H, H, H, 1);  // C = h W_hh^T
  Buffer<S> a(BH);                       // (B, H) recurrent part of a_t
  copy_or_zero(hs, h0, BH);
  for (int64_t t = 0; t < T; ++t) {
    const S* h_prev = hs + t * BH;  // (B, H)
    S* h = hs + (t + 1) * BH;       // (B, H)
    const S* x = xw + t * BH;       // (B, H)
    gemm_packed(B, h_prev, H, W, a.data(), H, false);
    for (int64_t b = 0; b < B; ++b) {
      const bool on = active(lengths, b, t);
      if (!on) std::memcpy(h + b * H, h_prev + b * H, size_t(H) * sizeof(S));
      for (int64_t j = 0; on && j < H; j += L) {
        const int n = lanes_left<S>(H, j);
        const int64_t k = b * H + j;
        st(h + k, vactivate<S>(f, ld(x + k, n) + ld(a.data() + k, n)), n);
      }
      if (out) {
        S* o = out + t * BH + b * H;
        if (on)
          std::memcpy(o, h + b * H, size_t(H) * sizeof(S));
        else
          std::memset(o, 0, size_t(H) * sizeof(S));
      }
    }
  }
}

template <typename S>
static void elman_backward_impl(int64_t T, int64_t B, int64_t H, Act f, const S* w_hh, const S* hs,
                                const int64_t* lengths, const S* d_out, const S* dh_n, S* da, S* dh0,
                                S* dhs) {
  const int64_t BH = B * H;
  const Packed<S> Wt(w_hh, H, H, 1, H);  // C = da W_hh
  Buffer<S> dh(BH), dh_prev(BH);         // (B, H) each
  copy_or_zero(dh.data(), dh_n, BH);
  for (int64_t t = T - 1; t >= 0; --t) {
    const S* h = hs + (t + 1) * BH;
    S* da_t = da + t * BH;
    for (int64_t b = 0; b < B; ++b) {
      const bool on = active(lengths, b, t);
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = b * H + j;
        if (on && d_out) dh[k] += d_out[t * BH + k];
        da_t[k] = on ? dh[k] * derivative_from_output(f, h[k]) : S(0);
      }
    }
    if (dhs) std::memcpy(dhs + t * BH, dh.data(), size_t(BH) * sizeof(S));
    gemm_packed(B, da_t, H, Wt, dh_prev.data(), H, false);
    for (int64_t b = 0; b < B; ++b)
      if (active(lengths, b, t)) std::memcpy(dh.data() + b * H, dh_prev.data() + b * H, size_t(H) * sizeof(S));
  }
  std::memcpy(dh0, dh.data(), size_t(BH) * sizeof(S));
}

#define RNNKIT_DEFINE(S)                                                                                     \
  void elman_forward(int64_t T, int64_t B, int64_t H, Act f, const S* xw, const S* w_hh, const S* h0,       \
                     const int64_t* lengths, S* hs, S* out, int) {                                          \
    elman_forward_impl(T, B, H, f, xw, w_hh, h0, lengths, hs, out);                                         \
  }                                                                                                          \
  void elman_backward(int64_t T, int64_t B, int64_t H, Act f, const S* w_hh, const S* hs,                   \
                      const int64_t* lengths, const S* d_out, const S* dh_n, S* da, S* dh0, S* dhs, int) {  \
    elman_backward_impl(T, B, H, f, w_hh, hs, lengths, d_out, dh_n, da, dh0, dhs);                          \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
