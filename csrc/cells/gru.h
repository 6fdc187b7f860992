// GRU (SPEC.md section 4), one time step; gate rows stacked r, z, n as torch.nn.GRU.
//
// reset_after (torch / cuDNN form), with q = W_hn h_{t-1} + b_hn:
//   r = s(xw_r + W_hr h),  z = s(xw_z + W_hz h),  n = tanh(xw_n + r q)
//   h_t = (1 - z) n + z h_{t-1}
// backward: dz = dh (h_prev - n), dn = dh (1 - z), da_n = dn (1 - n^2),
//   dr = da_n q, da_r = dr r(1-r), da_z = dz z(1-z),
//   hidden-side n gradient da_hn = da_n r,
//   dh_prev = dh z + [da_r, da_z, da_hn] W_hh.
//
// reset_before (the seeds' form), with u = r h_{t-1}: two phases per step, since
// W_hn u reads u of every unit:
//   n = tanh(xw_n + W_hn u),  h_t = (1 - z) h_{t-1} + z n
// backward: dz = dh (n - h_prev), dn = dh z, da_n = dn (1 - n^2),
//   du = da_n W_hn,  dr = du h_prev,  da_r = dr r(1-r),  da_z = dz z(1-z),
//   dh_prev = dh (1 - z) + du r + [da_r, da_z] W_h[rz].
//
// recurrent dropout (SPEC section 16), m: the products read m h_{t-1} (prev[0]; u = r m h_{t-1}),
// the update reads h_{t-1} itself (ForwardIO::keep); backward, the product terms of dh_{t-1}
// (and du r) are multiplied by m, the update's term is not.
//
// state 0: h (H).  records: 0 activated gates r, z, n (3H); 1 the hidden-side n term q
// (reset_after: W_hn h_prev + b_hn; reset_before: u) (H); neither stored when null.  grads: 0 da, input-side
// pre-activations (3H); 1 da_hn, the gradient of the hidden-side n term (H).
// weights: W_hh (3H, H), b_hn (H) or null (reset_after only).
#pragma once

