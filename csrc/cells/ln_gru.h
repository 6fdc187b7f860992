// Layer-normalised GRU (SPEC.md section 15, haste's LayerNormGRU form), one time step; gate
// rows stacked r, z, n as torch.nn.GRU, reset after. The input side g_ih LN(W_ih x) + b_ih
// arrives in xw; the recurrent side is normalised here, over all 3H units of a row:
//   forward:   A = W_hh h_{t-1} (3H),  q = g_hh LN(A) + b_hh
//              r = s(xw_r + q_r),  z = s(xw_z + q_z),  n = tanh(xw_n + r q_n)
//              h_t = (1 - z) n + z h_{t-1}
//   backward, dh the total gradient reaching h_t:
//              da_n = dh (1-z)(1-n^2),  da_z = dh (h_{t-1} - n) z(1-z),  da_r = da_n q_n r(1-r)
//              dq = [da_r, da_z, da_n r],  dA = LN'(A)^T (g_hh dq)
//              dh_{t-1} = dh z + dA W_hh
// Threads as the layer-normalised LSTM (ln_lstm.h): units split over the team, each row's
// statistics reduced by unit blocks in a fixed order (ln_norm.h).
// state 0: h (H).  records: 0 activated gates r, z, n (3H), 1 A (3H, before its normalisation).
// grads: 0 da = dL/d xw (3H), 1 dA (3H).
// weights: W_hh (3H, H), gamma_hh (3H), b_hh (3H) or null.
#pragma once

#include "ln_norm.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

