// Layer normalisation's row statistics (SPEC.md section 15), shared by the layer-normalised
// cells (ln_lstm.h, ln_gru.h) and the input side of their layers (layer.h):
//   LN(v) = (v - mean(v)) rho,  rho = 1 / sqrt(var(v) + eps),  over the G*W values of one
//   batch row (W units in G gates).
// Every sum is in double, and a row's sums have one fixed order whatever the team size:
//   - a whole row on one thread: row_stats, two passes over the row in order;
//   - a row split over a team by unit blocks (as s.product and s.each split it): each
//     member reduces the blocks it owns into per-block partials (each_block), a barrier,
//     then every member combines a row's nb partials in block order (RowMoments, RowSums).
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

// v (n) becomes gamma LN(v) + beta (beta (n) or null); a whole row on one thread.
template <typename S> static inline void normalise_row(S* v, int64_t n, const S* gamma, const S* beta) {
  S mean, rho;
  row_stats(v, n, mean, rho);
  for (int64_t k = 0; k < n; ++k) v[k] = gamma[k] * ((v[k] - mean) * rho) + (beta ? beta[k] : S(0));
}

// ---- Rows split over a team by unit blocks -------------------------------------------------
// part: (B, nb, 3) doubles, one partial per row and unit block of a W-unit space.
constexpr int kPart = 3;

// fn(b, j0, j1, part_bk) for every active row b and every unit block this member owns in a
// space of W units; [j0, j1) are the block's units, part_bk its partial (kPart doubles).
template <typename S, class F> static inline void each_block(const Step<S>& s, int64_t W, double* part, const F& fn) {
  const UnitSlice u = s.units(W);
  const int64_t nb = unit_blocks<S>(W), UB = Packed<S>::NR;
  for (int64_t b = 0; b < s.B; ++b) {
    if (!active(s.lengths, b, s.t)) continue;
    for (int64_t k = u.first; k < u.last; ++k) {
      const int64_t j0 = k * UB, j1 = j0 + UB < W ? j0 + UB : W;
      fn(b, j0, j1, part + (b * nb + k) * kPart);
    }
  }
}

// A block's partial for the moments: (count, sum, sum of squared deviations from the
// block's mean), two passes over v(g, j) for g < G, j in [j0, j1).
template <class F> static inline void block_moments(int G, int64_t j0, int64_t j1, const F& v, double* part) {
  double sum = 0;
  for (int g = 0; g < G; ++g)
    for (int64_t j = j0; j < j1; ++j) sum += double(v(g, j));
  const double n = double(G * (j1 - j0)), m = sum / n;
  double sq = 0;
  for (int g = 0; g < G; ++g)
    for (int64_t j = j0; j < j1; ++j) sq += (double(v(g, j)) - m) * (double(v(g, j)) - m);
  part[0] = n;
  part[1] = sum;
  part[2] = sq;
}

// A block's partial for two plain sums: (count, sum of p(g, j).first, sum of .second).
template <class F> static inline void block_sums(int G, int64_t j0, int64_t j1, const F& p, double* part) {
  double s1 = 0, s2 = 0;
  for (int g = 0; g < G; ++g)
    for (int64_t j = j0; j < j1; ++j) {
      const auto v = p(g, j);
      s1 += double(v.first);
      s2 += double(v.second);
    }
  part[0] = double(G * (j1 - j0));
  part[1] = s1;
  part[2] = s2;
}

// One member's view of the rows' mean and rho, combined from the block partials in
// block order when a row is first asked for (s.each visits rows in order):
//   mean = sum_k sum_k / n,  var = sum_k (sq_k + n_k (mean_k - mean)^2) / n.
template <typename S> struct RowMoments {
  const double* part;
  int64_t nb;
  int64_t b = -1;
  S mean = 0, rho = 0;
  RowMoments(const double* p, int64_t nb_) : part(p), nb(nb_) {}
  void at(int64_t row) {
    if (row == b) return;
    b = row;
    const double* q = part + row * nb * kPart;
    double n = 0, sum = 0;
    for (int64_t k = 0; k < nb; ++k) {
      n += q[k * kPart];
      sum += q[k * kPart + 1];
    }
    const double m = sum / n;
    double sq = 0;
    for (int64_t k = 0; k < nb; ++k) {
      const double d = q[k * kPart + 1] / q[k * kPart] - m;
      sq += q[k * kPart + 2] + q[k * kPart] * d * d;
    }
    mean = S(m);
    rho = S(1.0 / std::sqrt(sq / n + kLayerNormEps));
  }
};

// The same for two plain sums: their means over the row, m1 and m2.
template <typename S> struct RowSums {
  const double* part;
  int64_t nb;
  int64_t b = -1;
  S m1 = 0, m2 = 0;
  RowSums(const double* p, int64_t nb_) : part(p), nb(nb_) {}
  void at(int64_t row) {
    if (row == b) return;
    b = row;
    const double* q = part + row * nb * kPart;
    double n = 0, s1 = 0, s2 = 0;
    for (int64_t k = 0; k < nb; ++k) {
      n += q[k * kPart];
      s1 += q[k * kPart + 1];
      s2 += q[k * kPart + 2];
    }
    m1 = S(s1 / n);
    m2 = S(s2 / n);
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
