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
#include <vector>

#include "rnnkit.h"

namespace nb = nanobind;
using namespace rnnkit;

using Arr = nb::ndarray<nb::device::cpu, nb::c_contig>;
using OptArr = std::optional<Arr>;

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

std::vector<int64_t> shape_of(const Arr& a) {
  std::vector<int64_t> s(a.ndim());
  for (size_t i = 0; i < a.ndim(); ++i) s[i] = int64_t(a.shape(i));
  return s;
}

// Checks dtype and shape; returns the data pointer (null for an absent optional).
template <typename S>
S* buf(const OptArr& a, const char* name, const std::vector<int64_t>& shape, bool required = true) {
  if (!a.has_value()) {
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
  return static_cast<S*>(a->data());
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

// ------------------------------------------------------------------------- Elman
template <typename S>
void elman_forward_t(Isa isa, Act f, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& lengths,
                     const Arr& hs, const OptArr& out, int nt) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 1, "w_hh");
  seq_dims(xw, 1, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, H});
  const S* p_w = buf<S>(w_hh, "w_hh", {H, H});
  const S* p_h0 = buf<S>(h0, "h0", {B, H}, false);
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_out = buf<S>(out, "out", {T, B, H}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, elman_forward, T, B, H, f, p_xw, p_w, p_h0, p_len, p_hs, p_out, nt)
}

void elman_forward(int isa, int act, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& lengths,
                   const Arr& hs, const OptArr& out, int nt) {
  auto run = is_double(xw, "xw") ? elman_forward_t<double> : elman_forward_t<float>;
  run(checked_isa(isa), checked_act(act, "nonlinearity"), xw, w_hh, h0, lengths, hs, out, checked_threads(nt));
}

template <typename S>
void elman_backward_t(Isa isa, Act f, const Arr& w_hh, const Arr& hs, const OptArr& lengths, const OptArr& d_out,
                      const OptArr& dh_n, const Arr& da, const Arr& dh0, const OptArr& dhs, int nt) {
  const int64_t H = hidden_of(w_hh, 1, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {H, H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H}, false);
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H}, false);
  S* p_da = buf<S>(da, "da", {T, B, H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, elman_backward, T, B, H, f, p_w, p_hs, p_len, p_dout, p_dhn, p_da, p_dh0, p_dhs, nt)
}

void elman_backward(int isa, int act, const Arr& w_hh, const Arr& hs, const OptArr& lengths, const OptArr& d_out,
                    const OptArr& dh_n, const Arr& da, const Arr& dh0, const OptArr& dhs, int nt) {
  auto run = is_double(hs, "hs") ? elman_backward_t<double> : elman_backward_t<float>;
  run(checked_isa(isa), checked_act(act, "nonlinearity"), w_hh, hs, lengths, d_out, dh_n, da, dh0, dhs,
      checked_threads(nt));
}

// ------------------------------------------------------------------------- LSTM
template <typename S>
void lstm_forward_t(Isa isa, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& c0,
                    const OptArr& lengths, const Arr& hs, const Arr& cs, const Arr& gates, const OptArr& out, int nt) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 4, "w_hh");
  seq_dims(xw, 4, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, 4 * H});
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, H});
  const S* p_h0 = buf<S>(h0, "h0", {B, H}, false);
  const S* p_c0 = buf<S>(c0, "c0", {B, H}, false);
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  S* p_out = buf<S>(out, "out", {T, B, H}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, lstm_forward, T, B, H, p_xw, p_w, p_h0, p_c0, p_len, p_hs, p_cs, p_g, p_out, nt)
}

void lstm_forward(int isa, const Arr& xw, const Arr& w_hh, const OptArr& h0, const OptArr& c0,
                  const OptArr& lengths, const Arr& hs, const Arr& cs, const Arr& gates, const OptArr& out, int nt) {
  auto run = is_double(xw, "xw") ? lstm_forward_t<double> : lstm_forward_t<float>;
  run(checked_isa(isa), xw, w_hh, h0, c0, lengths, hs, cs, gates, out, checked_threads(nt));
}

