// LSTM (SPEC.md section 3), one time step; gate rows stacked i, f, g, o as torch.nn.LSTM.
//   forward:   [i f g o] = [s s tanh s](xw_t + W_hh h_{t-1})
//              c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)
//   backward (section 5), dc arriving from t+1:
//              dc   = dc + dh o (1 - tanh^2 c_t)
//              da_i = dc g i(1-i),  da_f = dc c_{t-1} f(1-f),  da_g = dc i (1-g^2),
//              da_o = dh tanh(c_t) o(1-o),  dc_{t-1} = dc f,  dh_{t-1} = da W_hh
// peepholes (SPEC section 13), p = (p_i, p_f, p_o) when given:
//   forward:   i, f see + p_i c_{t-1}, + p_f c_{t-1};  o sees + p_o c_t
//   backward:  dc += da_o p_o;  dc_{t-1} = dc f + da_i p_i + da_f p_f
// projection (LSTMP, SPEC section 14), P = CellConfig::O > 0 with W_hr (P, H):
//   forward:   m_t = o tanh(c_t) as above (H units), a sync, then h_t = W_hr m_t (P units)
//   backward:  dr = dh (P units), a sync, then dm = dr W_hr takes dh's place in the gate
//              math above (H units); dh_{t-1} = da W_hh runs over the P units
// K = P if projected, else H (the width of h).
// states: 0 h (K), 1 c (H).  record 0: activated gates i, f, g, o (4H), not stored when null.
// grads: 0 da (4H), 1 dr = dL/dh_t through the projection (P; absent when P = 0).
// weights: W_hh (4H, K), p (3H) or null, W_hr (P, H) or null.
#pragma once

