// rnnkit C++ core: the sequential part of every forward and backward pass.
//
// Framework-agnostic: raw, C-contiguous buffers, sizes as int64_t, no Python and
// no PyTorch headers. The binding (bindings.cpp) checks shapes, allocates outputs,
// releases the GIL and calls these functions.
//
// Shape letters, used the same way everywhere:
//   T  time steps          B  batch size        H  hidden size
//   O  Jordan output size  G  number of gates (Elman 1, LSTM 4, GRU 3, Jordan 1)
//
// Division of labour (SPEC.md section 5). The caller does, as single large matrix
// products, the input projection for all steps before the call
//     xw = x W_ih^T + biases                                  (T, B, G*H)
// and, after the backward call, the weight and input gradients for all steps
//     dW_ih = da^T x,  dW_hh = da^T h_prev,  dx = da W_ih,  db = sum(da).
// The core does only the recurrence: per step one product with W_hh (packed once
// per call), the gate nonlinearities and the state update; backward walks time in
// reverse doing the element-wise chain rule and the dh_{t-1} = da_t W_hh recursion.
//
// Per-sequence lengths (PackedSequence semantics): `lengths` is null or points to B
// values in [1, T]. At step t >= lengths[b] row b is inactive: its state is carried
// unchanged, its output is zero, its recorded gates are zero, and in backward its
// state gradient passes straight through (da = 0).
//
// Every function exists for the scalar type S = float and double and is compiled once
// per instruction set (see dispatch.cpp); all scratch memory is allocated per call,
// outside the time loop; there is no global mutable state. Each cell's math lives once,
// in csrc/cells/<cell>.h, run by the one time-loop skeleton of csrc/recurrence.h for
// the sequence kernels (sequence.cpp) and the streaming step (stream.cpp).
#pragma once

#include <cstdint>