template <typename S>
void lstm_backward_t(Isa isa, const Arr& w_hh, const Arr& hs, const Arr& cs, const Arr& gates,
                     const OptArr& lengths, const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n,
                     const Arr& da, const Arr& dh0, const Arr& dc0, const OptArr& dhs, const OptArr& dcs, int nt) {
  const int64_t H = hidden_of(w_hh, 4, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {4 * H, H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const S* p_cs = buf<S>(cs, "cs", {T + 1, B, H});
  const S* p_g = buf<S>(gates, "gates", {T, B, 4 * H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H}, false);
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H}, false);
  const S* p_dcn = buf<S>(dc_n, "dc_n", {B, H}, false);
  S* p_da = buf<S>(da, "da", {T, B, 4 * H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dc0 = buf<S>(dc0, "dc0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H}, false);
  S* p_dcs = buf<S>(dcs, "dcs", {T, B, H}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, lstm_backward, T, B, H, p_w, p_hs, p_cs, p_g, p_len, p_dout, p_dhn, p_dcn, p_da, p_dh0,
                  p_dc0, p_dhs, p_dcs, nt)
}

void lstm_backward(int isa, const Arr& w_hh, const Arr& hs, const Arr& cs, const Arr& gates, const OptArr& lengths,
                   const OptArr& d_out, const OptArr& dh_n, const OptArr& dc_n, const Arr& da, const Arr& dh0,
                   const Arr& dc0, const OptArr& dhs, const OptArr& dcs, int nt) {
  auto run = is_double(hs, "hs") ? lstm_backward_t<double> : lstm_backward_t<float>;
  run(checked_isa(isa), w_hh, hs, cs, gates, lengths, d_out, dh_n, dc_n, da, dh0, dc0, dhs, dcs,
      checked_threads(nt));
}

// ------------------------------------------------------------------------- GRU
template <typename S>
void gru_forward_t(Isa isa, bool reset_after, const Arr& xw, const Arr& w_hh, const OptArr& b_hn, const OptArr& h0,
                   const OptArr& lengths, const Arr& hs, const Arr& gates, const Arr& hn, const OptArr& out, int nt) {
  int64_t T, B;
  const int64_t H = hidden_of(w_hh, 3, "w_hh");
  seq_dims(xw, 3, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, 3 * H});
  const S* p_w = buf<S>(w_hh, "w_hh", {3 * H, H});
  const S* p_bhn = buf<S>(b_hn, "b_hn", {H}, false);
  const S* p_h0 = buf<S>(h0, "h0", {B, H}, false);
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  S* p_g = buf<S>(gates, "gates", {T, B, 3 * H});
  S* p_hn = buf<S>(hn, "hn", {T, B, H});
  S* p_out = buf<S>(out, "out", {T, B, H}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, gru_forward, T, B, H, reset_after, p_xw, p_w, p_bhn, p_h0, p_len, p_hs, p_g, p_hn, p_out, nt)
}

void gru_forward(int isa, bool reset_after, const Arr& xw, const Arr& w_hh, const OptArr& b_hn, const OptArr& h0,
                 const OptArr& lengths, const Arr& hs, const Arr& gates, const Arr& hn, const OptArr& out, int nt) {
  auto run = is_double(xw, "xw") ? gru_forward_t<double> : gru_forward_t<float>;
  run(checked_isa(isa), reset_after, xw, w_hh, b_hn, h0, lengths, hs, gates, hn, out, checked_threads(nt));
}

template <typename S>
void gru_backward_t(Isa isa, bool reset_after, const Arr& w_hh, const Arr& hs, const Arr& gates, const Arr& hn,
                    const OptArr& lengths, const OptArr& d_out, const OptArr& dh_n, const Arr& da,
                    const Arr& da_hn, const Arr& dh0, const OptArr& dhs, int nt) {
  const int64_t H = hidden_of(w_hh, 3, "w_hh");
  require_rank(hs, 3, "hs", "(T+1, B, H)");
  const int64_t T = int64_t(hs.shape(0)) - 1, B = int64_t(hs.shape(1));
  const S* p_w = buf<S>(w_hh, "w_hh", {3 * H, H});
  const S* p_hs = buf<S>(hs, "hs", {T + 1, B, H});
  const S* p_g = buf<S>(gates, "gates", {T, B, 3 * H});
  const S* p_hn = buf<S>(hn, "hn", {T, B, H});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, H}, false);
  const S* p_dhn = buf<S>(dh_n, "dh_n", {B, H}, false);
  S* p_da = buf<S>(da, "da", {T, B, 3 * H});
  S* p_dahn = buf<S>(da_hn, "da_hn", {T, B, H});
  S* p_dh0 = buf<S>(dh0, "dh0", {B, H});
  S* p_dhs = buf<S>(dhs, "dhs", {T, B, H}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, gru_backward, T, B, H, reset_after, p_w, p_hs, p_g, p_hn, p_len, p_dout, p_dhn, p_da, p_dahn,
                  p_dh0, p_dhs, nt)
}

