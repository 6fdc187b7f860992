// Streaming: a stack of unidirectional layers advanced one time step per call, for
// online inference (audio, sensors, generation). Each layer is a cell (its packed
// weights, the plan of csrc/recurrence.h) plus its input projection; weights are packed
// once, when the stream is made. States are double-buffered so that every thread reads
// the whole previous state while the new one is written.
//
// Per layer and step (x: the layer's input (B, I)):
//   xw = W_ih x + bias         one product, its panels shared between the threads
//   the cell's forward step    exactly as in the sequence kernels
#include "layer.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

namespace {

// A layer's weights (layer.h) and its state: double-buffered, records not kept (a scratch
// slot only for a cell whose forward reads its own records: !records_optional).
template <template <typename, typename> class Cell, typename S, typename P = Packed<S>>
struct Layer : LayerWeights<Cell, S, P> {
  typedef Cell<S, P> C;  // P: packed weights (lowp.h's Lowp for reduced precision)
  using LayerWeights<Cell, S, P>::cell;
  int64_t B;
  Buffer<S> xw;    // (B, G*H) W_ih x + bias, gates stacked as the sequence kernels get it
  Buffer<S> states, records;
  S* cur[2];       // (B, state_width(k)) the state now
  S* next[2];      // (B, state_width(k)) the state being computed
  S* rec[2];       // (B, record_width(k)) scratch, or null where the cell needs none
  typename C::Work work;
  S zoneout;       // the rate p (0: off)

