// Elman RNN (SPEC.md section 1), one time step.
//   forward:   a_t = xw_t + W_hh h_{t-1},   h_t = f(a_t)
//   backward:  da_t = dh_t f'(a_t),         dh_{t-1} = da_t W_hh
// state 0: h (H).  grad 0: da (H).  No records (f' is read from h_t).
#pragma once

#include "../recurrence.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S, typename P = Packed<S>> struct Elman {  // P: packed weights (lowp.h: Lowp)
  typedef typename VecOf<S>::type V;
  static constexpr int G = gate_count(Arch::elman), kStates = 1, kRecords = 0, kGrads = 1;
  int64_t H;
  Act f;
  P W;  // forward: W_hh (H, H) in unit blocks; backward: W_hh for da W_hh

  Elman(const CellConfig& c, const S* const* w, Pass pass)
      : H(c.H), f(c.f),
        W(pass == Pass::forward ? pack_gates(w[0], 1, c.H, c.H) : Packed<S>(w[0], c.H, c.H, 1, c.H)) {}
  int64_t state_width(int) const { return H; }
  int64_t record_width(int) const { return 0; }
  int64_t grad_width(int) const { return H; }
  int64_t blocks() const { return unit_blocks<S>(H); }

  struct Work {
    Buffer<S> a;  // forward: (B, NP) h_{t-1} W_hh^T; backward: (B, H) da W_hh
    Work(const Elman& c, int64_t B) : a(B * unit_blocks<S>(c.H) * Packed<S>::NR) {}
  };

  void forward(const Step<S>& s, const ForwardIO<S>& io, Work& w) const {
    const auto x = rows(io.x);                          // (B, H)
    const auto a = blocked<const S>(w.a.data(), 1);  // (B, H) h_{t-1} W_hh^T
    const auto h_prev = rows(io.prev[0]), h = rows(io.next[0]), out = rows(io.out);
    s.product(H, io.prev[0], H, W, w.a.data(), row_stride<S>(H, 1));
    s.each(H, [=](const Lanes<S>& l) {
      const V h_ = vactivate<S>(f, l(x) + l(a));
      l.set(h, h_);
      if (io.out) l.set(out, h_);
    }, {{copy(h, h_prev), zero(out)}});
    s.sync();  // the next step reads every unit of h_t
  }

  void backward(const Step<S>& s, const BackwardIO<S>& io, Work& w) const {
    const auto h = rows(io.next[0]), d_out = rows(io.d_out);
    const auto dh = rows(io.d[0]), da = rows(io.grad[0]), dhs = rows(io.total[0]);
    s.each(H, [=](const Lanes<S>& l) {
      const V dh_ = io.d_out ? l(dh) + l(d_out) : l(dh);
      if (io.total[0]) l.set(dhs, dh_);
      l.set(da, grad_through<S>(f, l(h), dh_));
    }, {{copy(dhs, cview(dh)), zero(da)}});
    s.sync();  // da_t complete
    s.product(H, io.grad[0], H, W, w.a.data(), H);  // dh_{t-1} = da_t W_hh
    s.carry(H, io.d[0], w.a.data());
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