void gru_backward(int isa, bool reset_after, const Arr& w_hh, const Arr& hs, const Arr& gates, const Arr& hn,
                  const OptArr& lengths, const OptArr& d_out, const OptArr& dh_n, const Arr& da, const Arr& da_hn,
                  const Arr& dh0, const OptArr& dhs, int nt) {
  auto run = is_double(hs, "hs") ? gru_backward_t<double> : gru_backward_t<float>;
  run(checked_isa(isa), reset_after, w_hh, hs, gates, hn, lengths, d_out, dh_n, da, da_hn, dh0, dhs,
      checked_threads(nt));
}

// ------------------------------------------------------------------------- Jordan
template <typename S>
void jordan_forward_t(Isa isa, Act f, Act g, const Arr& xw, const Arr& w_yh, const Arr& w_hy, const OptArr& b_hy,
                      const OptArr& y0, const OptArr& lengths, const Arr& hs, const Arr& ys, const OptArr& out,
                      int nt) {
  require_rank(w_yh, 2, "w_yh", "(H, O)");
  const int64_t H = int64_t(w_yh.shape(0)), O = int64_t(w_yh.shape(1));
  int64_t T, B;
  seq_dims(xw, 1, H, T, B);
  const S* p_xw = buf<S>(xw, "xw", {T, B, H});
  const S* p_wyh = buf<S>(w_yh, "w_yh", {H, O});
  const S* p_why = buf<S>(w_hy, "w_hy", {O, H});
  const S* p_bhy = buf<S>(b_hy, "b_hy", {O}, false);
  const S* p_y0 = buf<S>(y0, "y0", {B, O}, false);
  const int64_t* p_len = lengths_buf(lengths, B, T);
  S* p_hs = buf<S>(hs, "hs", {T, B, H});
  S* p_ys = buf<S>(ys, "ys", {T + 1, B, O});
  S* p_out = buf<S>(out, "out", {T, B, O}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, jordan_forward, T, B, H, O, f, g, p_xw, p_wyh, p_why, p_bhy, p_y0, p_len, p_hs, p_ys, p_out,
                  nt)
}

void jordan_forward(int isa, int f, int g, const Arr& xw, const Arr& w_yh, const Arr& w_hy, const OptArr& b_hy,
                    const OptArr& y0, const OptArr& lengths, const Arr& hs, const Arr& ys, const OptArr& out, int nt) {
  auto run = is_double(xw, "xw") ? jordan_forward_t<double> : jordan_forward_t<float>;
  run(checked_isa(isa), checked_act(f, "nonlinearity"), checked_act(g, "output_nonlinearity"), xw, w_yh, w_hy, b_hy,
      y0, lengths, hs, ys, out, checked_threads(nt));
}

