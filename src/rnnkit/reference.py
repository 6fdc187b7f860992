"""Plain per-step PyTorch reference for every rnnkit recurrence (the oracle).

This module is the executable form of ``SPEC.md``: each function mirrors one block of
equations, one time step at a time, in Python loops. It is slow on purpose and is the
definition the fast C++ kernels are tested against. It depends only on torch and is
differentiable by autograd in float32 and float64.

Shape letters (as everywhere in rnnkit):

    T  time steps        B  batch
    I  input features    H  hidden units
    O  Jordan outputs    G  gates (1 Elman, 4 LSTM, 3 GRU)

Cells take one step: ``x`` (B, I) and the state (B, H) or (B, O). Sequence functions are
single-layer, single-direction and time-major: ``x`` (T, B, I). Weights use torch.nn's
layout, ``weight_ih`` (G*H, I) and ``weight_hh`` (G*H, H), with gate rows stacked
i, f, g, o (LSTM) and r, z, n (GRU), so a torch.nn state_dict loads unchanged.

Variable lengths: ``lengths`` holds B integers in [1, T]. At a step t >= lengths[b] row b
is inactive: its state is carried unchanged, its output row is zero and its recorded
internals are zero, which is what ``torch.nn.utils.rnn.PackedSequence`` computes. The
final state is the state after the row's last active step.
"""

import torch

__all__ = [
    "elman_cell",
    "lstm_cell",
    "gru_cell",
    "jordan_cell",
    "elman",
    "lstm",
    "gru",
    "jordan",
]

_HIDDEN_NONLINEARITIES = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda a: a,
}

_OUTPUT_NONLINEARITIES = {
    "identity": lambda a: a,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


# ----------------------------------------------------------------------------------------
# helpers


def _activation(table, name, argument):
    if name not in table:
        raise ValueError(
            f"{argument} must be one of {sorted(table)}, got {name!r}"
        )
    return table[name]


def _linear(x, weight, bias):
    """x @ weight.T + bias, with bias optional. x (..., K), weight (N, K) -> (..., N)."""
    y = x @ weight.T
    return y if bias is None else y + bias


def _zeros_if_none(state, x, size):
    """The given state, or zeros (B, size) in x's dtype and device."""
    if state is not None:
        return state
    return x.new_zeros(x.shape[:-1] + (size,))


def _check_sequence(x):
    if x.dim() != 3 or x.shape[0] < 1:
        raise ValueError(
            f"x must be time-major (T, B, I) with T >= 1; got shape {tuple(x.shape)}"
        )


def _as_lengths(lengths, x):
    """lengths as an int64 tensor (B,) on x's device, checked to lie in [1, T].

    The oracle keeps its own check (it imports nothing of rnnkit); the messages are
    those of rnnkit._checks.lengths_tensor, and a test holds them equal."""
    T, B = x.shape[0], x.shape[1]
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    lengths = lengths.to(device=x.device, dtype=torch.int64)
    if lengths.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per batch row), got {tuple(lengths.shape)}")
    if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
        bad = lengths[(lengths < 1) | (lengths > T)][0].item()
        raise ValueError(f"lengths: every length must be in [1, T={T}], got {bad}")
    return lengths


def _active(lengths, t):
    """Boolean mask (B, 1): which rows are still inside their sequence at step t."""
    if lengths is None:
        return None
    return (t < lengths).unsqueeze(1)  # (B, 1)


def _keep(active, new, old):
    """new where the row is active, old elsewhere (all rows when there is no mask)."""
    return new if active is None else torch.where(active, new, old)


def _zero_inactive(active, value):
    return value if active is None else torch.where(active, value, torch.zeros_like(value))


def _stack(values):
    return torch.stack(values, dim=0)  # (T, B, ·)


def _masked(h, recurrent_mask):
    """What the recurrent product reads: h, or m ⊙ h with recurrent dropout (SPEC section 16)."""
    return h if recurrent_mask is None else recurrent_mask * h


