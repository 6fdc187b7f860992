// Streaming: a stack of unidirectional layers advanced one time step per call, for
// online inference (audio, sensors, generation). Each layer is a cell (its packed
// weights, the plan of csrc/recurrence.h) plus its input projection; weights are packed
// once, when the stream is made. States are double-buffered so that every thread reads
// the whole previous state while the new one is written.
//
// Per layer and step (x: the layer's input (B, I)):
//   xw = W_ih x + bias         one product, its panels shared between the threads
//   the cell's forward step    exactly as in the sequence kernels
#include "cells/elman.h"
#include "cells/gru.h"
#include "cells/jordan.h"
#include "cells/lstm.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

namespace {

template <template <typename> class Cell, typename S> struct Layer {
  typedef Cell<S> C;
  C cell;
  int64_t B, I;
  Packed<S> w_x;   // W_ih (G*H, I)
  Buffer<S> bias;  // (G*H) input-side bias, zeros when absent
  Buffer<S> xw;    // (B, G*H) W_ih x + bias, gates stacked as the sequence kernels get it
  Buffer<S> states, records;
  S* cur[2];       // (B, state_width(k)) the state now
  S* next[2];      // (B, state_width(k)) the state being computed
  S* rec[2];       // (B, record_width(k)) scratch: records are not kept
  typename C::Work work;
  S zoneout;       // the rate p (0: off)

  // p: w_ih (G*H, I), bias (G*H) or null, then the cell's weights (see rnnkit.h).
  Layer(const CellConfig& cfg, int64_t B_, int64_t I_, const S* const* p, double zoneout_)
      : cell(cfg, p + 2, Pass::forward), B(B_), I(I_), w_x(p[0], C::G * cfg.H, I_, I_, 1), bias(C::G * cfg.H),
        xw(B_ * C::G * cfg.H), states(2 * B_ * width(cell, C::kStates, false)),
        records(B_ * width(cell, C::kRecords, true)), work(cell, B_), zoneout(S(zoneout_)) {
    copy_or_zero(bias.data(), p[1], C::G * cfg.H);
    S* s = states.data();
    S* r = records.data();
    for (int k = 0; k < 2; ++k) {
      const bool st = k < C::kStates, re = k < C::kRecords;
      cur[k] = st ? s : nullptr;
      next[k] = st ? s + B * cell.state_width(k) : nullptr;
      if (st) s += 2 * B * cell.state_width(k);
      rec[k] = re ? r : nullptr;
      if (re) r += B * cell.record_width(k);
    }
  }
  static int64_t width(const C& c, int n, bool records) {
    int64_t w = 0;
    for (int k = 0; k < n; ++k) w += records ? c.record_width(k) : c.state_width(k);
    return w;
  }

  // One step for this team member's share; `in` is (B, I). Ends at a barrier (the
  // cell's last), after which every unit of next[0] is written.
  void step(const Step<S>& s, const S* in) {
    const int64_t GH = C::G * cell.H;
    const Range mine = share(w_x.panels, s.tid, s.nt);  // panels of W_ih: columns of xw
    gemm_panels(B, in, I, w_x, mine.first, mine.last, xw.data(), GH, false);
    const int64_t c0 = mine.first * Packed<S>::NR, c1 = mine.last * Packed<S>::NR < GH ? mine.last * Packed<S>::NR : GH;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = c0; c < c1; ++c) xw[b * GH + c] += bias[c];
    s.sync();  // the cell reads xw by unit blocks
    ForwardIO<S> io{xw.data(), {cur[0], cur[1]}, {next[0], next[1]}, {rec[0], rec[1]}, nullptr};
    cell.forward(s, io, work);
    if (zoneout == S(0)) return;
    const S p = zoneout;  // zoneout's expected value: s_t = p s_{t-1} + (1 - p) s~_t
    for (int k = 0; k < C::kStates; ++k) {
      const auto prev = rows<const S>(cur[k]), now = rows(next[k]);
      s.each(cell.state_width(k), [=](const Lanes<S>& l) { l.set(now, S(1 - p) * l(now) + p * l(prev)); });
    }
    s.sync();
  }
  void swap() {
    for (int k = 0; k < 2; ++k) {
      S* t = cur[k];
      cur[k] = next[k];
      next[k] = t;
    }
  }
};

template <template <typename> class Cell, typename S> class Stream final : public StreamBase {
 public:
  Stream(const CellConfig& cfg, int64_t B, int64_t layers, const int64_t* sizes, const void* const* params,
         double zoneout)
      : B_(B), n_(layers), layers_(new Layer<Cell, S>*[size_t(layers)]()) {
    for (int64_t l = 0; l < layers; ++l) {
      CellConfig c = cfg;
      c.H = sizes[3 * l + 1];
      c.O = sizes[3 * l + 2];
      layers_[l] = new Layer<Cell, S>(c, B, sizes[3 * l], reinterpret_cast<const S* const*>(params + 5 * l),
                                     zoneout);
    }
  }
  ~Stream() override {
    for (int64_t l = 0; l < n_; ++l) delete layers_[l];
    delete[] layers_;
  }

  void step(const void* x, void* y, int nthreads) override {
    auto body = [&](int tid, int n, Barrier* barrier) {
      const Step<S> s{tid, n, barrier, B_, 0, nullptr};
      const S* in = static_cast<const S*>(x);
      for (int64_t l = 0; l < n_; ++l) {
        layers_[l]->step(s, in);  // ends at a barrier: the next layer reads every unit
        in = layers_[l]->next[0];
      }
    };
    run_team(team_size(nthreads, layers_[0]->cell.blocks()), body);
    for (int64_t l = 0; l < n_; ++l) layers_[l]->swap();
    const Layer<Cell, S>& top = *layers_[n_ - 1];
    std::memcpy(y, top.cur[0], size_t(B_ * top.cell.state_width(0)) * sizeof(S));
  }

  void* state(int64_t layer, int which) override { return layers_[layer]->cur[which]; }

 private:
  int64_t B_, n_;
  Layer<Cell, S>** layers_;
};

template <typename S>
StreamBase* make(Arch arch, const CellConfig& c, int64_t B, int64_t layers, const int64_t* sizes,
                 const void* const* params, double z) {
  switch (arch) {
    case Arch::lstm: return new Stream<Lstm, S>(c, B, layers, sizes, params, z);
    case Arch::gru: return new Stream<Gru, S>(c, B, layers, sizes, params, z);
    case Arch::jordan: return new Stream<Jordan, S>(c, B, layers, sizes, params, z);
    default: return new Stream<Elman, S>(c, B, layers, sizes, params, z);
  }
}

}  // namespace

StreamBase* make_stream(bool dbl, Arch arch, Act f, Act g, bool reset_after, int64_t B, int64_t layers,
                        const int64_t* sizes, const void* const* params, double zoneout) {
  const CellConfig c{0, 0, f, g, reset_after};
  return dbl ? make<double>(arch, c, B, layers, sizes, params, zoneout)
             : make<float>(arch, c, B, layers, sizes, params, zoneout);
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