namespace rnnkit {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

// Elementwise nonlinearities, shared by the Elman and Jordan layers.
enum class Act : int { identity = 0, tanh = 1, relu = 2, sigmoid = 3 };

// The cells (csrc/cells/<cell>.h). The binding exports these three enums to Python
// (rnnkit._core.Isa / Act / Arch); no code outside this header spells their numbers.
enum class Arch : int { elman = 0, lstm = 1, gru = 2, jordan = 3 };
// Gate rows stacked in W_ih / W_hh: Elman 1, LSTM 4 (i, f, g, o), GRU 3 (r, z, n), Jordan 1.
constexpr int gate_count(Arch a) { return a == Arch::lstm ? 4 : a == Arch::gru ? 3 : 1; }

// Best instruction set this CPU and this build support.
Isa best_isa();
// Whether `isa` is compiled in and supported by this CPU.
bool isa_supported(Isa isa);

// Training-time regularisers of a sequence kernel (SPEC section 16), each pointer null
// when unused (a default-constructed Regular: the plain recurrence, bit for bit). The
// skeleton (recurrence.h) applies them around any cell's step; state k is h (Jordan: y)
// for k = 0 and the LSTM's c for k = 1.
//   zoneout of state k: s_t = z s_{t-1} + (1 - z) s~_t, s~_t the cell's new state
//   recurrent dropout: the W_hh product reads m h_{t-1} (Elman, LSTM, Jordan)
template <typename S> struct Regular {
  const S* zone[2] = {nullptr, nullptr};  // (T, B, state width) z in [0, 1], or null
  S* raw[2] = {nullptr, nullptr};          // (T, B, state width) s~_t: forward out, backward in
  const S* drop = nullptr;                 // (B, state width of h) m, or null
};

// ---------------------------------------------------------------------------------
// Kernel API. Each entry is declared once per ISA namespace by RNNKIT_DECLARE_KERNELS
// and dispatched by the rnnkit::<name>(Isa, ...) wrappers in dispatch.cpp.
// `nthreads` is the number of worker threads for the per-step products (>= 1).
// ---------------------------------------------------------------------------------
#define RNNKIT_DECLARE_KERNELS(S)                                                      \
  /* Elman: h_t = f(xw_t + W_hh h_{t-1}).                                          */ \
  void elman_forward(int64_t T, int64_t B, int64_t H, Act f,                          \
                     const S* xw,      /* (T, B, H)   W_ih x_t + b_ih + b_hh       */ \
                     const S* w_hh,    /* (H, H)                                   */ \
                     const S* h0,      /* (B, H)      or null for zeros            */ \
                     const int64_t* lengths, /* (B) or null                        */ \
                     S* hs,            /* (T+1, B, H) out: states, hs[0] = h0      */ \
                     S* out,           /* (T, B, H)   out: masked outputs, or null */ \
                     int nthreads, const Regular<S>& reg);                                                   \
  void elman_backward(int64_t T, int64_t B, int64_t H, Act f,                         \
                      const S* w_hh,   /* (H, H)                                   */ \
                      const S* hs,     /* (T+1, B, H) from forward                 */ \
                      const int64_t* lengths,                                         \
                      const S* d_out,  /* (T, B, H)   dL/d output, or null         */ \
                      const S* dh_n,   /* (B, H)      dL/d h_n, or null            */ \
                      S* da,           /* (T, B, H)   out: dL/d pre-activation     */ \
                      S* dh0,          /* (B, H)      out: dL/d h_0                */ \
                      S* dhs,          /* (T, B, H)   out: dL/d h_t total, or null */ \
                      int nthreads, const Regular<S>& reg);                                                  \
  /* LSTM (SPEC section 3), gate order i, f, g, o. K = P if P > 0, else H.        */ \
  void lstm_forward(int64_t T, int64_t B, int64_t H,                                  \
                    const S* xw,       /* (T, B, 4H)  W_ih x_t + b_ih + b_hh       */ \
                    const S* w_hh,     /* (4H, H)                                  */ \
                    const S* w_ch,     /* (3H) peepholes i, f, o, or null          */ \
                    int64_t P,         /* projection size (section 14), 0: none    */ \
                    const S* w_hr,     /* (P, H) projection, or null when P = 0    */ \
                    const S* h0, const S* c0, /* (B, K), (B, H), or null           */ \
                    const int64_t* lengths,                                           \
                    S* hs,             /* (T+1, B, K) out: hidden states           */ \
                    S* cs,             /* (T+1, B, H) out: cell states             */ \
                    S* gates,          /* (T, B, 4H)  out: activated i, f, g, o    */ \
                    S* out,            /* (T, B, K)   out: masked outputs, or null */ \
                    int nthreads, const Regular<S>& reg);                                                    \
  void lstm_backward(int64_t T, int64_t B, int64_t H,                                 \
                     const S* w_hh, const S* w_ch, /* (3H) or null               */ \
                     int64_t P, const S* w_hr, /* as lstm_forward                  */ \
                     const S* hs, const S* cs, const S* gates,                        \
                     const int64_t* lengths,                                          \
                     const S* d_out,   /* (T, B, K) or null                        */ \
                     const S* dh_n, const S* dc_n, /* (B, K), (B, H), or null      */ \
                     S* da,            /* (T, B, 4H)  out: dL/d gate pre-acts      */ \
                     S* dr,            /* (T, B, P)   out: dL/d W_hr m_t; null: P=0*/ \
                     S* dh0, S* dc0,   /* (B, K), (B, H), out                      */ \
                     S* dhs,           /* (T, B, K)   out: dL/d h_t, or null       */ \
                     S* dcs,           /* (T, B, H)   out: dL/d c_t, or null       */ \
                     int nthreads, const Regular<S>& reg);                                                   \
  /* Layer-normalised LSTM (SPEC section 15, haste's form), one thread.          */ \
  void ln_lstm_forward(int64_t T, int64_t B, int64_t H,                               \
                       const S* xw,    /* (T, B, 4H) g_ih LN(W_ih x_t) + biases    */ \
                       const S* w_hh,  /* (4H, H)                                  */ \
                       const S* gamma_hh, /* (4H) gain of LN(W_hh h)               */ \
                       const S* gamma_c, const S* beta_c, /* (H) of LN(c)          */ \
                       const S* h0, const S* c0, /* (B, H) each, or null           */ \
                       const int64_t* lengths,                                        \
                       S* hs, S* cs,   /* (T+1, B, H) out each                     */ \
                       S* gates,       /* (T, B, 4H)  out: activated i, f, g, o    */ \
                       S* raw,         /* (T, B, 4H)  out: W_hh h_{t-1}            */ \
                       S* out,         /* (T, B, H)   out: masked outputs, or null */ \
                       int nthreads);                                                 \
  void ln_lstm_backward(int64_t T, int64_t B, int64_t H, const S* w_hh,               \
                        const S* gamma_hh, const S* gamma_c, const S* beta_c,         \
                        const S* hs, const S* cs, const S* gates, const S* raw,       \
                        const int64_t* lengths,                                       \
                        const S* d_out, /* (T, B, H) or null                       */ \
                        const S* dh_n, const S* dc_n, /* (B, H) each, or null      */ \
                        S* dv,          /* (T, B, 4H) out: dL/d pre-activations    */ \
                        S* dA,          /* (T, B, 4H) out: dL/d W_hh h_{t-1}       */ \
                        S* dh0, S* dc0, /* (B, H) each, out                        */ \
                        S* dhs, S* dcs, /* (T, B, H) out each, or null             */ \
                        int nthreads);                                                \
  /* GRU (SPEC section 4), gate order r, z, n. reset_after=true is torch's form:   */ \
  /*   n = tanh(xw_n + r * (W_hn h + b_hn)),  h = (1-z) n + z h_prev;              */ \
  /* reset_after=false is the seeds' form:                                          */ \
  /*   n = tanh(xw_n + W_hn (r * h_prev)),    h = (1-z) h_prev + z n.              */ \
  void gru_forward(int64_t T, int64_t B, int64_t H, bool reset_after,                 \
                   const S* xw,        /* (T, B, 3H) W_ih x + b_ih + b_hh, except  */ \
                                       /*   b_hn when reset_after                  */ \
                   const S* w_hh,      /* (3H, H)                                  */ \
                   const S* b_hn,      /* (H) reset_after only, or null            */ \
                   const S* h0, const int64_t* lengths,                               \
                   S* hs,              /* (T+1, B, H) out                          */ \
                   S* gates,           /* (T, B, 3H)  out: activated r, z, n       */ \
                   S* hn,              /* (T, B, H)   out: reset_after: W_hn h+b_hn */\
                                       /*   reset_before: r * h_prev               */ \
                   S* out, int nthreads, const Regular<S>& reg);                                             \
  void gru_backward(int64_t T, int64_t B, int64_t H, bool reset_after,                \
                    const S* w_hh, const S* hs, const S* gates, const S* hn,          \
                    const int64_t* lengths, const S* d_out, const S* dh_n,            \
                    S* da,             /* (T, B, 3H) out: dL/d input pre-acts      */ \
                    S* da_hn,          /* (T, B, H)  out: dL/d of the hidden-side  */ \
                                       /*   n term (its input: h_prev when         */ \
                                       /*   reset_after, r * h_prev otherwise)     */ \
                    S* dh0, S* dhs, int nthreads, const Regular<S>& reg);                                    \
  /* Layer-normalised GRU (SPEC section 15, haste's form, reset after), one thread */ \
  void ln_gru_forward(int64_t T, int64_t B, int64_t H,                                \
                      const S* xw,     /* (T, B, 3H) g_ih LN(W_ih x_t) + b_ih      */ \
                      const S* w_hh,   /* (3H, H)                                  */ \
                      const S* gamma_hh, /* (3H) gain of LN(W_hh h)                */ \
                      const S* b_hh,   /* (3H) or null                             */ \
                      const S* h0, const int64_t* lengths,                            \
                      S* hs,           /* (T+1, B, H) out                          */ \
                      S* gates,        /* (T, B, 3H)  out: activated r, z, n       */ \
                      S* raw,          /* (T, B, 3H)  out: W_hh h_{t-1}            */ \
                      S* out, int nthreads);                                          \
  void ln_gru_backward(int64_t T, int64_t B, int64_t H, const S* w_hh,                \
                       const S* gamma_hh, const S* b_hh, const S* hs,                 \
                       const S* gates, const S* raw, const int64_t* lengths,          \
                       const S* d_out, const S* dh_n,                                 \
                       S* da,          /* (T, B, 3H) out: dL/d xw                  */ \
                       S* dA,          /* (T, B, 3H) out: dL/d W_hh h_{t-1}        */ \
                       S* dh0, S* dhs, int nthreads);                                 \
  /* Jordan (SPEC section 2): a = xw + W_yh y_prev, h = f(a), y = g(W_hy h + b_hy) */ \
  void jordan_forward(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g,       \
                      const S* xw,     /* (T, B, H)  W_ih x + b_ih + b_yh          */ \
                      const S* w_yh,   /* (H, O)                                   */ \
                      const S* w_hy,   /* (O, H)                                   */ \
                      const S* b_hy,   /* (O) or null                              */ \
                      const S* y0,     /* (B, O) or null                           */ \
                      const int64_t* lengths,                                         \
                      S* hs,           /* (T, B, H)   out: hidden layer            */ \
                      S* ys,           /* (T+1, B, O) out: fed-back outputs        */ \
                      S* out,          /* (T, B, O)   out: masked outputs, or null */ \
                      int nthreads, const Regular<S>& reg);                                                  \
  void jordan_backward(int64_t T, int64_t B, int64_t H, int64_t O, Act f, Act g,      \
                       const S* w_yh, const S* w_hy, const S* hs, const S* ys,        \
                       const int64_t* lengths, const S* d_out, const S* dy_n,         \
                       S* da,          /* (T, B, H)  out: dL/d hidden pre-act      */ \
                       S* d_o,         /* (T, B, O)  out: dL/d output pre-act      */ \
                       S* dy0,         /* (B, O)     out                           */ \
                       S* dys,         /* (T, B, O)  out: dL/d y_t, or null        */ \
                       int nthreads, const Regular<S>& reg);                                                  \
  /* The big per-sequence products (gemm.cpp): C = A W^T (+ bias on every row).    */ \
  void matmul_nt(int64_t M, int64_t N, int64_t K,                                     \
                 const S* a, int64_t sam, int64_t sak, /* A (M, K) at a[m*sam+k*sak] */ \
                 const S* w, int64_t swn, int64_t swk, /* W (N, K) at w[n*swn+k*swk] */ \
                 const S* bias,        /* (N) or null                              */ \
                 S* c,                 /* (M, N) out, C-contiguous                 */ \
                 int nthreads);

// ---------------------------------------------------------------------------------
// Streaming (stream.cpp): a stack of unidirectional layers, one time step per call.
// ---------------------------------------------------------------------------------
class StreamBase {
 public:
  virtual ~StreamBase() {}
  // x (B, I of layer 0) -> y (B, H of the top layer; O for Jordan): the new state.
  virtual void step(const void* x, void* y, int nthreads) = 0;
  // The current state of `layer`: which 0 = h (Jordan: y), 1 = LSTM cell state c.
  virtual void* state(int64_t layer, int which) = 0;
  // One step of layer 0 from the caller's states, for a one-step cell call; the stream's
  // own state is left as it was. prev[k] (B, state width k) or null for zeros; next[k]
  // (B, state width k) out: the new states; rec[k] (B, record width k) out: what the
  // sequence kernels record for the backward pass (csrc/cells/<cell>.h), or null.
  // k < 2, entries past the cell's count ignored; next must not overlap prev or x.
  virtual void cell_step(const void* x, const void* const* prev, void* const* next, void* const* rec,
                         int nthreads) = 0;
};

// sizes: (I, H, O) per layer. params: five pointers per layer (S = double if dbl, else
// float), copied and packed here: w_ih (G*H, I), the input-side bias (G*H) or null (all
// biases that add to W_ih x; GRU reset_after keeps b_hn apart), then the cell's
// weights as its sequence kernels take them: Elman w_hh, -, -; LSTM w_hh, w_ch (or
// null), w_hr (O = P > 0: the projection, else null); GRU w_hh, b_hn (or null), -;
// Jordan w_yh, w_hy, b_hy (or null). zoneout: the rate p of every
// layer, applied as its expected value, s_t = p s_{t-1} + (1 - p) s~_t (SPEC section 16); 0: off.
// layer_norm (SPEC section 15; LSTM, and GRU reset after): the layer computes
// xw = gamma_ih LN(x W_ih^T) + bias, and the entries after the bias are: LSTM w_hh,
// (gamma_ih, gamma_hh (4H each), gamma_c, beta_c (H each)) in one (10H) array, -;
// GRU w_hh, (gamma_ih, gamma_hh) in one (6H) array, b_hh (3H) or null.
#define RNNKIT_DECLARE_STREAM                                                                  \
  StreamBase* make_stream(bool dbl, Arch arch, Act f, Act g, bool reset_after, int64_t B,      \
                          int64_t layers, const int64_t* sizes, const void* const* params,     \
                          double zoneout, bool layer_norm = false);

// ---------------------------------------------------------------------------------
// Whole stacks (stack.cpp): every layer and direction of a module's forward pass, the
// input projections included, in one call, keeping no per-step history (inference).
// ---------------------------------------------------------------------------------
class StackBase {
 public:
  virtual ~StackBase() {}
  // With L layers, D directions and S = the state width of state k (the top layer's
  // output width for k = 0):
  //   x        (T, B, I of layer 0)
  //   lengths  (B) values in [1, T], or null
  //   init[k]  (L*D, B, S) initial state k of each layer and direction, or null (zeros)
  //   out      (T, B, D*S) out: the top layer's outputs, directions side by side, zero
  //            past a sequence's length
  //   final[k] (L*D, B, S) out: the state k after the last step of each sequence
  // Direction 1 reads each sequence reversed within its own length and its outputs are
  // reversed back. S is float or double as the stack was made.
  virtual void run(int64_t T, int64_t B, const void* x, const int64_t* lengths, const void* const* init, void* out,
                   void* const* final, int nthreads) = 0;
};

// sizes: (I, H, O) per layer; params: five pointers per layer and direction (index
// l*D + d), as make_stream takes them (layer_norm too); copied and packed here.
#define RNNKIT_DECLARE_STACK                                                                   \
  StackBase* make_stack(bool dbl, Arch arch, Act f, Act g, bool reset_after, int64_t layers,   \
                        int64_t directions, const int64_t* sizes, const void* const* params,   \
                        bool layer_norm = false);

#define RNNKIT_DECLARE_ISA(NS)            \
  namespace NS {                          \
  RNNKIT_DECLARE_KERNELS(float)           \
  RNNKIT_DECLARE_KERNELS(double)          \
  RNNKIT_DECLARE_STREAM                   \
  RNNKIT_DECLARE_STACK                    \
  }

RNNKIT_DECLARE_ISA(generic)
#if defined(RNNKIT_HAVE_AVX2)
RNNKIT_DECLARE_ISA(avx2)
#endif
#if defined(RNNKIT_HAVE_AVX512)
RNNKIT_DECLARE_ISA(avx512)
#endif

// ---------------------------------------------------------------------------------
// Reduced-precision inference (lowp.h, lowp.cpp): weights stored as int8 (per-row
// scales, activations quantised per row on the fly, torch.ao's dynamic quantisation)
// or bfloat16; products accumulate exactly in int32 / in float32; states, activations
// and the cells' pointwise math stay float32. Forward only.
// ---------------------------------------------------------------------------------
enum class Precision : int { int8 = 0, bf16 = 1 };

// Whether the CPU has the dot instructions of precision p (int8: AVX512-VNNI, bf16:
// AVX512-BF16) and this build uses them (lowp_cpu.cpp; safe on any CPU).
bool lowp_dot_supported(Precision p);

class LowpLayerBase {
 public:
  virtual ~LowpLayerBase() {}
  // One layer in one direction over a whole sequence:
  //   x (T, B, I) -> out (T, B, W) masked outputs; init[k] (B, W_k) or null (zeros);
  //   finals[k] (B, W_k) out: the states after each row's last step (W: H, Jordan O).
  virtual void forward(int64_t T, int64_t B, const float* x, const float* const* init, const int64_t* lengths,
                       float* out, float* const* finals, int nthreads) = 0;
  // The input projection alone, as forward computes it: xw (M, G*H) = x (M, I) W_ih^T + bias.
  virtual void project(int64_t M, const float* x, float* xw, int nthreads) = 0;
  // Whether the products use the CPU's dot instructions (VNNI / BF16).
  virtual bool native_dot() const = 0;
};

// The same five parameters per layer as make_stream (float32), copied and converted
// here. native_dot false forces the portable tiles (the same results).
// make_lowp_stream: a Stream (float32 parameters as make_stream's) with reduced-precision weights.
#define RNNKIT_DECLARE_LOWP                                                                         \
  LowpLayerBase* make_lowp_layer(Precision p, bool native_dot, Arch arch, Act f, Act g, bool reset_after, \
                                 int64_t I, int64_t H, int64_t O, const float* const* params);           \
  StreamBase* make_lowp_stream(Precision p, bool native_dot, Arch arch, Act f, Act g, bool reset_after,   \
                               int64_t B, int64_t layers, const int64_t* sizes, const void* const* params, \
                               double zoneout);

namespace generic { RNNKIT_DECLARE_LOWP }
#if defined(RNNKIT_HAVE_AVX2)
namespace avx2 { RNNKIT_DECLARE_LOWP }
#endif
#if defined(RNNKIT_HAVE_AVX512)
namespace avx512 { RNNKIT_DECLARE_LOWP }
#endif

}  // namespace rnnkit

