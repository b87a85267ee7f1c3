"""The one denominator rule that every RFA form applies to its per-query normaliser phi(q) . z.

With sin/cos features, phi(q) . z is an unbiased but noisy estimate of a positive sum of kernel values,
so it can come out tiny or negative. Every form divides by the denominator pushed away from zero with
its sign kept: `d -> sign(d) * max(|d|, DENOMINATOR_FLOOR)` (sign(0) = +1). Queries with no visible key
have numerator and denominator 0 and output 0.
"""

import jax
import jax.numpy as jnp

DENOMINATOR_FLOOR = 1e-6


def stabilize(denominator: jax.Array) -> jax.Array:
  """sign(d) * max(|d|, DENOMINATOR_FLOOR), elementwise."""
  return jnp.where(denominator >= 0, jnp.maximum(denominator, DENOMINATOR_FLOOR),
                   jnp.minimum(denominator, -DENOMINATOR_FLOOR))


def normalize(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """numerator: [..., value_dim] / stabilize(denominator: [...])."""
  return numerator / stabilize(denominator)[..., None]