template <typename S>
void jordan_backward_t(Isa isa, Act f, Act g, const Arr& w_yh, const Arr& w_hy, const Arr& hs, const Arr& ys,
                       const OptArr& lengths, const OptArr& d_out, const OptArr& dy_n, const Arr& da, const Arr& d_o,
                       const Arr& dy0, const OptArr& dys, int nt) {
  require_rank(w_yh, 2, "w_yh", "(H, O)");
  require_rank(hs, 3, "hs", "(T, B, H)");
  const int64_t H = int64_t(w_yh.shape(0)), O = int64_t(w_yh.shape(1));
  const int64_t T = int64_t(hs.shape(0)), B = int64_t(hs.shape(1));
  const S* p_wyh = buf<S>(w_yh, "w_yh", {H, O});
  const S* p_why = buf<S>(w_hy, "w_hy", {O, H});
  const S* p_hs = buf<S>(hs, "hs", {T, B, H});
  const S* p_ys = buf<S>(ys, "ys", {T + 1, B, O});
  const int64_t* p_len = lengths_buf(lengths, B, T);
  const S* p_dout = buf<S>(d_out, "d_out", {T, B, O}, false);
  const S* p_dyn = buf<S>(dy_n, "dy_n", {B, O}, false);
  S* p_da = buf<S>(da, "da", {T, B, H});
  S* p_do = buf<S>(d_o, "d_o", {T, B, O});
  S* p_dy0 = buf<S>(dy0, "dy0", {B, O});
  S* p_dys = buf<S>(dys, "dys", {T, B, O}, false);
  nb::gil_scoped_release release;
  RNNKIT_DISPATCH(isa, jordan_backward, T, B, H, O, f, g, p_wyh, p_why, p_hs, p_ys, p_len, p_dout, p_dyn, p_da, p_do,
                  p_dy0, p_dys, nt)
}

void jordan_backward(int isa, int f, int g, const Arr& w_yh, const Arr& w_hy, const Arr& hs, const Arr& ys,
                     const OptArr& lengths, const OptArr& d_out, const OptArr& dy_n, const Arr& da, const Arr& d_o,
                     const Arr& dy0, const OptArr& dys, int nt) {
  auto run = is_double(hs, "hs") ? jordan_backward_t<double> : jordan_backward_t<float>;
  run(checked_isa(isa), checked_act(f, "nonlinearity"), checked_act(g, "output_nonlinearity"), w_yh, w_hy, hs, ys,
      lengths, d_out, dy_n, da, d_o, dy0, dys, checked_threads(nt));
}

