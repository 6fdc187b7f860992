// Streaming: a stack of unidirectional layers advanced one time step per call, for
// online inference (audio, sensors, generation). Weights are packed once, when the
// stream is made; states live in the stream, double-buffered so that every thread
// reads the whole previous state while the new one is written.
//
// Per layer and step (x: the layer's input, (B, I); h: its state, (B, H)):
//   Elman   h' = f(W_ih x + W_hh h + b)
//   LSTM    [i f g o] = act(W_ih x + W_hh h + b),  c' = f c + i g,  h' = o tanh(c')
//   GRU     reset_after / reset_before as in gru.cpp
//   Jordan  h = f(W_ih x + W_yh y + b_ih + b_yh),  y' = g(W_hy h + b_hy)
#include "kernel_common.h"

namespace rnnkit {
namespace RNNKIT_ISA_NS {

namespace {

template <typename S> struct Layer {
  int arch;  // 0 Elman, 1 LSTM, 2 GRU, 3 Jordan
  Act f, g;
  bool reset_after;
  int64_t B, I, H, O, G, nb, NP;
  Packed<S>* w_x = nullptr;   // input product, gate-block order (Jordan: W_ih)
  Packed<S>* w_h = nullptr;   // recurrent product on h (GRU reset_before: r, z rows only; Jordan: W_yh)
  Packed<S>* w_n = nullptr;   // GRU reset_before: W_hn; Jordan: W_hy
  Buffer<S> bias, b_hn, b_out;  // combined input-side bias (G*H); GRU reset_after b_hn (H); Jordan b_hy (O)
  Buffer<S> ax, ah, an, u;      // scratch
  Buffer<S> h0, h1, c;          // state double buffer (B, H or O for Jordan), LSTM cell state
  Buffer<S> hid;                // Jordan hidden layer (B, H)
  S* cur;
  S* next;

  Layer(int arch_, Act f_, Act g_, bool reset_after_, int64_t B_, int64_t I_, int64_t H_, int64_t O_,
        const S* const* p)
      : arch(arch_), f(f_), g(g_), reset_after(reset_after_), B(B_), I(I_), H(H_), O(O_),
        G(arch_ == 1 ? 4 : arch_ == 2 ? 3 : 1), nb(unit_blocks<S>(H_)), NP(nb * G * Packed<S>::NR),
        bias(G * H_), b_hn(H_), b_out(O_ > 0 ? O_ : 1), ax(B_ * NP), ah(B_ * NP), an(B_ * nb * Packed<S>::NR),
        u(B_ * H_), h0(B_ * (arch_ == 3 ? O_ : H_)), h1(B_ * (arch_ == 3 ? O_ : H_)), c(B_ * H_), hid(B_ * H_) {
    cur = h0.data();
    next = h1.data();
    if (arch == 3) {  // p: w_ih, w_yh, w_hy, b_ih, b_yh, b_hy
      w_x = new Packed<S>(pack_gates(p[0], 1, H, I));
      w_h = new Packed<S>(pack_gates(p[1], 1, H, O));
      w_n = new Packed<S>(p[2], O, H, H, 1);
      for (int64_t j = 0; j < H; ++j) bias[j] = (p[3] ? p[3][j] : S(0)) + (p[4] ? p[4][j] : S(0));
      for (int64_t j = 0; j < O; ++j) b_out[j] = p[5] ? p[5][j] : S(0);
      return;
    }
    // p: w_ih (G*H, I), w_hh (G*H, H), b_ih (G*H) or null, b_hh (G*H) or null
    w_x = new Packed<S>(pack_gates(p[0], G, H, I));
    const bool split_n = arch == 2 && !reset_after;
    w_h = new Packed<S>(pack_gates(p[1], split_n ? 2 : G, H, H));
    if (split_n) w_n = new Packed<S>(pack_gates(p[1] + 2 * H * H, 1, H, H));
    for (int64_t k = 0; k < G * H; ++k) {
      const bool inside_reset = arch == 2 && reset_after && k >= 2 * H;  // b_hn stays inside r * (.)
      bias[k] = (p[2] ? p[2][k] : S(0)) + (p[3] && !inside_reset ? p[3][k] : S(0));
      if (inside_reset) b_hn[k - 2 * H] = p[3] ? p[3][k] : S(0);
    }
  }
  ~Layer() {
    delete w_x;
    delete w_h;
    delete w_n;
  }
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  int64_t out_width() const { return arch == 3 ? O : H; }

  // One step for the units [first, last) (unit blocks) of this layer; `in` is (B, I).
  void step(const S* in, int64_t first, int64_t last, Barrier* barrier) {
    typedef typename VecOf<S>::type V;
    typedef VMath<S> M;
    constexpr int64_t L = sizeof(V) / sizeof(S), UB = Packed<S>::NR;
    if (arch == 3) {  // Jordan: run by a team of one (see Stream::step)
      gemm_packed(B, in, I, *w_x, ax.data(), NP, false);
      gemm_packed(B, cur, O, *w_h, ax.data(), NP, true);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; j += L) {
          const int n = lanes_left<S>(H, j);
          st(hid.data() + b * H + j, vactivate<S>(f, ld(ax.data() + b * NP + j, n) + ld(bias.data() + j, n)), n);
        }
      gemm_packed(B, hid.data(), H, *w_n, next, O, false);
      for (int64_t k = 0; k < B * O; ++k) next[k] = activate(g, next[k] + b_out[k % O]);
      return;
    }
    const bool split_n = arch == 2 && !reset_after;
    const int64_t GH = split_n ? 2 : G;  // gates in the product on h
    gemm_panels(B, in, I, *w_x, first * G, last * G, ax.data(), NP, false);
    gemm_panels(B, cur, H, *w_h, first * GH, last * GH, ah.data(), nb * GH * UB, false);
    if (split_n) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t j0 = blk * UB, width = H - j0 < UB ? H - j0 : UB;
          const S* xr = ax.data() + b * NP + blk * G * UB;
          const S* hr = ah.data() + b * nb * GH * UB + blk * GH * UB;
          for (int64_t jj = 0; jj < width; jj += L) {
            const int n = lanes_left<S>(width, jj);
            const int64_t j = j0 + jj;
            const V r_ = M::sigmoid(ld(xr + jj, n) + ld(hr + jj, n) + ld(bias.data() + j, n));
            st(u.data() + b * H + j, r_ * ld(cur + b * H + j, n), n);
          }
        }
      barrier_wait(barrier);  // u complete
      gemm_panels(B, u.data(), H, *w_n, first, last, an.data(), nb * UB, false);
    }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t j0 = blk * UB, width = H - j0 < UB ? H - j0 : UB;
        const S* xr = ax.data() + b * NP + blk * G * UB;            // gate q of unit jj at xr[q*UB+jj]
        const S* hr = ah.data() + b * nb * GH * UB + blk * GH * UB;  // likewise for the h product
        for (int64_t jj = 0; jj < width; jj += L) {
          const int n = lanes_left<S>(width, jj);
          const int64_t j = j0 + jj, k = b * H + j;
          auto pre = [&](int q) { return ld(xr + q * UB + jj, n) + ld(bias.data() + q * H + j, n); };
          if (arch == 0) {
            st(next + k, vactivate<S>(f, pre(0) + ld(hr + jj, n)), n);
          } else if (arch == 1) {
            const V i_ = M::sigmoid(pre(0) + ld(hr + jj, n));
            const V f_ = M::sigmoid(pre(1) + ld(hr + UB + jj, n));
            const V g_ = M::tanh(pre(2) + ld(hr + 2 * UB + jj, n));
            const V o_ = M::sigmoid(pre(3) + ld(hr + 3 * UB + jj, n));
            const V c_ = f_ * ld(c.data() + k, n) + i_ * g_;
            st(c.data() + k, c_, n);
            st(next + k, o_ * M::tanh(c_), n);
          } else {
            const V r_ = M::sigmoid(pre(0) + ld(hr + jj, n));
            const V z_ = M::sigmoid(pre(1) + ld(hr + UB + jj, n));
            const V hp = ld(cur + k, n);
            if (reset_after) {
              const V n_ = M::tanh(pre(2) + r_ * (ld(hr + 2 * UB + jj, n) + ld(b_hn.data() + j, n)));
              st(next + k, (S(1) - z_) * n_ + z_ * hp, n);
            } else {
              const V n_ = M::tanh(pre(2) + ld(an.data() + b * nb * UB + j, n));
              st(next + k, (S(1) - z_) * hp + z_ * n_, n);
            }
          }
        }
      }
  }
};

