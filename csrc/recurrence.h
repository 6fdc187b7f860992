// The one time-loop skeleton every cell runs on: the sequence forward, the BPTT
// backward and the streaming step.
//
// A cell (csrc/cells/<cell>.h) writes one time step as a few phases, each
//     s.product(...)   C = A W^T for the unit blocks this thread owns (packed weights)
//     s.each(...)      the pointwise math on every lane chunk of those units
//     s.sync()         a barrier, where the next phase reads units of other threads
// and this file supplies everything around them: the walk over time (forward and
// reverse), batch rows, unit blocks owned by threads, SIMD lanes with the partial
// tail, rows past their length, and the thread team.
//
// Rows past their length (PackedSequence semantics, see rnnkit.h): `each` runs the
// cell's math only for active rows; for an inactive row it applies the phase's Hold
// list instead (a state carried, a gradient passed on, a record or output zeroed), and
// `carry` passes the state gradient of an inactive row through the step unchanged.
//
// A cell type C provides (S = float or double):
//   C(const CellConfig&, const S* const* weights, Pass)  packs the weights one pass needs
//   G, H                           gates stacked in W_ih (the width of xw is G*H), hidden size
//   kStates, kRecords, kGrads      how many of each buffer it uses (at most 2)
//   state_width(k), record_width(k), grad_width(k), blocks()
//   struct Work { Work(const C&, int64_t B); }            per-call scratch (no allocation
//                                                          inside the time loop)
//   forward(Step&, const ForwardIO&, Work&) const, backward(Step&, const BackwardIO&, Work&) const
// A cell object with its packed weights is the plan of one layer: a stack runner can
// hold one per layer and direction and chain them (stream.cpp does, one step
// at a time).
#pragma once

#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

// What a cell is built with; each cell reads the fields it needs.
struct CellConfig {
  int64_t H;         // hidden size
  int64_t O;         // Jordan output size
  Act f, g;          // Elman / Jordan hidden nonlinearity; Jordan output nonlinearity
  bool reset_after;  // GRU form
};

// Which pass a cell's packed weights are for (each packs only what its pass reads).
enum class Pass { forward, backward };

// ---- Views: where gate g of unit j of batch row b lives ----------------------------------
// A phase runs over a space of W hidden (or output) units in nb = ceil(W / UB) unit
// blocks; unit j is lane j % UB of block j / UB. The layout is a compile-time tag so that every view of a
// phase shares one index computation.
enum class Layout {
  rows,     // (B, G*W) gates stacked as torch does (G = 1: a plain (B, W) buffer)
  blocked,  // (B, nb*G*UB) unit-block order: the output of a product with pack_gates weights
  vec,      // (G*W) one vector for every row (a bias)
};
template <typename T, Layout K> struct View {
  T* p;
  int64_t G;
};
template <typename T> static inline View<T, Layout::rows> rows(T* p, int64_t G = 1) { return {p, G}; }
template <typename T> static inline View<T, Layout::blocked> blocked(T* p, int64_t G = 1) { return {p, G}; }
template <typename T> static inline View<T, Layout::vec> vec(T* p, int64_t G = 1) { return {p, G}; }
// The row stride of a blocked (B, nb*G*UB) buffer over W units.
template <typename S> static inline int64_t row_stride(int64_t W, int64_t G) { return unit_blocks<S>(W) * G * Packed<S>::NR; }
template <typename S, Layout K> static inline View<const S, K> cview(const View<S, K>& v) { return {v.p, v.G}; }

// ---- One chunk of n <= L lanes: units j .. j+n-1 of batch row b ---------------------------
template <typename S> struct Lanes {
  typedef typename VecOf<S>::type V;
  static constexpr int64_t UB = Packed<S>::NR;
  int64_t b, j;  // batch row, first unit
  int n;         // lanes in use (fewer than L only at the end of a row)
  int64_t W, nb; // the phase's units and unit blocks

  template <typename T, Layout K> RNNKIT_INLINE T* at(const View<T, K>& v, int64_t g = 0) const {
    if constexpr (K == Layout::rows) return v.p + (b * v.G + g) * W + j;
    if constexpr (K == Layout::blocked) return v.p + ((b * nb + j / UB) * v.G + g) * UB + j % UB;
    return v.p + g * W + j;
  }
  // Gate g of this chunk of view v.
  template <typename T, Layout K> RNNKIT_INLINE V operator()(const View<T, K>& v, int64_t g = 0) const {
    return ld(at(v, g), n);
  }
  template <Layout K> RNNKIT_INLINE void set(const View<S, K>& v, V x) const { st(at(v), x, n); }
  template <Layout K> RNNKIT_INLINE void set(const View<S, K>& v, int64_t g, V x) const { st(at(v, g), x, n); }
};

