"""The denominator rule that every RFA form applies to its per-query normaliser d = phi(q) . z.

With sin/cos features, phi(q) . z is an unbiased but noisy estimate of a positive sum of kernel values,
so it can come out tiny or negative. `normalizer=` picks the rule, identical in every form:

- "floor" (default): divide by d pushed away from zero with its sign kept,
  `sign(d) * max(|d|, DENOMINATOR_FLOOR)` (sign(0) = +1).
- "clamp1": divide by `max(d, 1)`, as the official RFA code does.
- "rms": no denominator; the numerator phi(q)^T S divided by its root mean square over the value
  dimension, `num * rsqrt(mean(num^2) + RMS_EPSILON)` (an output normalisation).

Queries with no visible key have numerator and denominator 0 and output 0 under every rule.
"""

import jax
import jax.numpy as jnp

DENOMINATOR_FLOOR = 1e-6
RMS_EPSILON = 1e-6
NORMALIZERS = ("floor", "clamp1", "rms")


def stabilize(denominator: jax.Array) -> jax.Array:
  """sign(d) * max(|d|, DENOMINATOR_FLOOR), elementwise."""
  return jnp.where(denominator >= 0, jnp.maximum(denominator, DENOMINATOR_FLOOR),
                   jnp.minimum(denominator, -DENOMINATOR_FLOOR))


def check_normalizer(normalizer: str):
  if normalizer not in NORMALIZERS:
    raise ValueError(f"normalizer={normalizer!r}; expected one of {NORMALIZERS}")


def normalize(numerator: jax.Array, denominator: jax.Array, normalizer: str = "floor") -> jax.Array:
  """numerator: [..., value_dim], denominator: [...] -> [..., value_dim] under `normalizer`."""
  if normalizer == "floor":
    return numerator / stabilize(denominator)[..., None]
  if normalizer == "clamp1":
    return numerator / jnp.maximum(denominator, 1.0)[..., None]
  if normalizer == "rms":
    return numerator * jax.lax.rsqrt(jnp.mean(jnp.square(numerator), -1, keepdims=True) + RMS_EPSILON)
  check_normalizer(normalizer)
  raise AssertionError(normalizer)
