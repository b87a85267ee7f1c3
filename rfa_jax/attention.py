"""Public RFA functions: `rfa` (bidirectional or causal), `rfa_cross`, `prefill` and `decode_step`.

Shapes: q, k: [batch, length, heads, head_dim], v: [batch, length, heads, value_dim],
projection: [heads, num_features, head_dim]. Queries and keys are L2-normalised and the projection is
scaled by sigma (scalar or [heads]); as num_features grows the output tends to softmax attention with
logits sigma^2 q^ . k^ (feature_map="gaussian"). `normalizer` is the denominator rule
(`rfa_jax.normalizer`). `window=w` adds exact softmax attention within w positions
(`rfa_jax.window`, logits q . k / sqrt(head_dim)) to the RFA output: out = rfa_scale * RFA + window
attention, with `rfa_scale` a scalar or one factor per head (1 by default). `segment_ids` packs
several sequences into a row (`rfa_jax.segments`): each attends only within itself. A gate is the
paper's recency bias of causal attention; with `reverse_gate` it is bidirectional.
Features, states and sums are float32; the output has v's dtype.
"""

import jax
import jax.numpy as jnp
import numpy as np

from rfa_jax import causal as causal_forms
from rfa_jax.normalizer import check_normalizer, normalize
from rfa_jax.random_features import query_key_features, token_features
from rfa_jax.segments import (grouped, key_mask_of, last_sequence, packed_noncausal, restarts,
                              reverse_restarts, zero_padding)
from rfa_jax.validation import (check_attention_args, check_gate_values, check_projection,
                                check_rank, check_sigma, check_window, resolve_feature_map)
from rfa_jax.window import window_attention

DEFAULT_CHUNK_SIZE = 64


def _noncausal(phi_q, phi_k, v, key_weight=None, normalizer="floor"):
  """out_i = normalize(phi_q_i^T S, phi_q_i . z), S = sum_j c_j phi_k_j v_j^T, z = sum_j c_j phi_k_j.

  Heads first: phi_q: [B, H, Lq, F], phi_k: [B, H, Lk, F], v: [B, H, Lk, dv], key_weight c:
  [B, H or 1, Lk] or None. Returns [B, H, Lq, dv].
  """
  if key_weight is None:
    s, z = jnp.einsum("bhjf,bhjd->bhfd", phi_k, v), jnp.sum(phi_k, axis=2)
  else:  # the weights go on v and into z's matrix-vector product, never onto the wide phi_k
    key_weight = jnp.broadcast_to(key_weight, phi_k.shape[:3])
    s = jnp.einsum("bhjf,bhjd->bhfd", phi_k, v * key_weight[..., None])
    z = jnp.einsum("bhjf,bhj->bhf", phi_k, key_weight)
  return normalize(jnp.einsum("bhif,bhfd->bhid", phi_q, s), jnp.einsum("bhif,bhf->bhi", phi_q, z),
                   normalizer)


def _mask_padding(k, v, key_mask):
  """Zeros padded keys and values so that whatever they hold cannot reach the output (or its grad);
  returns (k, v, key weights [B, 1, L] float32 or None)."""
  if key_mask is None:
    return k, v, None
  keep = key_mask[:, :, None, None]
  return jnp.where(keep, k, 0), jnp.where(keep, v, 0), key_mask[:, None].astype(jnp.float32)


def _heads_first(x):
  """[B, L, H, ...] <-> [B, H, L, ...]: the public layout <-> the heads-first one of the RFA forms."""
  return jnp.swapaxes(x, 1, 2)


