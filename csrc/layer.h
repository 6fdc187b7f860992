// One layer (and direction) of a stack, as the plans over whole stacks hold it: a cell
// with its packed weights (the plan of recurrence.h) and its input projection
//     xw = x W_ih^T + bias      (M rows: B for one step, T*B for a whole sequence)
// with W_ih packed once; for a layer-normalised cell (SPEC section 15)
//     xw = gamma_ih LN(x W_ih^T) + bias   (each row normalised over its G*H values).
// Used by the streaming stack (stream.cpp, one step per call) and the whole-sequence
// stack (stack.cpp, every step of every layer in one call).
#pragma once

#include <array>

#include "cells/elman.h"
#include "cells/gru.h"
#include "cells/jordan.h"
#include "cells/ln_gru.h"
#include "cells/ln_lstm.h"
#include "cells/lstm.h"
#include "lowp.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// How a layer's five entries (rnnkit.h, make_stream) p[2..4] give its cell's weights, and
// whether its input side is normalised (then p[3] starts with gamma_ih (G*H)).
template <class C> struct LayerEntries {
  static constexpr bool input_norm = false;
  template <typename S> static std::array<const S*, 4> cell(const S* const* p, int64_t) {
    return {p[2], p[3], p[4], nullptr};
  }
};
// LN-LSTM: p[3] = (gamma_ih (4H), gamma_hh (4H), gamma_c (H), beta_c (H)), p[4] unused.
template <typename S, typename P> struct LayerEntries<LnLstm<S, P>> {
  static constexpr bool input_norm = true;
  template <typename T> static std::array<const T*, 4> cell(const T* const* p, int64_t H) {
    return {p[2], p[3] + 4 * H, p[3] + 8 * H, p[3] + 9 * H};
  }
};
// LN-GRU: p[3] = (gamma_ih (3H), gamma_hh (3H)), p[4] = b_hh (3H) or null.
template <typename S, typename P> struct LayerEntries<LnGru<S, P>> {
  static constexpr bool input_norm = true;
  template <typename T> static std::array<const T*, 4> cell(const T* const* p, int64_t H) {
    return {p[2], p[3] + 3 * H, p[4], nullptr};
  }
};

template <template <typename, typename> class Cell, typename S, typename P = Packed<S>> struct LayerWeights {
  typedef Cell<S, P> C;  // P: the packed weights (lowp.h's Lowp for reduced precision)
  typedef LayerEntries<C> E;
  C cell;
  int64_t I;           // input size
  P w_x;               // W_ih (G*H, I)
  Buffer<S> bias;      // (G*H) input-side bias, zeros when absent
  Buffer<S> gamma_ih;  // (G*H) the input side's gain (layer-normalised cells), else unused

  // p: w_ih (G*H, I), bias (G*H) or null, then the cell's weights (see rnnkit.h).
  LayerWeights(const CellConfig& cfg, int64_t I_, const S* const* p)
      : cell(cfg, E::template cell<S>(p, cfg.H).data(), Pass::forward), I(I_),
        w_x(Packed<S>(p[0], C::G * cfg.H, I_, I_, 1)), bias(C::G * cfg.H), gamma_ih(E::input_norm ? C::G * cfg.H : 1) {
    copy_or_zero(bias.data(), p[1], C::G * cfg.H);
    if (E::input_norm) copy_or_zero(gamma_ih.data(), p[3], C::G * cfg.H);
  }

  // xw (M, G*H) = in (M, I; rows ld_in apart) W_ih^T + bias, gates stacked as the
  // sequence kernels take it, for this team member's panels of W_ih (columns of xw);
  // the caller syncs before the cell reads xw. Each element is computed by one thread
  // in a fixed order (gemm_panels), so the result does not depend on the thread count.
  // Layer-normalised: after a barrier, each member normalises its share of the M rows,
  // each row on one thread in one order (ln_norm.h), then adds the bias.
  void project(const Step<S>& s, int64_t M, const S* in, int64_t ld_in, S* xw) const {
    constexpr int64_t NR = Packed<S>::NR;
    const int64_t GH = C::G * cell.H;
    const Range mine = share(w_x.panels, s.tid, s.nt);
    gemm_panels(M, in, ld_in, w_x, mine.first, mine.last, xw, GH, false);
    if (E::input_norm) {
      s.sync();  // whole rows of x W_ih^T
      const Range own = share(M, s.tid, s.nt);
      for (int64_t m = own.first; m < own.last; ++m) normalise_row(xw + m * GH, GH, gamma_ih.data(), bias.data());
      return;
    }
    const int64_t c0 = mine.first * NR, c1 = mine.last * NR < GH ? mine.last * NR : GH;
    const S* b = bias.data();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = c0; c < c1; ++c) xw[m * GH + c] += b[c];
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
