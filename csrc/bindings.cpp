// The one binding module, rnnkit._core: checks every buffer's dtype, shape and
// layout, releases the GIL and calls the kernels of rnnkit.h. Output buffers are
// allocated by the caller (torch.empty) and passed in. Any inconsistency raises
// TypeError / ValueError naming the argument; nothing reaches a kernel unchecked.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "parallel.h"
#include "rnnkit.h"

namespace nb = nanobind;
using namespace rnnkit;

// Inputs: any CPU array (a non-contiguous one is copied to C order by nanobind).
// Outputs: taken as they are, never converted (a converted copy would take the result
// and leave the caller's array unchanged), and required to be C-contiguous.
using Arr = nb::ndarray<nb::device::cpu, nb::c_contig>;
using OptArr = std::optional<Arr>;
using Out = nb::ndarray<nb::device::cpu>;
using OptOut = std::optional<Out>;

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

// "float32", "int64", ... as numpy and torch spell them.
std::string dtype_str(nb::dlpack::dtype d) {
  const char* kind = d.code == uint8_t(nb::dlpack::dtype_code::Int)     ? "int"
                     : d.code == uint8_t(nb::dlpack::dtype_code::UInt)  ? "uint"
                     : d.code == uint8_t(nb::dlpack::dtype_code::Float) ? "float"
                     : d.code == uint8_t(nb::dlpack::dtype_code::Bfloat) ? "bfloat"
                     : d.code == uint8_t(nb::dlpack::dtype_code::Bool)  ? "bool"
                                                                         : "other";
  return std::string(kind) + std::to_string(int(d.bits));
}

template <typename A> std::vector<int64_t> shape_of(const A& a) {
  std::vector<int64_t> s(a.ndim());
  for (size_t i = 0; i < a.ndim(); ++i) s[i] = int64_t(a.shape(i));
  return s;
}

// Checks dtype and shape (and, for an output, C-contiguity); returns the data pointer
// (null for an absent optional).
template <typename S, typename A>
S* checked(const A* a, const char* name, const std::vector<int64_t>& shape, bool required) {
  if (!a) {
    if (required) throw nb::value_error((std::string(name) + " is required").c_str());
    return nullptr;
  }
  if (a->dtype() != nb::dtype<S>())
    throw nb::type_error((std::string(name) + ": expected dtype " + (sizeof(S) == 4 ? "float32" : "float64") +
                          " like the input, got " + dtype_str(a->dtype()))
                             .c_str());
  if (shape_of(*a) != shape)
    throw nb::value_error((std::string(name) + ": expected shape " + shape_str(shape) + ", got " +
                           shape_str(shape_of(*a)))
                              .c_str());
  if (std::is_same<A, Out>::value && a->size() > 0) {  // an empty array is trivially contiguous
    int64_t expected = 1;
    bool contiguous = true;
    std::vector<int64_t> strides(a->ndim());
    for (size_t i = a->ndim(); i-- > 0;) {
      strides[i] = int64_t(a->stride(i));
      if (a->shape(i) != 1 && strides[i] != expected) contiguous = false;
      expected *= int64_t(a->shape(i));
    }
    if (!contiguous)
      throw nb::value_error((std::string(name) + ": expected a C-contiguous array (it is written in place), got "
                             "strides " + shape_str(strides) + " for shape " + shape_str(shape_of(*a)))
                                .c_str());
  }
  return static_cast<S*>(a->data());
}
template <typename S> const S* buf(const Arr& a, const char* name, const std::vector<int64_t>& shape) {
  return checked<S>(&a, name, shape, true);
}
template <typename S> const S* buf(const OptArr& a, const char* name, const std::vector<int64_t>& shape) {
  return checked<S>(a ? &*a : nullptr, name, shape, false);
}
template <typename S> S* buf(const Out& a, const char* name, const std::vector<int64_t>& shape) {
  return checked<S>(&a, name, shape, true);
}
template <typename S> S* buf(const OptOut& a, const char* name, const std::vector<int64_t>& shape) {
  return checked<S>(a ? &*a : nullptr, name, shape, false);
}

const int64_t* lengths_buf(const OptArr& a, int64_t B, int64_t T) {
  if (!a.has_value()) return nullptr;
  if (a->dtype() != nb::dtype<int64_t>())
    throw nb::type_error(("lengths: expected dtype int64, got " + dtype_str(a->dtype())).c_str());
  if (shape_of(*a) != std::vector<int64_t>{B})
    throw nb::value_error(("lengths: expected shape " + shape_str({B}) + ", got " + shape_str(shape_of(*a))).c_str());
  const int64_t* p = static_cast<const int64_t*>(a->data());
  for (int64_t b = 0; b < B; ++b)
    if (p[b] < 1 || p[b] > T)
      throw nb::value_error(("lengths: every length must be in [1, " + std::to_string(T) + "], got " +
                             std::to_string(p[b]) + " at index " + std::to_string(b))
                                .c_str());
  return p;
}

Isa checked_isa(int isa) {
  if (isa < 0 || isa > 2 || !isa_supported(Isa(isa)))
    throw nb::value_error(("isa: instruction set " + std::to_string(isa) + " is not available on this CPU/build").c_str());
  return Isa(isa);
}

Act checked_act(int a, const char* name) {
  if (a < 0 || a > 3) throw nb::value_error((std::string(name) + ": unknown activation code " + std::to_string(a)).c_str());
  return Act(a);
}

int checked_threads(int n) { return n < 1 ? 1 : n; }

bool is_double(const Arr& a, const char* name) {
  if (a.dtype() == nb::dtype<float>()) return false;
  if (a.dtype() == nb::dtype<double>()) return true;
  throw nb::type_error((std::string(name) + ": expected dtype float32 or float64, got " + dtype_str(a.dtype())).c_str());
}

void require_rank(const Arr& a, size_t ndim, const char* name, const char* expected) {
  if (a.ndim() != ndim)
    throw nb::value_error((std::string(name) + ": expected shape " + expected + ", got " + shape_str(shape_of(a))).c_str());
}

// (T, B, G*H) -> T, B, and H checked against the recurrent weight.
void seq_dims(const Arr& xw, int64_t G, int64_t H, int64_t& T, int64_t& B) {
  if (xw.ndim() != 3 || int64_t(xw.shape(2)) != G * H)
    throw nb::value_error(("xw: expected shape (T, B, " + std::to_string(G * H) + "), got " + shape_str(shape_of(xw))).c_str());
  T = int64_t(xw.shape(0));
  B = int64_t(xw.shape(1));
}

int64_t hidden_of(const Arr& w, int64_t G, const char* name) {
  if (w.ndim() != 2 || int64_t(w.shape(0)) != G * int64_t(w.shape(1)))
    throw nb::value_error((std::string(name) + ": expected shape (" + std::to_string(G) + "*H, H), got " +
                           shape_str(shape_of(w)))
                              .c_str());
  return int64_t(w.shape(1));
}

// ------------------------------------------------------------------------- regularisers
// The optional arguments of every sequence kernel for zoneout and recurrent dropout
// (SPEC section 16): zone / raw for h (Jordan: y; a projected LSTM's h is P wide),
// zone_c / raw_c for the LSTM's c (Wc = H wide).
struct RegArgs {
  const OptArr &zone, &zone_c, &drop;
  const OptOut &raw, &raw_c;
};

template <typename S>
Regular<S> regular(const RegArgs& a, int64_t T, int64_t B, int64_t W, bool has_c, int64_t Wc = 0) {
  if (a.zone_c.has_value() && !has_c) throw nb::value_error("zone_c: only an LSTM has a cell state to zone out");
  if (Wc == 0) Wc = W;
  Regular<S> r;
  r.zone[0] = buf<S>(a.zone, "zone", {T, B, W});
  r.raw[0] = buf<S>(a.raw, "raw", {T, B, W});
  r.zone[1] = buf<S>(a.zone_c, "zone_c", {T, B, Wc});
  r.raw[1] = buf<S>(a.raw_c, "raw_c", {T, B, Wc});
  r.drop = buf<S>(a.drop, "drop", {B, W});
  if (!r.zone[0] != !r.raw[0])
    throw nb::value_error("raw: expected a (T, B, W) buffer exactly when zone is given");
  if (!r.zone[1] != !r.raw[1])
    throw nb::value_error("raw_c: expected a (T, B, H) buffer exactly when zone_c is given");
  return r;
}

