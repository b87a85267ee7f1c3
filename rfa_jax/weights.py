"""The attention weights that RFA applies implicitly, made explicit (quadratic; for introspection).

RFA never forms a weights matrix, but its output is exactly `out_i = sum_j a_ij v_j` with

    a_ij = w_ij phi(q_i) . phi(k_j) * c_i,   c_i = 1 / stabilize(sum_j' w_ij' phi(q_i) . phi(k_j')),

w_ij: 1, 0 for padded or future keys, gate decays (1 - g_j) prod_{j<r<=i} g_r (and those of a reverse
gate, `rfa_jax.rfa`); c_i the denominator
rule of `rfa_jax.normalizer` ("clamp1": 1 / max(d, 1); "rms" has no weights). Rows need not be
non-negative (sin/cos features) but sum to 1 wherever the floor rule's denominator is above the floor.
"""

import jax.numpy as jnp

from rfa_jax.normalizer import normalize
from rfa_jax.reference import gating_weights, softmax_attention, visibility
from rfa_jax.random_features import query_key_features


def rfa_weights(q, k, projection, *, feature_map="gaussian", sigma=1.0, causal=False, key_mask=None,
                gate=None, normalizer="floor", window=None, rfa_scale=1.0, segment_ids=None,
                key_segment_ids=None, reverse_gate=None):
  """q: [B, Lq, H, d], k: [B, Lk, H, d] -> a: [B, H, Lq, Lk] float32 (arguments as in `rfa`, and
  `key_segment_ids` as in `rfa_cross`; with `window`, the window's softmax weights are added to
  rfa_scale times RFA's)."""
  if normalizer == "rms":
    raise ValueError("normalizer='rms' scales each query's output by the numerator's own RMS, which "
                     "depends on the values: it has no attention weights of its own")
  phi_q, phi_k = query_key_features(q, k, projection, feature_map, sigma)
  scores = jnp.einsum("bhif,bhjf->bhij", phi_q, phi_k)
  visible = visibility(q.shape[0], q.shape[1], k.shape[1], causal, key_mask, None, segment_ids,
                       key_segment_ids)
  scores = jnp.where(visible, scores, 0.0)
  gating = gating_weights(gate, reverse_gate)
  if gating is not None:
    scores = scores * gating
  weights = normalize(scores, jnp.sum(scores, axis=-1), normalizer)
  if window is None:
    return weights
  scale = jnp.asarray(rfa_scale, jnp.float32)
  return jnp.reshape(scale, scale.shape + (1, 1)) * weights + weights_of(
      lambda values: softmax_attention(q, k, values, causal=causal, key_mask=key_mask, window=window,
                                       segment_ids=segment_ids), k.shape)


def weights_of(attend, key_shape):
  """The weights [B, H, Lq, Lk] of an attention that is linear in its values, `attend(v) -> out`:
  its output for one-hot values (v_j = e_j). key_shape: [B, Lk, H, ...]."""
  batch, length, heads = key_shape[:3]
  one_hot = jnp.broadcast_to(jnp.eye(length, dtype=jnp.float32)[None, :, None, :],
                             (batch, length, heads, length))
  return jnp.moveaxis(attend(one_hot), 2, 1)  # [B, Lq, H, Lk] -> [B, H, Lq, Lk]
