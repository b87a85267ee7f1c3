"""RFAAttention: a drop-in for nnx.MultiHeadAttention built on the tested functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rfa_jax

B, L, E, H = 2, 11, 16, 4


def _x(seed=0, length=L, features=E):
  return jax.random.normal(jax.random.PRNGKey(seed), (B, length, features))


def _module(**kwargs):
  return rfa_jax.RFAAttention(H, E, rngs=nnx.Rngs(0), **kwargs)


def test_same_constructor_and_call_as_multi_head_attention():
  x, memory = _x(), _x(1, length=7, features=12)
  for cls in (nnx.MultiHeadAttention, rfa_jax.RFAAttention):
    module = cls(num_heads=H, in_features=E, qkv_features=32, out_features=8, in_kv_features=12,
                 decode=False, rngs=nnx.Rngs(0))
    assert module(x, memory).shape == (B, L, 8)
    assert module(x, memory, memory, mask=jnp.ones((B, 1, 1, 7), bool)).shape == (B, L, 8)


@pytest.mark.parametrize("causal, gated", [(False, False), (True, False), (True, True)])
def test_matches_reference_on_its_own_projections(causal, gated):
  module = _module(causal=causal, gated=gated, chunk_size=4, sigma_init=1.3)
  x = _x()
  mask = jnp.arange(L)[None] < jnp.array([[L], [8]])
  q, k, v = module.query(x), module.key(x), module.value(x)
  gate = jax.nn.sigmoid(module.gate(x)) if gated else None
  expected = module.out(rfa_jax.rfa_reference(q, k, v, module.projection[...], sigma=module.sigma[...],
                                               causal=causal, key_mask=mask, gate=gate))
  np.testing.assert_allclose(module(x, mask=mask), expected, atol=1e-5)
  np.testing.assert_allclose(module(x, mask=mask[:, None, None, :]), expected, atol=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_decode_cache_reproduces_the_causal_forward(gated):
  module = _module(causal=True, gated=gated)
  x = _x()
  full = module(x)
  module.init_cache(x.shape)
  steps = [module(x[:, t:t + 1], decode=True) for t in range(L)]
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)
  module.init_cache(x.shape)
  prompt = module(x[:, :6], decode=True)
  rest = [module(x[:, t:t + 1], decode=True) for t in range(6, L)]
  np.testing.assert_allclose(jnp.concatenate([prompt] + rest, 1), full, atol=1e-5)
  assert module.cached_s.shape == (B, H, 2 * 64, E // H)


def test_projection_is_redrawn_in_training_and_fixed_in_evaluation():
  module, x = _module(), _x()
  evaluation = module(x)
  module.train()
  first, second = module(x), module(x)
  assert np.abs(first - second).max() > 1e-3
  module.eval()
  np.testing.assert_array_equal(module(x), evaluation)
  fixed = _module(redraw=False)
  fixed.train()
  np.testing.assert_array_equal(fixed(x), evaluation)


def test_projection_is_state_not_a_parameter():
  module = _module(gated=True, causal=True)
  params = nnx.state(module, nnx.Param)
  assert not jax.tree.leaves(nnx.state(params, rfa_jax.RandomProjection))
  assert nnx.state(module, rfa_jax.RandomProjection)["projection"][...].shape == (H, 64, E // H)
  grads = nnx.grad(lambda m: jnp.sum(m(_x()) ** 2))(module)
  assert float(jnp.abs(grads["sigma"][...]).sum()) > 0
  assert float(jnp.abs(grads["gate"]["kernel"][...]).sum()) > 0


def test_redraw_inside_a_jitted_train_step_advances_the_rng_state():
  module, x = _module(), _x()
  module.train()
  graphdef, state = nnx.split(module)

  @jax.jit
  def step(state):
    module = nnx.merge(graphdef, state)
    out = module(x)
    return out, nnx.state(module)

  out1, state = step(state)
  out2, state = step(state)
  assert np.abs(out1 - out2).max() > 1e-3


def test_bfloat16_compute():
  module = _module(causal=True, dtype=jnp.bfloat16)
  out = module(_x().astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(out.astype(jnp.float32)))


def test_bad_configuration_and_masks_are_rejected():
  with pytest.raises(ValueError, match="gated=True needs causal=True"):
    _module(gated=True)
  with pytest.raises(ValueError, match="feature_map='relu'"):
    _module(feature_map="relu")
  with pytest.raises(ValueError, match=r"mask has shape \(2, 4, 11, 11\); RFA takes a key padding"):
    _module()(_x(), mask=jnp.ones((B, H, L, L), bool))
  with pytest.raises(ValueError, match="call init_cache"):
    _module(causal=True)(_x(), decode=True)
