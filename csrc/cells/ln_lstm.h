// Layer-normalised LSTM (SPEC.md section 15, haste's LayerNormLSTM form), one time step;
// gate rows stacked i, f, g, o as torch.nn.LSTM. LN(v) = (v - mean(v)) / sqrt(var(v) + eps)
// over one batch row's units; the input side LN_x(W_ih x) arrives normalised in xw.
//   forward:   A = W_hh h_{t-1} (4H),  v = xw_t + gamma_hh LN(A)
//              [i f g o] = [s s tanh s](v),  c_t = f c_{t-1} + i g
//              y = gamma_c LN(c_t) + beta_c,  h_t = o tanh(y)
//   backward, dc arriving from t+1 and dh the total gradient reaching h_t:
//              dy = dh o (1 - tanh^2 y),  dc = dc + LN'(c_t)^T (gamma_c dy)
//              dv = [dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dh tanh(y) o(1-o)]
//              dA = LN'(A)^T (gamma_hh dv),  dc_{t-1} = dc f,  dh_{t-1} = dA W_hh
//   with LN'(u)^T d = rho (d - mean(d) - u^ mean(d u^)), u^ = LN(u), rho = 1 / sqrt(var + eps).
// Every normalisation reduces over all units of a row, so the cell runs on one thread
// (blocks() = 1): its sums have one fixed order, the same for any thread count asked for.
// states: 0 h (H), 1 c (H).  records: 0 activated gates i, f, g, o (4H), 1 A = W_hh h_{t-1}
// (4H, before its normalisation).  grads: 0 dv (4H), 1 dA (4H).
// weights: W_hh (4H, H), gamma_hh (4H), gamma_c (H), beta_c (H).
#pragma once

#include "../recurrence.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// The eps of torch.nn.functional.layer_norm, which rnnkit.reference uses.
constexpr double kLayerNormEps = 1e-5;

// mean and rho = 1 / sqrt(var + eps) of the n values p[0..n) (two passes, in order; the
// sums in double, so that a float32 row of thousands of units loses nothing to them).
template <typename S> static inline void row_stats(const S* p, int64_t n, S& mean, S& rho) {
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += p[k];
  const double m = sum / double(n);
  double sq = 0;
  for (int64_t k = 0; k < n; ++k) sq += (p[k] - m) * (p[k] - m);
  mean = S(m);
  rho = S(1.0 / std::sqrt(sq / double(n) + kLayerNormEps));
}