def _scan(step, x, states, lengths, return_internals, zoneout=None, state_records=None):
    """The one time loop of every network: ``step(x_t, *states) -> (new states, records)``
    for t = 1 .. T. A row past its length keeps its states; its output (the first
    state) and its records are zero there (SPEC section 11).

    Zoneout (SPEC section 16; Krueger et al. 2016): ``zoneout`` holds one (T, B, ·)
    tensor z or None per state, and state k becomes ``z_t ⊙ s_{t-1} + (1 - z_t) ⊙ s~_t``
    where s~_t is the step's new state; ``state_records`` names the records that are a
    state ({"c": 1} for the LSTM) and so are recorded after zoneout.

    Returns (out (T, B, ·) = every first state, final states tuple, records or None).
    """
    lengths = _as_lengths(lengths, x)
    outs, records = [], {}
    zoneout = tuple(zoneout) if zoneout is not None else (None,) * len(states)
    for t in range(x.shape[0]):
        active = _active(lengths, t)  # (B, 1) or None
        new, recorded = step(x[t], *states)
        new = tuple(n if z is None else z[t] * s + (1 - z[t]) * n for n, s, z in zip(new, states, zoneout))
        for name, k in (state_records or {}).items():
            if name in recorded:
                recorded[name] = new[k]
        states = tuple(_keep(active, n, s) for n, s in zip(new, states))
        outs.append(_zero_inactive(active, new[0]))
        for name, value in recorded.items():
            records.setdefault(name, []).append(_zero_inactive(active, value))
    internals = {name: _stack(v) for name, v in records.items()} if return_internals else None
    return _stack(outs), states, internals


# ----------------------------------------------------------------------------------------
# Elman


def _elman_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh, f):
    a = _linear(x, weight_ih, bias_ih) + _linear(h, weight_hh, bias_hh)  # (B, H)
    return f(a), a


def elman_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh"):
    """One Elman step (SPEC section 1).

        a = W_ih x + b_ih + W_hh h + b_hh
        h_new = f(a),   f in {tanh, relu, identity}

    Args:
      x: input (B, I).
      h: previous hidden state (B, H), or None for zeros.
      weight_ih: (H, I).  weight_hh: (H, H).  bias_ih, bias_hh: (H,) or None.
      nonlinearity: "tanh" (default), "relu" or "identity".

    Returns:
      h_new (B, H).

    Example:
      >>> x, h = torch.ones(3, 2), torch.zeros(3, 4)
      >>> elman_cell(x, h, torch.ones(4, 2), torch.ones(4, 4), nonlinearity="identity")[0]
      tensor([2., 2., 2., 2.])
    """
    f = _activation(_HIDDEN_NONLINEARITIES, nonlinearity, "nonlinearity")
    h = _zeros_if_none(h, x, weight_hh.shape[1])
    h_new, _ = _elman_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh, f)
    return h_new


def elman(
    x,
    h0,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    nonlinearity="tanh",
    lengths=None,
    return_internals=False,
    zoneout=None,
    recurrent_mask=None,
):
    """Elman RNN over a sequence (SPEC section 1), the cell stepped t = 1 .. T.

        a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
        h_t = f(a_t),   h_0 = 0 unless given

    Args:
      x: input (T, B, I).
      h0: initial hidden state (B, H), or None for zeros.
      weight_ih: (H, I).  weight_hh: (H, H).  bias_ih, bias_hh: (H,) or None.
      nonlinearity: "tanh" (default), "relu" or "identity".
      lengths: None, or B ints in [1, T] (see the module docstring).
      return_internals: also return {"a": pre-activations (T, B, H)}.
      zoneout: None, or one (T, B, H) tensor z (or None) per state: zoneout
        (SPEC section 16), the state becomes z ⊙ s_{t-1} + (1 - z) ⊙ s~_t.
      recurrent_mask: None, or (B, H) m: recurrent dropout, the W_hh product reads
        m ⊙ h_{t-1} (SPEC section 16).

    Returns:
      (out, h_n): out (T, B, H) is every h_t (zero where inactive); h_n (B, H).
      With return_internals: (out, h_n, internals).

    Example:
      >>> x = torch.randn(5, 3, 2)
      >>> out, h_n = elman(x, None, torch.randn(4, 2), torch.randn(4, 4))
      >>> out.shape, h_n.shape
      (torch.Size([5, 3, 4]), torch.Size([3, 4]))
    """
    _check_sequence(x)
    f = _activation(_HIDDEN_NONLINEARITIES, nonlinearity, "nonlinearity")
    h = _zeros_if_none(h0, x[0], weight_hh.shape[1])  # (B, H)

    def step(x_t, h):
        h_new, a = _elman_step(x_t, _masked(h, recurrent_mask), weight_ih, weight_hh, bias_ih, bias_hh, f)
        return (h_new,), {"a": a}

    out, (h,), internals = _scan(step, x, (h,), lengths, return_internals, zoneout)  # out (T, B, H)
    return (out, h, internals) if return_internals else (out, h)


