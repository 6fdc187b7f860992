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

#include <utility>

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

// The rows of a team-split (B, G*W) record in torch's gate order (the LN cells' record of
// A = W_hh h_{t-1}, or c_t with G = 1): the moments of each owned block into part.
template <typename S> static inline void record_moments(const Step<S>& s, int64_t W, int G, const S* rec, double* part) {
  each_block(s, W, part, [=](int64_t b, int64_t j0, int64_t j1, double* q) {
    const S* r = rec + b * G * W;
    block_moments(G, j0, j1, [=](int g, int64_t j) { return r[g * W + j]; }, q);
  });
}

// The same from a product in unit-block order (s.product with pack_gates weights, G gates
// of W units), which is copied into `rec` in torch's gate order on the way.
template <typename S> static inline void unblock_moments(const Step<S>& s, int64_t W, int G, const S* blocked, S* rec,
                                                        double* part) {
  const int64_t nb = unit_blocks<S>(W), UB = Packed<S>::NR;
  each_block(s, W, part, [=](int64_t b, int64_t j0, int64_t j1, double* q) {
    const S* blk = blocked + (b * nb + j0 / UB) * G * UB - j0;  // gate g of unit j at blk[g * UB + j]
    S* r = rec + b * G * W;
    for (int g = 0; g < G; ++g)
      for (int64_t j = j0; j < j1; ++j) r[g * W + j] = blk[g * UB + j];
    block_moments(G, j0, j1, [=](int g, int64_t j) { return blk[g * UB + j]; }, q);
  });
}

// The two sums LN'(v)^T (gamma d) needs, over row b's units: of gamma d and of gamma d v^,
// v^ = (v - mean) rho with the row's statistics `st` (ln_lstm.h's mean(d), mean(d v^)):
// per owned block into part, d and the record v (B, G*W) in torch's gate order, gamma (G*W)
// or null for ones.
template <typename S, class Stats>
static inline void grad_sums(const Step<S>& s, int64_t W, int G, const S* gamma, const S* d, const S* v, Stats* st,
                             double* part) {
  each_block(s, W, part, [=](int64_t b, int64_t j0, int64_t j1, double* q) {
    st->at(b);
    const S mu = st->mean, rho = st->rho;
    const S *db = d + b * G * W, *vb = v + b * G * W;
    block_sums(G, j0, j1, [=](int g, int64_t j) {
      const int64_t k = g * W + j;
      const S gd = gamma ? gamma[k] * db[k] : db[k];
      return std::make_pair(gd, gd * ((vb[k] - mu) * rho));
    }, q);
  });
}

// One member's view of a row's partials, combined again only when the row changes (s.each
// visits rows in order): next(b) is false for the row it holds, else it sums row b's block
// partials in block order into total[0..kPart) and keeps them in q.
struct RowPartials {
  const double* part;
  int64_t nb;
  int64_t b = -1;
  const double* q = nullptr;     // (nb, kPart) the row's block partials
  double total[kPart] = {0, 0, 0};
  RowPartials(const double* p, int64_t nb_) : part(p), nb(nb_) {}
  bool next(int64_t row) {
    if (row == b) return false;
    b = row;
    q = part + row * nb * kPart;
    for (int i = 0; i < kPart; ++i) total[i] = 0;
    for (int64_t k = 0; k < nb; ++k)
      for (int i = 0; i < kPart; ++i) total[i] += q[k * kPart + i];
    return true;
  }
};

// A row's mean and rho, from its block moments:
//   mean = sum_k sum_k / n,  var = sum_k (sq_k + n_k (mean_k - mean)^2) / n.
template <typename S> struct RowMoments : RowPartials {
  S mean = 0, rho = 0;
  using RowPartials::RowPartials;
  void at(int64_t row) {
    if (!next(row)) return;
    const double n = total[0], m = total[1] / n;
    double sq = 0;
    for (int64_t k = 0; k < nb; ++k) {
      const double d = q[k * kPart + 1] / q[k * kPart] - m;
      sq += q[k * kPart + 2] + q[k * kPart] * d * d;
    }
    mean = S(m);
    rho = S(1.0 / std::sqrt(sq / n + kLayerNormEps));
  }
};

// A row's two plain sums as means over the row, m1 and m2, from its block sums.
template <typename S> struct RowSums : RowPartials {
  S m1 = 0, m2 = 0;
  using RowPartials::RowPartials;
  void at(int64_t row) {
    if (!next(row)) return;
    m1 = S(total[1] / total[0]);
    m2 = S(total[2] / total[0]);
  }
};

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