def rfa(q, k, v, projection, *, feature_map="gaussian", sigma=1.0, causal=False, key_mask=None,
        gate=None, chunk_size=None, normalizer="floor", window=None, rfa_scale=1.0,
        segment_ids=None, inter_chunk="scan", reverse_gate=None, kind=None):
  """Random feature attention. Returns [batch, length, heads, value_dim].

  feature_map: "gaussian" (sin/cos), "positive" (exp) or "arccos" (relu); `kind=` is its deprecated
  name.
  causal=False: every unmasked key is visible (`chunk_size` serves `reverse_gate` and `segment_ids`).
  causal=True: key j is visible to query i when j <= i; `chunk_size=1` runs the token recurrence,
    otherwise the chunked form (default chunk DEFAULT_CHUNK_SIZE); both give the same result.
  key_mask: [batch, length] bool, False = padding. gate: [batch, length, heads] in (0, 1), causal:
    S_i = g_i S_{i-1} + (1 - g_i) phi(k_i) v_i^T.
  reverse_gate: [batch, length, heads] in (0, 1), with `gate` and causal=False: bidirectional gating,
    a forward pass gated by g and a backward one gated by h summed before the one normalisation:
    w_ij = (1 - g_j) prod_{j<r<=i} g_r for j <= i, plus (1 - h_j) prod_{i<=r<j} h_r for j >= i (the
    key j = i is in both). Linear in length: one chunked form whose C x C scores serve both
    directions (`chunk_size`, `inter_chunk`).
  normalizer: "floor" | "clamp1" | "rms", the denominator rule (`rfa_jax.normalizer`).
  window: None, or w >= 1: add exact softmax attention over i - w < j <= i (causal) or |i - j| < w.
  rfa_scale: scalar or [heads], the factor of the RFA term (out = rfa_scale * RFA + window term).
  segment_ids: [batch, length] int, 0 = padding: query i sees key j only when both carry the same
    non-zero id (each id one contiguous run when causal); causal forms restart the state where the id
    changes, so a packed row gives what each of its sequences gives alone. Padded queries output 0.
  inter_chunk: how the chunked forms pass the state across chunks, "scan" (sequential) or
    "parallel" (cumulative sums; an associative scan with a gate or restarts); the same result.
  """
  feature_map = resolve_feature_map(feature_map, kind)
  check_attention_args(q, k, v, projection, feature_map=feature_map, sigma=sigma, causal=causal,
                       key_mask=key_mask, gate=gate, chunk_size=chunk_size, normalizer=normalizer,
                       window=window, rfa_scale=rfa_scale, segment_ids=segment_ids,
                       inter_chunk=inter_chunk, reverse_gate=reverse_gate)
  key_mask = key_mask_of(key_mask, segment_ids)
  k, v, key_weight = _mask_padding(k, v, key_mask)
  phi_q, phi_k = query_key_features(q, k, projection, feature_map, sigma)
  values = _heads_first(v.astype(jnp.float32))
  if causal:
    reset = None if segment_ids is None else restarts(segment_ids)
    out, _ = _causal(phi_q, phi_k, values, key_weight, gate, chunk_size, None, normalizer, reset,
                     inter_chunk)
  elif reverse_gate is not None:
    out = _bidirectional(phi_q, phi_k, values, key_weight, gate, reverse_gate, segment_ids,
                         chunk_size or DEFAULT_CHUNK_SIZE, normalizer, inter_chunk)
  elif segment_ids is not None:
    out = packed_noncausal(phi_q, phi_k, values, segment_ids, key_weight,
                           chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, normalizer=normalizer,
                           inter_chunk=inter_chunk)
  else:
    out = _noncausal(phi_q, phi_k, values, key_weight, normalizer)
  out = scale_heads(_heads_first(out), rfa_scale)
  if window is not None:
    out = out + window_attention(q, k, v.astype(jnp.float32), window=window, causal=causal,
                                 key_mask=key_mask, segment_ids=segment_ids)
  return zero_padding(out, segment_ids).astype(v.dtype)


def _gate_heads_first(gate, key_weight):
  """gate [B, L, H] -> (g [B, H, L] float32, key weights times 1 - g, log g)."""
  gate = jnp.swapaxes(gate.astype(jnp.float32), 1, 2)
  key_weight = (1 - gate) if key_weight is None else key_weight * (1 - gate)
  return gate, key_weight, jnp.log(gate)


