// The sequence kernels of rnnkit.h: each maps its arguments onto a cell
// (csrc/cells/<cell>.h) and the time-loop skeleton (recurrence.h).
#include "cells/elman.h"
#include "cells/gru.h"
#include "cells/jordan.h"
#include "cells/ln_gru.h"
#include "cells/ln_lstm.h"
#include "cells/lstm.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

#define RNNKIT_DEFINE(S)                                                                                          \
  void elman_forward(int64_t T, int64_t B, int64_t H, Act f, const S* xw, const S* w_hh, const S* h0,            \
                     const int64_t* lengths, S* hs, S* out, int nt, const Regular<S>& reg) {                                            \
    const S* w[] = {w_hh};                                                                                       \
    const S* init[] = {h0};                                                                                      \
    S* states[] = {hs};                                                                                          \
    sequence_forward(Elman<S>({H, 0, f, f, false}, w, Pass::forward), T, B, lengths, xw, init, states,           \
                     (S* const*)nullptr, out, nt, reg);                                                               \
  }                                                                                                               \
  void elman_backward(int64_t T, int64_t B, int64_t H, Act f, const S* w_hh, const S* hs,                        \
                      const int64_t* lengths, const S* d_out, const S* dh_n, S* da, S* dh0, S* dhs, int nt, const Regular<S>& reg) {    \
    const S* w[] = {w_hh};                                                                                       \
    const S* states[] = {hs};                                                                                    \
    const S* d_final[] = {dh_n};                                                                                 \
    S *grads[] = {da}, *d_init[] = {dh0}, *totals[] = {dhs};                                                     \
    sequence_backward(Elman<S>({H, 0, f, f, false}, w, Pass::backward), T, B, lengths, states,                   \
                      (const S* const*)nullptr, d_out, d_final, grads, d_init, totals, nt, reg);                      \
  }                                                                                                               \
  void lstm_forward(int64_t T, int64_t B, int64_t H, const S* xw, const S* w_hh, const S* w_ch, int64_t P,      \
                    const S* w_hr, const S* h0, const S* c0, const int64_t* lengths, S* hs, S* cs, S* gates,     \
                    S* out, int nt, const Regular<S>& reg) {                                                                            \
    const S* w[] = {w_hh, w_ch, w_hr};                                                                           \
    const S* init[] = {h0, c0};                                                                                  \
    S *states[] = {hs, cs}, *records[] = {gates};                                                                \
    sequence_forward(Lstm<S>({H, P, Act::tanh, Act::tanh, false}, w, Pass::forward), T, B, lengths, xw, init,    \
                     states, records, out, nt, reg);                                                                  \
  }                                                                                                               \
  void lstm_backward(int64_t T, int64_t B, int64_t H, const S* w_hh, const S* w_ch, int64_t P, const S* w_hr,   \
                     const S* hs, const S* cs, const S* gates, const int64_t* lengths, const S* d_out,           \
                     const S* dh_n, const S* dc_n, S* da, S* dr, S* dh0, S* dc0, S* dhs, S* dcs, int nt, const Regular<S>& reg) {       \
    const S* w[] = {w_hh, w_ch, w_hr};                                                                           \
    const S *states[] = {hs, cs}, *records[] = {gates}, *d_final[] = {dh_n, dc_n};                               \
    S *grads[] = {da, dr}, *d_init[] = {dh0, dc0}, *totals[] = {dhs, dcs};                                       \
    sequence_backward(Lstm<S>({H, P, Act::tanh, Act::tanh, false}, w, Pass::backward), T, B, lengths, states,    \
                      records, d_out, d_final, grads, d_init, totals, nt, reg);                                       \
  }                                                                                                               \
  void ln_lstm_forward(int64_t T, int64_t B, int64_t H, const S* xw, const S* w_hh, const S* gamma_hh,            \
                       const S* gamma_c, const S* beta_c, const S* h0, const S* c0, const int64_t* lengths, S* hs,  \
                       S* cs, S* gates, S* raw, S* out, int nt) {                                                \
    const S* w[] = {w_hh, gamma_hh, gamma_c, beta_c};                                                            \
    const S* init[] = {h0, c0};                                                                                  \
    S *states[] = {hs, cs}, *records[] = {gates, raw};                                                           \
    sequence_forward(LnLstm<S>({H, 0, Act::tanh, Act::tanh, false}, w, Pass::forward), T, B, lengths, xw, init,  \
                     states, records, out, nt);                                                                  \
  }                                                                                                               \
  void ln_lstm_backward(int64_t T, int64_t B, int64_t H, const S* w_hh, const S* gamma_hh, const S* gamma_c,     \
                        const S* beta_c, const S* hs, const S* cs, const S* gates, const S* raw,                 \
                        const int64_t* lengths, const S* d_out, const S* dh_n, const S* dc_n, S* dv, S* dA,      \
                        S* dh0, S* dc0, S* dhs, S* dcs, int nt) {                                                \
    const S* w[] = {w_hh, gamma_hh, gamma_c, beta_c};                                                            \
    const S *states[] = {hs, cs}, *records[] = {gates, raw}, *d_final[] = {dh_n, dc_n};                          \
    S *grads[] = {dv, dA}, *d_init[] = {dh0, dc0}, *totals[] = {dhs, dcs};                                       \
    sequence_backward(LnLstm<S>({H, 0, Act::tanh, Act::tanh, false}, w, Pass::backward), T, B, lengths, states,  \
                      records, d_out, d_final, grads, d_init, totals, nt);                                       \
  }                                                                                                               \
  void gru_forward(int64_t T, int64_t B, int64_t H, bool reset_after, const S* xw, const S* w_hh,               \
                   const S* b_hn, const S* h0, const int64_t* lengths, S* hs, S* gates, S* hn, S* out, int nt, const Regular<S>& reg) { \
    const S* w[] = {w_hh, b_hn};                                                                                 \
    const S* init[] = {h0};                                                                                      \
    S *states[] = {hs}, *records[] = {gates, hn};                                                                \
    sequence_forward(Gru<S>({H, 0, Act::tanh, Act::tanh, reset_after}, w, Pass::forward), T, B, lengths, xw,     \
                     init, states, records, out, nt, reg);                                                            \
  }                                                                                                               \
  void gru_backward(int64_t T, int64_t B, int64_t H, bool reset_after, const S* w_hh, const S* hs,              \
                    const S* gates, const S* hn, const int64_t* lengths, const S* d_out, const S* dh_n,          \
                    S* da, S* da_hn, S* dh0, S* dhs, int nt, const Regular<S>& reg) {                                                   \
    const S* w[] = {w_hh, nullptr};                                                                              \
    const S *states[] = {hs}, *records[] = {gates, hn}, *d_final[] = {dh_n};                                     \
    S *grads[] = {da, da_hn}, *d_init[] = {dh0}, *totals[] = {dhs};                                              \
    sequence_backward(Gru<S>({H, 0, Act::tanh, Act::tanh, reset_after}, w, Pass::backward), T, B, lengths,       \
                      states, records, d_out, d_final, grads, d_init, totals, nt, reg);                               \
  }                                                                                                               \
  void ln_gru_forward(int64_t T, int64_t B, int64_t H, const S* xw, const S* w_hh, const S* gamma_hh,             \
                      const S* b_hh, const S* h0, const int64_t* lengths, S* hs, S* gates, S* raw, S* out,       \
                      int nt) {                                                                                  \
    const S* w[] = {w_hh, gamma_hh, b_hh};                                                                       \
    const S* init[] = {h0};                                                                                      \
    S *states[] = {hs}, *records[] = {gates, raw};                                                               \
    sequence_forward(LnGru<S>({H, 0, Act::tanh, Act::tanh, true}, w, Pass::forward), T, B, lengths, xw, init,    \
                     states, records, out, nt);                                                                  \
  }                                                                                                               \
  void ln_gru_backward(int64_t T, int64_t B, int64_t H, const S* w_hh, const S* gamma_hh, const S* b_hh,          \
                       const S* hs, const S* gates, const S* raw, const int64_t* lengths, const S* d_out,        \
                       const S* dh_n, S* da, S* dA, S* dh0, S* dhs, int nt) {                                    \
    const S* w[] = {w_hh, gamma_hh, b_hh};                                                                       \
    const S *states[] = {hs}, *records[] = {gates, raw}, *d_final[] = {dh_n};                                    \
    S *grads[] = {da, dA}, *d_init[] = {dh0}, *totals[] = {dhs};                                                 \
    sequence_backward(LnGru<S>({H, 0, Act::tanh, Act::tanh, true}, w, Pass::backward), T, B, lengths, states,    \
                      records, d_out, d_final, grads, d_init, totals, nt);                                       \
  }                                                                                                               \
  void jordan_forward(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g, const S* xw, const S* w_yh,      \
                      const S* w_hy, const S* b_hy, const S* y0, const int64_t* lengths, S* hs, S* ys, S* out,   \
                      int nt, const Regular<S>& reg) {                                                                                  \
    const S* w[] = {w_yh, w_hy, b_hy};                                                                           \
    const S* init[] = {y0};                                                                                      \
    S *states[] = {ys}, *records[] = {hs};                                                                       \
    sequence_forward(Jordan<S>({H, O, f, g, false}, w, Pass::forward), T, B, lengths, xw, init, states, records, \
                     out, nt, reg);                                                                                   \
  }                                                                                                               \
  void jordan_backward(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g, const S* w_yh, const S* w_hy,   \
                       const S* hs, const S* ys, const int64_t* lengths, const S* d_out, const S* dy_n, S* da,   \
                       S* d_o, S* dy0, S* dys, int nt, const Regular<S>& reg) {                                                         \
    const S* w[] = {w_yh, w_hy, nullptr};                                                                        \
    const S *states[] = {ys}, *records[] = {hs}, *d_final[] = {dy_n};                                            \
    S *grads[] = {da, d_o}, *d_init[] = {dy0}, *totals[] = {dys};                                                \
    sequence_backward(Jordan<S>({H, O, f, g, false}, w, Pass::backward), T, B, lengths, states, records, d_out,  \
                      d_final, grads, d_init, totals, nt, reg);                                                       \
  }
RNNKIT_DEFINE(float)
RNNKIT_DEFINE(double)
#undef RNNKIT_DEFINE

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
