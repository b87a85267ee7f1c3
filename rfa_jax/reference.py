"""Slow, obviously-correct quadratic references that the fast forms are tested against."""

import jax
import jax.numpy as jnp

from rfa_jax.normalizer import normalize
from rfa_jax.random_features import (arccos_kernel, gaussian_kernel, l2_normalize,
                                      query_key_features)
from rfa_jax.validation import check_feature_map, resolve_feature_map


def softmax_attention(q, k, v, *, causal=False, key_mask=None, scale=None, window=None,
                      segment_ids=None, key_segment_ids=None):
  """Exact softmax attention. q: [B, Lq, H, d], k: [B, Lk, H, d], v: [B, Lk, H, dv] -> [B, Lq, H, dv].

  Logits `scale * q . k` with scale = 1/sqrt(d) by default; `key_mask: [B, Lk]` (False = padding);
  `causal` hides keys j > i; `window=w` hides keys outside i - w < j <= i (causal) or |i - j| < w;
  `segment_ids: [B, Lq]` (with `key_segment_ids: [B, Lk]`, by default the same) hides keys of another
  id and every key from id 0. A query that sees no key outputs 0.
  """
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  logits = jnp.einsum("bihd,bjhd->bhij", q, k, preferred_element_type=jnp.float32) * scale
  visible = visibility(q.shape[0], q.shape[1], k.shape[1], causal, key_mask, window, segment_ids,
                        key_segment_ids)
  logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1) * visible
  return jnp.einsum("bhij,bjhd->bihd", weights, v.astype(jnp.float32)).astype(v.dtype)


def visibility(batch, q_len, k_len, causal, key_mask, window=None, segment_ids=None,
                key_segment_ids=None):
  """[B, 1, Lq, Lk] bool: query i may attend to key j."""
  visible = jnp.ones((batch, 1, q_len, k_len), bool)
  if causal:
    visible = visible & jnp.tril(jnp.ones((q_len, k_len), bool))
  if window is not None:
    gap = jnp.arange(q_len)[:, None] - jnp.arange(k_len)[None]
    visible = visible & (gap < window) & (gap > (-1 if causal else -window))
  if key_mask is not None:
    visible = visible & key_mask[:, None, None, :]
  if segment_ids is not None:
    key_ids = segment_ids if key_segment_ids is None else key_segment_ids
    same = (segment_ids[:, :, None] == key_ids[:, None, :]) & (key_ids != 0)[:, None, :]
    visible = visible & same[:, None]
  return visible


def gate_weights(gate):
  """w_ij = (1 - g_j) prod_{j<r<=i} g_r for j <= i, else 0; gate: [B, L, H] -> [B, H, L, L].

  Built as an explicit product over r of a [B, H, L, L, L] tensor: cubic, for tests only.
  """
  g = jnp.moveaxis(gate.astype(jnp.float32), -1, 1)  # [B, H, L]
  length = g.shape[-1]
  i, j, r = jnp.meshgrid(*(jnp.arange(length),) * 3, indexing="ij")
  factors = jnp.where((j < r) & (r <= i), g[:, :, None, None, :], 1.0)
  return jnp.where(j[..., 0] <= i[..., 0], (1 - g)[:, :, None, :] * factors.prod(-1), 0.0)


def decay_weights(gate):
  """The gate weights of `gate_weights` in O(L^2): (1 - g_j) exp(b_i - b_j) for j <= i, with
  b = cumsum(log g); every exponent is non-positive. gate: [B, L, H] -> [B, H, L, L]."""
  g = jnp.moveaxis(gate.astype(jnp.float32), -1, 1)  # [B, H, L]
  b = jnp.cumsum(jnp.log(g), axis=-1)
  past = jnp.tril(jnp.ones((g.shape[-1],) * 2, bool))
  gap = jnp.where(past, b[..., :, None] - b[..., None, :], -jnp.inf)
  return jnp.exp(gap) * (1 - g)[..., None, :]


def gating_weights(gate, reverse_gate=None, weigh=decay_weights):
  """The gates' w_ij: [B, L, H] -> [B, H, L, L]. `weigh(gate)` (j <= i), plus with reverse_gate h
  the same weights of the reversed sequence, reversed: (1 - h_j) prod_{i<=r<j} h_r for j >= i.
  None without gates."""
  if gate is None:
    if reverse_gate is not None:
      raise ValueError("reverse_gate is the backward gate of bidirectional gating: pass it with "
                       "gate= (the forward gate)")
    return None
  weights = weigh(gate)
  if reverse_gate is not None:
    weights = weights + jnp.flip(weigh(jnp.flip(reverse_gate, axis=1)), axis=(-2, -1))
  return weights