def _causal(phi_q, phi_k, v, key_weight, gate, chunk_size, initial_state, normalizer, reset=None,
            inter_chunk="scan"):
  """Dispatches to the token recurrence (chunk_size=1) or the chunked form; returns (out, state), out
  heads first. phi_q, phi_k, v, key_weight heads first (`_noncausal`), gate: [B, L, H] or None;
  reset: [B, L] bool or None, where the state restarts (packed sequences)."""
  log_decay = None
  if gate is not None:
    gate, key_weight, log_decay = _gate_heads_first(gate, key_weight)
  if chunk_size == 1:
    decay = gate
    if reset is not None:
      decay = jnp.where(reset[:, None], 0.0, 1.0 if gate is None else gate)
    return causal_forms.recurrent(phi_q, phi_k, v, key_weight, decay, initial_state, normalizer)
  return causal_forms.chunked(phi_q, phi_k, v, key_weight, log_decay, initial_state=initial_state,
                              chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, normalizer=normalizer,
                              reset=reset, inter_chunk=inter_chunk)


def _bidirectional(phi_q, phi_k, v, key_weight, gate, reverse_gate, segment_ids, chunk_size,
                   normalizer, inter_chunk):
  """Bidirectional gating (`rfa`'s reverse_gate): the gated causal sums of the sequence under gate and
  the anti-causal ones under reverse_gate (`causal_forms.bidirectional_sums`), normalised once. Heads
  first; gate, reverse_gate: [B, L, H]; segment_ids: [B, L] (one run each) or None."""
  _, forward_weight, log_decay = _gate_heads_first(gate, key_weight)
  _, reverse_weight, reverse_log_decay = _gate_heads_first(reverse_gate, key_weight)
  reset = reverse_reset = None
  if segment_ids is not None:  # the reverse pass restarts after the last token of each sequence
    reset, reverse_reset = restarts(segment_ids), reverse_restarts(segment_ids)
  numerator, denominator = causal_forms.bidirectional_sums(
      phi_q, phi_k, v, forward_weight, log_decay, reverse_weight, reverse_log_decay,
      chunk_size=chunk_size, reset=reset, reverse_reset=reverse_reset, inter_chunk=inter_chunk)
  return normalize(numerator, denominator, normalizer)


def prefill(state, q, k, v, projection, *, feature_map="gaussian", sigma=1.0, key_mask=None,
            gate=None, chunk_size=None, normalizer="floor", window=None, rfa_scale=1.0,
            segment_ids=None, inter_chunk="scan", kind=None):
  """Causal RFA over a block of tokens that continues from `state` (e.g. a prompt, or a decode cache).

  Arguments as in `rfa(..., causal=True)`; returns (new_state, out: [batch, length, heads, value_dim]).
  `prefill(init_decode_state(...), ...)` gives the output of `rfa(..., causal=True)`; with `window`
  the state must hold the window's cache (`init_decode_state(..., window=w, head_dim=d)`). With
  `segment_ids` the block's first sequence continues `state`, every later one restarts it, and the
  new state is that of the block's last sequence (decoding continues it).
  """
  feature_map = resolve_feature_map(feature_map, kind)
  check_attention_args(q, k, v, projection, feature_map=feature_map, sigma=sigma, causal=True,
                       key_mask=key_mask, gate=gate, chunk_size=chunk_size, normalizer=normalizer,
                       window=window, rfa_scale=rfa_scale, segment_ids=segment_ids,
                       inter_chunk=inter_chunk)
  _check_window_state(state, window, q.shape[0])
  key_mask = key_mask_of(key_mask, segment_ids)
  k, v, key_weight = _mask_padding(k, v, key_mask)
  phi_q, phi_k = query_key_features(q, k, projection, feature_map, sigma)
  reset = None if segment_ids is None else restarts(segment_ids)
  out, rfa_state = _causal(phi_q, phi_k, _heads_first(v.astype(jnp.float32)), key_weight, gate,
                           chunk_size, causal_forms.DecodeState(state.s, state.z), normalizer, reset,
                           inter_chunk)
  state = state._replace(s=rfa_state.s, z=rfa_state.z)
  out = scale_heads(_heads_first(out), rfa_scale)
  if window is not None:
    past = window - 1  # the cached keys sit just before the new ones
    kept = jnp.ones(q.shape[:2], bool) if key_mask is None else key_mask
    keys, values, kept = (jnp.concatenate([cached, new.astype(cached.dtype)], 1) for cached, new in
                          ((state.window_k, k), (state.window_v, v), (state.window_kept, kept)))
    ids = None
    if segment_ids is not None:  # the cached keys belong to the block's first sequence
      ids = jnp.concatenate([jnp.repeat(segment_ids[:, :1], past, 1), segment_ids], 1)
    recent = window_attention(jnp.pad(q, [(0, 0), (past, 0), (0, 0), (0, 0)]), keys,
                              values.astype(jnp.float32), window=window, causal=True, key_mask=kept,
                              segment_ids=ids)
    out = out + recent[:, past:]
    if ids is not None:  # the cache keeps the last sequence's keys only
      kept = kept & (ids == last_sequence(ids)[:, None])
    state = state._replace(window_k=keys[:, keys.shape[1] - past:],
                           window_v=values[:, values.shape[1] - past:],
                           window_kept=kept[:, kept.shape[1] - past:])
  return state, zero_padding(out, segment_ids).astype(v.dtype)