// ------------------------------------------------------------------------- Elman
template <typename S>
void elman_forward_t(Isa isa, Act f, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& lengths,
                     const Out& hs, const OptOut& out, int nt, const RegArgs& ra) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 1, "w_hh");
  seq_dims(xw, 1, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, H});
  const S* p_w = buf<S>(w_hh, "w_hh", {H, H});
  const S* p_h0 = buf<S>(h0, "h0", {B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_out = buf<S>(out, "out", {T, B, H});
  const Regular<S> reg = regular<S>(ra, T, B, H, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, elman_forward, T, B, H, f, p_xw, p_w, p_h0, p_len, p_hs, p_out, nt, reg)
}

void elman_forward(int isa, int act, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& lengths,
                   const Out& hs, const OptOut& out, int nt,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(xw, "xw") ? elman_forward_t<double> : elman_forward_t<float>;
  run(checked_isa(isa), checked_act(act, "nonlinearity"), xw, w_hh, h0, lengths, hs, out, checked_threads(nt),
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

template <typename S>
void elman_backward_t(Isa isa, Act f, const Arr& w_hh, const Arr& hs, const OptArr& lengths, const OptArr& d_out,
                      const OptArr& dh_n, const Out& da, const Out& dh0, const OptOut& dhs, int nt, const RegArgs& ra) {
  const int64_t H = hidden_of(w_hh, 1, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {H, H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H});
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H});
  S* p_da = buf<S>(da, "da", {T, B, H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H});
  const Regular<S> reg = regular<S>(ra, T, B, H, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, elman_backward, T, B, H, f, p_w, p_hs, p_len, p_dout, p_dhn, p_da, p_dh0, p_dhs, nt, reg)
}

void elman_backward(int isa, int act, const Arr& w_hh, const Arr& hs, const OptArr& lengths, const OptArr& d_out,
                    const OptArr& dh_n, const Out& da, const Out& dh0, const OptOut& dhs, int nt,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(hs, "hs") ? elman_backward_t<double> : elman_backward_t<float>;
  run(checked_isa(isa), checked_act(act, "nonlinearity"), w_hh, hs, lengths, d_out, dh_n, da, dh0, dhs,
      checked_threads(nt),
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

// ------------------------------------------------------------------------- LSTM
// H, the projection size P (0 without w_hr) and K, the width of h (P if projected, else H).
void lstm_sizes(const Arr& w_hh, const OptArr& w_hr, int64_t& H, int64_t& P, int64_t& K) {
  if (!w_hr.has_value()) {
    H = K = hidden_of(w_hh, 4, "w_hh");
    P = 0;
    return;
  }
  if (w_hr->ndim() != 2 || w_hr->shape(0) < 1 || w_hr->shape(1) < 1)
    throw nb::value_error(("w_hr: expected shape (P, H) with P, H >= 1, got " + shape_str(shape_of(*w_hr))).c_str());
  P = K = int64_t(w_hr->shape(0));
  H = int64_t(w_hr->shape(1));
}

template <typename S>
void lstm_forward_t(Isa isa, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& c0,
                    const OptArr& lengths, const Out& hs, const Out& cs, const Out& gates, const OptOut& out, int nt,
                    const OptArr& w_ch, const OptArr& w_hr, const RegArgs& ra) {
  int64_t T, B, H, P, K;
  lstm_sizes(w_hh, w_hr, H, P, K);
  seq_dims(xw, 4, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, 4 * H});
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, K});
  const S* p_ch = buf<S>(w_ch, "w_ch", {3 * H});
  const S* p_hr = buf<S>(w_hr, "w_hr", {P, H});
  const S* p_h0 = buf<S>(h0, "h0", {B, K});
  const S* p_c0 = buf<S>(c0, "c0", {B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, K});
  S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  S* p_out = buf<S>(out, "out", {T, B, K});
  const Regular<S> reg = regular<S>(ra, T, B, K, true, H);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, lstm_forward, T, B, H, p_xw, p_w, p_ch, P, p_hr, p_h0, p_c0, p_len, p_hs, p_cs, p_g, p_out,
                  nt, reg)
}

void lstm_forward(int isa, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& c0,
                  const OptArr& lengths, const Out& hs, const Out& cs, const Out& gates, const OptOut& out, int nt,
                  const OptArr& w_ch, const OptArr& w_hr,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(xw, "xw") ? lstm_forward_t<double> : lstm_forward_t<float>;
  run(checked_isa(isa), xw, w_hh, h0, c0, lengths, hs, cs, gates, out, checked_threads(nt), w_ch, w_hr,
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

template <typename S>
void lstm_backward_t(Isa isa, const Arr& w_hh, const Arr& hs, const Arr& cs, const Arr& gates,
                     const OptArr& lengths, const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n,
                     const Out& da, const Out& dh0, const Out& dc0, const OptOut& dhs, const OptOut& dcs, int nt,
                     const OptArr& w_ch, const OptArr& w_hr, const OptOut& dr, const RegArgs& ra) {
  int64_t H, P, K;
  lstm_sizes(w_hh, w_hr, H, P, K);
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, K});
  const S* p_ch = buf<S>(w_ch, "w_ch", {3 * H});
  const S* p_hr = buf<S>(w_hr, "w_hr", {P, H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, K});
  const S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  const S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, K});
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, K});
  const S* p_dcn = buf<S>(dc_n, "dc_n", {B, H});
  S* p_da = buf<S>(da, "da", {T, B, 4 * H});
  S* p_dr = buf<S>(dr, "dr", {T, B, P});
  if (P > 0 && !p_dr) throw nb::value_error("dr: required with w_hr (the gradient through the projection)");
  if (P == 0 && p_dr) throw nb::value_error("dr: expected None without w_hr");
  S* p_dh0 = buf<S>(dh0, "dh0", {B, K});
  S* p_dc0 = buf<S>(dc0, "dc0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, K});
  S* p_dcs = buf<S>(dcs, "dcs", {T, B, H});
  const Regular<S> reg = regular<S>(ra, T, B, K, true, H);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, lstm_backward, T, B, H, p_w, p_ch, P, p_hr, p_hs, p_cs, p_g, p_len, p_dout, p_dhn, p_dcn,
                  p_da, p_dr, p_dh0, p_dc0, p_dhs, p_dcs, nt, reg)
}

void lstm_backward(int isa, const Arr& w_hh, const Arr& hs, const Arr& cs, const Arr& gates, const OptArr& lengths,
                   const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n, const Out& da, const Out& dh0,
                   const Out& dc0, const OptOut& dhs, const OptOut& dcs, int nt, const OptArr& w_ch,
                   const OptArr& w_hr, const OptOut& dr,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(hs, "hs") ? lstm_backward_t<double> : lstm_backward_t<float>;
  run(checked_isa(isa), w_hh, hs, cs, gates, lengths, d_out, dh_n, dc_n, da, dh0, dc0, dhs, dcs,
      checked_threads(nt), w_ch, w_hr, dr,
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

// ------------------------------------------------------------------------- layer-normalised LSTM
template <typename S>
void ln_lstm_forward_t(Isa isa, const Arr& xw, const Arr& w_hh, const Arr& gamma_hh, const Arr& gamma_c,
                       const Arr& beta_c, const OptArr& h0, const OptArr& c0, const OptArr& lengths, const Out& hs,
                       const Out& cs, const Out& gates, const Out& raw, const OptOut& out, int nt) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 4, "w_hh");
  seq_dims(xw, 4, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, 4 * H});
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, H});
  const S* p_ghh = buf<S>(gamma_hh, "gamma_hh", {4 * H});
  const S* p_gc = buf<S>(gamma_c, "gamma_c", {H});
  const S* p_bc = buf<S>(beta_c, "beta_c", {H});
  const S* p_h0 = buf<S>(h0, "h0", {B, H});
  const S* p_c0 = buf<S>(c0, "c0", {B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  S* p_raw = buf<S>(raw, "raw", {T, B, 4 * H});
  S* p_out = buf<S>(out, "out", {T, B, H});
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, ln_lstm_forward, T, B, H, p_xw, p_w, p_ghh, p_gc, p_bc, p_h0, p_c0, p_len, p_hs, p_cs, p_g,
                  p_raw, p_out, nt)
}

void ln_lstm_forward(int isa, const Arr& xw, const Arr& w_hh, const Arr& gamma_hh, const Arr& gamma_c,
                     const Arr& beta_c, const OptArr& h0, const OptArr& c0, const OptArr& lengths, const Out& hs,
                     const Out& cs, const Out& gates, const Out& raw, const OptOut& out, int nt) {
  auto run = is_double(xw, "xw") ? ln_lstm_forward_t<double> : ln_lstm_forward_t<float>;
  run(checked_isa(isa), xw, w_hh, gamma_hh, gamma_c, beta_c, h0, c0, lengths, hs, cs, gates, raw, out,
      checked_threads(nt));
}

