"""Performer attention (Choromanski et al., 2021), FAVOR+: exp(q . k / sqrt(d)) is estimated with
positive orthogonal random features phi(x) = exp(W x - |x|^2 / 2) / sqrt(m), x = q or k scaled by
d^(-1/4), W: [m, d] with orthogonal rows of chi-distributed norms (`rfa_jax.random_projection`),
then attention runs through the feature sums (`feature_attention`): O(L m d) time. As m grows the
output tends to softmax attention. Padded keys get zero features (LRA kept them). causal=True:
prefix sums.

Numerics: constants that cancel in the ratio are chosen so no exponent can overflow: key features
use exp(W_f k - |k|^2/2 - (|W_f|^2 - c)/2) with c the mean of |W_f|^2 (exponent <= c/2 ~ d/2, so
float32 is safe up to head_dim ~ 170), query features the inverse per-feature factor and their own
maximum (<= 1), and the common 1/sqrt(m) is left out. No constant depends on other tokens, so
padding and future tokens cannot reach an output even through rounding.

Features: fixed in evaluation, redrawn from the random stream at every training call (`redraw`).
"""

import jax
import jax.numpy as jnp

import rfa_jax
from lra.baselines.common import Attention, feature_attention, integer


def positive_features(x, projection, *, is_query: bool):
  """x: [B, L, H, d] (already scaled by d^(-1/4)), projection: [H, m, d] -> [B, L, H, m] float32."""
  x = x.astype(jnp.float32)
  exponent = (jnp.einsum("blhd,hmd->blhm", x, projection)
              - 0.5 * jnp.sum(jnp.square(x), -1, keepdims=True))
  norms = 0.5 * jnp.sum(jnp.square(projection), -1)  # [H, m]
  offset = norms - jnp.mean(norms, -1, keepdims=True)
  if is_query:
    exponent = exponent + offset
    return jnp.exp(exponent - jax.lax.stop_gradient(jnp.max(exponent, -1, keepdims=True)))
  return jnp.exp(exponent - offset)


class PerformerAttention(Attention):
  """Options: num_features (256), redraw (True)."""

  def __init__(self, *, num_features: int = 256, redraw: bool = True, **common):
    super().__init__(**common)
    self.num_features = integer("num_features", num_features)
    self.init_random(common["rngs"], redraw)

  def draw(self, key):
    return rfa_jax.random_projection(key, self.num_heads, self.num_features, self.head_dim)

  def attend(self, q, k, v, mask):
    projection, scale = self.random(), self.head_dim ** -0.25
    phi_q = positive_features(q * scale, projection, is_query=True)
    phi_k = positive_features(k * scale, projection, is_query=False)
    return feature_attention(phi_q, phi_k, v, mask, self.causal)
