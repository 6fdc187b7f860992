// Whole stacks for inference: every layer and direction of a module's forward pass in
// one call (rnnkit.h, StackBase). The plan holds one LayerWeights (layer.h: the cell's
// packed weights and W_ih packed) per layer and direction, built once; a run keeps no
// per-step history: the states live in two-slot rings (a cell reads only the previous
// state and writes the next, recurrence.h) and the records in one slot, kept only for a
// cell whose forward reads its own records (not records_optional: Jordan, the LN cells).
//
// Per layer l and direction d, on one team of threads:
//   xw = in W_ih^T + bias           all T*B rows in one packed product (layer.h)
//   d = 1: each row of xw reversed within its sequence's length
//   T steps of the cell             exactly as the sequence kernels run it
//   the outputs into the layer's (T, B, D*S) output, reversed back for d = 1
// Layer l + 1 reads layer l's output; the top layer writes the caller's `out`.
#include "layer.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

namespace {

template <template <typename, typename> class Cell, typename S> class Stack final : public StackBase {
  typedef Cell<S, Packed<S>> C;
  typedef LayerWeights<Cell, S> LW;

 public:
  Stack(const CellConfig& cfg, int64_t layers, int64_t directions, const int64_t* sizes, const void* const* params)
      : L_(layers), D_(directions), w_(new LW*[size_t(layers * directions)]()) {
    try {
      for (int64_t l = 0; l < L_; ++l)
        for (int64_t d = 0; d < D_; ++d) {
          CellConfig c = cfg;
          c.H = sizes[3 * l + 1];
          c.O = sizes[3 * l + 2];
          w_[l * D_ + d] = new LW(c, sizes[3 * l], reinterpret_cast<const S* const*>(params + 5 * (l * D_ + d)));
        }
    } catch (...) {
      release();
      throw;
    }
  }
  ~Stack() override { release(); }

  void run(int64_t T, int64_t B, const void* x_, const int64_t* lengths, const void* const* init_, void* out_,
           void* const* final_, int nthreads) override {
    const C& c0 = w_[0]->cell;  // every layer has the same H (and O): one set of step buffers fits all
    const int64_t GH = C::G * c0.H, S0 = c0.state_width(0), DS = D_ * S0;
    const S* x = static_cast<const S*>(x_);
    S* out = static_cast<S*>(out_);
    // Scratch, allocated once per call (none inside the time loop): one block, cut into
    // 64-byte aligned pieces (an allocation costs as much as a small network's step).
    enum { kXw, kRing0, kRing1, kRec0, kRec1, kSeq0, kSeq1, kDirOut, kPieces };
    int64_t size[kPieces];
    size[kXw] = T * B * GH;                                            // (T, B, G*H)
    size[kRing0] = 2 * B * c0.state_width(0);                          // (2, B, S) state 0, two slots
    size[kRing1] = C::kStates > 1 ? 2 * B * c0.state_width(1) : 0;
    const bool recs = !records_optional<C>::value;                     // no backward: none stored if the cell allows
    size[kRec0] = recs && C::kRecords > 0 ? B * c0.record_width(0) : 0;  // (B, record width), one slot
    size[kRec1] = recs && C::kRecords > 1 ? B * c0.record_width(1) : 0;
    size[kSeq0] = L_ > 1 ? T * B * DS : 0;                             // (T, B, D*S) layer outputs, alternating
    size[kSeq1] = L_ > 2 ? T * B * DS : 0;
    size[kDirOut] = D_ > 1 ? T * B * S0 : 0;                           // (T, B, S) one direction's outputs
    constexpr int64_t A = 64 / int64_t(sizeof(S));
    int64_t start[kPieces], total = 0;
    for (int i = 0; i < kPieces; ++i) {
      start[i] = total;
      total += (size[i] + A - 1) / A * A;
    }
    Buffer<S> scratch(total);
    S* piece[kPieces];
    for (int i = 0; i < kPieces; ++i) piece[i] = scratch.data() + start[i];
    S* const xw = piece[kXw];
    S* ring[2] = {piece[kRing0], piece[kRing1]};
    S* rec[2] = {recs ? piece[kRec0] : nullptr, recs ? piece[kRec1] : nullptr};
    S* seq[2] = {piece[kSeq0], piece[kSeq1]};
    S* const dir_out = piece[kDirOut];
    Buffer<int64_t> len(B);  // lengths, T when absent
    for (int64_t b = 0; b < B; ++b) len[b] = lengths ? lengths[b] : T;
    typename C::Work work(c0, B);

    auto body = [&](int tid, int nt, Barrier* barrier) {
      Step<S> s{tid, nt, barrier, B, 0, lengths};
      const Range own_rows = share(T * B, tid, nt);  // (t, b) rows this member copies
      const Range batch = share(B, tid, nt);     // sequences this member reverses and copies
      for (int64_t l = 0; l < L_; ++l) {
        const S* in = l == 0 ? x : seq[(l - 1) % 2];  // (T, B, I_l)
        S* lout = l == L_ - 1 ? out : seq[l % 2];      // (T, B, D*S)
        for (int64_t d = 0; d < D_; ++d) {
          const int64_t k_ld = l * D_ + d;
          const LW& w = *w_[k_ld];
          w.project(s, T * B, in, w.I, xw);
          if (tid == 0)
            for (int k = 0; k < C::kStates; ++k) {
              const int64_t n = B * w.cell.state_width(k);
              copy_or_zero(ring[k], init_[k] ? static_cast<const S*>(init_[k]) + k_ld * n : nullptr, n);
            }
          s.sync();  // xw and the initial states complete
          if (d == 1) {
            for (int64_t b = batch.first; b < batch.last; ++b) reverse_rows(xw, B, GH, b, len[b]);
            s.sync();
          }
          S* dst = D_ == 1 ? lout : dir_out;  // (T, B, S)
          for (int64_t t = 0; t < T; ++t) {
            s.t = t;
            ForwardIO<S> io{xw + t * B * GH, {}, {}, {rec[0], rec[1]}, dst + t * B * S0};
            for (int k = 0; k < C::kStates; ++k) {
              const int64_t n = B * w.cell.state_width(k);
              io.prev[k] = ring[k] + (t % 2) * n;
              io.next[k] = ring[k] + ((t + 1) % 2) * n;
            }
            w.cell.forward(s, io, work);  // ends at a barrier
          }
          for (int k = 0; k < C::kStates; ++k) {  // each member copies its share of rows
            const int64_t width = w.cell.state_width(k), n = B * width;
            std::memcpy(static_cast<S*>(final_[k]) + k_ld * n + batch.first * width,
                        ring[k] + (T % 2) * n + batch.first * width,
                        size_t((batch.last - batch.first) * width) * sizeof(S));
          }
          if (D_ > 1) {
            for (int64_t r = own_rows.first; r < own_rows.last; ++r) {
              const int64_t t = r / B, b = r % B;
              const int64_t src_t = d == 1 && t < len[b] ? len[b] - 1 - t : t;
              std::memcpy(lout + r * DS + d * S0, dir_out + (src_t * B + b) * S0, size_t(S0) * sizeof(S));
            }
          }
          s.sync();  // the rings, xw and dir_out are free; lout complete after the last direction
        }
      }
    };
    run_team(team_size(nthreads, c0.blocks()), body);
  }

 private:
  // Reverses the first n time steps of row b of xw (T, B, GH) in place.
  static void reverse_rows(S* xw, int64_t B, int64_t GH, int64_t b, int64_t n) {
    for (int64_t t = 0; t < n / 2; ++t) {
      S* p = xw + (t * B + b) * GH;
      S* q = xw + ((n - 1 - t) * B + b) * GH;
      for (int64_t c = 0; c < GH; ++c) {
        const S v = p[c];
        p[c] = q[c];
        q[c] = v;
      }
    }
  }
  void release() {
    for (int64_t i = 0; i < L_ * D_; ++i) delete w_[i];
    delete[] w_;
    w_ = nullptr;
  }

  int64_t L_, D_;
  LW** w_;  // (L*D) layer l, direction d at l*D + d
};

template <typename S>
StackBase* make(Arch arch, bool layer_norm, const CellConfig& c, int64_t layers, int64_t directions,
                const int64_t* sizes, const void* const* params) {
  if (layer_norm)  // the binding allows it for the LSTM and the GRU (reset after) only
    return arch == Arch::lstm ? static_cast<StackBase*>(new Stack<LnLstm, S>(c, layers, directions, sizes, params))
                              : new Stack<LnGru, S>(c, layers, directions, sizes, params);
  switch (arch) {
    case Arch::lstm: return new Stack<Lstm, S>(c, layers, directions, sizes, params);
    case Arch::gru: return new Stack<Gru, S>(c, layers, directions, sizes, params);
    case Arch::jordan: return new Stack<Jordan, S>(c, layers, directions, sizes, params);
    default: return new Stack<Elman, S>(c, layers, directions, sizes, params);
  }
}

}  // namespace

StackBase* make_stack(bool dbl, Arch arch, Act f, Act g, bool reset_after, int64_t layers, int64_t directions,
                      const int64_t* sizes, const void* const* params, bool layer_norm) {
  const CellConfig c{0, 0, f, g, reset_after};
  return dbl ? make<double>(arch, layer_norm, c, layers, directions, sizes, params)
             : make<float>(arch, layer_norm, c, layers, directions, sizes, params);
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