#include "../recurrence.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S, typename P = Packed<S>> struct Gru {  // P: packed weights (lowp.h: Lowp)
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  static constexpr int G = gate_count(Arch::gru), kStates = 1, kRecords = 2, kGrads = 2;
  int64_t H;
  bool reset_after;
  int GR;          // gates in the product on h_prev: r, z (, n when reset_after)
  P W;     // forward: those rows in unit blocks; backward: W_h[rz] for [da_r, da_z] W_h[rz]
  P Wn;    // forward, reset_before: W_hn in unit blocks; backward: W_hn for da_hn W_hn
  Buffer<S> b_hn;  // (H) zeros when absent

  Gru(const CellConfig& c, const S* const* w, Pass pass)
      : H(c.H), reset_after(c.reset_after), GR(c.reset_after ? 3 : 2),
        W(pass == Pass::forward ? pack_gates(w[0], GR, H, H) : Packed<S>(w[0], H, 2 * H, 1, H)),
        Wn(pass == Pass::forward ? pack_gates(w[0] + 2 * H * H, reset_after ? 0 : 1, H, H)
                                 : Packed<S>(w[0] + 2 * H * H, H, H, 1, H)),
        b_hn(H) {
    copy_or_zero(b_hn.data(), w[1], H);
  }
  int64_t state_width(int) const { return H; }
  int64_t record_width(int k) const { return k == 0 ? 3 * H : H; }
  int64_t grad_width(int k) const { return k == 0 ? 3 * H : H; }
  int64_t blocks() const { return unit_blocks<S>(H); }

  struct Work {
    Buffer<S> a;   // forward: (B, NP) h_{t-1} W_h[rz(n)]^T in unit blocks; backward: (B, H) dh_{t-1}
    Buffer<S> an;  // forward, reset_before: (B, nb*UB) W_hn u; backward: (B, H) du
    Buffer<S> u;   // forward, reset_before: (B, H) u = r h_{t-1}
    Buffer<S> kept;  // backward with recurrent dropout: (B, H) the update's term of dh_{t-1}
    Work(const Gru& c, int64_t B)
        : a(B * unit_blocks<S>(c.H) * 3 * Packed<S>::NR), an(B * unit_blocks<S>(c.H) * Packed<S>::NR),
          u(c.reset_after ? 1 : B * c.H), kept(B * c.H) {}
  };

  void forward(const Step<S>& s, const ForwardIO<S>& io, Work& w) const {
    const auto x = rows(io.x, 3);                        // (B, 3H)
    const auto a = blocked<const S>(w.a.data(), GR);  // (B, GR*H) h_{t-1} W_h[rz(n)]^T
    const auto an = blocked<const S>(w.an.data(), 1);  // (B, H) reset_before: W_hn u
    const auto h_prev = rows(io.prev[0]), h = rows(io.next[0]), out = rows(io.out);
    const auto h_keep = rows(io.keep ? io.keep : io.prev[0]);  // the update's h_{t-1}
    const auto gates = rows(io.rec[0], 3), q = rows(io.rec[1]), u = rows(w.u.data());
    const auto bn = vec<const S>(b_hn.data());
    s.product(H, io.prev[0], H, W, w.a.data(), row_stride<S>(H, GR));
    if (!reset_after) {
      s.each(H, [=](const Lanes<S>& l) { l.set(u, M::sigmoid(l(x, 0) + l(a, 0)) * l(h_prev)); });
      s.sync();  // u complete
      s.product(H, w.u.data(), H, Wn, w.an.data(), row_stride<S>(H, 1));
    }
    s.each(H, [=](const Lanes<S>& l) {
      const V r_ = M::sigmoid(l(x, 0) + l(a, 0));
      const V z_ = M::sigmoid(l(x, 1) + l(a, 1));
      const V hp = l(h_keep);
      V n_, h_;
      if (reset_after) {
        const V q_ = l(a, 2) + l(bn);
        n_ = M::tanh(l(x, 2) + r_ * q_);
        h_ = (S(1) - z_) * n_ + z_ * hp;
        if (q.p) l.set(q, q_);
      } else {
        n_ = M::tanh(l(x, 2) + l(an));
        h_ = (S(1) - z_) * hp + z_ * n_;
        if (q.p) l.set(q, l(u));
      }
      l.set(h, h_);
      if (gates.p) {  // null in inference (records_optional)
        l.set(gates, 0, r_);
        l.set(gates, 1, z_);
        l.set(gates, 2, n_);
      }
      if (io.out) l.set(out, h_);
    }, {{copy(h, h_keep), zero(gates), zero(q), zero(out)}});
    s.sync();  // the next step reads every unit of h_t
  }

  void backward(const Step<S>& s, const BackwardIO<S>& io, Work& w) const {
    const auto h_prev = rows(io.prev[0]), gates = rows(io.rec[0], 3), q = rows(io.rec[1]);
    const auto d_out = rows(io.d_out), dh = rows(io.d[0]), dhs = rows(io.total[0]);
    const auto da = rows(io.grad[0], 3), dq = rows(io.grad[1]);
    const auto dh_prev = rows(w.a.data()), du = rows(w.an.data());
    const auto m = rows(io.drop), kept = rows(w.kept.data());
    // with recurrent dropout the update's term of dh_{t-1} waits in `kept`, dh_prev gathers m's terms
    const auto direct = io.drop ? kept : dh_prev;
    s.each(H, [=](const Lanes<S>& l) {
      const V dh_ = io.d_out ? l(dh) + l(d_out) : l(dh);
      if (io.total[0]) l.set(dhs, dh_);
      const V r_ = l(gates, 0), z_ = l(gates, 1), n_ = l(gates, 2), hp = l(h_prev);
      if (reset_after) {
        const V da_n = dh_ * (S(1) - z_) * (S(1) - n_ * n_);
        l.set(da, 0, da_n * l(q) * r_ * (S(1) - r_));
        l.set(da, 1, dh_ * (hp - n_) * z_ * (S(1) - z_));
        l.set(da, 2, da_n);
        l.set(dq, da_n * r_);
        l.set(direct, dh_ * z_);
      } else {
        const V da_n = dh_ * z_ * (S(1) - n_ * n_);
        l.set(da, 1, dh_ * (n_ - hp) * z_ * (S(1) - z_));
        l.set(da, 2, da_n);
        l.set(dq, da_n);
        l.set(direct, dh_ * (S(1) - z_));
      }
      if (m.p) l.set(dh_prev, V{});
    }, {{zero(da), zero(dq), zero(dh_prev), copy(dhs, cview(dh))}});
    s.sync();  // da_t (r, z, n for reset_after; z, n otherwise) and da_hn complete
    if (reset_after) {
      s.product(H, io.grad[1], H, Wn, w.a.data(), H, true);  // dh_{t-1} += da_hn W_hn
    } else {
      s.product(H, io.grad[1], H, Wn, w.an.data(), H);  // du = da_n W_hn
      s.each(H, [=](const Lanes<S>& l) {
        const V r_ = l(gates, 0), du_ = l(du), hm = m.p ? l(h_prev) * l(m) : l(h_prev);
        l.set(da, 0, du_ * hm * r_ * (S(1) - r_));
        l.set(dh_prev, l(dh_prev) + du_ * r_);
      });
      s.sync();  // da_r complete
    }
    s.product(H, io.grad[0], 3 * H, W, w.a.data(), H, true);  // dh_{t-1} += [da_r, da_z] W_h[rz]
    if (m.p)  // dh_{t-1} = m (the products' terms) + the update's term; the same units as the products
      s.each(H, [=](const Lanes<S>& l) { l.set(dh_prev, l(dh_prev) * l(m) + l(kept)); });
    s.carry(H, io.d[0], w.a.data());
  }
};

template <typename S> struct masks_itself<Gru<S>> {
  static constexpr bool value = true;
};
template <typename S, typename P> struct records_optional<Gru<S, P>> {
  static constexpr bool value = true;
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