template <typename S>
void ln_lstm_backward_t(Isa isa, const Arr& w_hh, const Arr& gamma_hh, const Arr& gamma_c, const Arr& beta_c,
                        const Arr& hs, const Arr& cs, const Arr& gates, const Arr& raw, const OptArr& lengths,
                        const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n, const Out& dv, const Out& dA,
                        const Out& dh0, const Out& dc0, const OptOut& dhs, const OptOut& dcs, int nt) {
  const int64_t H = hidden_of(w_hh, 4, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, H});
  const S* p_ghh = buf<S>(gamma_hh, "gamma_hh", {4 * H});
  const S* p_gc = buf<S>(gamma_c, "gamma_c", {H});
  const S* p_bc = buf<S>(beta_c, "beta_c", {H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  const S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  const S* p_raw = buf<S>(raw, "raw", {T, B, 4 * H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H});
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H});
  const S* p_dcn = buf<S>(dc_n, "dc_n", {B, H});
  S* p_dv = buf<S>(dv, "dv", {T, B, 4 * H});
  S* p_dA = buf<S>(dA, "dA", {T, B, 4 * H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dc0 = buf<S>(dc0, "dc0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H});
  S* p_dcs = buf<S>(dcs, "dcs", {T, B, H});
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, ln_lstm_backward, T, B, H, p_w, p_ghh, p_gc, p_bc, p_hs, p_cs, p_g, p_raw, p_len, p_dout,
                  p_dhn, p_dcn, p_dv, p_dA, p_dh0, p_dc0, p_dhs, p_dcs, nt)
}

void ln_lstm_backward(int isa, const Arr& w_hh, const Arr& gamma_hh, const Arr& gamma_c, const Arr& beta_c,
                      const Arr& hs, const Arr& cs, const Arr& gates, const Arr& raw, const OptArr& lengths,
                      const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n, const Out& dv, const Out& dA,
                      const Out& dh0, const Out& dc0, const OptOut& dhs, const OptOut& dcs, int nt) {
  auto run = is_double(hs, "hs") ? ln_lstm_backward_t<double> : ln_lstm_backward_t<float>;
  run(checked_isa(isa), w_hh, gamma_hh, gamma_c, beta_c, hs, cs, gates, raw, lengths, d_out, dh_n, dc_n, dv, dA,
      dh0, dc0, dhs, dcs, checked_threads(nt));
}

// ------------------------------------------------------------------------- layer-normalised GRU
template <typename S>
void ln_gru_forward_t(Isa isa, const Arr& xw, const Arr& w_hh, const Arr& gamma_hh, const OptArr& b_hh,
                      const OptArr& h0, const OptArr& lengths, const Out& hs, const Out& gates, const Out& raw,
                      const OptOut& out, int nt) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 3, "w_hh");
  seq_dims(xw, 3, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, 3 * H});
  const S* p_w = buf<S>(w_hh, "w_hh", {3 * H, H});
  const S* p_ghh = buf<S>(gamma_hh, "gamma_hh", {3 * H});
  const S* p_bhh = buf<S>(b_hh, "b_hh", {3 * H});
  const S* p_h0 = buf<S>(h0, "h0", {B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_g = buf<S>(gates, "gates", {T, B, 3 * H});
  S* p_raw = buf<S>(raw, "raw", {T, B, 3 * H});
  S* p_out = buf<S>(out, "out", {T, B, H});
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, ln_gru_forward, T, B, H, p_xw, p_w, p_ghh, p_bhh, p_h0, p_len, p_hs, p_g, p_raw, p_out, nt)
}

void ln_gru_forward(int isa, const Arr& xw, const Arr& w_hh, const Arr& gamma_hh, const OptArr& b_hh,
                    const OptArr& h0, const OptArr& lengths, const Out& hs, const Out& gates, const Out& raw,
                    const OptOut& out, int nt) {
  auto run = is_double(xw, "xw") ? ln_gru_forward_t<double> : ln_gru_forward_t<float>;
  run(checked_isa(isa), xw, w_hh, gamma_hh, b_hh, h0, lengths, hs, gates, raw, out, checked_threads(nt));
}

template <typename S>
void ln_gru_backward_t(Isa isa, const Arr& w_hh, const Arr& gamma_hh, const OptArr& b_hh, const Arr& hs,
                       const Arr& gates, const Arr& raw, const OptArr& lengths, const OptArr& d_out,
                       const OptArr& dh_n, const Out& da, const Out& dA, const Out& dh0, const OptOut& dhs, int nt) {
  const int64_t H = hidden_of(w_hh, 3, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {3 * H, H});
  const S* p_ghh = buf<S>(gamma_hh, "gamma_hh", {3 * H});
  const S* p_bhh = buf<S>(b_hh, "b_hh", {3 * H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const S* p_g = buf<S>(gates, "gates", {T, B, 3 * H});
  const S* p_raw = buf<S>(raw, "raw", {T, B, 3 * H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H});
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H});
  S* p_da = buf<S>(da, "da", {T, B, 3 * H});
  S* p_dA = buf<S>(dA, "dA", {T, B, 3 * H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H});
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, ln_gru_backward, T, B, H, p_w, p_ghh, p_bhh, p_hs, p_g, p_raw, p_len, p_dout, p_dhn, p_da,
                  p_dA, p_dh0, p_dhs, nt)
}

void ln_gru_backward(int isa, const Arr& w_hh, const Arr& gamma_hh, const OptArr& b_hh, const Arr& hs,
                     const Arr& gates, const Arr& raw, const OptArr& lengths, const OptArr& d_out,
                     const OptArr& dh_n, const Out& da, const Out& dA, const Out& dh0, const OptOut& dhs, int nt) {
  auto run = is_double(hs, "hs") ? ln_gru_backward_t<double> : ln_gru_backward_t<float>;
  run(checked_isa(isa), w_hh, gamma_hh, b_hh, hs, gates, raw, lengths, d_out, dh_n, da, dA, dh0, dhs,
      checked_threads(nt));
}