def rfa_reference(q, k, v, projection, *, feature_map="gaussian", sigma=1.0, causal=False,
                  key_mask=None, gate=None, normalizer="floor", window=None, rfa_scale=1.0,
                  segment_ids=None, key_segment_ids=None, reverse_gate=None, kind=None):
  """RFA with explicit attention weights: out_i = normalize(sum_j w_ij A_ij v_j, sum_j w_ij A_ij).

  A_ij = phi(q_i) . phi(k_j) and w_ij: 1, 0 for masked or future keys or keys of another segment
  (`segment_ids`, `key_segment_ids` as in `softmax_attention`), or times the gate weights
  (`gate_weights`; with `reverse_gate`, both directions' as in `rfa`);
  `window=w` adds `softmax_attention(..., window=w)` to rfa_scale times that. Quadratic in length;
  also covers cross attention (Lq != Lk, non-causal).
  """
  feature_map = resolve_feature_map(feature_map, kind)
  phi_q, phi_k = query_key_features(q, k, projection, feature_map, sigma)
  scores = jnp.einsum("bhif,bhjf->bhij", phi_q, phi_k)
  gating = gating_weights(gate, reverse_gate, gate_weights)
  return _mix(scores, q, k, v, causal, key_mask, gating, normalizer, window, rfa_scale,
              segment_ids, key_segment_ids)


def kernel_attention(q, k, v, *, feature_map="gaussian", sigma=1.0, causal=False, key_mask=None,
                     gate=None, normalizer="floor", window=None, rfa_scale=1.0, segment_ids=None,
                     key_segment_ids=None, reverse_gate=None):
  """The attention that RFA's random features estimate, computed exactly: RFA with infinitely many
  features. Quadratic in length; arguments as in `rfa` (no projection).

  A_ij = kappa(sigma q^_i, sigma k^_j) with q^, k^ L2-normalised: gaussian and positive kappa(x, y) =
  exp(-|x - y|^2 / 2) = exp(sigma^2 (q^ . k^ - 1)) (softmax attention with logits sigma^2 q^ . k^ once
  normalised), arccos the order-1 arc-cosine kernel, sigma^2 kappa(q^, k^) (its weights do not
  depend on sigma). With sigma [heads, head_dim], kappa(sigma q^_i, sigma k^_j) elementwise. Then as
  `rfa_reference`.
  """
  check_feature_map(feature_map)
  qn, kn = l2_normalize(q.astype(jnp.float32)), l2_normalize(k.astype(jnp.float32))
  sigma = jnp.asarray(sigma, jnp.float32)
  if sigma.ndim == 2:
    scores = _kernel_scores(qn * sigma, kn * sigma, feature_map)
  else:
    sigma_sq = jnp.reshape(sigma, (-1, 1, 1)) ** 2
    if feature_map in ("gaussian", "positive"):  # one kernel, two estimators
      scores = jnp.exp(sigma_sq * (jnp.einsum("bihd,bjhd->bhij", qn, kn) - 1.0))
    else:
      scores = sigma_sq * jnp.moveaxis(arccos_kernel(qn[:, :, None], kn[:, None, :]), -1, 1)
  gating = gating_weights(gate, reverse_gate)
  return _mix(scores, q, k, v, causal, key_mask, gating, normalizer, window, rfa_scale,
              segment_ids, key_segment_ids)


def _kernel_scores(x, y, feature_map):
  """kappa(x_i, y_j): x: [B, Lq, H, d], y: [B, Lk, H, d] -> [B, H, Lq, Lk]."""
  if feature_map in ("gaussian", "positive"):
    return jnp.moveaxis(gaussian_kernel(x[:, :, None], y[:, None, :]), -1, 1)
  return jnp.moveaxis(arccos_kernel(x[:, :, None], y[:, None, :]), -1, 1)


def _mix(scores, q, k, v, causal, key_mask, gating, normalizer, window, rfa_scale, segment_ids,
         key_segment_ids):
  """normalize(sum_j w_ij s_ij v_j, sum_j w_ij s_ij) for scores s: [B, H, Lq, Lk] and the gates'
  weights `gating` (or None), plus the window's softmax attention."""
  q_len, k_len = scores.shape[2:]
  weights = visibility(scores.shape[0], q_len, k_len, causal, key_mask, None, segment_ids,
                        key_segment_ids).astype(jnp.float32)
  if gating is not None:
    weights = weights * gating
  scores = scores * weights
  numerator = jnp.einsum("bhij,bjhd->bihd", scores, v.astype(jnp.float32))
  denominator = jnp.einsum("bhij->bih", scores)
  scale = jnp.asarray(rfa_scale, jnp.float32)
  out = normalize(numerator, denominator, normalizer) * jnp.reshape(scale, scale.shape + (1,))
  if window is not None:
    out = out + softmax_attention(q, k, v.astype(jnp.float32), causal=causal, key_mask=key_mask,
                                  window=window, segment_ids=segment_ids)
  return out.astype(v.dtype)