template <typename S, typename Pk = Packed<S>> struct LnGru {  // Pk: float weights only (Packed<S>)
  typedef typename VecOf<S>::type V;
  typedef VMath<S> M;
  static constexpr int G = gate_count(Arch::gru), kStates = 1, kRecords = 2, kGrads = 2;
  int64_t H;
  Packed<S> W;         // forward: W_hh (3H, H) in unit blocks; backward: W_hh for dA W_hh
  Buffer<S> gamma_hh;  // (3H)
  Buffer<S> b_hh;      // (3H) zeros when absent

  LnGru(const CellConfig& c, const S* const* w, Pass pass)
      : H(c.H), W(pass == Pass::forward ? pack_gates(w[0], 3, c.H, c.H) : Packed<S>(w[0], c.H, 3 * c.H, 1, c.H)),
        gamma_hh(3 * c.H), b_hh(3 * c.H) {
    copy_or_zero(gamma_hh.data(), w[1], 3 * H);
    copy_or_zero(b_hh.data(), w[2], 3 * H);
  }
  int64_t state_width(int) const { return H; }
  int64_t record_width(int) const { return 3 * H; }
  int64_t grad_width(int) const { return 3 * H; }
  int64_t blocks() const { return unit_blocks<S>(H); }

  struct Work {
    Buffer<S> a;               // forward: (B, nb*3*UB) A in unit blocks; backward: (B, H) dh_{t-1}
    Buffer<S> dq;              // backward: (B, 3H) dL/dq
    Buffer<double> pa, pq;     // (B, nb, kPart) block partials (ln_norm.h): of A; backward: of g_hh dq
    Work(const LnGru& c, int64_t B)
        : a(B * unit_blocks<S>(c.H) * 3 * Packed<S>::NR), dq(B * 3 * c.H), pa(B * unit_blocks<S>(c.H) * kPart),
          pq(B * unit_blocks<S>(c.H) * kPart) {}
  };

  void forward(const Step<S>& s, const ForwardIO<S>& io, Work& w) const {
    const int64_t nb = unit_blocks<S>(H);
    const auto x = rows(io.x, 3);                    // (B, 3H)
    const auto a = blocked<const S>(w.a.data(), 3);  // (B, 3H) A = h_{t-1} W_hh^T
    const auto h_prev = rows(io.prev[0]), h = rows(io.next[0]), out = rows(io.out);
    const auto gates = rows(io.rec[0], 3), raw = rows(io.rec[1], 3);
    const auto ghh = vec<const S>(gamma_hh.data(), 3), bhh = vec<const S>(b_hh.data(), 3);
    s.product(H, io.prev[0], H, W, w.a.data(), row_stride<S>(H, 3));
    unblock_moments(s, H, 3, w.a.data(), io.rec[1], w.pa.data());  // A into its record, and its moments
    s.sync();  // A's partials complete
    RowMoments<S> nA(w.pa.data(), nb);
    RowMoments<S>* const pA = &nA;
    s.each(H, [=](const Lanes<S>& l) {
      pA->at(l.b);
      const S mu = pA->mean, rho = pA->rho;
      V q[3];
      for (int g = 0; g < 3; ++g) q[g] = l(ghh, g) * ((l(a, g) - mu) * rho) + l(bhh, g);
      const V r_ = M::sigmoid(l(x, 0) + q[0]), z_ = M::sigmoid(l(x, 1) + q[1]);
      const V n_ = M::tanh(l(x, 2) + r_ * q[2]);
      const V h_ = (S(1) - z_) * n_ + z_ * l(h_prev);
      l.set(h, h_);
      l.set(gates, 0, r_);
      l.set(gates, 1, z_);
      l.set(gates, 2, n_);
      if (io.out) l.set(out, h_);
    }, {{copy(h, h_prev), zero(gates), zero(raw), zero(out)}});
    s.sync();
  }

  void backward(const Step<S>& s, const BackwardIO<S>& io, Work& w) const {
    const int64_t nb = unit_blocks<S>(H);
    const auto h_prev = rows(io.prev[0]), gates = rows(io.rec[0], 3), raw = rows(io.rec[1], 3);
    const auto d_out = rows(io.d_out), dh = rows(io.d[0]), dhs = rows(io.total[0]);
    const auto da = rows(io.grad[0], 3), dA = rows(io.grad[1], 3), dq = rows(w.dq.data(), 3);
    const auto dh_prev = rows(w.a.data());
    const auto ghh = vec<const S>(gamma_hh.data(), 3), bhh = vec<const S>(b_hh.data(), 3);
    record_moments(s, H, 3, io.rec[1], w.pa.data());
    s.sync();  // A's partials complete
    RowMoments<S> nA(w.pa.data(), nb);
    RowSums<S> sQ(w.pq.data(), nb);
    RowMoments<S>* const pA = &nA;
    RowSums<S>* const pQ = &sQ;
    s.each(H, [=](const Lanes<S>& l) {
      pA->at(l.b);
      const V dh_ = io.d_out ? l(dh) + l(d_out) : l(dh);
      if (io.total[0]) l.set(dhs, dh_);
      const V r_ = l(gates, 0), z_ = l(gates, 1), n_ = l(gates, 2);
      const V q_n = l(ghh, 2) * ((l(raw, 2) - pA->mean) * pA->rho) + l(bhh, 2);
      const V da_n = dh_ * (S(1) - z_) * (S(1) - n_ * n_);
      const V da_r = da_n * q_n * r_ * (S(1) - r_), da_z = dh_ * (l(h_prev) - n_) * z_ * (S(1) - z_);
      l.set(da, 0, da_r);
      l.set(da, 1, da_z);
      l.set(da, 2, da_n);
      l.set(dq, 0, da_r);
      l.set(dq, 1, da_z);
      l.set(dq, 2, da_n * r_);
      l.set(dh_prev, dh_ * z_);
    }, {{zero(da), zero(dq), zero(dh_prev), copy(dhs, cview(dh))}});
    grad_sums(s, H, 3, gamma_hh.data(), w.dq.data(), io.rec[1], pA, w.pq.data());  // mean(g_hh dq), mean(g_hh dq A^)
    s.sync();  // their partials complete
    s.each(H, [=](const Lanes<S>& l) {
      pA->at(l.b);
      pQ->at(l.b);
      const S mu = pA->mean, rho = pA->rho, m1 = pQ->m1, m2 = pQ->m2;
      for (int g = 0; g < 3; ++g) l.set(dA, g, rho * (l(ghh, g) * l(dq, g) - m1 - (l(raw, g) - mu) * rho * m2));
    }, {{zero(dA)}});
    s.sync();  // dA complete
    s.product(H, io.grad[1], 3 * H, W, w.a.data(), H, true);  // dh_{t-1} += dA W_hh
    s.carry(H, io.d[0], w.a.data());
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
