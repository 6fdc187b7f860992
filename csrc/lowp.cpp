// Reduced-precision inference layers (rnnkit.h: make_lowp_layer): each cell of
// csrc/cells/ instantiated with Lowp weights (lowp.h) and run by the sequence skeleton
// of recurrence.h, after the input projection x W_ih^T, one more Lowp product over all
// T*B rows at once. Compiled once per instruction set, like sequence.cpp.
#include "cells/elman.h"
#include "cells/gru.h"
#include "cells/jordan.h"
#include "cells/lstm.h"
#include "lowp.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

namespace {

template <template <typename, typename> class Cell, Precision P> class Layer final : public LowpLayerBase {
 public:
  typedef Cell<float, Lowp<P>> C;

  // p: w_ih (G*H, I), input-side bias (G*H) or null, then the cell's weights (rnnkit.h).
  // Built under make_lowp_layer's LowpBuilding (lowp.h), which says whether the Lowp
  // members use the CPU's dot instructions.
  Layer(const CellConfig& cfg, int64_t I, const float* const* p)
      : cell_(cfg, p + 2, Pass::forward), I_(I),
        w_x_(Packed<float>(p[0], C::G * cfg.H, I, I, 1)), bias_(C::G * cfg.H) {
    copy_or_zero(bias_.data(), p[1], C::G * cfg.H);
  }

  void project(int64_t M, const float* x, float* xw, int nthreads) override {
    const int64_t GH = C::G * cell_.H;
    auto body = [&](int tid, int n, Barrier*) {
      const Range mine = share(w_x_.panels, tid, n);  // panels of W_ih: columns of xw
      gemm_panels(M, x, I_, w_x_, mine.first, mine.last, xw, GH, false);
      const int64_t NR = Lowp<P>::NR, c0 = mine.first * NR, c1 = mine.last * NR < GH ? mine.last * NR : GH;
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = c0; c < c1; ++c) xw[r * GH + c] += bias_[c];
    };
    run_team(team_size(nthreads, w_x_.panels), body);
  }

  // In chunks of at most kChunk steps: the input projection, states and records of one
  // chunk at a time (inference keeps no records), each chunk starting from the last
  // one's final states, with the lengths shifted to the chunk's first step.
  void forward(int64_t T, int64_t B, const float* x, const float* const* init, const int64_t* lengths, float* out,
               float* const* finals, int nthreads) override {
    constexpr int64_t kChunk = 32;
    const int64_t Tc = T < kChunk ? T : kChunk, GH = C::G * cell_.H;
    Buffer<float> xw(Tc * B * GH);  // (Tc, B, G*H)
    Buffer<float> s0((Tc + 1) * B * width(0)), s1(C::kStates > 1 ? (Tc + 1) * B * width(1) : 1);
    Buffer<float> r0(C::kRecords > 0 ? Tc * B * cell_.record_width(0) : 1);
    Buffer<float> r1(C::kRecords > 1 ? Tc * B * cell_.record_width(1) : 1);
    Buffer<int64_t> len(B);
    float* states[] = {s0.data(), s1.data()};
    float* records[] = {r0.data(), r1.data()};
    const float* start[] = {init[0], C::kStates > 1 ? init[1] : nullptr};
    for (int64_t t0 = 0; t0 < T; t0 += Tc) {
      const int64_t n = T - t0 < Tc ? T - t0 : Tc;
      project(n * B, x + t0 * B * I_, xw.data(), nthreads);
      for (int64_t b = 0; lengths && b < B; ++b) len[b] = lengths[b] - t0 < 0 ? 0 : lengths[b] - t0;
      sequence_forward(cell_, n, B, lengths ? len.data() : nullptr, xw.data(), start, states, records,
                       out + t0 * B * width(0), nthreads);
      for (int k = 0; k < C::kStates; ++k) start[k] = states[k] + n * B * width(k);  // copied by the next chunk
    }
    for (int k = 0; k < C::kStates; ++k)
      std::memcpy(finals[k], start[k], size_t(B * width(k)) * sizeof(float));
  }

  bool native_dot() const override { return w_x_.native; }

 private:
  int64_t width(int k) const { return cell_.state_width(k); }

  C cell_;
  int64_t I_;
  Lowp<P> w_x_;         // W_ih (G*H, I)
  Buffer<float> bias_;  // (G*H) input-side bias, zeros when absent
};

template <Precision P>
LowpLayerBase* make(Arch arch, const CellConfig& c, int64_t I, const float* const* params) {
  switch (arch) {
    case Arch::lstm: return new Layer<Lstm, P>(c, I, params);
    case Arch::gru: return new Layer<Gru, P>(c, I, params);
    case Arch::jordan: return new Layer<Jordan, P>(c, I, params);
    default: return new Layer<Elman, P>(c, I, params);
  }
}

}  // namespace

LowpLayerBase* make_lowp_layer(Precision p, bool native_dot, Arch arch, Act f, Act g, bool reset_after, int64_t I,
                               int64_t H, int64_t O, const float* const* params) {
  const CellConfig c{H, O, f, g, reset_after};
  const LowpBuilding building(native_dot);  // for the Lowp weights built now
  return p == Precision::int8 ? make<Precision::int8>(arch, c, I, params)
                              : make<Precision::bf16>(arch, c, I, params);
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