# ----------------------------------------------------------------------------------------
# LSTM


def _layer_norm(v, gain, bias=None):
    """gain ⊙ (v - mean) / sqrt(var + 1e-5) + bias over the last dimension (torch's layer_norm)."""
    return torch.nn.functional.layer_norm(v, v.shape[-1:], gain, bias)


def _plus(v, bias):
    """v + bias, with bias optional."""
    return v if bias is None else v + bias


def _lstm_step(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, weight_ch=None, weight_hr=None, ln=None):
    if ln is None:
        gates = _linear(x, weight_ih, bias_ih) + _linear(h, weight_hh, bias_hh)  # (B, 4H)
    else:  # layer normalisation (SPEC section 15, haste's LayerNormLSTM): each projection apart
        g_ih, g_hh, g_c, b_c = ln
        gates = _plus(_plus(_layer_norm(x @ weight_ih.T, g_ih) + _layer_norm(h @ weight_hh.T, g_hh), bias_ih),
                      bias_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)  # each (B, H)
    if weight_ch is not None:  # peepholes (SPEC section 13): i and f see c_{t-1}, o sees c_t
        p_i, p_f, p_o = weight_ch.chunk(3)  # each (H,)
        a_i, a_f = a_i + p_i * c, a_f + p_f * c
    i = torch.sigmoid(a_i)  # input gate
    f = torch.sigmoid(a_f)  # forget gate
    g = torch.tanh(a_g)  # candidate cell
    c_new = f * c + i * g
    if weight_ch is not None:
        a_o = a_o + p_o * c_new
    o = torch.sigmoid(a_o)  # output gate
    h_new = o * torch.tanh(c_new if ln is None else _layer_norm(c_new, g_c, b_c))
    if weight_hr is not None:  # projection (SPEC section 14): h_t = W_hr (o ⊙ tanh(c_t)), (B, P)
        h_new = h_new @ weight_hr.T
    return h_new, c_new, {"i": i, "f": f, "g": g, "o": o, "c": c_new}