def scale_heads(out, scale):
  """out: [B, L, H, dv] times `scale` (scalar or [H]) per head."""
  scale = jnp.asarray(scale, jnp.float32)
  return out * jnp.reshape(scale, scale.shape + (1,))


def _check_window_state(state, window, batch):
  """The decode state holds a window cache exactly when `window` is given, of w - 1 positions."""
  if window is None:
    if state.window_k is not None:
      raise ValueError("the decode state holds a window cache but window=None; pass the window it was "
                       "made for")
    return
  if state.window_k is None or state.window_k.shape[:2] != (batch, window - 1):
    got = None if state.window_k is None else state.window_k.shape
    raise ValueError(f"window={window} needs a decode state with the window's cache "
                     f"(window_k [batch={batch}, {window - 1}, heads, head_dim]); got {got}: use "
                     f"init_decode_state(..., window={window}, head_dim=...)")


def rfa_cross(q, k, v, projection, *, feature_map="gaussian", sigma=1.0, key_mask=None,
              normalizer="floor", segment_ids=None, key_segment_ids=None, kind=None):
  """Cross attention: q: [batch, Lq, heads, head_dim] attends to k, v: [batch, Lk, heads, ...].

  key_mask: [batch, Lk] bool, False = padding. Returns [batch, Lq, heads, value_dim].
  segment_ids: [batch, Lq] and key_segment_ids: [batch, Lk] int (both or neither), 0 = padding:
  packed pairs, e.g. decoder queries against encoder keys; query i sees key j only when their ids are
  equal and non-zero. Padded queries output 0.
  """
  feature_map = resolve_feature_map(feature_map, kind)
  check_attention_args(q, k, v, projection, feature_map=feature_map, sigma=sigma,
                       key_mask=key_mask, cross=True, normalizer=normalizer,
                       segment_ids=segment_ids, key_segment_ids=key_segment_ids)
  k, v, key_weight = _mask_padding(k, v, key_mask_of(key_mask, key_segment_ids))
  phi_q, phi_k = query_key_features(q, k, projection, feature_map, sigma)
  values = _heads_first(v.astype(jnp.float32))
  if segment_ids is None:
    return _heads_first(_noncausal(phi_q, phi_k, values, key_weight, normalizer)).astype(v.dtype)
  out = grouped(phi_q, segment_ids, phi_k, values, key_segment_ids, key_weight,
                chunk_size=DEFAULT_CHUNK_SIZE, normalizer=normalizer)
  return zero_padding(_heads_first(out), segment_ids).astype(v.dtype)