// ------------------------------------------------------------------------- GRU
template <typename S>
void gru_forward_t(Isa isa, bool reset_after, const Arr& xw, const Arr& w_hh, const OptArr& b_hn, const OptArr& h0,
                   const OptArr& lengths, const Out& hs, const Out& gates, const Out& hn, const OptOut& out, int nt, const RegArgs& ra) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 3, "w_hh");
  seq_dims(xw, 3, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, 3 * H});
  const S* p_w = buf<S>(w_hh, "w_hh", {3 * H, H});
  const S* p_bhn = buf<S>(b_hn, "b_hn", {H});
  const S* p_h0 = buf<S>(h0, "h0", {B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_g = buf<S>(gates, "gates", {T, B, 3 * H});
  S* p_hn = buf<S>(hn, "hn", {T, B, H});
  S* p_out = buf<S>(out, "out", {T, B, H});
  const Regular<S> reg = regular<S>(ra, T, B, H, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, gru_forward, T, B, H, reset_after, p_xw, p_w, p_bhn, p_h0, p_len, p_hs, p_g, p_hn, p_out, nt, reg)
}

void gru_forward(int isa, bool reset_after, const Arr& xw, const Arr& w_hh, const OptArr& b_hn, const OptArr& h0,
                 const OptArr& lengths, const Out& hs, const Out& gates, const Out& hn, const OptOut& out, int nt,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(xw, "xw") ? gru_forward_t<double> : gru_forward_t<float>;
  run(checked_isa(isa), reset_after, xw, w_hh, b_hn, h0, lengths, hs, gates, hn, out, checked_threads(nt),
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

template <typename S>
void gru_backward_t(Isa isa, bool reset_after, const Arr& w_hh, const Arr& hs, const Arr& gates, const Arr& hn,
                    const OptArr& lengths, const OptArr& d_out, const OptArr& dh_n, const Out& da,
                    const Out& da_hn, const Out& dh0, const OptOut& dhs, int nt, const RegArgs& ra) {
  const int64_t H = hidden_of(w_hh, 3, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {3 * H, H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const S* p_g = buf<S>(gates, "gates", {T, B, 3 * H});
  const S* p_hn = buf<S>(hn, "hn", {T, B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H});
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H});
  S* p_da = buf<S>(da, "da", {T, B, 3 * H});
  S* p_dahn = buf<S>(da_hn, "da_hn", {T, B, H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H});
  const Regular<S> reg = regular<S>(ra, T, B, H, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, gru_backward, T, B, H, reset_after, p_w, p_hs, p_g, p_hn, p_len, p_dout, p_dhn, p_da, p_dahn,
                  p_dh0, p_dhs, nt, reg)
}

void gru_backward(int isa, bool reset_after, const Arr& w_hh, const Arr& hs, const Arr& gates, const Arr& hn,
                  const OptArr& lengths, const OptArr& d_out, const OptArr& dh_n, const Out& da, const Out& da_hn,
                  const Out& dh0, const OptOut& dhs, int nt,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(hs, "hs") ? gru_backward_t<double> : gru_backward_t<float>;
  run(checked_isa(isa), reset_after, w_hh, hs, gates, hn, lengths, d_out, dh_n, da, da_hn, dh0, dhs,
      checked_threads(nt),
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

// ------------------------------------------------------------------------- Jordan
template <typename S>
void jordan_forward_t(Isa isa, Act f, Act g, const Arr& xw, const Arr& w_yh, const Arr& w_hy, const OptArr& b_hy,
                      const OptArr& y0, const OptArr& lengths, const Out& hs, const Out& ys, const OptOut& out,
                      int nt, const RegArgs& ra) {
  require_rank(w_yh, 2, "w_yh", "(H, O)");
  const int64_t H = int64_t(w_yh.shape(0)), O = int64_t(w_yh.shape(1));
  int64_t T, B;
  seq_dims(xw, 1, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, H});
  const S* p_wyh = buf<S>(w_yh, "w_yh", {H, O});
  const S* p_why = buf<S>(w_hy, "w_hy", {O, H});
  const S* p_bhy = buf<S>(b_hy, "b_hy", {O});
  const S* p_y0 = buf<S>(y0, "y0", {B, O});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T, B, H});
  S* p_ys = buf<S>(ys, "ys", {T + 1, B, O});
  S* p_out = buf<S>(out, "out", {T, B, O});
  const Regular<S> reg = regular<S>(ra, T, B, O, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, jordan_forward, T, B, H, O, f, g, p_xw, p_wyh, p_why, p_bhy, p_y0, p_len, p_hs, p_ys, p_out,
                  nt, reg)
}

void jordan_forward(int isa, int f, int g, const Arr& xw, const Arr& w_yh, const Arr& w_hy, const OptArr& b_hy,
                    const OptArr& y0, const OptArr& lengths, const Out& hs, const Out& ys, const OptOut& out, int nt,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(xw, "xw") ? jordan_forward_t<double> : jordan_forward_t<float>;
  run(checked_isa(isa), checked_act(f, "nonlinearity"), checked_act(g, "output_nonlinearity"), xw, w_yh, w_hy, b_hy,
      y0, lengths, hs, ys, out, checked_threads(nt),
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

template <typename S>
void jordan_backward_t(Isa isa, Act f, Act g, const Arr& w_yh, const Arr& w_hy, const Arr& hs, const Arr& ys,
                       const OptArr& lengths, const OptArr& d_out, const OptArr& dy_n, const Out& da, const Out& d_o,
                       const Out& dy0, const OptOut& dys, int nt, const RegArgs& ra) {
  require_rank(w_yh, 2, "w_yh", "(H, O)");
  require_rank(hs, 3, "hs", "(T, B, H)");
  const int64_t H = int64_t(w_yh.shape(0)), O = int64_t(w_yh.shape(1));
  const int64_t T = int64_t(hs.shape(0)), B = int64_t(hs.shape(1));
  const S* p_wyh = buf<S>(w_yh, "w_yh", {H, O});
  const S* p_why = buf<S>(w_hy, "w_hy", {O, H});
  const S* p_hs = buf<S>(hs, "hs", {T, B, H});
  const S* p_ys = buf<S>(ys, "ys", {T + 1, B, O});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, O});
  const S* p_dyn = buf<S>(dy_n, "dy_n", {B, O});
  S* p_da = buf<S>(da, "da", {T, B, H});
  S* p_do = buf<S>(d_o, "d_o", {T, B, O});
  S* p_dy0 = buf<S>(dy0, "dy0", {B, O});
  S* p_dys = buf<S>(dys, "dys", {T, B, O});
  const Regular<S> reg = regular<S>(ra, T, B, O, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, jordan_backward, T, B, H, O, f, g, p_wyh, p_why, p_hs, p_ys, p_len, p_dout, p_dyn, p_da, p_do,
                  p_dy0, p_dys, nt, reg)
}

void jordan_backward(int isa, int f, int g, const Arr& w_yh, const Arr& w_hy, const Arr& hs, const Arr& ys,
                     const OptArr& lengths, const OptArr& d_out, const OptArr& dy_n, const Out& da, const Out& d_o,
                     const Out& dy0, const OptOut& dys, int nt,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(hs, "hs") ? jordan_backward_t<double> : jordan_backward_t<float>;
  run(checked_isa(isa), checked_act(f, "nonlinearity"), checked_act(g, "output_nonlinearity"), w_yh, w_hy, hs, ys,
      lengths, d_out, dy_n, da, d_o, dy0, dys, checked_threads(nt),
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

// ------------------------------------------------------------------------- Stream
// The layers of a Stream or a Stack, checked: sizes (I, H, O) per layer; params five
// per layer and direction (index l*D + d), as make_stream / make_stack in rnnkit.h.
struct CheckedLayers {
  Arch arch;
  bool dbl = false;
  std::vector<const void*> ptrs;       // the params' data, null for an absent entry
  std::vector<int64_t> state_width;    // per layer: what it emits: H, a projected LSTM's P, Jordan O
  std::vector<int64_t> cell_width;     // per layer: H (an LSTM's c)
  int64_t in = 0, out = 0;             // layer 0's input size, the top layer's state width
};

CheckedLayers checked_layers(int arch, int64_t directions, const std::vector<int64_t>& sizes,
                             const std::vector<OptArr>& params, bool layer_norm = false,
                             bool reset_after = true) {
  if (arch < 0 || arch > 3) throw nb::value_error(("arch: expected 0..3, got " + std::to_string(arch)).c_str());
  CheckedLayers c;
  c.arch = Arch(arch);
  if (layer_norm && c.arch != Arch::lstm && !(c.arch == Arch::gru && reset_after))
    throw nb::value_error("layer_norm: expected False for this cell (an LSTM or a reset-after GRU has it), got True");
  if (sizes.empty() || sizes.size() % 3 != 0)
    throw nb::value_error("sizes: expected (I, H, O) for each layer");
  const size_t layers = sizes.size() / 3, D = size_t(directions);
  if (params.size() != 5 * layers * D)
    throw nb::value_error(D == 1 ? "params: expected five entries per layer"
                                 : "params: expected five entries per layer and direction");
  const int64_t G = gate_count(c.arch);
  const bool jordan = c.arch == Arch::jordan, gru = c.arch == Arch::gru, lstm = c.arch == Arch::lstm;
  bool have_dtype = false;
  // The width of what layer k emits: Jordan's y (O), a projected LSTM's h (O = P > 0), else h (H).
  auto emitted = [&](size_t k) {
    return jordan || (lstm && sizes[3 * k + 2] > 0) ? sizes[3 * k + 2] : sizes[3 * k + 1];
  };
  for (size_t l = 0; l < layers; ++l) {
    const int64_t I = sizes[3 * l], H = sizes[3 * l + 1], O = sizes[3 * l + 2];
    if (I < 1 || H < 1 || (jordan && O < 1) || O < 0) throw nb::value_error("sizes: every size must be positive");
    if (!jordan && !lstm && O != 0) throw nb::value_error("sizes: O must be 0 for this cell");
    const int64_t K = emitted(l);
    if (layer_norm && lstm && O > 0)
      throw nb::value_error("layer_norm: expected False with a projection (sizes' O > 0), got True");
    if (l > 0 && I != int64_t(D) * emitted(l - 1))
      throw nb::value_error(D == 1 ? "sizes: a layer's input size must equal the previous layer's output size"
                                   : "sizes: a layer's input size must equal the previous layer's output size "
                                     "times the number of directions");
    // w_ih, input-side bias, then the cell's weights; {} marks an unused entry.
    // Layer-normalised (rnnkit.h, make_stream): the gains in one array, then the GRU's b_hh.
    const std::vector<std::vector<int64_t>> shapes =
        layer_norm && lstm ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {10 * H}, {}}
        : layer_norm ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {6 * H}, {G * H}}
        : jordan ? std::vector<std::vector<int64_t>>{{H, I}, {H}, {H, O}, {O, H}, {O}}
        : gru  ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {H}, {}}
        : lstm ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, K}, {3 * H},  // peepholes
                                                   O > 0 ? std::vector<int64_t>{O, H} : std::vector<int64_t>{}}
               : std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {}, {}};
    for (size_t d = 0; d < D; ++d)
      for (size_t k = 0; k < 5; ++k) {
        const size_t index = 5 * (l * D + d) + k;
        const OptArr& p = params[index];
        const std::string name = "params[" + std::to_string(index) + "]";
        const bool weight = k == 0 || k == 2 || ((jordan || layer_norm) && k == 3) || (lstm && k == 4 && O > 0);
        if (!p.has_value() || shapes[k].empty()) {
          if (weight) throw nb::value_error((name + ": a weight is required").c_str());
          if (p.has_value()) throw nb::value_error((name + ": expected None (unused for this cell)").c_str());
          c.ptrs.push_back(nullptr);
          continue;
        }
        if (!have_dtype) {
          c.dbl = is_double(*p, name.c_str());
          have_dtype = true;
        }
        c.ptrs.push_back(c.dbl ? static_cast<const void*>(buf<double>(p, name.c_str(), shapes[k]))
                               : static_cast<const void*>(buf<float>(p, name.c_str(), shapes[k])));
      }
    c.out = K;
    c.in = l == 0 ? I : c.in;
    c.state_width.push_back(K);
    c.cell_width.push_back(H);
  }
  return c;
}