def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_ch=None, weight_hr=None,
              ln_gain_ih=None, ln_gain_hh=None, ln_gain_c=None, ln_bias_c=None):
    """One LSTM step (SPEC section 3); gate rows stacked i, f, g, o.

        i = σ(W_ii x + b_ii + W_hi h + b_hi)
        f = σ(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o = σ(W_io x + b_io + W_ho h + b_ho)
        c_new = f ⊙ c + i ⊙ g
        h_new = o ⊙ tanh(c_new)

    With peepholes (``weight_ch`` = (p_i, p_f, p_o), Gers & Schmidhuber 2000),
    ``p_i ⊙ c`` and ``p_f ⊙ c`` join the pre-activations of i and f, and ``p_o ⊙ c_new``
    that of o (SPEC section 13). With a projection (``weight_hr`` (P, H), LSTMP, Sak et
    al. 2014, torch.nn.LSTM's ``proj_size``), ``h_new = W_hr (o ⊙ tanh(c_new))`` is P wide
    and ``weight_hh`` is (4H, P) (SPEC section 14). With layer normalisation (the gains
    ``ln_gain_ih``, ``ln_gain_hh`` (4H) and ``ln_gain_c``, bias ``ln_bias_c`` (H); haste's
    LayerNormLSTM, SPEC section 15), LN(v) = (v - mean v) / sqrt(var v + 1e-5) per row:

        [a_i, a_f, a_g, a_o] = g_ih ⊙ LN(W_ih x) + g_hh ⊙ LN(W_hh h) + b_ih + b_hh
        h_new = o ⊙ tanh(g_c ⊙ LN(c_new) + b_c)

    Args:
      x: input (B, I).
      h, c: previous hidden (B, K) and cell state (B, H), or None for zeros; K = P with a
        projection, else H.
      weight_ih: (4H, I).  weight_hh: (4H, K).  bias_ih, bias_hh: (4H,) or None.
      weight_ch: peephole weights (3H,) stacked i, f, o, or None.
      weight_hr: projection (P, H), or None.

    Returns:
      (h_new, c_new): (B, K), (B, H).

    Example:
      >>> h, c = lstm_cell(torch.ones(3, 2), None, None, torch.ones(16, 2), torch.ones(16, 4))
      >>> h.shape, c.shape
      (torch.Size([3, 4]), torch.Size([3, 4]))
    """
    H, K = weight_hh.shape[0] // 4, weight_hh.shape[1]
    h = _zeros_if_none(h, x, K)
    c = _zeros_if_none(c, x, H)
    h_new, c_new, _ = _lstm_step(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, weight_ch, weight_hr,
                                 _ln(ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c))
    return h_new, c_new


def _ln(*params):
    """The four layer-normalisation parameters as one tuple, or None when they are absent."""
    return None if all(p is None for p in params) else params


def lstm(
    x,
    h0,
    c0,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    weight_ch=None,
    weight_hr=None,
    ln_gain_ih=None,
    ln_gain_hh=None,
    ln_gain_c=None,
    ln_bias_c=None,
    lengths=None,
    return_internals=False,
    zoneout=None,
    recurrent_mask=None,
):
    """LSTM over a sequence (SPEC section 3), the cell stepped t = 1 .. T.

        i_t, f_t, o_t = σ(·),  g_t = tanh(·)   from W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)

    Args:
      x: input (T, B, I).
      h0, c0: initial states (B, H), or None for zeros.
      weight_ih: (4H, I).  weight_hh: (4H, H).  bias_ih, bias_hh: (4H,) or None.
      weight_ch: peephole weights (3H,) stacked i, f, o, or None (see lstm_cell).
      weight_hr: projection (P, H), or None (see lstm_cell): then h0, out and h_n are
        P wide and weight_hh is (4H, P).
      ln_gain_ih, ln_gain_hh (4H,), ln_gain_c, ln_bias_c (H,): layer normalisation, or
        None (see lstm_cell).
      lengths: None, or B ints in [1, T] (see the module docstring).
      return_internals: also return {"i", "f", "g", "o", "c"}, each (T, B, H).
      zoneout: None, or one (T, B, H) tensor z (or None) per state (h, c): zoneout
        (SPEC section 16), the state becomes z ⊙ s_{t-1} + (1 - z) ⊙ s~_t.
      recurrent_mask: None, or (B, H) m: recurrent dropout, the W_hh product reads
        m ⊙ h_{t-1} (SPEC section 16).
        With zoneout, h~_t = o_t ⊙ tanh(c~_t) is computed from the new cell state
        before zoneout, c~_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t (Krueger et al., eq. 6-7).

    Returns:
      (out, (h_n, c_n)): out (T, B, H) is every h_t (zero where inactive); h_n, c_n (B, H).
      With return_internals: (out, (h_n, c_n), internals).

    Example:
      >>> x = torch.randn(5, 3, 2)
      >>> out, (h_n, c_n) = lstm(x, None, None, torch.randn(16, 2), torch.randn(16, 4))
      >>> out.shape, c_n.shape
      (torch.Size([5, 3, 4]), torch.Size([3, 4]))
    """
    _check_sequence(x)
    H, K = weight_hh.shape[0] // 4, weight_hh.shape[1]
    h = _zeros_if_none(h0, x[0], K)  # (B, K)
    c = _zeros_if_none(c0, x[0], H)  # (B, H)
    ln = _ln(ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c)

    def step(x_t, h, c):
        h_new, c_new, gates = _lstm_step(x_t, _masked(h, recurrent_mask), c, weight_ih, weight_hh, bias_ih, bias_hh,
                                         weight_ch, weight_hr, ln)
        return (h_new, c_new), gates

    out, (h, c), internals = _scan(step, x, (h, c), lengths, return_internals, zoneout, {"c": 1})  # out (T, B, H)
    return (out, (h, c), internals) if return_internals else (out, (h, c))


