"""Slow, obviously-correct quadratic references that the fast forms are tested against."""

import jax
import jax.numpy as jnp

from rfa_jax.normalizer import normalize
from rfa_jax.random_features import query_key_features


def softmax_attention(q, k, v, *, causal=False, key_mask=None, scale=None):
  """Exact softmax attention. q: [B, Lq, H, d], k: [B, Lk, H, d], v: [B, Lk, H, dv] -> [B, Lq, H, dv].

  Logits `scale * q . k` with scale = 1/sqrt(d) by default; `key_mask: [B, Lk]` (False = padding);
  `causal` hides keys j > i. A query that sees no key outputs 0.
  """
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  logits = jnp.einsum("bihd,bjhd->bhij", q, k, preferred_element_type=jnp.float32) * scale
  visible = _visibility(q.shape[0], q.shape[1], k.shape[1], causal, key_mask)
  logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1) * visible
  return jnp.einsum("bhij,bjhd->bihd", weights, v.astype(jnp.float32)).astype(v.dtype)


def _visibility(batch, q_len, k_len, causal, key_mask):
  """[B, 1, Lq, Lk] bool: query i may attend to key j."""
  visible = jnp.ones((batch, 1, q_len, k_len), bool)
  if causal:
    visible = visible & jnp.tril(jnp.ones((q_len, k_len), bool))
  if key_mask is not None:
    visible = visible & key_mask[:, None, None, :]
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


def rfa_reference(q, k, v, projection, *, kind="gaussian", sigma=1.0, causal=False, key_mask=None,
                  gate=None):
  """RFA with explicit attention weights: out_i = sum_j w_ij A_ij v_j / sum_j w_ij A_ij.

  A_ij = phi(q_i) . phi(k_j) and w_ij as in DESIGN §3 (1, 0 for masked or future keys, gate weights).
  Quadratic in length; also covers cross attention (Lq != Lk, non-causal).
  """
  phi_q, phi_k = query_key_features(q, k, projection, kind, sigma)
  scores = jnp.einsum("bihf,bjhf->bhij", phi_q, phi_k)
  weights = _visibility(q.shape[0], q.shape[1], k.shape[1], causal, key_mask).astype(jnp.float32)
  if gate is not None:
    weights = weights * gate_weights(gate)
  scores = scores * weights
  numerator = jnp.einsum("bhij,bjhd->bihd", scores, v.astype(jnp.float32))
  denominator = jnp.einsum("bhij->bih", scores)
  return normalize(numerator, denominator).astype(v.dtype)
