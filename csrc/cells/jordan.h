// Jordan RNN (SPEC.md section 2), one time step: the state fed back is the previous
// output, and the output layer W_hy is inside the recurrence (a second product, so two
// phases: hidden units, then output units).
//   forward:   a_t = xw_t + W_yh y_{t-1},  h_t = f(a_t),  y_t = g(W_hy h_t + b_hy)
//   backward, dy arriving from the output and from step t+1:
//              do = dy g'(o),  dh = do W_hy,  da = dh f'(a),  dy_{t-1} = da W_yh
// state 0: y (O).  record 0: h (H).  grads: 0 da (H), 1 do, the output pre-activation (O).
// weights: W_yh (H, O), W_hy (O, H), b_hy (O) or null.
#pragma once

#include "../recurrence.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S, typename P = Packed<S>> struct Jordan {  // P: packed weights (lowp.h: Lowp)
  typedef typename VecOf<S>::type V;
  static constexpr int G = gate_count(Arch::jordan), kStates = 1, kRecords = 1, kGrads = 2;
  int64_t H, O;
  Act f, g;
  P Wyh;   // forward: W_yh (H, O) in unit blocks; backward: W_yh for da W_yh
  P Why;   // forward: W_hy (O, H) in unit blocks; backward: W_hy for do W_hy
  Buffer<S> b_hy;  // (O) zeros when absent

  Jordan(const CellConfig& c, const S* const* w, Pass pass)
      : H(c.H), O(c.O), f(c.f), g(c.g),
        Wyh(pass == Pass::forward ? pack_gates(w[0], 1, c.H, c.O) : Packed<S>(w[0], c.O, c.H, 1, c.O)),
        Why(pass == Pass::forward ? pack_gates(w[1], 1, c.O, c.H) : Packed<S>(w[1], c.H, c.O, 1, c.H)),
        b_hy(c.O) {
    copy_or_zero(b_hy.data(), w[2], O);
  }
  int64_t state_width(int) const { return O; }
  int64_t record_width(int) const { return H; }
  int64_t grad_width(int k) const { return k == 0 ? H : O; }
  int64_t blocks() const { return unit_blocks<S>(H > O ? H : O); }

  struct Work {
    Buffer<S> a;  // forward: (B, nb(H)*UB) y_{t-1} W_yh^T; backward: (B, H) dh = do W_hy
    Buffer<S> o;  // forward: (B, nb(O)*UB) h_t W_hy^T;     backward: (B, O) dy_{t-1}
    Work(const Jordan& c, int64_t B)
        : a(B * unit_blocks<S>(c.H) * Packed<S>::NR), o(B * unit_blocks<S>(c.O) * Packed<S>::NR) {}
  };

  void forward(const Step<S>& s, const ForwardIO<S>& io, Work& w) const {
    const auto x = rows(io.x);                            // (B, H)
    const auto a = blocked<const S>(w.a.data(), 1);    // (B, H) y_{t-1} W_yh^T
    const auto o = blocked<const S>(w.o.data(), 1);    // (B, O) h_t W_hy^T
    const auto h = rows(io.rec[0]), y_prev = rows(io.prev[0]), y = rows(io.next[0]);
    const auto out = rows(io.out);
    const auto b = vec<const S>(b_hy.data());
    s.product(H, io.prev[0], O, Wyh, w.a.data(), row_stride<S>(H, 1));
    s.each(H, [=](const Lanes<S>& l) { l.set(h, vactivate<S>(f, l(x) + l(a))); }, {{zero(h)}});
    s.sync();  // W_hy h_t reads every hidden unit
    s.product(O, io.rec[0], H, Why, w.o.data(), row_stride<S>(O, 1));
    s.each(O, [=](const Lanes<S>& l) {
      const V y_ = vactivate<S>(g, l(o) + l(b));
      l.set(y, y_);
      if (io.out) l.set(out, y_);
    }, {{copy(y, y_prev), zero(out)}});
    s.sync();  // the next step reads every unit of y_t
  }

  void backward(const Step<S>& s, const BackwardIO<S>& io, Work& w) const {
    const auto h = rows(io.rec[0]), y = rows(io.next[0]), d_out = rows(io.d_out);
    const auto dy = rows(io.d[0]), dys = rows(io.total[0]);
    const auto da = rows(io.grad[0]), d_o = rows(io.grad[1]), dh = rows(w.a.data());
    s.each(O, [=](const Lanes<S>& l) {
      const V dy_ = io.d_out ? l(dy) + l(d_out) : l(dy);
      if (io.total[0]) l.set(dys, dy_);
      l.set(d_o, grad_through<S>(g, l(y), dy_));
    }, {{zero(d_o), copy(dys, cview(dy))}});
    s.sync();  // do_t complete
    s.product(H, io.grad[1], O, Why, w.a.data(), H);  // dh = do W_hy
    s.each(H, [=](const Lanes<S>& l) { l.set(da, grad_through<S>(f, l(h), l(dh))); }, {{zero(da)}});
    s.sync();  // da_t complete
    s.product(O, io.grad[0], H, Wyh, w.o.data(), O);  // dy_{t-1} = da W_yh
    s.carry(O, io.d[0], w.o.data());
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
