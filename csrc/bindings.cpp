// The one binding module, rnnkit._core: checks every buffer's dtype, shape and
// layout, releases the GIL and calls the kernels of rnnkit.h. Output buffers are
// allocated by the caller (torch.empty) and passed in. Any inconsistency raises
// TypeError / ValueError naming the argument; nothing reaches a kernel unchecked.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

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
// (SPEC section 14): zone / raw for h (Jordan: y), zone_c / raw_c for the LSTM's c.
struct RegArgs {
  const OptArr &zone, &zone_c, &drop;
  const OptOut &raw, &raw_c;
};

template <typename S> Regular<S> regular(const RegArgs& a, int64_t T, int64_t B, int64_t W, bool has_c) {
  if (a.zone_c.has_value() && !has_c) throw nb::value_error("zone_c: only an LSTM has a cell state to zone out");
  Regular<S> r;
  r.zone[0] = buf<S>(a.zone, "zone", {T, B, W});
  r.raw[0] = buf<S>(a.raw, "raw", {T, B, W});
  r.zone[1] = buf<S>(a.zone_c, "zone_c", {T, B, W});
  r.raw[1] = buf<S>(a.raw_c, "raw_c", {T, B, W});
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
                     const Out& hs, const OptOut& out, int nt,
    const RegArgs& ra) {
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
                      const OptArr& dh_n, const Out& da, const Out& dh0, const OptOut& dhs, int nt,
    const RegArgs& ra) {
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
template <typename S>
void lstm_forward_t(Isa isa, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& c0,
                    const OptArr& lengths, const Out& hs, const Out& cs, const Out& gates, const OptOut& out, int nt,
                    const OptArr& w_ch, const RegArgs& ra) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 4, "w_hh");
  seq_dims(xw, 4, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, 4 * H});
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, H});
  const S* p_ch = buf<S>(w_ch, "w_ch", {3 * H});
  const S* p_h0 = buf<S>(h0, "h0", {B, H});
  const S* p_c0 = buf<S>(c0, "c0", {B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  S* p_out = buf<S>(out, "out", {T, B, H});
  const Regular<S> reg = regular<S>(ra, T, B, H, true);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, lstm_forward, T, B, H, p_xw, p_w, p_ch, p_h0, p_c0, p_len, p_hs, p_cs, p_g, p_out, nt, reg)
}