#include "../recurrence.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S, typename Pk = Packed<S>> struct Lstm {  // Pk: packed weights (lowp.h: Lowp)
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  static constexpr int G = gate_count(Arch::lstm), kStates = 2, kRecords = 1, kGrads = 2;
  int64_t H, P, K;  // hidden units, projection size (0: none), width of h
  Pk W;          // forward: W_hh (4H, K) in unit blocks; backward: W_hh for da W_hh
  bool peep;     // peephole weights given
  Buffer<S> p;   // (3H) p_i, p_f, p_o; zeros when absent
  Pk Wr;         // forward: W_hr (P, H) in unit blocks; backward: W_hr for dr W_hr (empty when P = 0)

  Lstm(const CellConfig& c, const S* const* w, Pass pass)
      : H(c.H), P(w[2] ? c.O : 0), K(P ? P : H),
        W(pass == Pass::forward ? pack_gates(w[0], 4, c.H, K) : Packed<S>(w[0], K, 4 * c.H, 1, K)),
        peep(w[1] != nullptr), p(3 * c.H),
        Wr(!P ? Packed<S>(w[0], 0, 0, 0, 1) : pass == Pass::forward ? pack_gates(w[2], 1, P, c.H)
                                                  : Packed<S>(w[2], c.H, P, 1, c.H)) {
    copy_or_zero(p.data(), w[1], 3 * H);
  }
  int64_t state_width(int k) const { return k == 0 ? K : H; }
  int64_t record_width(int) const { return 4 * H; }
  int64_t grad_width(int k) const { return k == 0 ? 4 * H : P; }
  int64_t blocks() const { return unit_blocks<S>(H > P ? H : P); }

  struct Work {
    Buffer<S> a;  // forward: (B, NP) h_{t-1} W_hh^T in unit blocks; backward: (B, H) da W_hh, or dm
    Buffer<S> m;  // projected: (B, H) m_t = o tanh(c_t)
    Buffer<S> r;  // projected: forward (B, nb(P)*UB) m_t W_hr^T in unit blocks; backward (B, P) da W_hh
    Work(const Lstm& c, int64_t B)
        : a(B * unit_blocks<S>(c.H) * 4 * Packed<S>::NR), m(c.P ? B * c.H : 1),
          r(c.P ? B * unit_blocks<S>(c.P) * Packed<S>::NR : 1) {}
  };

  void forward(const Step<S>& s, const ForwardIO<S>& io, Work& w) const {
    const auto x = rows(io.x, 4);                       // (B, 4H)
    const auto a = blocked<const S>(w.a.data(), 4);  // (B, 4H) h_{t-1} W_hh^T
    const auto h_prev = rows(io.prev[0]), c_prev = rows(io.prev[1]);
    const auto h = rows(io.next[0]), c = rows(io.next[1]), gates = rows(io.rec[0], 4), out = rows(io.out);
    const auto pv = vec<const S>(p.data(), 3);
    const bool peep_ = peep, proj = P > 0;
    const auto m = rows(w.m.data());
    s.product(H, io.prev[0], K, W, w.a.data(), row_stride<S>(H, 4));
    s.each(H, [=](const Lanes<S>& l) {
      V ai = l(x, 0) + l(a, 0), af = l(x, 1) + l(a, 1), ao = l(x, 3) + l(a, 3);
      if (peep_) {
        const V cp = l(c_prev);
        ai += l(pv, 0) * cp;
        af += l(pv, 1) * cp;
      }
      const V i_ = M::sigmoid(ai);
      const V f_ = M::sigmoid(af);
      const V g_ = M::tanh(l(x, 2) + l(a, 2));
      const V c_ = f_ * l(c_prev) + i_ * g_;
      if (peep_) ao += l(pv, 2) * c_;
      const V o_ = M::sigmoid(ao);
      const V h_ = o_ * M::tanh(c_);  // m_t when projected
      l.set(c, c_);
      if (gates.p) {  // null in inference (records_optional)
        l.set(gates, 0, i_);
        l.set(gates, 1, f_);
        l.set(gates, 2, g_);
        l.set(gates, 3, o_);
      }
      if (proj) {
        l.set(m, h_);
        return;
      }
      l.set(h, h_);
      if (io.out) l.set(out, h_);
    }, proj ? Hold<S>{{copy(c, c_prev), zero(gates), zero(m)}}
            : Hold<S>{{copy(h, h_prev), copy(c, c_prev), zero(gates), zero(out)}});
    s.sync();  // the next step (or the projection) reads every unit
    if (!proj) return;
    const auto r = blocked<const S>(w.r.data(), 1);  // (B, P) m_t W_hr^T
    s.product(P, w.m.data(), H, Wr, w.r.data(), row_stride<S>(P, 1));
    s.each(P, [=](const Lanes<S>& l) {
      l.set(h, l(r));
      if (io.out) l.set(out, l(r));
    }, {{copy(h, h_prev), zero(out)}});
    s.sync();  // the next step reads every unit of h_t
  }

  void backward(const Step<S>& s, const BackwardIO<S>& io, Work& w) const {
    const auto c_prev = rows(io.prev[1]), c = rows(io.next[1]), gates = rows(io.rec[0], 4);
    const auto d_out = rows(io.d_out), dh = rows(io.d[0]), dc = rows(io.d[1]);
    const auto da = rows(io.grad[0], 4), dhs = rows(io.total[0]), dcs = rows(io.total[1]);
    const auto pv = vec<const S>(p.data(), 3);
    const bool peep_ = peep, proj = P > 0;
    const auto dm = rows<const S>(w.a.data());
    if (proj) {  // dr = dh (h_t = W_hr m_t is linear), then dm = dr W_hr
      const auto dr = rows(io.grad[1]);
      s.each(P, [=](const Lanes<S>& l) {
        const V dh_ = io.d_out ? l(dh) + l(d_out) : l(dh);
        if (io.total[0]) l.set(dhs, dh_);
        l.set(dr, dh_);
      }, {{zero(dr), copy(dhs, cview(dh))}});
      s.sync();  // dr_t complete
      s.product(H, io.grad[1], P, Wr, w.a.data(), H);  // dm for the owned units, read by them alone
    }
    s.each(H, [=](const Lanes<S>& l) {
      const V dh_ = proj ? l(dm) : io.d_out ? l(dh) + l(d_out) : l(dh);
      const V i_ = l(gates, 0), f_ = l(gates, 1), g_ = l(gates, 2), o_ = l(gates, 3);
      const V tc = M::tanh(l(c));
      const V da_o = dh_ * tc * o_ * (S(1) - o_);
      V dc_ = l(dc) + dh_ * o_ * (S(1) - tc * tc);
      if (peep_) dc_ += da_o * l(pv, 2);
      const V da_i = dc_ * g_ * i_ * (S(1) - i_), da_f = dc_ * l(c_prev) * f_ * (S(1) - f_);
      l.set(da, 0, da_i);
      l.set(da, 1, da_f);
      l.set(da, 2, dc_ * i_ * (S(1) - g_ * g_));
      l.set(da, 3, da_o);
      if (io.total[0] && !proj) l.set(dhs, dh_);
      if (io.total[1]) l.set(dcs, dc_);
      l.set(dc, peep_ ? dc_ * f_ + da_i * l(pv, 0) + da_f * l(pv, 1) : dc_ * f_);
    }, proj ? Hold<S>{{zero(da), copy(dcs, cview(dc))}}
            : Hold<S>{{zero(da), copy(dhs, cview(dh)), copy(dcs, cview(dc))}});
    s.sync();  // da_t complete
    S* dh_prev = proj ? w.r.data() : w.a.data();
    s.product(K, io.grad[0], 4 * H, W, dh_prev, K);  // dh_{t-1} = da_t W_hh
    s.carry(K, io.d[0], dh_prev);
  }
};

template <typename S, typename Pk> struct records_optional<Lstm<S, Pk>> {
  static constexpr bool value = true;
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
