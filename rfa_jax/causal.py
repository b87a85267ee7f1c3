"""Causal RFA: the token recurrence, its chunked form, and one decoding step; and the chunked sums of
a causal and an anti-causal recurrence together (bidirectional gating).

All forms compute, for features phi_q, phi_k: [B, H, L, F] and values v: [B, H, L, dv] (heads first,
as `rfa_jax.random_features.query_key_features` makes them),

    S_i = a_i S_{i-1} + c_i phi(k_i) v_i^T,   z_i = a_i z_{i-1} + c_i phi(k_i),
    out_i = normalize(phi(q_i)^T S_i, phi(q_i) . z_i)   (`rfa_jax.normalizer`; by default
           phi(q_i)^T S_i / stabilize(phi(q_i) . z_i)),

with key weights c_i (1 - g_i for a gate, 0 for a padded key) and decays a_i (g_i, or 1 without gate;
0 where a packed row starts a new sequence, `rfa_jax.segments`).
State S: [B, H, F, dv] and normaliser z: [B, H, F] are float32.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rfa_jax.normalizer import normalize


class DecodeState(NamedTuple):
  """Recurrent state of causal RFA: s: [B, H, F, dv], z: [B, H, F] (float32). With a local window
  of w positions (`window=w`), also the previous w - 1 keys and values, oldest first:
  window_k: [B, w - 1, H, head_dim], window_v: [B, w - 1, H, dv], window_kept: [B, w - 1] bool
  (False: no key there yet, or a padded one)."""
  s: jax.Array
  z: jax.Array
  window_k: jax.Array | None = None
  window_v: jax.Array | None = None
  window_kept: jax.Array | None = None


def init_decode_state(batch: int, num_heads: int, feature_dim: int, value_dim: int, *,
                      window: int | None = None, head_dim: int | None = None,
                      dtype=jnp.float32) -> DecodeState:
  """Zero state before the first token; feature_dim is the length of phi (2 * num_features for
  gaussian). `window` (with `head_dim`, and `dtype` for the cached keys and values) adds the window's
  key/value cache: its size is fixed by w, not by the length decoded."""
  state = DecodeState(jnp.zeros((batch, num_heads, feature_dim, value_dim), jnp.float32),
                      jnp.zeros((batch, num_heads, feature_dim), jnp.float32))
  if window is None:
    return state
  if head_dim is None:
    raise ValueError("init_decode_state(window=...) needs head_dim (the keys' size in the window cache)")
  return state._replace(
      window_k=jnp.zeros((batch, window - 1, num_heads, head_dim), dtype),
      window_v=jnp.zeros((batch, window - 1, num_heads, value_dim), dtype),
      window_kept=jnp.zeros((batch, window - 1), bool))


def recurrent_step(state: DecodeState, phi_q, phi_k, v, key_weight=None, decay=None,
                   normalizer="floor"):
  """One token. phi_q, phi_k: [B, H, F], v: [B, H, dv], key_weight, decay: [B, H] or None (= 1)."""
  if key_weight is not None:
    phi_k = phi_k * key_weight[..., None]
  s = state.s if decay is None else state.s * decay[..., None, None]
  z = state.z if decay is None else state.z * decay[..., None]
  s = s + phi_k[..., :, None] * v[..., None, :].astype(jnp.float32)
  z = z + phi_k
  out = normalize(jnp.einsum("bhf,bhfd->bhd", phi_q, s), jnp.einsum("bhf,bhf->bh", phi_q, z),
                  normalizer)
  return DecodeState(s, z), out


def recurrent(phi_q, phi_k, v, key_weight=None, decay=None, initial_state=None, normalizer="floor"):
  """Token-by-token `lax.scan` of `recurrent_step`. key_weight, decay: [B, H or 1, L] or None.

  Returns (out: [B, H, L, dv] float32, final DecodeState). Plain autodiff keeps every S_i.
  """
  batch, heads, _, features = phi_q.shape
  if initial_state is None:
    initial_state = init_decode_state(batch, heads, features, v.shape[-1])
  time_major = lambda x: None if x is None else jnp.moveaxis(x, 2, 0)
  xs = tuple(map(time_major, (phi_q, phi_k, v, key_weight, decay)))
  final, out = jax.lax.scan(lambda state, x: recurrent_step(state, *x, normalizer=normalizer),
                            initial_state, xs)
  return jnp.moveaxis(out, 0, 2), final


INTER_CHUNK = ("scan", "parallel")


def chunked(phi_q, phi_k, v, key_weight=None, log_decay=None, *, chunk_size: int,
            initial_state=None, normalizer="floor", reset=None, inter_chunk="scan"):
  """The chunked form, normalised: returns (out: [B, L, H, dv] float32, final DecodeState).
  Arguments as in `chunked_sums`."""
  numerator, denominator, final = chunked_sums(phi_q, phi_k, v, key_weight, log_decay,
                                               chunk_size=chunk_size, initial_state=initial_state,
                                               reset=reset, inter_chunk=inter_chunk)
  return normalize(numerator, denominator, normalizer), final


def chunked_sums(phi_q, phi_k, v, key_weight=None, log_decay=None, *, chunk_size: int,
                 initial_state=None, reset=None, inter_chunk="scan"):
  """Chunked form: exact, any length (padded to a multiple of `chunk_size` internally).

  Per chunk of C tokens with in-chunk cumulative log-decay b_i = sum_{r<=i} log a_r (<= 0):
    intra:  num_i += sum_{j<=i} exp(b_i - b_j) c_j (phi_q_i . phi_k_j) v_j   (C x C matrix products)
    inter:  num_i += exp(b_i) phi_q_i^T S_prev
    carry:  S_next = exp(b_C) S_prev + sum_j exp(b_C - b_j) c_j phi_k_j v_j^T,
  and the same for the denominator with z. Every exponent is a non-positive difference, so no decay
  strength overflows. `reset: [B, L]` bool restarts the state before a token (packed sequences): a
  decay of exactly 0 across the restart, applied by masking the pairs (i, j) with a restart in
  (j, i], never through exp(-inf). The chunk increments are batched matrix products; only the states
  before each chunk, S_prev, run across chunks (`inter_chunk`: "scan", a `lax.scan` of N = L/C
  sequential steps, or "parallel", cumulative sums of the increments, an `associative_scan` with
  decays: log N steps), so autodiff stores one state per chunk (O(L/C F dv)) and C x C weights
  (O(L C)), never a state per token.
  key_weight: [B, H or 1, L] or None; log_decay: [B, H, L] (log a_i <= 0) or None; reset: [B, L].
  Returns (numerator: [B, H, L, dv], denominator: [B, H, L] (float32), final DecodeState).
  """
  batch, heads, length, features = phi_q.shape
  if initial_state is None:
    initial_state = init_decode_state(batch, heads, features, v.shape[-1])
  if key_weight is None and length % chunk_size:
    key_weight = jnp.ones((batch, 1, length), jnp.float32)
  to_chunks = _chunker(length, chunk_size)
  pq, pk, vc, c = map(to_chunks, (phi_q, phi_k, v.astype(jnp.float32), key_weight))
  weights = _chunk_weights(c, to_chunks(log_decay), to_chunks(_reset_row(reset)), chunk_size)
  scores = jnp.einsum("bhnif,bhnjf->bhnij", pq, pk) * weights.pair
  intra_num, intra_den = _weighted_sums(scores, vc, c)
  inter_num, inter_den, final = _carried(pq, pk, vc, weights, initial_state, inter_chunk)
  return (_unchunk(intra_num + inter_num, length), _unchunk(intra_den + inter_den, length), final)


def bidirectional_sums(phi_q, phi_k, v, key_weight, log_decay, reverse_key_weight,
                       reverse_log_decay, *, chunk_size: int, reset=None, reverse_reset=None,
                       inter_chunk="scan"):
  """The unnormalised sums of a forward (causal) and a reverse (anti-causal) recurrence together:

    num_i = sum_{j<=i} c_j exp(b_i - b_j) (phi_q_i . phi_k_j) v_j
          + sum_{j>=i} c'_j exp(b'_i - b'_j) (phi_q_i . phi_k_j) v_j,
  b_i = sum_{r<=i} log a_r, b'_i = sum_{r>=i} log a'_r (the key j = i is in both sums), and the same
  for the denominator without v. This is `chunked_sums` of the sequence plus that of the reversed
  sequence with c', a', reversed back, but each chunk's C x C scores phi_q . phi_k are computed once
  and weighed by both directions' decays (below and above the diagonal) in one matrix product.
  key_weight c, reverse_key_weight c': [B, H or 1, L]; log_decay, reverse_log_decay: [B, H, L] (<= 0);
  reset, reverse_reset: [B, L] bool or None, where the forward state restarts before a token and
  where the reverse one restarts after it (the reverse pass's restarts). Zero initial states.
  Returns (numerator: [B, H, L, dv], denominator: [B, H, L] (float32)).
  """
  batch, heads, length, features = phi_q.shape
  to_chunks = _chunker(length, chunk_size)
  pq, pk, vc = map(to_chunks, (phi_q, phi_k, v.astype(jnp.float32)))
  c, c_rev = to_chunks(key_weight), to_chunks(reverse_key_weight)
  forward = _chunk_weights(c, to_chunks(log_decay), to_chunks(_reset_row(reset)), chunk_size)
  backward = _chunk_weights(c_rev, to_chunks(reverse_log_decay), to_chunks(_reset_row(reverse_reset)),
                            chunk_size, reverse=True)
  pair = forward.pair * c[..., None, :] + backward.pair * c_rev[..., None, :]
  intra_num, intra_den = _weighted_sums(jnp.einsum("bhnif,bhnjf->bhnij", pq, pk) * pair, vc)
  zero = init_decode_state(batch, heads, features, v.shape[-1])
  num, den, _ = _carried(pq, pk, vc, forward, zero, inter_chunk)
  num_rev, den_rev, _ = _carried(pq, pk, vc, backward, zero, inter_chunk, reverse=True)
  return (_unchunk(intra_num + num + num_rev, length), _unchunk(intra_den + den + den_rev, length))


def _reset_row(reset):
  """[B, L] restarts -> [B, 1, L], one row for every head (None stays None)."""
  return None if reset is None else reset[:, None]


def _chunker(length, chunk_size):
  """x: [B, H, L, ...] -> [B, H, N, C, ...], zero-padded to N = ceil(L / C) chunks (padded keys:
  weight 0, decay 1, no restart). None stays None."""
  num_chunks = -(-length // chunk_size)

  def to_chunks(x):
    if x is None:
      return None
    x = jnp.pad(x, [(0, 0), (0, 0), (0, num_chunks * chunk_size - length)] + [(0, 0)] * (x.ndim - 3))
    return x.reshape(*x.shape[:2], num_chunks, chunk_size, *x.shape[3:])
  return to_chunks


def _unchunk(x, length):
  """[B, H, N, C, ...] -> [B, H, L, ...]: the chunks' tokens in order, padding dropped."""
  return x.reshape(*x.shape[:2], -1, *x.shape[4:])[:, :, :length]


class _ChunkWeights(NamedTuple):
  """One direction's weights within and across chunks (chunk space, [.., N, C]).
  pair: [.., N, C, C] visibility x decay of key j for query i in the chunk; keys: weight of key j in
  the state the chunk passes on (None: 1); queries: weight of the state passed in, for query i (None:
  1); carry: [B, H, N], the decay of the passed-in state across the chunk (None: 1)."""
  pair: jax.Array
  keys: jax.Array | None
  queries: jax.Array | None
  carry: jax.Array | None


def _chunk_weights(c, log_decay, reset, chunk_size, reverse=False):
  """A direction's `_ChunkWeights` from key weights c: [B, H or 1, N, C] or None, log decays [B, H,
  N, C] or None, restarts [B, 1, N, C] bool or None. Forward: keys j <= i, the state passes on from
  the chunk's last token; reverse: keys j >= i, from its first. Per token factors multiply v, the
  C x C scores or the [.., dv] results, never the wide features."""
  cumsum = lambda x: jax.lax.cumsum(x, axis=x.ndim - 1, reverse=reverse)
  edge = 0 if reverse else -1  # the token whose state the chunk passes on
  visible = jnp.ones((chunk_size, chunk_size), bool)
  visible = jnp.triu(visible) if reverse else jnp.tril(visible)  # [C, C], or [B, 1, N, C, C]
  keys, queries, carry = c, None, None
  if reset is not None:
    run = cumsum(reset.astype(jnp.int32))  # restarts so far in the chunk, in the pass's order
    visible = visible & (run[..., :, None] == run[..., None, :])
    query_keeps = run == 0  # query i still sees the state passed in
    key_keeps = run == run[..., edge, None]  # key j still counts where the chunk passes its state on
    chunk_keeps = run[..., edge] == 0  # the passed-in state survives the chunk
  pair = visible.astype(jnp.float32)
  if log_decay is not None:
    b = cumsum(log_decay.astype(jnp.float32))  # [B, H, N, C]
    b_edge = b[..., edge, None]
    # b_i - b_j <= 0 on visible pairs; the cap keeps the others finite before the mask.
    pair = jnp.where(visible, jnp.exp(jnp.minimum(b[..., :, None] - b[..., None, :], 0.0)), 0.0)
    keys = jnp.exp(b_edge - b) * (1.0 if c is None else c)
    queries = jnp.exp(b)
    carry = jnp.exp(b_edge[..., 0])
  if reset is not None:
    keys = jnp.where(key_keeps, 1.0 if keys is None else keys, 0.0)
    queries = jnp.where(query_keeps, 1.0 if queries is None else queries, 0.0)
    kept = chunk_keeps.astype(jnp.float32)
    carry = kept if carry is None else carry * kept
  return _ChunkWeights(pair, keys, queries, carry)


def _carried(pq, pk, vc, weights, initial_state, inter_chunk, reverse=False):
  """The part of each query's sums that comes from other chunks, through the state passed across
  them (forward: from the left, starting at initial_state; reverse: from the right). Chunk space;
  returns (numerator [B, H, N, C, dv], denominator [B, H, N, C], final DecodeState)."""
  batch, heads, num_chunks = pq.shape[:3]
  delta_s, delta_z = _weighted_sums(jnp.swapaxes(pk, -1, -2), vc, weights.keys)  # [B, H, N, F, ..]
  carry = weights.carry
  if carry is not None:
    carry = jnp.moveaxis(jnp.broadcast_to(carry, (batch, heads, num_chunks)), 2, 0)
  order = (lambda x: x if x is None else jnp.flip(x, 0)) if reverse else (lambda x: x)
  prev, final = chunk_states(initial_state, order(jnp.moveaxis(delta_s, 2, 0)),
                             order(jnp.moveaxis(delta_z, 2, 0)), order(carry), inter_chunk)
  num = jnp.einsum("bhnif,bhnfd->bhnid", pq, jnp.moveaxis(order(prev.s), 0, 2))
  den = jnp.einsum("bhnif,bhnf->bhni", pq, jnp.moveaxis(order(prev.z), 0, 2))
  if weights.queries is not None:
    queries = jnp.broadcast_to(weights.queries, den.shape)
    num, den = num * queries[..., None], den * queries
  return num, den, final


def _weighted_sums(a, v, weight=None):
  """(sum_j a_ij w_j v_j, sum_j a_ij w_j) over the last axis of a: [..., I, J], v: [..., J, dv],
  weight w: [..., J] broadcastable (None: 1)."""
  if weight is None:
    return a @ v, jnp.sum(a, axis=-1)
  weight = jnp.broadcast_to(weight, a.shape[:-2] + a.shape[-1:])
  return a @ (v * weight[..., None]), jnp.einsum("...ij,...j->...i", a, weight)


def chunk_states(initial_state, delta_s, delta_z, decays=None, inter_chunk="scan"):
  """The state before each chunk and after the last: S_n = a_n S_{n-1} + dS_n over chunks n.

  delta_s: [N, B, H, F, dv], delta_z: [N, B, H, F], decays a: [N, B, H] or None (= 1). Returns
  (DecodeState of [N, ...]: the state before chunk n, final DecodeState). "scan": N sequential
  steps; "parallel": S_n = A_n S_0 + sum_{m<=n} (A_n / A_m) dS_m as a cumulative sum, or with decays
  an `associative_scan` of the maps x -> a x + b (composition: (a1, b1) then (a2, b2) is
  (a1 a2, a2 b1 + b2)), which never divides by a cumulative decay.
  """
  if inter_chunk == "scan":
    def carry_state(state, chunk):
      ds, dz, decay = chunk
      prev = state
      if decay is not None:
        state = DecodeState(state.s * decay[..., None, None], state.z * decay[..., None])
      return DecodeState(state.s + ds, state.z + dz), prev

    final, prev = jax.lax.scan(carry_state, initial_state, (delta_s, delta_z, decays))
    return prev, final
  if inter_chunk != "parallel":
    raise ValueError(f"inter_chunk={inter_chunk!r}; expected one of {INTER_CHUNK}")
  if decays is None:
    s = initial_state.s + jnp.cumsum(delta_s, axis=0)
    z = initial_state.z + jnp.cumsum(delta_z, axis=0)
  else:
    def compose(first, then):
      (a1, s1, z1), (a2, s2, z2) = first, then
      return a1 * a2, s1 * a2[..., None, None] + s2, z1 * a2[..., None] + z2

    decay, s, z = jax.lax.associative_scan(compose, (decays, delta_s, delta_z), axis=0)
    s = s + decay[..., None, None] * initial_state.s
    z = z + decay[..., None] * initial_state.z
  before = lambda x, first: jnp.concatenate([first[None], x[:-1]], axis=0)
  return DecodeState(before(s, initial_state.s), before(z, initial_state.z)), DecodeState(s[-1], z[-1])