// Owns a StreamBase; checks shapes and dtypes on every call (cheap: two arrays).
class PyStream {
 public:
  // sizes: (I, H, O) per layer; params: five per layer, as make_stream in rnnkit.h.
  // precision: -1 the parameters' own (float32 / float64), 0 int8, 1 bf16 weights (float32
  // parameters; native_dot false forces the portable dot products, rnnkit.h).
  // layer_norm: the layer-normalised LSTM / GRU (rnnkit.h, make_stream), float weights only.
  PyStream(int isa, int arch, int act, int out_act, bool reset_after, int64_t B, const std::vector<int64_t>& sizes,
           const std::vector<OptArr>& params, int precision = -1, bool native_dot = true, double zoneout = 0.0,
           bool layer_norm = false)
      : B_(B) {
    if (layer_norm && precision >= 0)
      throw nb::value_error("layer_norm: expected False with int8 / bf16 weights (precision 0 / 1), got True");
    if (precision < -1 || precision > 1)
      throw nb::value_error(("precision: expected -1, 0 (int8) or 1 (bf16), got " + std::to_string(precision)).c_str());
    if (!(zoneout >= 0 && zoneout < 1))
      throw nb::value_error(("zoneout: expected a rate in [0, 1), got " + std::to_string(zoneout)).c_str());
    const Isa i = checked_isa(isa);
    if (B < 1) throw nb::value_error(("batch_size: expected a positive integer, got " + std::to_string(B)).c_str());
    CheckedLayers c = checked_layers(arch, 1, sizes, params, layer_norm, reset_after);
    const Arch a = c.arch;
    const int64_t layers = int64_t(c.state_width.size());
    dbl_ = c.dbl;
    in_ = c.in;
    out_ = c.out;
    state_width_ = c.state_width;
    cell_width_ = c.cell_width;
    lstm_ = a == Arch::lstm;
    const Act f = checked_act(act, "nonlinearity"), g = checked_act(out_act, "output_nonlinearity");
    if (precision >= 0 && dbl_) throw nb::type_error("params: int8 / bf16 weights are made from float32 parameters, got float64");
    for (size_t k = 0; precision == 0 && k < sizes.size(); ++k)
      if (sizes[k] > 65536)
        throw nb::value_error(("sizes: int8 products take at most 65536 inputs (int32 sums), got " +
                               std::to_string(sizes[k])).c_str());
    auto make = [&]() -> StreamBase* {
      const Isa isa = i;
      if (precision >= 0) {
        RNNKIT_DISPATCH_RETURN(isa, make_lowp_stream, Precision(precision), native_dot, a, f, g, reset_after, B, layers,
                               sizes.data(), c.ptrs.data(), zoneout)
      }
      RNNKIT_DISPATCH_RETURN(isa, make_stream, dbl_, a, f, g, reset_after, B, layers, sizes.data(), c.ptrs.data(),
                             zoneout, layer_norm)
    };
    impl_ = make();  // the stream holds its own packed copies
  }
  ~PyStream() { delete impl_; }
  PyStream(const PyStream&) = delete;
  PyStream& operator=(const PyStream&) = delete;

  void step(const Arr& x, const Out& y, int nthreads) {
    const void* px = dbl_ ? static_cast<const void*>(buf<double>(x, "x", {B_, in_}))
                          : static_cast<const void*>(buf<float>(x, "x", {B_, in_}));
    void* py = dbl_ ? static_cast<void*>(buf<double>(y, "out", {B_, out_}))
                    : static_cast<void*>(buf<float>(y, "out", {B_, out_}));
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(busy_);
    impl_->step(px, py, nthreads < 1 ? 1 : nthreads);
  }

  // The pointer entries (rnnkit.Stream.step with torch tensors, the cells without autograd):
  // buffer addresses whose dtype, shape, C-contiguity and device the Python caller has
  // checked, since a check in Python costs less than nanobind's conversion of a torch
  // tensor. x (B, I), y / next[k] (B, state width k), rec[k] (B, record width k) or 0.
  void step_ptr(uintptr_t x, uintptr_t y, int nthreads) {
    if (!x || !y) throw nb::value_error("x, out: expected the addresses of the buffers, got 0");
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(busy_);
    impl_->step(reinterpret_cast<const void*>(x), reinterpret_cast<void*>(y), nthreads < 1 ? 1 : nthreads);
  }
  void cell_step_ptr(uintptr_t x, uintptr_t prev0, uintptr_t prev1, uintptr_t next0, uintptr_t next1,
                     uintptr_t rec0, uintptr_t rec1, int nthreads) {
    if (state_width_.size() != 1) throw nb::value_error("cell_step: expected a one-layer stream");
    if (!x || !next0 || (lstm_ && !next1))
      throw nb::value_error("x, next: expected the addresses of the buffers, got 0");
    const void* prev[2] = {reinterpret_cast<const void*>(prev0), reinterpret_cast<const void*>(prev1)};
    void* next[2] = {reinterpret_cast<void*>(next0), reinterpret_cast<void*>(next1)};
    void* rec[2] = {reinterpret_cast<void*>(rec0), reinterpret_cast<void*>(rec1)};
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(busy_);  // the stream's scratch is shared by the calls
    impl_->cell_step(reinterpret_cast<const void*>(x), prev, next, rec, nthreads < 1 ? 1 : nthreads);
  }

  // Copies the state of `layer` (which 0: h or y, 1: c) into / out of `buffer` (B, width).
  void state(int64_t layer, int which, const Out& buffer, bool write) {
    if (layer < 0 || layer >= int64_t(state_width_.size()))
      throw nb::value_error(("layer: expected 0.." + std::to_string(state_width_.size() - 1) + ", got " +
                             std::to_string(layer)).c_str());
    if (which == 1 && !lstm_) throw nb::value_error("which: only an LSTM has a cell state");
    if (which != 0 && which != 1) throw nb::value_error(("which: expected 0 or 1, got " + std::to_string(which)).c_str());
    const int64_t w = (which == 1 ? cell_width_ : state_width_)[size_t(layer)];
    void* p = dbl_ ? static_cast<void*>(buf<double>(buffer, "state", {B_, w}))
                   : static_cast<void*>(buf<float>(buffer, "state", {B_, w}));
    const size_t bytes = size_t(B_ * w) * (dbl_ ? sizeof(double) : sizeof(float));
    if (write)
      std::memcpy(impl_->state(layer, which), p, bytes);
    else
      std::memcpy(p, impl_->state(layer, which), bytes);
  }

 private:
  StreamBase* impl_ = nullptr;
  int64_t B_, in_ = 0, out_ = 0;
  bool dbl_ = false, lstm_ = false;
  std::vector<int64_t> state_width_, cell_width_;  // per layer: h (or y), and an LSTM's c
  std::mutex busy_;
};


// ------------------------------------------------------------------------- Stack
// Owns a StackBase (a module's whole forward pass for inference); run checks every
// array against the plan's sizes and dtype.
class PyStack {
 public:
  // directions: 1 or 2; sizes: (I, H, O) per layer; params: five per layer and
  // direction (index l*D + d), as make_stack in rnnkit.h.
  // layer_norm: as PyStream's.
  PyStack(int isa, int arch, int act, int out_act, bool reset_after, int64_t directions,
          const std::vector<int64_t>& sizes, const std::vector<OptArr>& params, bool layer_norm = false) {
    const Isa i = checked_isa(isa);
    if (directions != 1 && directions != 2)
      throw nb::value_error(("directions: expected 1 or 2, got " + std::to_string(directions)).c_str());
    CheckedLayers c = checked_layers(arch, directions, sizes, params, layer_norm, reset_after);
    const Arch a = c.arch;
    L_ = int64_t(c.state_width.size());
    D_ = directions;
    dbl_ = c.dbl;
    in_ = c.in;
    width_ = c.out;
    cell_ = c.cell_width.back();  // an LSTM's c (H), beside h (P when projected)
    states_ = a == Arch::lstm ? 2 : 1;
    const Act f = checked_act(act, "nonlinearity"), g = checked_act(out_act, "output_nonlinearity");
    auto make = [&]() -> StackBase* {
      const Isa isa = i;
      RNNKIT_DISPATCH_RETURN(isa, make_stack, dbl_, a, f, g, reset_after, L_, D_, sizes.data(), c.ptrs.data(),
                             layer_norm)
    };
    impl_ = make();  // the plan holds its own packed copies
  }
  ~PyStack() { delete impl_; }
  PyStack(const PyStack&) = delete;
  PyStack& operator=(const PyStack&) = delete;

  void run(const Arr& x, const OptArr& lengths, const OptArr& init0, const OptArr& init1, const Out& out,
           const Out& final0, const OptOut& final1, int nthreads) {
    if (dbl_)
      run_t<double>(x, lengths, init0, init1, out, final0, final1, nthreads);
    else
      run_t<float>(x, lengths, init0, init1, out, final0, final1, nthreads);
  }

 private:
  template <typename S>
  void run_t(const Arr& x, const OptArr& lengths, const OptArr& init0, const OptArr& init1, const Out& out,
             const Out& final0, const OptOut& final1, int nthreads) {
    if (x.ndim() != 3 || int64_t(x.shape(0)) < 1 || int64_t(x.shape(1)) < 1 || int64_t(x.shape(2)) != in_)
      throw nb::value_error(("x: expected shape (T, B, " + std::to_string(in_) + ") with T, B >= 1, got " +
                             shape_str(shape_of(x))).c_str());
    const int64_t T = int64_t(x.shape(0)), B = int64_t(x.shape(1)), W = width_;
    const S* p_x = buf<S>(x, "x", {T, B, in_});
    const int64_t* p_len = lengths_buf(lengths, B, T);
    if (states_ < 2 && init1.has_value()) throw nb::value_error("init1: expected None (only an LSTM has a second state)");
    if (states_ < 2 && final1.has_value()) throw nb::value_error("final1: expected None (only an LSTM has a second state)");
    const void* init[2] = {buf<S>(init0, "init0", {L_ * D_, B, W}), buf<S>(init1, "init1", {L_ * D_, B, cell_})};
    S* p_out = buf<S>(out, "out", {T, B, D_ * W});
    void* final[2] = {buf<S>(final0, "final0", {L_ * D_, B, W}), nullptr};
    if (states_ > 1 && !final1) throw nb::value_error("final1: required for an LSTM (its final cell states), got None");
    if (states_ > 1) final[1] = buf<S>(*final1, "final1", {L_ * D_, B, cell_});
    nb::gil_scoped_release release;
    impl_->run(T, B, p_x, p_len, init, p_out, final, checked_threads(nthreads));
  }