void lstm_forward(int isa, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& c0,
                  const OptArr& lengths, const Out& hs, const Out& cs, const Out& gates, const OptOut& out, int nt,
                  const OptArr& w_ch,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(xw, "xw") ? lstm_forward_t<double> : lstm_forward_t<float>;
  run(checked_isa(isa), xw, w_hh, h0, c0, lengths, hs, cs, gates, out, checked_threads(nt), w_ch,
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

template <typename S>
void lstm_backward_t(Isa isa, const Arr& w_hh, const Arr& hs, const Arr& cs, const Arr& gates,
                     const OptArr& lengths, const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n,
                     const Out& da, const Out& dh0, const Out& dc0, const OptOut& dhs, const OptOut& dcs, int nt,
                     const OptArr& w_ch, const RegArgs& ra) {
  const int64_t H = hidden_of(w_hh, 4, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, H});
  const S* p_ch = buf<S>(w_ch, "w_ch", {3 * H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  const S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H});
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H});
  const S* p_dcn = buf<S>(dc_n, "dc_n", {B, H});
  S* p_da = buf<S>(da, "da", {T, B, 4 * H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dc0 = buf<S>(dc0, "dc0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H});
  S* p_dcs = buf<S>(dcs, "dcs", {T, B, H});
  const Regular<S> reg = regular<S>(ra, T, B, H, true);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, lstm_backward, T, B, H, p_w, p_ch, p_hs, p_cs, p_g, p_len, p_dout, p_dhn, p_dcn, p_da, p_dh0,
                  p_dc0, p_dhs, p_dcs, nt, reg)
}

void lstm_backward(int isa, const Arr& w_hh, const Arr& hs, const Arr& cs, const Arr& gates, const OptArr& lengths,
                   const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n, const Out& da, const Out& dh0,
                   const Out& dc0, const OptOut& dhs, const OptOut& dcs, int nt, const OptArr& w_ch,
    const OptArr& zone, const OptOut& raw, const OptArr& zone_c, const OptOut& raw_c, const OptArr& drop) {
  auto run = is_double(hs, "hs") ? lstm_backward_t<double> : lstm_backward_t<float>;
  run(checked_isa(isa), w_hh, hs, cs, gates, lengths, d_out, dh_n, dc_n, da, dh0, dc0, dhs, dcs,
      checked_threads(nt), w_ch,
      RegArgs{zone, zone_c, drop, raw, raw_c});
}

// ------------------------------------------------------------------------- GRU
template <typename S>
void gru_forward_t(Isa isa, bool reset_after, const Arr& xw, const Arr& w_hh, const OptArr& b_hn, const OptArr& h0,
                   const OptArr& lengths, const Out& hs, const Out& gates, const Out& hn, const OptOut& out, int nt,
    const RegArgs& ra) {
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
                    const Out& da_hn, const Out& dh0, const OptOut& dhs, int nt,
    const RegArgs& ra) {
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
                      int nt,
    const RegArgs& ra) {
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
                       const Out& dy0, const OptOut& dys, int nt,
    const RegArgs& ra) {
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
// Owns a StreamBase; checks shapes and dtypes on every call (cheap: two arrays).
class PyStream {
 public:
  // sizes: (I, H, O) per layer; params: five per layer, as make_stream in rnnkit.h.
  PyStream(int isa, int arch, int act, int out_act, bool reset_after, int64_t B, const std::vector<int64_t>& sizes,
           const std::vector<OptArr>& params, double zoneout)
      : B_(B) {
    if (!(zoneout >= 0 && zoneout < 1))
      throw nb::value_error(("zoneout: expected a rate in [0, 1), got " + std::to_string(zoneout)).c_str());
    const Isa i = checked_isa(isa);
    if (arch < 0 || arch > 3) throw nb::value_error(("arch: expected 0..3, got " + std::to_string(arch)).c_str());
    const Arch a = Arch(arch);
    if (B < 1) throw nb::value_error(("batch_size: expected a positive integer, got " + std::to_string(B)).c_str());
    if (sizes.empty() || sizes.size() % 3 != 0)
      throw nb::value_error("sizes: expected (I, H, O) for each layer");
    const size_t layers = sizes.size() / 3;
    if (params.size() != 5 * layers) throw nb::value_error("params: expected five entries per layer");
    const int64_t G = gate_count(a);
    const bool jordan = a == Arch::jordan, gru = a == Arch::gru, lstm = a == Arch::lstm;
    bool have_dtype = false;
    for (size_t l = 0; l < layers; ++l) {
      const int64_t I = sizes[3 * l], H = sizes[3 * l + 1], O = sizes[3 * l + 2];
      if (I < 1 || H < 1 || (jordan && O < 1)) throw nb::value_error("sizes: every size must be positive");
      if (l > 0 && I != (jordan ? sizes[3 * l - 1] : sizes[3 * l - 2]))
        throw nb::value_error("sizes: a layer's input size must equal the previous layer's output size");
      // w_ih, input-side bias, then the cell's weights; {} marks an unused entry.
      const std::vector<std::vector<int64_t>> shapes =
          jordan ? std::vector<std::vector<int64_t>>{{H, I}, {H}, {H, O}, {O, H}, {O}}
          : gru  ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {H}, {}}
          : lstm ? std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {3 * H}, {}}  // peepholes
                 : std::vector<std::vector<int64_t>>{{G * H, I}, {G * H}, {G * H, H}, {}, {}};
      for (size_t k = 0; k < 5; ++k) {
        const OptArr& p = params[5 * l + k];
        const std::string name = "params[" + std::to_string(5 * l + k) + "]";
        const bool weight = k == 0 || k == 2 || (jordan && k == 3);
        if (!p.has_value() || shapes[k].empty()) {
          if (weight) throw nb::value_error((name + ": a weight is required").c_str());
          if (p.has_value()) throw nb::value_error((name + ": expected None (unused for this cell)").c_str());
          ptrs_.push_back(nullptr);
          continue;
        }
        if (!have_dtype) {
          dbl_ = is_double(*p, name.c_str());
          have_dtype = true;
        }
        ptrs_.push_back(dbl_ ? static_cast<const void*>(buf<double>(p, name.c_str(), shapes[k]))
                             : static_cast<const void*>(buf<float>(p, name.c_str(), shapes[k])));
      }
      out_ = jordan ? O : H;
      in_ = l == 0 ? I : in_;
      state_width_.push_back(jordan ? O : H);
    }
    lstm_ = a == Arch::lstm;
    const std::vector<int64_t> sz(sizes);
    const Act f = checked_act(act, "nonlinearity"), g = checked_act(out_act, "output_nonlinearity");
    auto make = [&]() -> StreamBase* {
      const Isa isa = i;
      RNNKIT_DISPATCH_RETURN(isa, make_stream, dbl_, a, f, g, reset_after, B, int64_t(layers), sz.data(), ptrs_.data(),
                             zoneout)
    };
    impl_ = make();
    ptrs_.clear();  // the stream holds its own packed copies
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
    impl_->step(px, py, nthreads < 1 ? 1 : nthreads);
  }

  // Copies the state of `layer` (which 0: h or y, 1: c) into / out of `buffer` (B, width).
  void state(int64_t layer, int which, const Out& buffer, bool write) {
    if (layer < 0 || layer >= int64_t(state_width_.size()))
      throw nb::value_error(("layer: expected 0.." + std::to_string(state_width_.size() - 1) + ", got " +
                             std::to_string(layer)).c_str());
    if (which == 1 && !lstm_) throw nb::value_error("which: only an LSTM has a cell state");
    if (which != 0 && which != 1) throw nb::value_error(("which: expected 0 or 1, got " + std::to_string(which)).c_str());
    const int64_t w = state_width_[size_t(layer)];
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
  std::vector<int64_t> state_width_;
  std::vector<const void*> ptrs_;
};

}  // namespace

