// Layer-normalised LSTM (SPEC.md section 15, haste's LayerNormLSTM form), one time step;
// gate rows stacked i, f, g, o as torch.nn.LSTM. LN(v) = (v - mean(v)) / sqrt(var(v) + eps)
// over one batch row's units; the input side LN_x(W_ih x) gamma_ih + biases arrives in xw
// (normalised by the layer: rnnkit.functional, or layer.h for the stream and the stack).
//   forward:   A = W_hh h_{t-1} (4H),  v = xw_t + gamma_hh LN(A)
//              [i f g o] = [s s tanh s](v),  c_t = f c_{t-1} + i g
//              y = gamma_c LN(c_t) + beta_c,  h_t = o tanh(y)
//   backward, dc arriving from t+1 and dh the total gradient reaching h_t:
//              dy = dh o (1 - tanh^2 y),  dc = dc + LN'(c_t)^T (gamma_c dy)
//              dv = [dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dh tanh(y) o(1-o)]
//              dA = LN'(A)^T (gamma_hh dv),  dc_{t-1} = dc f,  dh_{t-1} = dA W_hh
//   with LN'(u)^T d = rho (d - mean(d) - u^ mean(d u^)), u^ = LN(u), rho = 1 / sqrt(var + eps).
// The units are split over the team as in the plain LSTM; every normalisation reduces a
// whole row, by unit blocks in a fixed order (ln_norm.h), a barrier before its result is
// read: the same sums for any thread count.
// states: 0 h (H), 1 c (H).  records: 0 activated gates i, f, g, o (4H), 1 A = W_hh h_{t-1}
// (4H, before its normalisation).  grads: 0 dv (4H), 1 dA (4H).
// weights: W_hh (4H, H), gamma_hh (4H), gamma_c (H), beta_c (H).
#pragma once