 public:
  // The pointer entry (rnnkit._stack with torch tensors): buffer addresses whose dtype,
  // shape, C-contiguity and device the Python caller has checked against this plan,
  // since a check in Python costs less than nanobind's conversion of a torch tensor.
  // x (T, B, I); init0 / init1 (L*D, B, width / cell width) or 0 for zeros; out
  // (T, B, D*width); final0 (L*D, B, width); final1 (L*D, B, cell width): an LSTM's,
  // required for it and 0 for the others. No lengths: every sequence is T long.
  void run_ptr(int64_t T, int64_t B, uintptr_t x, uintptr_t init0, uintptr_t init1, uintptr_t out,
               uintptr_t final0, uintptr_t final1, int nthreads) {
    if (T < 1 || B < 1)
      throw nb::value_error(("T, B: expected positive sizes, got " + std::to_string(T) + ", " + std::to_string(B)).c_str());
    if (!x || !out || !final0) throw nb::value_error("x, out, final0: expected the addresses of the buffers, got 0");
    if (states_ < 2 && (init1 || final1))
      throw nb::value_error("init1, final1: expected 0 (only an LSTM has a second state), got an address");
    if (states_ > 1 && !final1) throw nb::value_error("final1: required for an LSTM (its final cell states), got 0");
    const void* init[2] = {reinterpret_cast<const void*>(init0), reinterpret_cast<const void*>(init1)};
    void* final[2] = {reinterpret_cast<void*>(final0), reinterpret_cast<void*>(final1)};
    nb::gil_scoped_release release;
    impl_->run(T, B, reinterpret_cast<const void*>(x), nullptr, init, reinterpret_cast<void*>(out), final,
               checked_threads(nthreads));
  }

 private:
  StackBase* impl_ = nullptr;
  int64_t L_ = 0, D_ = 1, in_ = 0, width_ = 0, cell_ = 0;
  int states_ = 1;
  bool dbl_ = false;
};

// ------------------------------------------------------------------------- Snapshot
// A copy of the bytes of some buffers (addrs[i], sizes[i] bytes), taken when made;
// same() says whether the buffers still hold them: rnnkit._cache.PlanCache's check that
// a parameter still has the contents its plan was built from (a write through `.data`
// or NumPy bumps no version counter). The addresses come from live tensors whose
// storages the cache pins while the snapshot lives, and same() is called only after
// it has checked that the tensors are still at them. Private to that cache.
class Snapshot {
 public:
  Snapshot(const std::vector<uintptr_t>& addrs, const std::vector<int64_t>& sizes) : addrs_(addrs), sizes_(sizes) {
    if (addrs.size() != sizes.size())
      throw nb::value_error(("sizes: expected one per address (" + std::to_string(addrs.size()) + "), got " +
                             std::to_string(sizes.size())).c_str());
    size_t total = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] < 0)
        throw nb::value_error(("sizes: expected sizes >= 0, got " + std::to_string(sizes[i])).c_str());
      if (sizes[i] && !addrs[i]) throw nb::value_error("addrs: expected the address of a buffer, got 0");
      total += size_t(sizes[i]);
    }
    copy_.resize(total);
    char* c = copy_.data();
    for (size_t i = 0; i < addrs.size(); c += sizes[i], ++i)
      if (sizes[i]) std::memcpy(c, reinterpret_cast<const void*>(addrs[i]), size_t(sizes[i]));
  }
  bool same() const {
    if (copy_.size() < (size_t(1) << 20)) return compare();
    nb::gil_scoped_release release;
    return compare();
  }

 private:
  bool compare() const {
    const char* c = copy_.data();
    for (size_t i = 0; i < addrs_.size(); c += sizes_[i], ++i)
      if (sizes_[i] && std::memcmp(reinterpret_cast<const void*>(addrs_[i]), c, size_t(sizes_[i])) != 0) return false;
    return true;
  }
  std::vector<uintptr_t> addrs_;
  std::vector<int64_t> sizes_;
  std::vector<char> copy_;
};

// ------------------------------------------------------------------------- Products
// A and W may be any strided 2-D views (a transposed tensor passes without a copy).
using Strided = nb::ndarray<nb::device::cpu, nb::ndim<2>>;

template <typename S>
void matmul_nt_t(Isa isa, const Strided& a, const Strided& w, const OptArr& bias, const Out& out, int nt) {
  const int64_t M = int64_t(a.shape(0)), K = int64_t(a.shape(1)), N = int64_t(w.shape(0));
  if (int64_t(w.shape(1)) != K)
    throw nb::value_error(("w: expected shape (N, " + std::to_string(K) + ") to match a's columns, got " +
                           shape_str(shape_of(w))).c_str());
  if (w.dtype() != nb::dtype<S>())
    throw nb::type_error(("w: expected dtype " + dtype_str(a.dtype()) + " like a, got " + dtype_str(w.dtype())).c_str());
  const S* p_bias = buf<S>(bias, "bias", {N});
  S* p_out = buf<S>(out, "out", {M, N});
  const S* p_a = static_cast<const S*>(a.data());
  const S* p_w = static_cast<const S*>(w.data());
  const int64_t sam = a.stride(0), sak = a.stride(1), swn = w.stride(0), swk = w.stride(1);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, matmul_nt, M, N, K, p_a, sam, sak, p_w, swn, swk, p_bias, p_out, nt)
}

void matmul_nt(int isa, const Strided& a, const Strided& w, const OptArr& bias, const Out& out, int nt) {
  bool dbl;
  if (a.dtype() == nb::dtype<float>())
    dbl = false;
  else if (a.dtype() == nb::dtype<double>())
    dbl = true;
  else
    throw nb::type_error(("a: expected dtype float32 or float64, got " + dtype_str(a.dtype())).c_str());
  (dbl ? matmul_nt_t<double> : matmul_nt_t<float>)(checked_isa(isa), a, w, bias, out, checked_threads(nt));
}