// What a phase leaves in an inactive row: `to` gets `from` (every gate), or zeros when
// from.p is null. Entries whose `to` is null are skipped (an optional output).
template <typename S> struct Keep {
  View<S, Layout::rows> to;
  View<const S, Layout::rows> from;
};
template <typename S> static inline Keep<S> zero(const View<S, Layout::rows>& to) { return {to, {nullptr, 1}}; }
template <typename S>
static inline Keep<S> copy(const View<S, Layout::rows>& to, const View<const S, Layout::rows>& from) {
  return {to, from};
}
template <typename S> struct Hold {
  Keep<S> k[4];
};

// ---- A team member's view of one time step ------------------------------------------------
template <typename S> struct Step {
  typedef typename VecOf<S>::type V;
  static constexpr int64_t L = sizeof(V) / sizeof(S), UB = Packed<S>::NR;
  int tid;
  mutable int nt;  // the team's size, read again at every barrier (it may shrink there)
  Barrier* barrier;
  int64_t B, t;
  const int64_t* lengths;  // (B) or null

  // The unit blocks this member owns in a space of W units.
  UnitSlice units(int64_t W) const { return unit_slice<S>(W, tid, nt); }

  // C (+)= A W^T (A: (B, K) rows lda apart) for the owned blocks of a W-unit space; W's
  // panels are grouped per unit block (pack_gates, or a transposed weight of W rows).
  template <class P>  // Packed<S>, or lowp.h's Lowp
  void product(int64_t units_W, const S* A, int64_t lda, const P& W, S* C, int64_t ldc,
               bool accumulate = false) const {
    const UnitSlice u = units(units_W);
    const int64_t per_block = W.panels / unit_blocks<S>(units_W);
    gemm_panels(B, A, lda, W, u.first * per_block, u.last * per_block, C, ldc, accumulate);
  }

  // fn(lanes) for every lane chunk of the owned units of each active row; inactive rows
  // get `hold` instead. Flattened: fn and all it calls are compiled into this loop.
  template <typename F> __attribute__((flatten)) void each(int64_t W, const F& fn_, const Hold<S>& hold = Hold<S>{}) const {
    const F fn = fn_;  // a local copy, which the compiler keeps in registers
    const UnitSlice u = units(W);
    const int64_t nb = unit_blocks<S>(W);
    for (int64_t b = 0; b < B; ++b) {
      const bool on = active(lengths, b, t);
      for (int64_t j = u.j_first; j < u.j_last; j += L) {  // a unit block holds whole chunks
        const Lanes<S> l{b, j, lanes_left<S>(u.j_last, j), W, nb};
        if (on) {
          fn(l);
          continue;
        }
        for (const Keep<S>& k : hold.k) {
          if (!k.to.p) continue;
          for (int64_t g = 0; g < k.to.G; ++g) l.set(k.to, g, k.from.p ? l(k.from, g) : V{});
        }
      }
    }
  }

  // Backward: the state gradient dst (B, W) of each active row becomes src for the owned
  // units; an inactive row's passes through the step unchanged.
  void carry(int64_t W, S* dst, const S* src) const {
    const UnitSlice u = units(W);
    for (int64_t b = 0; b < B; ++b)
      if (active(lengths, b, t))
        std::memcpy(dst + b * W + u.j_first, src + b * W + u.j_first, size_t(u.j_last - u.j_first) * sizeof(S));
  }

  void sync() const {
    barrier_wait(barrier);
    nt = barrier_team(barrier);
  }
  // Whether this member still has a share of the work (see barrier_team).
  bool in_team() const { return tid < nt; }
};

// ---- One step's buffers --------------------------------------------------------------------
// Which state / record / gradient is which is the cell's to say (see its header).
template <typename S> struct ForwardIO {
  const S* x;           // (B, G*H) input-side pre-activations W_ih x_t + biases, gates stacked
  const S* prev[2];     // (B, state_width(k)) states before the step
  S* next[2];           // (B, state_width(k)) out: states after the step
  S* rec[2];            // (B, record_width(k)) out: what the backward pass reads; null (inference,
                        // a cell with records_optional) skips those stores
  S* out;               // (B, state_width(0)) out: the output, zero in inactive rows; or null
  const S* keep = nullptr;  // recurrent dropout: (B, state_width(0)) h_{t-1} itself, while prev[0] is
                            // m h_{t-1} (what the W_hh product reads); read by a cell that masks itself
};
template <typename S> struct BackwardIO {
  const S* prev[2];     // (B, state_width(k)) states before the step
  const S* next[2];     // (B, state_width(k)) states after the step
  const S* rec[2];      // (B, record_width(k)) the forward pass's records
  const S* d_out;       // (B, state_width(0)) dL/d output of this step, or null
  S* d[2];              // (B, state_width(k)) in: dL/d state after the step; out: before it
  S* grad[2];           // (B, grad_width(k)) out: dL/d the step's pre-activations
  S* total[2];          // (B, state_width(k)) out: dL/d state after the step, or null
  const S* drop = nullptr;  // recurrent dropout: (B, state_width(0)) m, for a cell that masks itself
};