#include "ln_norm.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S, typename Pk = Packed<S>> struct LnLstm {  // Pk: float weights only (Packed<S>)
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  static constexpr int G = gate_count(Arch::lstm), kStates = 2, kRecords = 2, kGrads = 2;
  int64_t H;
  Packed<S> W;           // forward: W_hh (4H, H) in unit blocks; backward: W_hh for dA W_hh
  Buffer<S> gamma_hh;    // (4H)
  Buffer<S> gamma_c, beta_c;  // (H) each

  LnLstm(const CellConfig& c, const S* const* w, Pass pass)
      : H(c.H), W(pass == Pass::forward ? pack_gates(w[0], 4, c.H, c.H) : Packed<S>(w[0], c.H, 4 * c.H, 1, c.H)),
        gamma_hh(4 * c.H), gamma_c(c.H), beta_c(c.H) {
    copy_or_zero(gamma_hh.data(), w[1], 4 * H);
    copy_or_zero(gamma_c.data(), w[2], H);
    copy_or_zero(beta_c.data(), w[3], H);
  }
  int64_t state_width(int) const { return H; }
  int64_t record_width(int) const { return 4 * H; }
  int64_t grad_width(int) const { return 4 * H; }
  int64_t blocks() const { return unit_blocks<S>(H); }

  struct Work {
    Buffer<S> a;  // forward: (B, nb*4*UB) A in unit blocks; backward: (B, H) dA W_hh
    Buffer<S> d;  // backward: (B, H) gamma_c dy
    // (B, nb, kPart) block partials (ln_norm.h): of A, of c_t; backward: of gamma_c dy, of gamma_hh dv
    Buffer<double> pa, pc, py, pv;
    Work(const LnLstm& c, int64_t B)
        : a(B * unit_blocks<S>(c.H) * 4 * Packed<S>::NR), d(B * c.H), pa(B * unit_blocks<S>(c.H) * kPart),
          pc(B * unit_blocks<S>(c.H) * kPart), py(B * unit_blocks<S>(c.H) * kPart),
          pv(B * unit_blocks<S>(c.H) * kPart) {}
  };

  void forward(const Step<S>& s, const ForwardIO<S>& io, Work& w) const {
    const int64_t nb = unit_blocks<S>(H);
    const auto x = rows(io.x, 4);                    // (B, 4H) LN_x(W_ih x_t) gamma_ih + biases
    const auto a = blocked<const S>(w.a.data(), 4);  // (B, 4H) A = h_{t-1} W_hh^T
    const auto c_prev = rows(io.prev[1]), h_prev = rows(io.prev[0]);
    const auto h = rows(io.next[0]), c = rows(io.next[1]), gates = rows(io.rec[0], 4), raw = rows(io.rec[1], 4);
    const auto out = rows(io.out);
    const auto ghh = vec<const S>(gamma_hh.data(), 4), gc = vec<const S>(gamma_c.data()), bc = vec<const S>(beta_c.data());
    s.product(H, io.prev[0], H, W, w.a.data(), row_stride<S>(H, 4));
    unblock_moments(s, H, 4, w.a.data(), io.rec[1], w.pa.data());  // A into its record, and its moments
    s.sync();  // A's partials complete
    RowMoments<S> nA(w.pa.data(), nb), nC(w.pc.data(), nb);
    RowMoments<S>*const pA = &nA, *const pC = &nC;
    s.each(H, [=](const Lanes<S>& l) {
      pA->at(l.b);
      const S mu = pA->mean, rho = pA->rho;
      V v[4];
      for (int g = 0; g < 4; ++g) v[g] = l(x, g) + l(ghh, g) * ((l(a, g) - mu) * rho);
      const V i_ = M::sigmoid(v[0]), f_ = M::sigmoid(v[1]), g_ = M::tanh(v[2]), o_ = M::sigmoid(v[3]);
      l.set(c, f_ * l(c_prev) + i_ * g_);
      l.set(gates, 0, i_);
      l.set(gates, 1, f_);
      l.set(gates, 2, g_);
      l.set(gates, 3, o_);
    }, {{copy(c, c_prev), zero(gates), zero(raw)}});
    record_moments(s, H, 1, io.next[1], w.pc.data());
    s.sync();  // c_t's partials complete
    s.each(H, [=](const Lanes<S>& l) {
      pC->at(l.b);
      const V y = l(gc) * ((l(c) - pC->mean) * pC->rho) + l(bc);
      const V h_ = l(gates, 3) * M::tanh(y);
      l.set(h, h_);
      if (io.out) l.set(out, h_);
    }, {{copy(h, h_prev), zero(out)}});
    s.sync();
  }

  void backward(const Step<S>& s, const BackwardIO<S>& io, Work& w) const {
    const int64_t nb = unit_blocks<S>(H);
    const auto c_prev = rows(io.prev[1]), c = rows(io.next[1]), gates = rows(io.rec[0], 4);
    const auto raw = rows(io.rec[1], 4);
    const auto d_out = rows(io.d_out), dh = rows(io.d[0]), dc = rows(io.d[1]);
    const auto dv = rows(io.grad[0], 4), dA = rows(io.grad[1], 4), dhs = rows(io.total[0]), dcs = rows(io.total[1]);
    const auto dyg = rows(w.d.data());  // gamma_c dy
    const auto ghh = vec<const S>(gamma_hh.data(), 4), gc = vec<const S>(gamma_c.data()), bc = vec<const S>(beta_c.data());
    // The statistics of c_t and of A, again from the forward's states and records.
    record_moments(s, H, 1, io.next[1], w.pc.data());
    record_moments(s, H, 4, io.rec[1], w.pa.data());
    s.sync();  // their partials complete
    RowMoments<S> nA(w.pa.data(), nb), nC(w.pc.data(), nb);
    RowSums<S> sY(w.py.data(), nb), sV(w.pv.data(), nb);
    RowMoments<S>*const pA = &nA, *const pC = &nC;
    RowSums<S>*const pY = &sY, *const pV = &sV;
    s.each(H, [=](const Lanes<S>& l) {
      pC->at(l.b);
      const V dh_ = io.d_out ? l(dh) + l(d_out) : l(dh);
      if (io.total[0]) l.set(dhs, dh_);
      const V ch = (l(c) - pC->mean) * pC->rho;
      const V ty = M::tanh(l(gc) * ch + l(bc)), o_ = l(gates, 3);
      l.set(dyg, l(gc) * (dh_ * o_ * (S(1) - ty * ty)));
    }, {{zero(dyg), copy(dhs, cview(dh))}});
    grad_sums(s, H, 1, (const S*)nullptr, w.d.data(), io.next[1], pC, w.py.data());  // mean(gamma_c dy), mean(gamma_c dy c^)
    s.sync();  // their partials complete
    s.each(H, [=](const Lanes<S>& l) {
      pC->at(l.b);
      pY->at(l.b);
      const S mu = pC->mean, rho = pC->rho, m1 = pY->m1, m2 = pY->m2;
      const V dh_ = io.d_out ? l(dh) + l(d_out) : l(dh);
      const V ch = (l(c) - mu) * rho;
      const V ty = M::tanh(l(gc) * ch + l(bc));
      const V i_ = l(gates, 0), f_ = l(gates, 1), g_ = l(gates, 2), o_ = l(gates, 3);
      const V dc_ = l(dc) + rho * (l(dyg) - m1 - ch * m2);
      l.set(dv, 0, dc_ * g_ * i_ * (S(1) - i_));
      l.set(dv, 1, dc_ * l(c_prev) * f_ * (S(1) - f_));
      l.set(dv, 2, dc_ * i_ * (S(1) - g_ * g_));
      l.set(dv, 3, dh_ * ty * o_ * (S(1) - o_));
      if (io.total[1]) l.set(dcs, dc_);
      l.set(dc, dc_ * f_);
    }, {{zero(dv), copy(dcs, cview(dc))}});
    // The recurrent normalisation: mean(gamma_hh dv) and mean(gamma_hh dv A^)
    grad_sums(s, H, 4, gamma_hh.data(), io.grad[0], io.rec[1], pA, w.pv.data());
    s.sync();  // their partials complete
    s.each(H, [=](const Lanes<S>& l) {
      pA->at(l.b);
      pV->at(l.b);
      const S mu = pA->mean, rho = pA->rho, m1 = pV->m1, m2 = pV->m2;
      for (int g = 0; g < 4; ++g) l.set(dA, g, rho * (l(ghh, g) * l(dv, g) - m1 - (l(raw, g) - mu) * rho * m2));
    }, {{zero(dA)}});
    s.sync();  // dA complete
    s.product(H, io.grad[1], 4 * H, W, w.a.data(), H);  // dh_{t-1} = dA W_hh
    s.carry(H, io.d[0], w.a.data());
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