# ----------------------------------------------------------------------------------------
# GRU


def _gru_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh, reset_after, ln=None, recurrent_mask=None):
    if ln is not None:  # layer normalisation (SPEC section 15, haste's LayerNormGRU; reset after)
        g_ih, g_hh = ln
        x_r, x_z, x_n = _plus(_layer_norm(x @ weight_ih.T, g_ih), bias_ih).chunk(3, dim=-1)  # each (B, H)
        q_r, q_z, q_n = _plus(_layer_norm(_masked(h, recurrent_mask) @ weight_hh.T, g_hh), bias_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(x_r + q_r), torch.sigmoid(x_z + q_z)
        n = torch.tanh(x_n + r * q_n)
        return (1 - z) * n + z * h, {"r": r, "z": z, "n": n}
    W_hr, W_hz, W_hn = weight_hh.chunk(3, dim=0)  # each (H, H)
    b_hr, b_hz, b_hn = (None,) * 3 if bias_hh is None else bias_hh.chunk(3)  # each (H,)
    x_r, x_z, x_n = _linear(x, weight_ih, bias_ih).chunk(3, dim=-1)  # each (B, H)
    hm = _masked(h, recurrent_mask)  # what the W_hh products read (recurrent dropout); the blend reads h
    r = torch.sigmoid(x_r + _linear(hm, W_hr, b_hr))  # reset gate
    z = torch.sigmoid(x_z + _linear(hm, W_hz, b_hz))  # update gate
    if reset_after:
        # torch.nn / cuDNN: r scales the projected state; z keeps the old state.
        n = torch.tanh(x_n + r * _linear(hm, W_hn, b_hn))
        h_new = (1 - z) * n + z * h
    else:
        # Cho et al. (the seeds): r scales the state before projecting; z takes the new one.
        n = torch.tanh(x_n + _linear(r * hm, W_hn, b_hn))
        h_new = (1 - z) * h + z * n
    return h_new, {"r": r, "z": z, "n": n}


def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None, ln_gain_ih=None, ln_gain_hh=None,
             reset_after=True):
    """One GRU step (SPEC section 4); gate rows stacked r, z, n.

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)

    reset_after=True (torch.nn.GRU, the default):

        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h_new = (1 - z) ⊙ n + z ⊙ h

    reset_after=False (Cho et al., the seeds' form):

        n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
        h_new = (1 - z) ⊙ h + z ⊙ n

    The two forms use opposite meanings of z: negating the z rows of the weights and
    biases turns σ(a_z) into 1 - σ(a_z). Where the candidates also agree (W_hn diagonal and
    b_hn = 0, e.g. H = 1 without bias), reset_after=False with the z rows negated equals
    reset_after=True exactly.

    Args:
      x: input (B, I).
      h: previous hidden state (B, H), or None for zeros.
      weight_ih: (3H, I).  weight_hh: (3H, H).  bias_ih, bias_hh: (3H,) or None.
      reset_after: which form, see above.

    Returns:
      h_new (B, H).

    Example:
      >>> gru_cell(torch.ones(3, 2), None, torch.ones(12, 2), torch.ones(12, 4)).shape
      torch.Size([3, 4])
    """
    h = _zeros_if_none(h, x, weight_hh.shape[1])
    h_new, _ = _gru_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh, reset_after, _ln(ln_gain_ih, ln_gain_hh))
    return h_new


