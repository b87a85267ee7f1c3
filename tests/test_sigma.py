"""sigma per head and query/key dimension (`sigma` of shape [heads, head_dim];
`RFAAttention(sigma_per_dim=True)`): the kernel it stands for, every form against the quadratic
reference (forward and gradients, sigma's included), decoding and the module. The estimate's
convergence to the kernel: tests/test_options.py."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rfa_jax
from decoding import decode_then_prefill

B, L, H, D, DV, F = 2, 9, 3, 8, 5, 16
SIGMA = 0.5 + jax.random.uniform(jax.random.PRNGKey(7), (H, D))  # one value per head and dimension


def _inputs(seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 5)
  q = jax.random.normal(ks[0], (B, L, H, D))
  k = jax.random.normal(ks[1], (B, L, H, D))
  v = jax.random.normal(ks[2], (B, L, H, DV))
  gate = jax.nn.sigmoid(2.0 * jax.random.normal(ks[3], (B, L, H)))
  mask = jnp.arange(L)[None] < jnp.array([[L], [L - 3]])
  return q, k, v, gate, mask, rfa_jax.random_projection(ks[4], H, F, D)


def _kernel(x, y, feature_map):
  """kappa(x, y) of one pair of vectors, in numpy."""
  if feature_map == "arccos":
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    t = np.arccos(np.clip(x @ y / (nx * ny), -1.0, 1.0))
    return nx * ny * (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi
  return np.exp(-0.5 * np.sum((x - y) ** 2))


@pytest.mark.parametrize("feature_map", ["gaussian", "arccos"])
def test_kernel_attention_weighs_keys_by_the_kernel_of_the_scaled_unit_vectors(feature_map):
  """out_i = sum_j kappa(s q^_i, s k^_j) v_j / sum_j kappa(s q^_i, s k^_j) over the visible keys,
  s the head's sigma vector, one pair at a time."""
  q, k, v, _, mask, _ = _inputs()
  out = rfa_jax.kernel_attention(q, k, v, sigma=SIGMA, feature_map=feature_map, causal=True,
                                 key_mask=mask)
  unit = lambda x: np.asarray(x / jnp.linalg.norm(x, axis=-1, keepdims=True))
  qn, kn, v, s, mask = unit(q), unit(k), np.asarray(v), np.asarray(SIGMA), np.asarray(mask)
  for b in range(B):
    for h in range(H):
      for i in range(L):
        keys = [j for j in range(i + 1) if mask[b, j]]
        w = np.array([_kernel(s[h] * qn[b, i, h], s[h] * kn[b, j, h], feature_map) for j in keys])
        np.testing.assert_allclose(out[b, i, h], w @ v[b, keys, h] / w.sum(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("feature_map, form", [
    ("gaussian", "noncausal"), ("gaussian", "cross"), ("gaussian", "chunked"),
    ("gaussian", "gated_chunked"), ("gaussian", "bidirectional"), ("positive", "noncausal"),
    ("positive", "gated_chunked"), ("arccos", "chunked")])
def test_every_form_matches_the_reference(feature_map, form):
  q, k, v, gate, mask, projection = _inputs(1)
  options = dict(feature_map=feature_map, key_mask=mask)
  gates = {"gated_chunked": dict(gate=gate), "bidirectional": dict(gate=gate, reverse_gate=1 - gate)}
  options.update(gates.get(form, {}))
  if form.endswith("chunked"):
    options["causal"] = True
  if form == "cross":
    fast = lambda q, k, v, s: rfa_jax.rfa_cross(q[:, :4], k, v, projection, sigma=s, **options)
    ref = lambda q, k, v, s: rfa_jax.rfa_reference(q[:, :4], k, v, projection, sigma=s, **options)
  else:
    fast = lambda q, k, v, s: rfa_jax.rfa(q, k, v, projection, sigma=s, chunk_size=4, **options)
    ref = lambda q, k, v, s: rfa_jax.rfa_reference(q, k, v, projection, sigma=s, **options)
  args = (q, k, v, SIGMA)
  np.testing.assert_allclose(jax.jit(fast)(*args), ref(*args), atol=2e-5, rtol=1e-4)
  cotangent = jax.random.normal(jax.random.PRNGKey(9), ref(*args).shape)
  grads = [jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), argnums=(0, 1, 2, 3)))(*args)
           for fn in (fast, ref)]
  for g_fast, g_ref in zip(*grads):
    np.testing.assert_allclose(g_fast, g_ref, atol=2e-4, rtol=1e-3)
  assert np.all(np.asarray(grads[0][3]) != 0)  # every dimension's sigma is learned