// Recurrent dropout (rnnkit.h, Regular): the skeleton gives a cell m h_{t-1} as its previous
// state 0 and multiplies the cell's dh_{t-1} by m, which is right for a cell whose state 0
// enters nothing but the W_hh product (Elman, LSTM, Jordan). A cell that reads h_{t-1}
// elsewhere too (the GRU's update) says so here and takes ForwardIO::keep and
// BackwardIO::drop instead.
template <class Cell> struct masks_itself {
  static constexpr bool value = false;
};

// Whether the cell's forward reads none of its own records (they are for the backward
// pass alone), so that a forward no backward follows may give null ForwardIO::rec and
// save the stores. Jordan's record is its hidden layer, which its second product reads.
template <class Cell> struct records_optional {
  static constexpr bool value = false;
};

template <class Cell> static inline int64_t max_width(const Cell& c) {
  int64_t w = 1;
  for (int k = 0; k < Cell::kStates; ++k) w = c.state_width(k) > w ? c.state_width(k) : w;
  return w;
}

// ---- Whole sequences -----------------------------------------------------------------------
// Forward over T steps. xw (T, B, G*H) gate-major; states[k] (T+1, B, state_width(k)) with
// states[k][0] = init[k] (null: zeros); records[k] (T, B, record_width(k)); out (T, B,
// state_width(0)) or null.
template <class Cell, typename S>
static void sequence_forward(const Cell& cell, int64_t T, int64_t B, const int64_t* lengths, const S* xw,
                             const S* const* init, S* const* states, S* const* records, S* out, int nthreads,
                             const Regular<S>& reg = Regular<S>{}) {
  typedef typename VecOf<S>::type V;
  const int64_t GH = Cell::G * cell.H, W0 = cell.state_width(0);
  for (int k = 0; k < Cell::kStates; ++k) copy_or_zero(states[k], init[k], B * cell.state_width(k));
  typename Cell::Work work(cell, B);
  Buffer<S> hm(reg.drop ? B * W0 : 1);  // (B, W0) m * state 0 before the step, for the product
  auto body = [&](int tid, int nt, Barrier* barrier) {
    Step<S> s{tid, nt, barrier, B, 0, lengths};
    for (int64_t t = 0; t < T; ++t) {
      s.t = t;
      S* out_t = out ? out + t * B * W0 : nullptr;
      ForwardIO<S> io{xw + t * B * GH, {}, {}, {}, reg.zone[0] ? nullptr : out_t};
      for (int k = 0; k < Cell::kStates; ++k) {
        const int64_t W = B * cell.state_width(k);
        io.prev[k] = states[k] + t * W;
        io.next[k] = reg.zone[k] ? reg.raw[k] + t * W : states[k] + (t + 1) * W;
      }
      for (int k = 0; k < Cell::kRecords; ++k) io.rec[k] = records[k] + t * B * cell.record_width(k);
      if (reg.drop) {  // the cell sees m h_{t-1} (an inactive row: h_{t-1}, which it carries)
        const auto hp = rows(io.prev[0]), m = rows(reg.drop), dst = rows(hm.data());
        s.each(W0, [=](const Lanes<S>& l) { l.set(dst, l(hp) * l(m)); }, {{copy(dst, hp)}});
        s.sync();
        if (masks_itself<Cell>::value) io.keep = io.prev[0];
        io.prev[0] = hm.data();
      }
      cell.forward(s, io, work);
      if (reg.zone[0] || reg.zone[1]) {  // s_t = z s_{t-1} + (1 - z) s~_t
        for (int k = 0; k < Cell::kStates; ++k) {
          if (!reg.zone[k]) continue;
          const int64_t W = B * cell.state_width(k);
          const auto p = rows(states[k] + t * W), r = rows<const S>(reg.raw[k] + t * W);
          const auto z = rows(reg.zone[k] + t * W), n = rows(states[k] + (t + 1) * W);
          const auto o = rows(k == 0 ? out_t : nullptr);
          s.each(cell.state_width(k), [=](const Lanes<S>& l) {
            const V z_ = l(z), v = z_ * l(p) + (S(1) - z_) * l(r);
            l.set(n, v);
            if (o.p) l.set(o, v);
          }, {{copy(n, cview(p)), zero(o)}});
        }
        s.sync();  // the next step reads every unit of s_t
      }
      if (!s.in_team()) return;
    }
  };
  run_team(team_size(nthreads, cell.blocks()), body, true);  // the loop above leaves a shrunk team
}