def gru(
    x,
    h0,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    ln_gain_ih=None,
    ln_gain_hh=None,
    reset_after=True,
    lengths=None,
    return_internals=False,
    zoneout=None,
    recurrent_mask=None,
):
    """GRU over a sequence (SPEC section 4), the cell stepped t = 1 .. T.

        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        reset_after=True:   n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
                            h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
        reset_after=False:  n_t = tanh(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)
                            h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ n_t

    Args:
      x: input (T, B, I).
      h0: initial hidden state (B, H), or None for zeros.
      weight_ih: (3H, I).  weight_hh: (3H, H).  bias_ih, bias_hh: (3H,) or None.
      ln_gain_ih, ln_gain_hh: (3H,) layer-normalisation gains, or None: with them r, z, n
        come from g_ih ⊙ LN(W_ih x) + b_ih and q = g_hh ⊙ LN(W_hh h) + b_hh as in the
        reset-after form (haste's LayerNormGRU, SPEC section 15).
      reset_after: True for torch.nn.GRU's form (default), False for the seeds' form.
      lengths: None, or B ints in [1, T] (see the module docstring).
      return_internals: also return {"r", "z", "n"}, each (T, B, H).
      zoneout: None, or one (T, B, H) tensor z (or None) per state: zoneout
        (SPEC section 16), the state becomes z ⊙ s_{t-1} + (1 - z) ⊙ s~_t.
      recurrent_mask: None, or (B, H) m: recurrent dropout, the W_hh product reads
        m ⊙ h_{t-1} (SPEC section 16).
        The update h_t = ... z ⊙ h_{t-1} reads h_{t-1} itself, not m ⊙ h_{t-1}.

    Returns:
      (out, h_n): out (T, B, H) is every h_t (zero where inactive); h_n (B, H).
      With return_internals: (out, h_n, internals).

    Example:
      >>> x = torch.randn(5, 3, 2)
      >>> out, h_n = gru(x, None, torch.randn(12, 2), torch.randn(12, 4), reset_after=False)
      >>> out.shape, h_n.shape
      (torch.Size([5, 3, 4]), torch.Size([3, 4]))
    """
    _check_sequence(x)
    h = _zeros_if_none(h0, x[0], weight_hh.shape[1])  # (B, H)

    def step(x_t, h):
        h_new, gates = _gru_step(x_t, h, weight_ih, weight_hh, bias_ih, bias_hh, reset_after,
                                 _ln(ln_gain_ih, ln_gain_hh), recurrent_mask)
        return (h_new,), gates

    out, (h,), internals = _scan(step, x, (h,), lengths, return_internals, zoneout)  # out (T, B, H)
    return (out, h, internals) if return_internals else (out, h)


# ----------------------------------------------------------------------------------------
# Jordan


def _jordan_step(x, y, weight_ih, weight_yh, weight_hy, bias_ih, bias_yh, bias_hy, f, g):
    a = _linear(x, weight_ih, bias_ih) + _linear(y, weight_yh, bias_yh)  # (B, H)
    h = f(a)  # (B, H)
    y_new = g(_linear(h, weight_hy, bias_hy))  # (B, O)
    return h, y_new