NB_MODULE(_core, m) {
  nb::class_<PyStream>(m, "Stream", "One-step-per-call state machine over packed weights (see rnnkit.Stream).")
      .def(nb::init<int, int, int, int, bool, int64_t, const std::vector<int64_t>&, const std::vector<OptArr>&,
                    double>(),
           nb::arg("isa"), nb::arg("arch"), nb::arg("act"), nb::arg("out_act"), nb::arg("reset_after"),
           nb::arg("batch_size"), nb::arg("sizes"), nb::arg("params"), nb::arg("zoneout") = 0.0)
      .def("step", &PyStream::step, nb::arg("x"), nb::arg("out").noconvert(), nb::arg("nthreads"))
      .def("state", &PyStream::state, nb::arg("layer"), nb::arg("which"), nb::arg("buffer").noconvert(), nb::arg("write"));
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
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
  m.def("lstm_backward", &lstm_backward, nb::arg("isa"), nb::arg("w_hh"), nb::arg("hs"), nb::arg("cs"),
        nb::arg("gates"), nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(),
        nb::arg("dc_n").none(), nb::arg("da").noconvert(), nb::arg("dh0").noconvert(), nb::arg("dc0").noconvert(), nb::arg("dhs").none().noconvert(),
        nb::arg("dcs").none().noconvert(), nb::arg("nthreads"), nb::arg("w_ch").none() = nb::none(),
        nb::arg("zone").none() = nb::none(), nb::arg("raw").none().noconvert() = nb::none(), nb::arg("zone_c").none() = nb::none(),
        nb::arg("raw_c").none().noconvert() = nb::none(), nb::arg("drop").none() = nb::none());
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
}