template <typename S> struct LnLstm {
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
  int64_t blocks() const { return 1; }  // one thread (see above)

  struct Work {
    Buffer<S> a;     // forward: (B, nb*4*UB) A in unit blocks; backward: (B, H) dA W_hh
    Buffer<S> d;     // backward: (B, H) gamma_c dy
    Buffer<S> stat;  // (B, 4) mean and rho of A, of c_t (forward); of c_t, (backward: of gamma_c dy terms)
    Work(const LnLstm& c, int64_t B)
        : a(B * unit_blocks<S>(c.H) * 4 * Packed<S>::NR), d(B * c.H), stat(B * 4) {}
  };

  void forward(const Step<S>& s, const ForwardIO<S>& io, Work& w) const {
    const int64_t nb = unit_blocks<S>(H), UB = Packed<S>::NR;
    const auto x = rows(io.x, 4);                    // (B, 4H) LN_x(W_ih x_t) gamma_ih + biases
    const auto a = blocked<const S>(w.a.data(), 4);  // (B, 4H) A = h_{t-1} W_hh^T
    const auto c_prev = rows(io.prev[1]), h_prev = rows(io.prev[0]);
    const auto h = rows(io.next[0]), c = rows(io.next[1]), gates = rows(io.rec[0], 4), raw = rows(io.rec[1], 4);
    const auto out = rows(io.out);
    const auto ghh = vec<const S>(gamma_hh.data(), 4), gc = vec<const S>(gamma_c.data()), bc = vec<const S>(beta_c.data());
    S* stat = w.stat.data();
    s.product(H, io.prev[0], H, W, w.a.data(), row_stride<S>(H, 4));
    for (int64_t b = 0; b < s.B; ++b) {  // A's row in torch's gate order, then its mean and rho
      if (!active(s.lengths, b, s.t)) continue;
      S* r = io.rec[1] + b * 4 * H;
      for (int64_t g = 0; g < 4; ++g)
        for (int64_t j = 0; j < H; ++j) r[g * H + j] = w.a[((b * nb + j / UB) * 4 + g) * UB + j % UB];
      row_stats(r, 4 * H, stat[4 * b], stat[4 * b + 1]);
    }
    s.each(H, [=](const Lanes<S>& l) {
      const S mu = stat[4 * l.b], rho = stat[4 * l.b + 1];
      V v[4];
      for (int g = 0; g < 4; ++g) v[g] = l(x, g) + l(ghh, g) * ((l(a, g) - mu) * rho);
      const V i_ = M::sigmoid(v[0]), f_ = M::sigmoid(v[1]), g_ = M::tanh(v[2]), o_ = M::sigmoid(v[3]);
      l.set(c, f_ * l(c_prev) + i_ * g_);
      l.set(gates, 0, i_);
      l.set(gates, 1, f_);
      l.set(gates, 2, g_);
      l.set(gates, 3, o_);
    }, {{copy(c, c_prev), zero(gates), zero(raw)}});
    for (int64_t b = 0; b < s.B; ++b)
      if (active(s.lengths, b, s.t)) row_stats(io.next[1] + b * H, H, stat[4 * b + 2], stat[4 * b + 3]);
    s.each(H, [=](const Lanes<S>& l) {
      const S mu = stat[4 * l.b + 2], rho = stat[4 * l.b + 3];
      const V y = l(gc) * ((l(c) - mu) * rho) + l(bc);
      const V h_ = l(gates, 3) * M::tanh(y);
      l.set(h, h_);
      if (io.out) l.set(out, h_);
    }, {{copy(h, h_prev), zero(out)}});
    s.sync();
  }

  void backward(const Step<S>& s, const BackwardIO<S>& io, Work& w) const {
    const auto c_prev = rows(io.prev[1]), c = rows(io.next[1]), gates = rows(io.rec[0], 4);
    const auto raw = rows(io.rec[1], 4);
    const auto d_out = rows(io.d_out), dh = rows(io.d[0]), dc = rows(io.d[1]);
    const auto dv = rows(io.grad[0], 4), dA = rows(io.grad[1], 4), dhs = rows(io.total[0]), dcs = rows(io.total[1]);
    const auto dyg = rows(w.d.data());  // gamma_c dy
    const auto ghh = vec<const S>(gamma_hh.data(), 4), gc = vec<const S>(gamma_c.data()), bc = vec<const S>(beta_c.data());
    S* stat = w.stat.data();
    const int64_t H_ = H;
    // stat: 0 mean, 1 rho of c_t; 2 mean(gamma_c dy), 3 mean(gamma_c dy c^)
    for (int64_t b = 0; b < s.B; ++b)
      if (active(s.lengths, b, s.t)) row_stats(io.next[1] + b * H, H, stat[4 * b], stat[4 * b + 1]);
    s.each(H, [=](const Lanes<S>& l) {
      const V dh_ = io.d_out ? l(dh) + l(d_out) : l(dh);
      if (io.total[0]) l.set(dhs, dh_);
      const V ch = (l(c) - stat[4 * l.b]) * stat[4 * l.b + 1];
      const V ty = M::tanh(l(gc) * ch + l(bc)), o_ = l(gates, 3);
      l.set(dyg, l(gc) * (dh_ * o_ * (S(1) - ty * ty)));
    }, {{zero(dyg), copy(dhs, cview(dh))}});
    for (int64_t b = 0; b < s.B; ++b) {
      if (!active(s.lengths, b, s.t)) continue;
      const S* d = w.d.data() + b * H;
      const S* cb = io.next[1] + b * H;
      double m1 = 0, m2 = 0;  // in double, as row_stats
      for (int64_t j = 0; j < H; ++j) {
        m1 += d[j];
        m2 += d[j] * ((cb[j] - stat[4 * b]) * stat[4 * b + 1]);
      }
      stat[4 * b + 2] = S(m1 / double(H_));
      stat[4 * b + 3] = S(m2 / double(H_));
    }
    s.each(H, [=](const Lanes<S>& l) {
      const S mu = stat[4 * l.b], rho = stat[4 * l.b + 1], m1 = stat[4 * l.b + 2], m2 = stat[4 * l.b + 3];
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
    // The recurrent normalisation: stat 0, 1 now mean and rho of A; 2 mean(gamma_hh dv), 3 mean(gamma_hh dv A^)
    for (int64_t b = 0; b < s.B; ++b) {
      if (!active(s.lengths, b, s.t)) continue;
      const S* r = io.rec[1] + b * 4 * H;
      const S* d = io.grad[0] + b * 4 * H;
      row_stats(r, 4 * H, stat[4 * b], stat[4 * b + 1]);
      double m1 = 0, m2 = 0;
      for (int64_t k = 0; k < 4 * H; ++k) {
        const S gd = gamma_hh.data()[k] * d[k];
        m1 += gd;
        m2 += gd * ((r[k] - stat[4 * b]) * stat[4 * b + 1]);
      }
      stat[4 * b + 2] = S(m1 / double(4 * H_));
      stat[4 * b + 3] = S(m2 / double(4 * H_));
    }
    s.each(H, [=](const Lanes<S>& l) {
      const S mu = stat[4 * l.b], rho = stat[4 * l.b + 1], m1 = stat[4 * l.b + 2], m2 = stat[4 * l.b + 3];
      for (int g = 0; g < 4; ++g) l.set(dA, g, rho * (l(ghh, g) * l(dv, g) - m1 - (l(raw, g) - mu) * rho * m2));
    }, {{zero(dA)}});
    s.sync();
    s.product(H, io.grad[1], 4 * H, W, w.a.data(), H);  // dh_{t-1} = dA W_hh
    s.carry(H, io.d[0], w.a.data());
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