def jordan_cell(
    x,
    y,
    weight_ih,
    weight_yh,
    weight_hy,
    bias_ih=None,
    bias_yh=None,
    bias_hy=None,
    nonlinearity="tanh",
    output_nonlinearity="identity",
):
    """One Jordan step (SPEC section 2): the previous *output* is fed back.

        a = W_ih x + b_ih + W_yh y + b_yh
        h = f(a)                    f in {tanh, relu, identity}
        y_new = g(W_hy h + b_hy)    g in {identity, tanh, sigmoid}

    Args:
      x: input (B, I).
      y: previous output (B, O), or None for zeros.
      weight_ih: (H, I).  weight_yh: (H, O).  weight_hy: (O, H).
      bias_ih, bias_yh: (H,) or None.  bias_hy: (O,) or None.
      nonlinearity: f, "tanh" (default), "relu" or "identity".
      output_nonlinearity: g, "identity" (default), "tanh" or "sigmoid".

    Returns:
      (h, y_new): hidden layer (B, H) and output (B, O).

    Example:
      >>> h, y = jordan_cell(torch.ones(3, 2), None, torch.ones(4, 2), torch.ones(4, 5),
      ...                    torch.ones(5, 4), nonlinearity="identity")
      >>> h[0], y[0]
      (tensor([2., 2., 2., 2.]), tensor([8., 8., 8., 8., 8.]))
    """
    f = _activation(_HIDDEN_NONLINEARITIES, nonlinearity, "nonlinearity")
    g = _activation(_OUTPUT_NONLINEARITIES, output_nonlinearity, "output_nonlinearity")
    y = _zeros_if_none(y, x, weight_hy.shape[0])
    return _jordan_step(x, y, weight_ih, weight_yh, weight_hy, bias_ih, bias_yh, bias_hy, f, g)


def jordan(
    x,
    y0,
    weight_ih,
    weight_yh,
    weight_hy,
    bias_ih=None,
    bias_yh=None,
    bias_hy=None,
    nonlinearity="tanh",
    output_nonlinearity="identity",
    lengths=None,
    return_internals=False,
    zoneout=None,
    recurrent_mask=None,
):
    """Jordan RNN over a sequence (SPEC section 2), the cell stepped t = 1 .. T.

        a_t = W_ih x_t + b_ih + W_yh y_{t-1} + b_yh
        h_t = f(a_t)
        y_t = g(W_hy h_t + b_hy),   y_0 = 0 unless given

    The output layer is part of the recurrence, so gradients flow through it.

    Args:
      x: input (T, B, I).
      y0: initial output (B, O), or None for zeros.
      weight_ih: (H, I).  weight_yh: (H, O).  weight_hy: (O, H).
      bias_ih, bias_yh: (H,) or None.  bias_hy: (O,) or None.
      nonlinearity: f, "tanh" (default), "relu" or "identity".
      output_nonlinearity: g, "identity" (default), "tanh" or "sigmoid".
      lengths: None, or B ints in [1, T] (see the module docstring).
      return_internals: also return {"h": hidden layer (T, B, H)}.
      zoneout: None, or one (T, B, O) tensor z (or None) per state (y): zoneout
        (SPEC section 16), the state becomes z ⊙ s_{t-1} + (1 - z) ⊙ s~_t.
      recurrent_mask: None, or (B, O) m: recurrent dropout, the W_yh product reads
        m ⊙ y_{t-1} (SPEC section 16).

    Returns:
      (out, y_n): out (T, B, O) is every y_t (zero where inactive); y_n (B, O).
      With return_internals: (out, y_n, internals).

    Example:
      >>> x = torch.randn(5, 3, 2)
      >>> out, y_n = jordan(x, None, torch.randn(4, 2), torch.randn(4, 6), torch.randn(6, 4))
      >>> out.shape, y_n.shape
      (torch.Size([5, 3, 6]), torch.Size([3, 6]))
    """
    _check_sequence(x)
    f = _activation(_HIDDEN_NONLINEARITIES, nonlinearity, "nonlinearity")
    g = _activation(_OUTPUT_NONLINEARITIES, output_nonlinearity, "output_nonlinearity")
    y = _zeros_if_none(y0, x[0], weight_hy.shape[0])  # (B, O)

    def step(x_t, y):
        h, y_new = _jordan_step(x_t, _masked(y, recurrent_mask), weight_ih, weight_yh, weight_hy, bias_ih, bias_yh,
                                bias_hy, f, g)
        return (y_new,), {"h": h}

    out, (y,), internals = _scan(step, x, (y,), lengths, return_internals, zoneout)  # out (T, B, O)
    return (out, y, internals) if return_internals else (out, y)