def decode_step(state, q_t, k_t, v_t, projection, *, feature_map="gaussian", sigma=1.0, gate_t=None,
                normalizer="floor", window=None, rfa_scale=1.0, reset_t=None, kind=None):
  """One step of causal RFA. q_t, k_t: [batch, heads, head_dim], v_t: [batch, heads, value_dim],
  gate_t: [batch, heads] in (0, 1) or None. Returns (new_state, out_t: [batch, heads, value_dim]).
  reset_t: [batch] bool or None: True starts a new sequence in that row (the state and the window's
  cache are emptied before this token), as `segment_ids` restarts `rfa(..., causal=True)`.

  Iterating it over a sequence from `init_decode_state` reproduces `rfa(..., causal=True)`.
  """
  feature_map = resolve_feature_map(feature_map, kind)
  check_rank("q_t", q_t, 3, "[batch, heads, head_dim]")
  if k_t.shape != q_t.shape:
    raise ValueError(f"k_t has shape {k_t.shape}; expected {q_t.shape} (the shape of q_t)")
  if v_t.shape[:2] != q_t.shape[:2] or v_t.ndim != 3:
    raise ValueError(f"v_t has shape {v_t.shape}; expected [batch={q_t.shape[0]}, "
                     f"heads={q_t.shape[1]}, value_dim]")
  check_projection(projection, q_t.shape[1], q_t.shape[2])
  check_sigma(sigma, q_t.shape[1], head_dim=q_t.shape[-1])
  check_sigma(rfa_scale, q_t.shape[1], name="rfa_scale")
  check_normalizer(normalizer)
  check_window(window)
  _check_window_state(state, window, q_t.shape[0])
  expected_state = (q_t.shape[0], q_t.shape[1], None, v_t.shape[2])
  if state.s.shape[:2] != q_t.shape[:2] or state.s.shape[3] != v_t.shape[2]:
    raise ValueError(f"state.s has shape {state.s.shape}; expected {expected_state} "
                     "(see init_decode_state)")
  key_weight = decay = None
  if gate_t is not None:
    if gate_t.shape != q_t.shape[:2]:
      raise ValueError(f"gate_t has shape {gate_t.shape}; expected {q_t.shape[:2]} [batch, heads]")
    check_gate_values("gate_t", gate_t)
    decay = gate_t = gate_t.astype(jnp.float32)
    key_weight = 1 - gate_t
  if reset_t is not None:
    if np.shape(reset_t) != q_t.shape[:1]:
      raise ValueError(f"reset_t has shape {np.shape(reset_t)}; expected [batch={q_t.shape[0]}] bool")
    decay = jnp.where(reset_t[:, None], 0.0, 1.0 if gate_t is None else gate_t)
    if window is not None:
      state = state._replace(window_kept=state.window_kept & ~reset_t[:, None])
  phi_q, phi_k = token_features(q_t, k_t, projection, feature_map, sigma)
  rfa_state, out = causal_forms.recurrent_step(causal_forms.DecodeState(state.s, state.z), phi_q,
                                               phi_k, v_t, key_weight, decay, normalizer)
  state = state._replace(s=rfa_state.s, z=rfa_state.z)
  out = scale_heads(out[:, None], rfa_scale)[:, 0]
  if window is not None:
    keys = jnp.concatenate([state.window_k, k_t[:, None].astype(state.window_k.dtype)], 1)
    values = jnp.concatenate([state.window_v, v_t[:, None].astype(state.window_v.dtype)], 1)
    kept = jnp.concatenate([state.window_kept, jnp.ones((q_t.shape[0], 1), bool)], 1)
    logits = jnp.einsum("bhd,bjhd->bhj", q_t, keys.astype(q_t.dtype),
                        preferred_element_type=jnp.float32) * q_t.shape[-1] ** -0.5
    weights = jax.nn.softmax(jnp.where(kept[:, None], logits, -jnp.inf), -1)
    out = out + jnp.einsum("bhj,bjhd->bhd", weights, values.astype(jnp.float32))
    state = state._replace(window_k=keys[:, 1:], window_v=values[:, 1:], window_kept=kept[:, 1:])
  return state, out.astype(v_t.dtype)