// ------------------------------------------------------------------------- Stream
// Owns a StreamBase; checks shapes and dtypes on every call (cheap: two arrays).
class PyStream {
 public:
  PyStream(int isa, int arch, int act, int out_act, bool reset_after, int64_t B, const std::vector<int64_t>& sizes,
           const std::vector<OptArr>& params)
      : B_(B) {
    const Isa i = checked_isa(isa);
    if (arch < 0 || arch > 3) throw nb::value_error(("arch: expected 0..3, got " + std::to_string(arch)).c_str());
    if (B < 1) throw nb::value_error(("batch_size: expected a positive integer, got " + std::to_string(B)).c_str());
    if (sizes.empty() || sizes.size() % 3 != 0)
      throw nb::value_error("sizes: expected (I, H, O) for each layer");
    const size_t layers = sizes.size() / 3;
    if (params.size() != 6 * layers) throw nb::value_error("params: expected six entries per layer");
    const int64_t G = arch == 1 ? 4 : arch == 2 ? 3 : 1;
    bool have_dtype = false;
    for (size_t l = 0; l < layers; ++l) {
      const int64_t I = sizes[3 * l], H = sizes[3 * l + 1], O = sizes[3 * l + 2];
      if (I < 1 || H < 1 || (arch == 3 && O < 1)) throw nb::value_error("sizes: every size must be positive");
      if (l > 0 && I != (arch == 3 ? sizes[3 * l - 1] : sizes[3 * l - 2]))
        throw nb::value_error("sizes: a layer's input size must equal the previous layer's output size");
      std::vector<std::vector<int64_t>> shapes =
          arch == 3 ? std::vector<std::vector<int64_t>>{{H, I}, {H, O}, {O, H}, {H}, {H}, {O}}
                    : std::vector<std::vector<int64_t>>{{G * H, I}, {G * H, H}, {G * H}, {G * H}, {0}, {0}};
      for (size_t k = 0; k < 6; ++k) {
        const OptArr& a = params[6 * l + k];
        const std::string name = "params[" + std::to_string(6 * l + k) + "]";
        if (!a.has_value()) {
          if (k < 2 || (arch == 3 && k == 2)) throw nb::value_error((name + ": a weight is required").c_str());
          ptrs_.push_back(nullptr);
          continue;
        }
        if (!have_dtype) {
          dbl_ = is_double(*a, name.c_str());
          have_dtype = true;
        }
        ptrs_.push_back(dbl_ ? static_cast<const void*>(buf<double>(a, name.c_str(), shapes[k]))
                             : static_cast<const void*>(buf<float>(a, name.c_str(), shapes[k])));
      }
      out_ = arch == 3 ? O : H;
      in_ = l == 0 ? I : in_;
      state_width_.push_back(arch == 3 ? O : H);
    }
    lstm_ = arch == 1;
    const std::vector<int64_t> sz(sizes);
    auto make = [&]() -> StreamBase* {
      const Isa isa = i;
      RNNKIT_DISPATCH_RETURN(isa, make_stream, dbl_, arch, checked_act(act, "nonlinearity"),
                             checked_act(out_act, "output_nonlinearity"), reset_after, B, int64_t(layers), sz.data(),
                             ptrs_.data())
    };
    impl_ = make();
    ptrs_.clear();  // the stream holds its own packed copies
  }
  ~PyStream() { delete impl_; }
  PyStream(const PyStream&) = delete;
  PyStream& operator=(const PyStream&) = delete;

  void step(const Arr& x, const Arr& y, int nthreads) {
    if (dbl_) {
      check<double>(x, y);
    } else {
      check<float>(x, y);
    }
    const void* px = x.data();
    void* py = y.data();
    nb::gil_scoped_release release;
    impl_->step(px, py, nthreads < 1 ? 1 : nthreads);
  }

  // Copies the state of `layer` (which 0: h or y, 1: c) into / out of `buffer` (B, width).
  void state(int64_t layer, int which, const Arr& buffer, bool write) {
    if (layer < 0 || layer >= int64_t(state_width_.size()))
      throw nb::value_error(("layer: expected 0.." + std::to_string(state_width_.size() - 1) + ", got " +
                             std::to_string(layer)).c_str());
    if (which == 1 && !lstm_) throw nb::value_error("which: only an LSTM has a cell state");
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
  template <typename S> void check(const Arr& x, const Arr& y) {
    buf<S>(x, "x", {B_, in_});
    buf<S>(y, "out", {B_, out_});
  }
  StreamBase* impl_ = nullptr;
  int64_t B_, in_ = 0, out_ = 0;
  bool dbl_ = false, lstm_ = false;
  std::vector<int64_t> state_width_;
  std::vector<const void*> ptrs_;
};

}  // namespace