// Backward through time, t = T-1 .. 0. states / records as the forward wrote them;
// d_out (T, B, state_width(0)) or null; d_final[k] (B, state_width(k)) dL/d final state
// or null; grads[k] (T, B, grad_width(k)) out; d_init[k] (B, state_width(k)) out;
// totals[k] (T, B, state_width(k)) out or null; grads[k] may be null for a gradient the
// cell does not use in this configuration (the LSTM's dr without a projection).
template <class Cell, typename S>
static void sequence_backward(const Cell& cell, int64_t T, int64_t B, const int64_t* lengths,
                              const S* const* states, const S* const* records, const S* d_out,
                              const S* const* d_final, S* const* grads, S* const* d_init, S* const* totals,
                              int nthreads, const Regular<S>& reg = Regular<S>{}) {
  typedef typename VecOf<S>::type V;
  Buffer<S> d0(B * cell.state_width(0)), d1(Cell::kStates > 1 ? B * cell.state_width(1) : 1);
  S* d[2] = {d0.data(), d1.data()};
  for (int k = 0; k < Cell::kStates; ++k) copy_or_zero(d[k], d_final[k], B * cell.state_width(k));
  typename Cell::Work work(cell, B);
  // zoneout: z dL/ds_t, which reaches s_{t-1} directly (B, state_width(k))
  Buffer<S> kept0(reg.zone[0] ? B * cell.state_width(0) : 1), kept1(reg.zone[1] ? B * cell.state_width(1) : 1);
  S* kept[2] = {kept0.data(), kept1.data()};
  auto body = [&](int tid, int nt, Barrier* barrier) {
    Step<S> s{tid, nt, barrier, B, 0, lengths};
    for (int64_t t = T - 1; t >= 0; --t) {
      s.t = t;
      BackwardIO<S> io{{}, {}, {}, d_out ? d_out + t * B * cell.state_width(0) : nullptr, {d[0], d[1]}, {}, {}};
      for (int k = 0; k < Cell::kStates; ++k) {
        const int64_t W = B * cell.state_width(k);
        io.prev[k] = states[k] + t * W;
        io.next[k] = reg.zone[k] ? reg.raw[k] + t * W : states[k] + (t + 1) * W;
        io.total[k] = totals[k] ? totals[k] + t * W : nullptr;
      }
      for (int k = 0; k < Cell::kRecords; ++k) io.rec[k] = records[k] + t * B * cell.record_width(k);
      for (int k = 0; k < Cell::kGrads; ++k) io.grad[k] = grads[k] ? grads[k] + t * B * cell.grad_width(k) : nullptr;
      if (reg.zone[0] || reg.zone[1]) {  // ds = total dL/ds_t: z ds goes to s_{t-1}, (1 - z) ds to s~_t
        for (int k = 0; k < Cell::kStates; ++k) {
          if (!reg.zone[k]) continue;
          const int64_t W = B * cell.state_width(k);
          const auto dk = rows(d[k]), dir = rows(kept[k]), z = rows(reg.zone[k] + t * W);
          const auto dout = rows(k == 0 ? io.d_out : nullptr), tot = rows(io.total[k]);
          s.each(cell.state_width(k), [=](const Lanes<S>& l) {
            const V g = dout.p ? l(dk) + l(dout) : l(dk), z_ = l(z);
            if (tot.p) l.set(tot, g);
            l.set(dir, z_ * g);
            l.set(dk, (S(1) - z_) * g);
          }, {{copy(tot, cview(dk)), zero(dir)}});
          io.total[k] = nullptr;
          if (k == 0) io.d_out = nullptr;
        }
        s.sync();
      }
      const bool own = masks_itself<Cell>::value;
      if (own) io.drop = reg.drop;
      cell.backward(s, io, work);
      if ((reg.drop && !own) || reg.zone[0] || reg.zone[1]) {  // ds_{t-1} = m (cell's) + z ds_t
        s.sync();
        for (int k = 0; k < Cell::kStates; ++k) {
          const S* m = k == 0 && !own ? reg.drop : nullptr;
          if (!m && !reg.zone[k]) continue;
          const auto dk = rows(d[k]), dir = rows<const S>(reg.zone[k] ? kept[k] : nullptr), mv = rows(m);
          s.each(cell.state_width(k), [=](const Lanes<S>& l) {
            V g = l(dk);
            if (mv.p) g = g * l(mv);
            if (dir.p) g = g + l(dir);
            l.set(dk, g);
          });
        }
        s.sync();
      }
      if (!s.in_team()) return;
    }
  };
  run_team(team_size(nthreads, cell.blocks()), body, true);  // the loop above leaves a shrunk team
  for (int k = 0; k < Cell::kStates; ++k)
    std::memcpy(d_init[k], d[k], size_t(B * cell.state_width(k)) * sizeof(S));
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