  // p: w_ih (G*H, I), bias (G*H) or null, then the cell's weights (see rnnkit.h).
  Layer(const CellConfig& cfg, int64_t B_, int64_t I_, const S* const* p, double zoneout_)
      : LayerWeights<Cell, S, P>(cfg, I_, p), B(B_), xw(B_ * C::G * cfg.H),
        states(2 * B_ * width(cell, C::kStates, false)),
        records(records_optional<C>::value ? 1 : B_ * width(cell, C::kRecords, true)),
        work(cell, B_), zoneout(S(zoneout_)) {
    S* s = states.data();
    S* r = records.data();
    for (int k = 0; k < 2; ++k) {
      const bool st = k < C::kStates, re = k < C::kRecords && !records_optional<C>::value;
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
  void step(const Step<S>& s, const S* in) { step(s, in, cur, next, rec); }

  // The same from given states: prev[k] -> to[k], the step's records into re[k].
  void step(const Step<S>& s, const S* in, const S* const* prev, S* const* to, S* const* re) {
    this->project(s, B, in, this->I, xw.data());
    s.sync();  // the cell reads xw by unit blocks
    ForwardIO<S> io{xw.data(), {prev[0], prev[1]}, {to[0], to[1]}, {re[0], re[1]}, nullptr};
    cell.forward(s, io, work);
    if (zoneout == S(0)) return;
    const S p = zoneout;  // zoneout's expected value: s_t = p s_{t-1} + (1 - p) s~_t
    for (int k = 0; k < C::kStates; ++k) {
      const auto before = rows<const S>(prev[k]), now = rows(to[k]);
      s.each(cell.state_width(k), [=](const Lanes<S>& l) { l.set(now, S(1 - p) * l(now) + p * l(before)); });
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

template <template <typename, typename> class Cell, typename S, typename P = Packed<S>>
class Stream final : public StreamBase {
 public:
  Stream(const CellConfig& cfg, int64_t B, int64_t layers, const int64_t* sizes, const void* const* params,
         double zoneout)
      : B_(B), n_(layers), layers_(new Layer<Cell, S, P>*[size_t(layers)]()) {
    for (int64_t l = 0; l < layers; ++l) {
      CellConfig c = cfg;
      c.H = sizes[3 * l + 1];
      c.O = sizes[3 * l + 2];
      layers_[l] = new Layer<Cell, S, P>(c, B, sizes[3 * l], reinterpret_cast<const S* const*>(params + 5 * l),
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
    const Layer<Cell, S, P>& top = *layers_[n_ - 1];
    std::memcpy(y, top.cur[0], size_t(B_ * top.cell.state_width(0)) * sizeof(S));
  }

  void* state(int64_t layer, int which) override { return layers_[layer]->cur[which]; }

  void cell_step(const void* x, const void* const* prev, void* const* next, void* const* rec,
                 int nthreads) override {
    Layer<Cell, S, P>& L = *layers_[0];
    const S* p[2] = {nullptr, nullptr};
    S* to[2] = {nullptr, nullptr};
    S* re[2] = {nullptr, nullptr};
    for (int k = 0; k < Cell<S, P>::kStates; ++k) {
      if (!prev[k]) std::memset(L.next[k], 0, size_t(B_ * L.cell.state_width(k)) * sizeof(S));  // h_0 = 0
      p[k] = prev[k] ? static_cast<const S*>(prev[k]) : L.next[k];
      to[k] = static_cast<S*>(next[k]);
    }
    for (int k = 0; k < Cell<S, P>::kRecords; ++k) re[k] = rec[k] ? static_cast<S*>(rec[k]) : L.rec[k];
    auto body = [&](int tid, int n, Barrier* barrier) {
      const Step<S> s{tid, n, barrier, B_, 0, nullptr};
      L.step(s, static_cast<const S*>(x), p, to, re);
    };
    run_team(team_size(nthreads, L.cell.blocks()), body);
  }

 private:
  int64_t B_, n_;
  Layer<Cell, S, P>** layers_;
};

template <typename S>
StreamBase* make(Arch arch, bool layer_norm, const CellConfig& c, int64_t B, int64_t layers, const int64_t* sizes,
                 const void* const* params, double z) {
  if (layer_norm)  // the binding allows it for the LSTM and the GRU (reset after) only
    return arch == Arch::lstm ? static_cast<StreamBase*>(new Stream<LnLstm, S>(c, B, layers, sizes, params, z))
                              : new Stream<LnGru, S>(c, B, layers, sizes, params, z);
  switch (arch) {
    case Arch::lstm: return new Stream<Lstm, S>(c, B, layers, sizes, params, z);
    case Arch::gru: return new Stream<Gru, S>(c, B, layers, sizes, params, z);
    case Arch::jordan: return new Stream<Jordan, S>(c, B, layers, sizes, params, z);
    default: return new Stream<Elman, S>(c, B, layers, sizes, params, z);
  }
}

}  // namespace

StreamBase* make_stream(bool dbl, Arch arch, Act f, Act g, bool reset_after, int64_t B, int64_t layers,
                        const int64_t* sizes, const void* const* params, double zoneout, bool layer_norm) {
  const CellConfig c{0, 0, f, g, reset_after};
  return dbl ? make<double>(arch, layer_norm, c, B, layers, sizes, params, zoneout)
             : make<float>(arch, layer_norm, c, B, layers, sizes, params, zoneout);
}

// Reduced precision (rnnkit.h: make_lowp_stream): the same stream over Lowp weights.
namespace {
template <Precision Q>
StreamBase* make_lowp(Arch arch, const CellConfig& c, int64_t B, int64_t layers, const int64_t* sizes,
                      const void* const* params, double zoneout) {
  switch (arch) {
    case Arch::lstm: return new Stream<Lstm, float, Lowp<Q>>(c, B, layers, sizes, params, zoneout);
    case Arch::gru: return new Stream<Gru, float, Lowp<Q>>(c, B, layers, sizes, params, zoneout);
    case Arch::jordan: return new Stream<Jordan, float, Lowp<Q>>(c, B, layers, sizes, params, zoneout);
    default: return new Stream<Elman, float, Lowp<Q>>(c, B, layers, sizes, params, zoneout);
  }
}
}  // namespace

StreamBase* make_lowp_stream(Precision p, bool native_dot, Arch arch, Act f, Act g, bool reset_after, int64_t B,
                             int64_t layers, const int64_t* sizes, const void* const* params, double zoneout) {
  const CellConfig c{0, 0, f, g, reset_after};
  const LowpBuilding building(native_dot);  // for the Lowp weights built now
  return p == Precision::int8 ? make_lowp<Precision::int8>(arch, c, B, layers, sizes, params, zoneout)
                              : make_lowp<Precision::bf16>(arch, c, B, layers, sizes, params, zoneout);
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