@pytest.mark.parametrize("feature_map", ["gaussian", "positive"])
def test_decode_steps_and_prefill_continue_the_causal_form(feature_map):
  q, k, v, gate, _, projection = _inputs(3)
  options = dict(feature_map=feature_map, sigma=SIGMA)
  expected = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate, **options)
  np.testing.assert_allclose(decode_then_prefill(q, k, v, projection, gate, 4, **options), expected,
                             atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("feature_map", ["gaussian", "positive", "arccos"])
def test_the_same_value_in_every_dimension_is_one_sigma_per_head(feature_map):
  """For positive features per head drops |sigma x^|^2 = sigma^2, per dimension keeps it: the same
  attention, as the factor is shared by a head's tokens."""
  q, k, v, gate, mask, projection = _inputs(4)
  per_head = jnp.array([0.6, 1.0, 1.4])
  per_dim = jnp.repeat(per_head[:, None], D, axis=1)
  options = dict(feature_map=feature_map, causal=True, gate=gate, key_mask=mask)
  for sigma in (per_head, per_dim):
    outputs = [rfa_jax.rfa(q, k, v, projection, sigma=sigma, **options),
               rfa_jax.kernel_attention(q, k, v, sigma=sigma, **options),
               rfa_jax.decode_step(rfa_jax.init_decode_state(B, H, rfa_jax.feature_dim(F, feature_map),
                                                             DV),
                                   q[:, 0], k[:, 0], v[:, 0], projection, sigma=sigma,
                                   feature_map=feature_map)[1]]
    if sigma is per_head:
      expected = outputs
  for got, want in zip(outputs, expected):
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_sigma_of_another_shape_is_refused_with_the_shapes_it_may_have():
  q, k, v, _, _, projection = _inputs()
  with pytest.raises(ValueError, match=r"expected a scalar or \[heads=3\] or \[heads=3, head_dim=8\]"):
    rfa_jax.rfa(q, k, v, projection, sigma=jnp.ones((H, D + 1)))
  with pytest.raises(ValueError, match=r"head_dim=8"):
    rfa_jax.decode_step(rfa_jax.init_decode_state(B, H, 2 * F, DV), q[:, 0], k[:, 0], v[:, 0],
                        projection, sigma=jnp.ones((H, 1, D)))


def test_module_learns_sigma_per_head_and_dimension_and_decodes_with_it():
  module = rfa_jax.RFAAttention(H, 12, qkv_features=H * D, causal=True, gated=True,
                                sigma_per_dim=True, sigma_init=1.3, rngs=nnx.Rngs(0))
  assert module.sigma.shape == (H, D) and np.all(np.asarray(module.sigma[...]) == 1.3)
  module.sigma[...] = SIGMA
  x = jax.random.normal(jax.random.PRNGKey(5), (B, L, 12))
  full = module(x)
  q, k, v = module.query(x), module.key(x), module.value(x)
  expected = module.out(rfa_jax.rfa_reference(q, k, v, module.evaluation_projection(), sigma=SIGMA,
                                              causal=True, gate=jax.nn.sigmoid(module.gate(x))))
  np.testing.assert_allclose(full, expected, atol=1e-5)
  module.init_cache(x.shape)
  steps = [module(x[:, t:t + 1], decode=True) for t in range(L)]
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(rfa_jax.RFAAttention(
      H, 12, qkv_features=H * D, causal=True, sigma_per_dim=True, rngs=nnx.Rngs(0)))
  assert grads["sigma"][...].shape == (H, D) and np.all(np.asarray(grads["sigma"][...]) != 0)