// Calls NS::fn(args...) for the namespace of `isa` (an Isa value checked by the caller
// with isa_supported).
#if defined(RNNKIT_HAVE_AVX512)
#define RNNKIT_CASE_AVX512(fn, ...) case ::rnnkit::Isa::avx512: ::rnnkit::avx512::fn(__VA_ARGS__); break;
#else
#define RNNKIT_CASE_AVX512(fn, ...)
#endif
#if defined(RNNKIT_HAVE_AVX2)
#define RNNKIT_CASE_AVX2(fn, ...) case ::rnnkit::Isa::avx2: ::rnnkit::avx2::fn(__VA_ARGS__); break;
#else
#define RNNKIT_CASE_AVX2(fn, ...)
#endif
#define RNNKIT_DISPATCH(isa, fn, ...)                       \
  switch (isa) {                                            \
    RNNKIT_CASE_AVX512(fn, __VA_ARGS__)                     \
    RNNKIT_CASE_AVX2(fn, __VA_ARGS__)                       \
    default: ::rnnkit::generic::fn(__VA_ARGS__); break;     \
  }

// Returns NS::fn(args...) for the namespace of `isa`.
#if defined(RNNKIT_HAVE_AVX512)
#define RNNKIT_RET_AVX512(fn, ...) if (isa == ::rnnkit::Isa::avx512) return ::rnnkit::avx512::fn(__VA_ARGS__);
#else
#define RNNKIT_RET_AVX512(fn, ...)
#endif
#if defined(RNNKIT_HAVE_AVX2)
#define RNNKIT_RET_AVX2(fn, ...) if (isa == ::rnnkit::Isa::avx2) return ::rnnkit::avx2::fn(__VA_ARGS__);
#else
#define RNNKIT_RET_AVX2(fn, ...)
#endif
#define RNNKIT_DISPATCH_RETURN(isa, fn, ...) \
  RNNKIT_RET_AVX512(fn, __VA_ARGS__)         \
  RNNKIT_RET_AVX2(fn, __VA_ARGS__)           \
  return ::rnnkit::generic::fn(__VA_ARGS__);