// ------------------------------------------------------------------------- Reduced precision
// One layer in one direction with int8 or bf16 weights (rnnkit.h: LowpLayerBase); float32 only.
class PyLowpLayer {
 public:
  // precision: 0 int8, 1 bf16; sizes (I, H, O); params: five entries as PyStream's.
  PyLowpLayer(int isa, int precision, bool native_dot, int arch, int act, int out_act, bool reset_after,
              const std::vector<int64_t>& sizes, const std::vector<OptArr>& params) {
    const Isa i = checked_isa(isa);
    if (precision != 0 && precision != 1)
      throw nb::value_error(("precision: expected 0 (int8) or 1 (bf16), got " + std::to_string(precision)).c_str());
    if (arch < 0 || arch > 3) throw nb::value_error(("arch: expected 0..3, got " + std::to_string(arch)).c_str());
    if (sizes.size() != 3) throw nb::value_error("sizes: expected (I, H, O)");
    if (params.size() != 5) throw nb::value_error("params: expected five entries");
    const Arch a = Arch(arch);
    const int64_t G = gate_count(a), I = sizes[0], H = sizes[1], O = sizes[2];
    const bool jordan = a == Arch::jordan, gru = a == Arch::gru, lstm = a == Arch::lstm;
    if (I < 1 || H < 1 || (jordan && O < 1) || O < 0) throw nb::value_error("sizes: every size must be positive");
    if (!jordan && !lstm && O != 0) throw nb::value_error("sizes: O must be 0 for this cell");
    const int64_t K = lstm && O > 0 ? O : H;  // the width of h: a projected LSTM's P
    const int64_t K_rec = jordan && O > H ? O : H, K_max = I > K_rec ? I : K_rec;
    if (precision == 0 && K_max > 65536)
      throw nb::value_error(("sizes: int8 products take at most 65536 inputs (int32 sums), got " +
                             std::to_string(K_max)).c_str());
    const std::vector<std::vector<int64_t>> shapes =
        jordan ? std::vector<std::vector<int64_t>>{{H, I}, {H}, {H, O}, {O, H}, {O}}
        : gru  ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {H}, {}}
        : lstm ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, K}, {3 * H},
                                                   O > 0 ? std::vector<int64_t>{O, H} : std::vector<int64_t>{}}
               : std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {}, {}};
    const float* ptrs[5];
    for (size_t k = 0; k < 5; ++k) {
      const OptArr& p = params[k];
      const std::string name = "params[" + std::to_string(k) + "]";
      const bool weight = k == 0 || k == 2 || (jordan && k == 3) || (lstm && k == 4 && O > 0);
      if (!p.has_value() || shapes[k].empty()) {
        if (weight) throw nb::value_error((name + ": a weight is required").c_str());
        if (p.has_value()) throw nb::value_error((name + ": expected None (unused for this cell)").c_str());
        ptrs[k] = nullptr;
        continue;
      }
      ptrs[k] = buf<float>(p, name.c_str(), shapes[k]);
    }
    I_ = I;
    GH_ = G * H;
    states_ = lstm ? 2 : 1;
    width_ = jordan ? O : K;
    cell_ = H;
    const Act f = checked_act(act, "nonlinearity"), g = checked_act(out_act, "output_nonlinearity");
    const Precision pr = Precision(precision);
    auto make = [&]() -> LowpLayerBase* {
      const Isa isa = i;
      RNNKIT_DISPATCH_RETURN(isa, make_lowp_layer, pr, native_dot, a, f, g, reset_after, I, H, O, ptrs)
    };
    impl_ = make();
  }
  ~PyLowpLayer() { delete impl_; }
  PyLowpLayer(const PyLowpLayer&) = delete;
  PyLowpLayer& operator=(const PyLowpLayer&) = delete;

  // x (T, B, I); init: one (B, W) array or None per state; out (T, B, W); finals (B, W) per state.
  void forward(const Arr& x, const std::vector<OptArr>& init, const OptArr& lengths, const Out& out,
               const std::vector<Out>& finals, int nthreads) {
    require_rank(x, 3, "x", "(T, B, I)");
    const int64_t T = int64_t(x.shape(0)), B = int64_t(x.shape(1));
    const float* px = buf<float>(x, "x", {T, B, I_});
    if (init.size() != size_t(states_) || finals.size() != size_t(states_))
      throw nb::value_error(("init, finals: expected " + std::to_string(states_) + " entries each").c_str());
    const float* pi[2] = {nullptr, nullptr};
    float* pf[2] = {nullptr, nullptr};
    for (int k = 0; k < states_; ++k) {
      pi[k] = buf<float>(init[size_t(k)], k ? "init[1]" : "init[0]", {B, k ? cell_ : width_});
      pf[k] = buf<float>(finals[size_t(k)], k ? "finals[1]" : "finals[0]", {B, k ? cell_ : width_});
    }
    const int64_t* p_len = lengths_buf(lengths, B, T);
    float* p_out = buf<float>(out, "out", {T, B, width_});
    nb::gil_scoped_release release;
    impl_->forward(T, B, px, pi, p_len, p_out, pf, checked_threads(nthreads));
  }

  // xw (M, G*H) = x (M, I) W_ih^T + bias.
  void project(const Arr& x, const Out& xw, int nthreads) {
    require_rank(x, 2, "x", "(M, I)");
    const int64_t M = int64_t(x.shape(0));
    const float* px = buf<float>(x, "x", {M, I_});
    float* py = buf<float>(xw, "xw", {M, GH_});
    nb::gil_scoped_release release;
    impl_->project(M, px, py, checked_threads(nthreads));
  }

  bool native_dot() const { return impl_->native_dot(); }

 private:
  LowpLayerBase* impl_ = nullptr;
  int64_t I_ = 0, GH_ = 0, width_ = 0, cell_ = 0;  // h (P when projected) or y; an LSTM's c (H)
  int states_ = 1;
};

}  // namespace

