// One layer (and direction) of a stack, as the plans over whole stacks hold it: a cell
// with its packed weights (the plan of recurrence.h) and its input projection
//     xw = x W_ih^T + bias      (M rows: B for one step, T*B for a whole sequence)
// with W_ih packed once. Used by the streaming stack (stream.cpp, one step per call)
// and the whole-sequence stack (stack.cpp, every step of every layer in one call).
#pragma once

#include "cells/elman.h"
#include "cells/gru.h"
#include "cells/jordan.h"
#include "cells/lstm.h"
#include "lowp.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <template <typename, typename> class Cell, typename S, typename P = Packed<S>> struct LayerWeights {
  typedef Cell<S, P> C;  // P: the packed weights (lowp.h's Lowp for reduced precision)
  C cell;
  int64_t I;       // input size
  P w_x;           // W_ih (G*H, I)
  Buffer<S> bias;  // (G*H) input-side bias, zeros when absent

  // p: w_ih (G*H, I), bias (G*H) or null, then the cell's weights (see rnnkit.h).
  LayerWeights(const CellConfig& cfg, int64_t I_, const S* const* p)
      : cell(cfg, p + 2, Pass::forward), I(I_), w_x(Packed<S>(p[0], C::G * cfg.H, I_, I_, 1)), bias(C::G * cfg.H) {
    copy_or_zero(bias.data(), p[1], C::G * cfg.H);
  }

  // xw (M, G*H) = in (M, I; rows ld_in apart) W_ih^T + bias, gates stacked as the
  // sequence kernels take it, for this team member's panels of W_ih (columns of xw);
  // the caller syncs before the cell reads xw. Each element is computed by one thread
  // in a fixed order (gemm_panels), so the result does not depend on the thread count.
  void project(const Step<S>& s, int64_t M, const S* in, int64_t ld_in, S* xw) const {
    constexpr int64_t NR = Packed<S>::NR;
    const int64_t GH = C::G * cell.H;
    const Range mine = share(w_x.panels, s.tid, s.nt);
    gemm_panels(M, in, ld_in, w_x, mine.first, mine.last, xw, GH, false);
    const int64_t c0 = mine.first * NR, c1 = mine.last * NR < GH ? mine.last * NR : GH;
    const S* b = bias.data();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = c0; c < c1; ++c) xw[m * GH + c] += b[c];
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