template <typename S> class Stream final : public StreamBase {
 public:
  Stream(int arch, Act f, Act g, bool reset_after, int64_t B, int64_t layers, const int64_t* sizes,
         const void* const* params)
      : B_(B), n_(layers), layers_(static_cast<Layer<S>**>(std::calloc(size_t(layers), sizeof(void*)))) {
    if (!layers_) throw std::bad_alloc();
    for (int64_t l = 0; l < layers; ++l)
      layers_[l] = new Layer<S>(arch, f, g, reset_after, B, sizes[3 * l], sizes[3 * l + 1], sizes[3 * l + 2],
                                reinterpret_cast<const S* const*>(params + 6 * l));
  }
  ~Stream() override {
    for (int64_t l = 0; l < n_; ++l) delete layers_[l];
    std::free(layers_);
  }

  void step(const void* x, void* y, int nthreads) override {
    const int64_t blocks = layers_[0]->nb;
    const int nt = layers_[0]->arch == 3 ? 1 : team_size(nthreads, blocks);
    auto body = [&](int tid, int n, Barrier* barrier) {
      const S* in = static_cast<const S*>(x);
      for (int64_t l = 0; l < n_; ++l) {
        Layer<S>& layer = *layers_[l];
        const Range units = share(layer.nb, tid, n);
        layer.step(in, units.first, units.last, barrier);
        barrier_wait(barrier);  // the next layer reads every unit
        in = layer.next;
      }
    };
    run_team(nt, body);
    for (int64_t l = 0; l < n_; ++l) {
      Layer<S>& layer = *layers_[l];
      S* t = layer.cur;
      layer.cur = layer.next;
      layer.next = t;
    }
    const Layer<S>& top = *layers_[n_ - 1];
    std::memcpy(y, top.cur, size_t(B_ * top.out_width()) * sizeof(S));
  }

  void* state(int64_t layer, int which) override {
    Layer<S>& l = *layers_[layer];
    return which == 1 ? static_cast<void*>(l.c.data()) : static_cast<void*>(l.cur);
  }

 private:
  int64_t B_, n_;
  Layer<S>** layers_;
};

}  // namespace

StreamBase* make_stream(bool dbl, int arch, Act f, Act g, bool reset_after, int64_t B, int64_t layers,
                        const int64_t* sizes, const void* const* params) {
  if (dbl) return new Stream<double>(arch, f, g, reset_after, B, layers, sizes, params);
  return new Stream<float>(arch, f, g, reset_after, B, layers, sizes, params);
}

}  // namespace RNNKIT_ISA_NS
}  // namespace rnnkit