NB_MODULE(_core, m) {
  nb::class_<PyStream>(m, "Stream", "One-step-per-call state machine over packed weights (see rnnkit.Stream).")
      .def(nb::init<int, int, int, int, bool, int64_t, const std::vector<int64_t>&, const std::vector<OptArr>&, int,
                    bool, double, bool>(),
           nb::arg("isa"), nb::arg("arch"), nb::arg("act"), nb::arg("out_act"), nb::arg("reset_after"),
           nb::arg("batch_size"), nb::arg("sizes"), nb::arg("params"), nb::arg("precision") = -1,
           nb::arg("native_dot") = true, nb::arg("zoneout") = 0.0, nb::arg("layer_norm") = false)
      .def("step", &PyStream::step, nb::arg("x"), nb::arg("out").noconvert(), nb::arg("nthreads"))
      .def("state", &PyStream::state, nb::arg("layer"), nb::arg("which"), nb::arg("buffer").noconvert(), nb::arg("write"));
  nb::class_<PyStack>(m, "Stack",
                      "A module's whole forward pass for inference, weights packed once (see rnnkit._stack).")
      .def(nb::init<int, int, int, int, bool, int64_t, const std::vector<int64_t>&, const std::vector<OptArr>&,
                    bool>(),
           nb::arg("isa"), nb::arg("arch"), nb::arg("act"), nb::arg("out_act"), nb::arg("reset_after"),
           nb::arg("directions"), nb::arg("sizes"), nb::arg("params"), nb::arg("layer_norm") = false)
      .def("run", &PyStack::run, nb::arg("x"), nb::arg("lengths").none(), nb::arg("init0").none(),
           nb::arg("init1").none(), nb::arg("out").noconvert(), nb::arg("final0").noconvert(),
           nb::arg("final1").none().noconvert(), nb::arg("nthreads"))
      .def("run_ptr", &PyStack::run_ptr, nb::arg("T"), nb::arg("B"), nb::arg("x"), nb::arg("init0"), nb::arg("init1"),
           nb::arg("out"), nb::arg("final0"), nb::arg("final1"), nb::arg("nthreads"));
  nb::class_<Snapshot>(m, "Snapshot",
                       "A copy of some buffers' bytes, compared with them later (see rnnkit._cache.PlanCache).")
      .def(nb::init<const std::vector<uintptr_t>&, const std::vector<int64_t>&>(), nb::arg("addrs"), nb::arg("sizes"))
      .def("same", &Snapshot::same);
  m.doc() = "rnnkit C++ core: sequential forward and BPTT kernels (see csrc/rnnkit.h)";
  // The codes the functions below take, as rnnkit.h defines them (Python reads them here).
  nb::enum_<Isa>(m, "Isa", nb::is_arithmetic(), "Instruction sets the kernels are compiled for.")
      .value("generic", Isa::generic)
      .value("avx2", Isa::avx2)
      .value("avx512", Isa::avx512);
  nb::enum_<Act>(m, "Act", nb::is_arithmetic(), "Elementwise nonlinearities of the Elman and Jordan cells.")
      .value("identity", Act::identity)
      .value("tanh", Act::tanh)
      .value("relu", Act::relu)
      .value("sigmoid", Act::sigmoid);
  nb::enum_<Arch>(m, "Arch", nb::is_arithmetic(), "The cells of the core (Stream's arch).")
      .value("elman", Arch::elman)
      .value("lstm", Arch::lstm)
      .value("gru", Arch::gru)
      .value("jordan", Arch::jordan);
  m.def("gate_count", [](int arch) {
    if (arch < 0 || arch > 3) throw nb::value_error(("arch: expected 0..3, got " + std::to_string(arch)).c_str());
    return gate_count(Arch(arch));
  }, nb::arg("arch"), "Gate rows stacked in the cell's weights (Elman 1, LSTM 4, GRU 3, Jordan 1).");
  m.def("best_isa", [] { return int(best_isa()); }, "Best instruction set on this CPU (an Isa code).");
  m.def("isa_supported", [](int isa) { return isa >= 0 && isa <= 2 && isa_supported(Isa(isa)); });
  // The OpenMP runtime thread teams fork on (parallel.h): the addresses of GOMP_parallel,
  // omp_get_thread_num and omp_get_num_threads of a libgomp already loaded in the process
  // (rnnkit._backend finds torch's), or all three 0 for std::threads.
  m.def("set_team_runtime", [](uintptr_t parallel, uintptr_t thread_num, uintptr_t num_threads) {
    if (!parallel && !thread_num && !num_threads) return set_team_runtime(nullptr);
    if (!parallel || !thread_num || !num_threads)
      throw nb::value_error("set_team_runtime: expected three function addresses, or three zeros");
    TeamRuntime rt;
    rt.parallel = reinterpret_cast<decltype(rt.parallel)>(parallel);
    rt.thread_num = reinterpret_cast<decltype(rt.thread_num)>(thread_num);
    rt.num_threads = reinterpret_cast<decltype(rt.num_threads)>(num_threads);
    return set_team_runtime(&rt);
  }, nb::arg("parallel"), nb::arg("thread_num"), nb::arg("num_threads"),
        "Fork thread teams on this OpenMP runtime (False: a different one was given before), or on "
        "std::threads (three zeros).");
  m.def("team_runtime_active", &team_runtime_active, "Whether thread teams fork on an OpenMP runtime now.");
  m.def("elman_forward", &elman_forward, nb::arg("isa"), nb::arg("act"), nb::arg("xw"), nb::arg("w_hh"),
        nb::arg("h0").none(), nb::arg("lengths").none(), nb::arg("hs").noconvert(), nb::arg("out").none().noconvert(), nb::arg("nthreads"),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("elman_backward", &elman_backward, nb::arg("isa"), nb::arg("act"), nb::arg("w_hh"), nb::arg("hs"),
        nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(), nb::arg("da").noconvert(), nb::arg("dh0").noconvert(),
        nb::arg("dhs").none().noconvert(), nb::arg("nthreads"),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("lstm_forward", &lstm_forward, nb::arg("isa"), nb::arg("xw"), nb::arg("w_hh"), nb::arg("h0").none(),
        nb::arg("c0").none(), nb::arg("lengths").none(), nb::arg("hs").noconvert(), nb::arg("cs").noconvert(), nb::arg("gates").noconvert(),
        nb::arg("out").none().noconvert(), nb::arg("nthreads"), nb::arg("w_ch").none() = nb::none(),
        nb::arg("w_hr").none() = nb::none(),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("lstm_backward", &lstm_backward, nb::arg("isa"), nb::arg("w_hh"), nb::arg("hs"), nb::arg("cs"),
        nb::arg("gates"), nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(),
        nb::arg("dc_n").none(), nb::arg("da").noconvert(), nb::arg("dh0").noconvert(), nb::arg("dc0").noconvert(), nb::arg("dhs").none().noconvert(),
        nb::arg("dcs").none().noconvert(), nb::arg("nthreads"), nb::arg("w_ch").none() = nb::none(),
        nb::arg("w_hr").none() = nb::none(), nb::arg("dr").none().noconvert() = nb::none(),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("ln_lstm_forward", &ln_lstm_forward, nb::arg("isa"), nb::arg("xw"), nb::arg("w_hh"), nb::arg("gamma_hh"),
        nb::arg("gamma_c"), nb::arg("beta_c"), nb::arg("h0").none(), nb::arg("c0").none(), nb::arg("lengths").none(),
        nb::arg("hs").noconvert(), nb::arg("cs").noconvert(), nb::arg("gates").noconvert(), nb::arg("raw").noconvert(),
        nb::arg("out").none().noconvert(), nb::arg("nthreads"));
  m.def("ln_lstm_backward", &ln_lstm_backward, nb::arg("isa"), nb::arg("w_hh"), nb::arg("gamma_hh"),
        nb::arg("gamma_c"), nb::arg("beta_c"), nb::arg("hs"), nb::arg("cs"), nb::arg("gates"), nb::arg("raw"),
        nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(), nb::arg("dc_n").none(),
        nb::arg("dv").noconvert(), nb::arg("dA").noconvert(), nb::arg("dh0").noconvert(), nb::arg("dc0").noconvert(),
        nb::arg("dhs").none().noconvert(), nb::arg("dcs").none().noconvert(), nb::arg("nthreads"));
  m.def("ln_gru_forward", &ln_gru_forward, nb::arg("isa"), nb::arg("xw"), nb::arg("w_hh"), nb::arg("gamma_hh"),
        nb::arg("b_hh").none(), nb::arg("h0").none(), nb::arg("lengths").none(), nb::arg("hs").noconvert(),
        nb::arg("gates").noconvert(), nb::arg("raw").noconvert(), nb::arg("out").none().noconvert(), nb::arg("nthreads"));
  m.def("ln_gru_backward", &ln_gru_backward, nb::arg("isa"), nb::arg("w_hh"), nb::arg("gamma_hh"),
        nb::arg("b_hh").none(), nb::arg("hs"), nb::arg("gates"), nb::arg("raw"), nb::arg("lengths").none(),
        nb::arg("d_out").none(), nb::arg("dh_n").none(), nb::arg("da").noconvert(), nb::arg("dA").noconvert(),
        nb::arg("dh0").noconvert(), nb::arg("dhs").none().noconvert(), nb::arg("nthreads"));
  m.def("gru_forward", &gru_forward, nb::arg("isa"), nb::arg("reset_after"), nb::arg("xw"), nb::arg("w_hh"),
        nb::arg("b_hn").none(), nb::arg("h0").none(), nb::arg("lengths").none(), nb::arg("hs").noconvert(), nb::arg("gates").noconvert(),
        nb::arg("hn").noconvert(), nb::arg("out").none().noconvert(), nb::arg("nthreads"),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("gru_backward", &gru_backward, nb::arg("isa"), nb::arg("reset_after"), nb::arg("w_hh"), nb::arg("hs"),
        nb::arg("gates"), nb::arg("hn"), nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(),
        nb::arg("da").noconvert(), nb::arg("da_hn").noconvert(), nb::arg("dh0").noconvert(), nb::arg("dhs").none().noconvert(), nb::arg("nthreads"),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("jordan_forward", &jordan_forward, nb::arg("isa"), nb::arg("act"), nb::arg("out_act"), nb::arg("xw"),
        nb::arg("w_yh"), nb::arg("w_hy"), nb::arg("b_hy").none(), nb::arg("y0").none(), nb::arg("lengths").none(),
        nb::arg("hs").noconvert(), nb::arg("ys").noconvert(), nb::arg("out").none().noconvert(), nb::arg("nthreads"),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("jordan_backward", &jordan_backward, nb::arg("isa"), nb::arg("act"), nb::arg("out_act"), nb::arg("w_yh"),
        nb::arg("w_hy"), nb::arg("hs"), nb::arg("ys"), nb::arg("lengths").none(), nb::arg("d_out").none(),
        nb::arg("dy_n").none(), nb::arg("da").noconvert(), nb::arg("d_o").noconvert(), nb::arg("dy0").noconvert(), nb::arg("dys").none().noconvert(),
        nb::arg("nthreads"),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("same_bytes", [](const std::vector<uintptr_t>& addrs, const std::vector<int64_t>& sizes, uintptr_t copy) {
    // Whether buffer i (addrs[i], sizes[i] bytes) holds the bytes of the i-th consecutive
    // segment of `copy`: rnnkit._cache.PlanCache's check that a parameter still has the
    // contents its plan was built from (a write through `.data` bumps no version
    // counter). Private: the addresses come from live tensors and the cache's own copy.
    if (addrs.size() != sizes.size()) throw nb::value_error("same_bytes: addrs and sizes differ in length");
    int64_t total = 0;
    for (int64_t n : sizes) {
      if (n < 0) throw nb::value_error("same_bytes: a size is negative");
      total += n;
    }
    auto compare = [&]() {
      const char* c = reinterpret_cast<const char*>(copy);
      for (size_t i = 0; i < addrs.size(); c += sizes[i], ++i)
        if (sizes[i] && std::memcmp(reinterpret_cast<const void*>(addrs[i]), c, size_t(sizes[i])) != 0) return false;
      return true;
    };
    if (total < (int64_t(1) << 20)) return compare();
    nb::gil_scoped_release release;
    return compare();
  }, nb::arg("addrs"), nb::arg("sizes"), nb::arg("copy"));
  // Pointer entries: the Python caller checks every buffer first (rnnkit.streaming, rnnkit.cells).
  m.def("stream_step_ptr", [](PyStream& s, uintptr_t x, uintptr_t y, int nt) { s.step_ptr(x, y, nt); },
        nb::arg("stream"), nb::arg("x"), nb::arg("out"), nb::arg("nthreads"));
  m.def("cell_step_ptr",
        [](PyStream& s, uintptr_t x, uintptr_t prev0, uintptr_t prev1, uintptr_t next0, uintptr_t next1,
           uintptr_t rec0, uintptr_t rec1, int nt) { s.cell_step_ptr(x, prev0, prev1, next0, next1, rec0, rec1, nt); },
        nb::arg("stream"), nb::arg("x"), nb::arg("prev0"), nb::arg("prev1"), nb::arg("next0"), nb::arg("next1"),
        nb::arg("rec0"), nb::arg("rec1"), nb::arg("nthreads"));
  m.def("matmul_nt", &matmul_nt, nb::arg("isa"), nb::arg("a"), nb::arg("w"), nb::arg("bias").none(),
        nb::arg("out").noconvert(), nb::arg("nthreads"),
        "out (M, N) = a (M, K) @ w (N, K)^T + bias (N) on the core's packed GEMM; a and w may be strided.");
  nb::class_<PyLowpLayer>(m, "LowpLayer", "One layer and direction with int8 or bf16 weights (see rnnkit.quantize_dynamic).")
      .def(nb::init<int, int, bool, int, int, int, bool, const std::vector<int64_t>&, const std::vector<OptArr>&>(),
           nb::arg("isa"), nb::arg("precision"), nb::arg("native_dot"), nb::arg("arch"), nb::arg("act"),
           nb::arg("out_act"), nb::arg("reset_after"), nb::arg("sizes"), nb::arg("params"))
      .def("forward", &PyLowpLayer::forward, nb::arg("x"), nb::arg("init"), nb::arg("lengths").none(),
           nb::arg("out").noconvert(), nb::arg("finals").noconvert(), nb::arg("nthreads"))
      .def("project", &PyLowpLayer::project, nb::arg("x"), nb::arg("xw").noconvert(), nb::arg("nthreads"))
      .def_prop_ro("native_dot", &PyLowpLayer::native_dot);
  m.def("lowp_dot_supported", [](int precision) {
    if (precision != 0 && precision != 1)
      throw nb::value_error(("precision: expected 0 (int8) or 1 (bf16), got " + std::to_string(precision)).c_str());
    return lowp_dot_supported(Precision(precision));
  }, nb::arg("precision"), "Whether this CPU has the VNNI (0: int8) / AVX512-BF16 (1: bf16) dot instructions.");
}