NB_MODULE(_core, m) {
  nb::class_<PyStream>(m, "Stream", "One-step-per-call state machine over packed weights (see rnnkit.Stream).")
      .def(nb::init<int, int, int, int, bool, int64_t, const std::vector<int64_t>&, const std::vector<OptArr>&>(),
           nb::arg("isa"), nb::arg("arch"), nb::arg("act"), nb::arg("out_act"), nb::arg("reset_after"),
           nb::arg("batch_size"), nb::arg("sizes"), nb::arg("params"))
      .def("step", &PyStream::step, nb::arg("x"), nb::arg("out"), nb::arg("nthreads"))
      .def("state", &PyStream::state, nb::arg("layer"), nb::arg("which"), nb::arg("buffer"), nb::arg("write"));
  m.doc() = "rnnkit C++ core: sequential forward and BPTT kernels (see csrc/rnnkit.h)";
  m.def("best_isa", [] { return int(best_isa()); }, "Best instruction set on this CPU: 0 generic, 1 avx2, 2 avx512.");
  m.def("isa_supported", [](int isa) { return isa >= 0 && isa <= 2 && isa_supported(Isa(isa)); });
  m.def("elman_forward", &elman_forward, nb::arg("isa"), nb::arg("act"), nb::arg("xw"), nb::arg("w_hh"),
        nb::arg("h0").none(), nb::arg("lengths").none(), nb::arg("hs"), nb::arg("out").none(), nb::arg("nthreads"));
  m.def("elman_backward", &elman_backward, nb::arg("isa"), nb::arg("act"), nb::arg("w_hh"), nb::arg("hs"),
        nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(), nb::arg("da"), nb::arg("dh0"),
        nb::arg("dhs").none(), nb::arg("nthreads"));
  m.def("lstm_forward", &lstm_forward, nb::arg("isa"), nb::arg("xw"), nb::arg("w_hh"), nb::arg("h0").none(),
        nb::arg("c0").none(), nb::arg("lengths").none(), nb::arg("hs"), nb::arg("cs"), nb::arg("gates"),
        nb::arg("out").none(), nb::arg("nthreads"));
  m.def("lstm_backward", &lstm_backward, nb::arg("isa"), nb::arg("w_hh"), nb::arg("hs"), nb::arg("cs"),
        nb::arg("gates"), nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(),
        nb::arg("dc_n").none(), nb::arg("da"), nb::arg("dh0"), nb::arg("dc0"), nb::arg("dhs").none(),
        nb::arg("dcs").none(), nb::arg("nthreads"));
  m.def("gru_forward", &gru_forward, nb::arg("isa"), nb::arg("reset_after"), nb::arg("xw"), nb::arg("w_hh"),
        nb::arg("b_hn").none(), nb::arg("h0").none(), nb::arg("lengths").none(), nb::arg("hs"), nb::arg("gates"),
        nb::arg("hn"), nb::arg("out").none(), nb::arg("nthreads"));
  m.def("gru_backward", &gru_backward, nb::arg("isa"), nb::arg("reset_after"), nb::arg("w_hh"), nb::arg("hs"),
        nb::arg("gates"), nb::arg("hn"), nb::arg("lengths").none(), nb::arg("d_out").none(), nb::arg("dh_n").none(),
        nb::arg("da"), nb::arg("da_hn"), nb::arg("dh0"), nb::arg("dhs").none(), nb::arg("nthreads"));
  m.def("jordan_forward", &jordan_forward, nb::arg("isa"), nb::arg("act"), nb::arg("out_act"), nb::arg("xw"),
        nb::arg("w_yh"), nb::arg("w_hy"), nb::arg("b_hy").none(), nb::arg("y0").none(), nb::arg("lengths").none(),
        nb::arg("hs"), nb::arg("ys"), nb::arg("out").none(), nb::arg("nthreads"));
  m.def("jordan_backward", &jordan_backward, nb::arg("isa"), nb::arg("act"), nb::arg("out_act"), nb::arg("w_yh"),
        nb::arg("w_hy"), nb::arg("hs"), nb::arg("ys"), nb::arg("lengths").none(), nb::arg("d_out").none(),
        nb::arg("dy_n").none(), nb::arg("da"), nb::arg("d_o"), nb::arg("dy0"), nb::arg("dys").none(),
        nb::arg("nthreads"));
}
