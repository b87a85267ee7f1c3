"""Decoding as a generator does it: a few `decode_step`s, then one `prefill` of the rest."""

import functools

import jax
import jax.numpy as jnp

import rfa_jax


def decode_then_prefill(q, k, v, projection, gate, steps, **options):
  """Outputs [B, L, H, dv] of `steps` jitted decode steps from an empty state, then a prefill of
  positions `steps:`; `options` (sigma, feature_map, normalizer, ...) go to both."""
  batch, _, heads, _ = q.shape
  features = rfa_jax.feature_dim(projection.shape[1], options.get("feature_map", "gaussian"))
  state = rfa_jax.init_decode_state(batch, heads, features, v.shape[-1])
  step = jax.jit(functools.partial(rfa_jax.decode_step, projection=projection, **options))
  outputs = []
  for t in range(steps):
    state, out = step(state, q[:, t], k[:, t], v[:, t], gate_t=gate[:, t])
    outputs.append(out)
  _, tail = rfa_jax.prefill(state, q[:, steps:], k[:, steps:], v[:, steps:], projection,
                            gate=gate[:, steps:], **options)
  return jnp.concatenate([jnp.stack(outputs, 1), tail], 1)
