"""RFAAttention: a drop-in for nnx.MultiHeadAttention built on the tested functions."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rfa_jax
from rfa_jax.weights import rfa_weights

B, L, E, H = 2, 11, 16, 4
LENGTHS = jnp.array([L, 8])


def _x(seed=0, length=L, features=E):
  return jax.random.normal(jax.random.PRNGKey(seed), (B, length, features))


def _module(**kwargs):
  return rfa_jax.RFAAttention(H, E, rngs=nnx.Rngs(0), **kwargs)


def _padding(length=L):
  return jnp.arange(length)[None] < LENGTHS[:, None]


def _reference(module, x, mask=None, causal=False, gate=None, memory=None, reverse_gate=None):
  memory = x if memory is None else memory
  q, k, v = module.query(x), module.key(memory), module.value(memory)
  return module.out(rfa_jax.rfa_reference(q, k, v, module.evaluation_projection(),
                                          sigma=module.sigma[...], causal=causal, key_mask=mask,
                                          gate=gate, reverse_gate=reverse_gate))


def test_takes_every_argument_of_multi_head_attention_in_its_order():
  for method in ("__init__", "__call__"):
    ours = inspect.signature(getattr(rfa_jax.RFAAttention, method)).parameters
    theirs = inspect.signature(getattr(nnx.MultiHeadAttention, method)).parameters
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    positional = [n for n, p in theirs.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [n for n, p in ours.items() if p.kind is p.POSITIONAL_OR_KEYWORD] == positional
    for name in ("num_features", "feature_map", "causal", "gated", "chunk_size", "redraw",
                 "orthogonal", "sigma_init", "projection_seed"):
      assert method == "__call__" or ours[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_same_constructor_and_call_as_multi_head_attention():
  x, memory = _x(), _x(1, length=7, features=12)
  for cls in (nnx.MultiHeadAttention, rfa_jax.RFAAttention):
    module = cls(num_heads=H, in_features=E, qkv_features=32, out_features=8, in_kv_features=12,
                 decode=False, dropout_rate=0.1, broadcast_dropout=False, keep_rngs=False,
                 normalize_qk=True, precision="highest", kernel_metadata={"tag": "qkv"},
                 out_kernel_metadata={"tag": "out"}, rngs=nnx.Rngs(0))
    assert module(x, memory, deterministic=True).shape == (B, L, 8)
    mask = nnx.make_attention_mask(jnp.ones((B, L)), jnp.ones((B, 7)))
    out = module(inputs_q=x, inputs_k=memory, inputs_v=memory, mask=mask, deterministic=False,
                 rngs=nnx.Rngs(dropout=1))
    assert out.shape == (B, L, 8)
    assert module.query.kernel.get_metadata()["tag"] == "qkv"
    assert module.out.kernel.get_metadata()["tag"] == "out"
    assert module.query_ln is not None


@pytest.mark.parametrize("causal, gated", [(False, False), (True, False), (True, True),
                                           (False, True)])
def test_matches_reference_on_its_own_projections(causal, gated):
  """(False, True): bidirectional gating, a forward and a reverse gate."""
  module = _module(causal=causal, gated=gated, chunk_size=4, sigma_init=1.3)
  x, mask = _x(), _padding()
  gate = jax.nn.sigmoid(module.gate(x)) if gated else None
  reverse = jax.nn.sigmoid(module.reverse_gate(x)) if gated and not causal else None
  expected = _reference(module, x, mask, causal, gate, reverse_gate=reverse)
  np.testing.assert_allclose(module(x, mask=mask), expected, atol=1e-5)
  np.testing.assert_allclose(module(x, mask=mask[:, None, None, :]), expected, atol=1e-5)
  if gated and not causal:  # is_causal=True: the forward gate alone
    np.testing.assert_allclose(module(x, mask=mask, is_causal=True),
                               _reference(module, x, mask, True, gate), atol=1e-5)
    with pytest.raises(ValueError, match="gated=True gates along the one sequence"):
      module(x, _x(1, length=7))


def test_cross_attention_with_encoder_padding_in_every_mask_form():
  module, x, memory = _module(in_kv_features=12), _x(), _x(1, length=7, features=12)
  memory_mask = jnp.arange(7)[None] < jnp.array([[7], [4]])
  expected = _reference(module, x, memory_mask, memory=memory)
  query_padding = _padding()
  for mask in (memory_mask, memory_mask[:, None, None, :],
               nnx.make_attention_mask(jnp.ones((B, L)), memory_mask),
               nnx.make_attention_mask(query_padding, memory_mask)):
    out = module(x, memory, mask=mask)
    np.testing.assert_allclose(jnp.where(query_padding[..., None], out, 0),
                               jnp.where(query_padding[..., None], expected, 0), atol=1e-5)


def test_causality_comes_from_the_flag_or_is_causal_and_padding_from_combined_masks():
  x, padding = _x(), _padding()
  causal_module, plain = _module(causal=True), _module()
  expected = _reference(causal_module, x, padding, causal=True)
  combined = nnx.combine_masks(nnx.make_attention_mask(padding, padding),
                               nnx.make_causal_mask(jnp.ones((B, L))))
  keep = padding[..., None]
  for out in (causal_module(x, mask=combined), plain(x, mask=combined, is_causal=True),
              causal_module(x, mask=nnx.make_attention_mask(padding, padding)),
              jax.jit(lambda x, m: causal_module(x, mask=m))(x, combined)):
    np.testing.assert_allclose(jnp.where(keep, out, 0), jnp.where(keep, expected, 0), atol=1e-5)


def test_masks_rfa_cannot_apply_are_rejected_eagerly_and_poison_the_output_under_jit():
  module, x = _module(), _x()
  causal = nnx.make_causal_mask(jnp.ones((B, L)))
  with pytest.raises(ValueError, match=r"mask is causal .* construct RFAAttention\(\.\.\., causal=True\)"):
    module(x, mask=causal)
  band = jnp.abs(jnp.arange(L)[:, None] - jnp.arange(L)[None]) < 3  # a local window
  with pytest.raises(ValueError, match="attention pattern that RFA cannot apply"):
    module(x, mask=jnp.broadcast_to(band, (B, 1, L, L)))
  per_head = jnp.ones((B, H, 1, L), bool).at[:, 0, 0, 0].set(False)
  with pytest.raises(ValueError, match="attention pattern that RFA cannot apply"):
    module(x, mask=per_head)
  with pytest.raises(ValueError, match=r"mask has shape \(2, 11, 11\); expected"):
    module(x, mask=jnp.ones((B, L, L), bool))
  mixed = jnp.stack([jnp.ones((1, L, L)), causal[1]])  # batch 0 fine, batch 1 causal
  out = jax.jit(lambda x, m: module(x, mask=m))(x, mixed)
  assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_decode_cache_reproduces_the_causal_forward():
  for gated in (False, True):
    module = _module(causal=True, gated=gated)
    x = _x()
    full = module(x)
    module.init_cache(x.shape)
    steps = [module(x[:, t:t + 1], decode=True) for t in range(L)]
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)
    assert int(module.cache_index[...]) == L
    module.init_cache(x.shape)
    prompt = module(x[:, :6], decode=True)
    rest = [module(x[:, t:t + 1], decode=True) for t in range(6, L)]
    np.testing.assert_allclose(jnp.concatenate([prompt] + rest, 1), full, atol=1e-5)
    assert module.cached_s.shape == (B, H, 2 * 64, E // H)


def test_training_segments_carry_the_cache_with_gradients_inside_each_segment():
  module, x = _module(causal=True, gated=True, keep_rngs=False), _x(length=10)
  full = module(x)
  module.set_attributes(decode=True)
  module.init_cache((B, 5, E))
  graphdef, params, cache = nnx.split(module, nnx.Param, nnx.Cache)

  @jax.jit
  def segment(params, cache, x):
    def loss(params, cache):
      model = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, cache))  # Variables of this trace
      out = model(x)
      return jnp.sum(out ** 2), (out, nnx.state(model, nnx.Cache))
    (_, (out, cache_out)), grads = jax.value_and_grad(loss, has_aux=True)(params, cache)
    return out, jax.lax.stop_gradient(cache_out), grads

  first, cache, _ = segment(params, cache, x[:, :5])
  second, cache, grads = segment(params, cache, x[:, 5:])
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), full, atol=1e-5)
  assert int(cache["cache_index"][...]) == 10
  assert float(jnp.abs(grads["gate"]["kernel"][...]).sum()) > 0


def test_decode_masks_in_the_multi_head_attention_convention():
  module, x, padding = _module(causal=True), _x(), _padding()
  full = module(x, mask=padding)
  module.init_cache(x.shape)
  cache_mask = padding[:, None, None, :]  # [B, 1, 1, max_length]: the new token's column is taken
  steps = [module(x[:, t:t + 1], mask=cache_mask, decode=True) for t in range(L)]
  keep = padding[..., None]
  np.testing.assert_allclose(jnp.where(keep, jnp.concatenate(steps, 1), 0),
                             jnp.where(keep, full, 0), atol=1e-5)


def test_modes_through_set_attributes_and_nnx_view():
  module, x = _module(causal=True, keep_rngs=False), _x()
  full = module(x)
  view = nnx.view(module, decode=True, deterministic=True, batch_size=B, max_length=L)
  assert module.cached_s is None and view.cached_s.shape[0] == B
  np.testing.assert_allclose(jnp.concatenate([view(x[:, t:t + 1]) for t in range(L)], 1), full,
                             atol=1e-5)
  module.set_attributes(deterministic=False, decode=False)
  with pytest.raises(ValueError, match=r"needs randomness for fresh random features.*rngs="):
    module(x)
  assert np.abs(module(x, rngs=nnx.Rngs(1)) - full).max() > 1e-3
  module.eval()
  np.testing.assert_array_equal(module(x), full)


def test_init_cache_on_an_abstract_model_and_exhaustive_splits():
  build = lambda: _module(causal=True, gated=True, keep_rngs=False)
  abstract = nnx.eval_shape(build)
  abstract.init_cache((B, L, E))
  graphdef, params, cache = nnx.split(abstract, nnx.Param, nnx.Cache)
  assert {k for k in cache} == {"cached_s", "cached_z", "cache_index"}
  concrete = build()
  _, concrete_params = nnx.split(concrete, nnx.Param)
  x = _x()
  model = nnx.merge(graphdef, concrete_params, jax.tree.map(jnp.zeros_like, cache))
  np.testing.assert_allclose(model(x[:, :3], decode=True), concrete(x)[:, :3], atol=1e-5)


def test_projection_is_in_the_graph_and_redrawn_in_training():
  module, x = _module(), _x()
  evaluation = module(x)
  np.testing.assert_array_equal(module.evaluation_projection(),
                                nnx.eval_shape(_module).evaluation_projection())
  module.train()
  first, second = module(x), module(x)
  assert np.abs(first - second).max() > 1e-3
  module.eval()
  np.testing.assert_array_equal(module(x), evaluation)
  fixed = _module(redraw=False)
  fixed.train()
  np.testing.assert_array_equal(fixed(x), evaluation)
  assert np.abs(_module(projection_seed=1)(x) - evaluation).max() > 1e-3
  grads = nnx.grad(lambda m: jnp.sum(m(_x()) ** 2))(_module(gated=True, causal=True))
  assert float(jnp.abs(grads["sigma"][...]).sum()) > 0
  assert float(jnp.abs(grads["gate"]["kernel"][...]).sum()) > 0


def test_state_is_params_only_without_kept_rngs():
  module = _module(keep_rngs=False, gated=True, causal=True, dropout_rate=0.1)
  nnx.split(module, nnx.Param)  # raises when not exhaustive
  module.init_cache((B, L, E))
  nnx.split(module, nnx.Param, nnx.Cache)
  assert jax.tree.leaves(nnx.state(_module(), nnx.RngState))  # keep_rngs=True keeps a stream
  assert not jax.tree.leaves(nnx.state(_module(redraw=False), nnx.RngState))


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


@pytest.mark.parametrize("broadcast", [True, False])
def test_dropout_of_values_is_unbiased(broadcast):
  module = rfa_jax.RFAAttention(2, 4, rngs=nnx.Rngs(0), dropout_rate=0.3, redraw=False,
                                broadcast_dropout=broadcast, keep_rngs=False)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 4))
  graphdef, params = nnx.split(module)
  reference = module(x, deterministic=True)
  draw = jax.jit(jax.vmap(lambda key: nnx.merge(graphdef, params)(x, deterministic=False, rngs=key)))
  samples = draw(jax.random.split(jax.random.PRNGKey(1), 20000))
  assert np.abs(samples[0] - reference).max() > 1e-3
  error = np.abs(samples.mean(0) - reference)
  assert (error < 5 * samples.std(0) / np.sqrt(len(samples)) + 1e-6).all()
  with pytest.raises(ValueError, match=r"attention dropout \(dropout_rate=0.3\)"):
    module(x, deterministic=False)
  with pytest.raises(ValueError, match="No `deterministic` argument"):
    module(x)


def test_grouped_key_value_heads():
  module = _module(num_kv_heads=2)
  assert module.key.kernel.shape == (E, 2, E // H)
  x = _x()
  repeat = lambda t: jnp.repeat(t, 2, axis=2)
  q, k, v = module.query(x), repeat(module.key(x)), repeat(module.value(x))
  expected = module.out(rfa_jax.rfa_reference(q, k, v, module.evaluation_projection()))
  np.testing.assert_allclose(module(x), expected, atol=1e-5)


def test_sown_weights_reproduce_the_output():
  for kwargs in (dict(), dict(causal=True, gated=True)):
    module, x, mask = _module(**kwargs), _x(), _padding()
    out, captured = nnx.capture(module, nnx.Intermediate)(x, mask=mask, sow_weights=True)
    weights = captured["attention_weights"].get_value()[0]
    assert weights.shape == (B, H, L, L)
    mixed = jnp.einsum("bhij,bjhd->bihd", weights, module.value(x))
    np.testing.assert_allclose(module.out(mixed), out, atol=1e-4)
  with pytest.raises(ValueError, match="sow_weights=True is not available with decode=True"):
    module.init_cache(x.shape)
    module(x, decode=True, sow_weights=True)


def test_bfloat16_compute():
  module = _module(causal=True, dtype=jnp.bfloat16)
  out = module(_x().astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(out.astype(jnp.float32)))


def test_rfa_weights_sum_to_one_over_visible_keys():
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 2, 4))
  projection = rfa_jax.random_projection(jax.random.PRNGKey(1), 2, 256, 4, orthogonal=False)
  weights = rfa_weights(q, q, projection, causal=True)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)
  assert float(jnp.abs(jnp.triu(weights, 1)).max()) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(attention_fn=lambda *a, **k: None), "attention_fn=.* cannot be used: RFA replaces"),
    (dict(feature_map="relu"), "feature_map='relu'"),
    (dict(dropout_rate=1.0), "dropout_rate=1.0; expected 0 <= dropout_rate < 1"),
    (dict(num_kv_heads=3), "num_heads=4 must be divisible by num_kv_heads=3"),
    (dict(projection_seed="0"), "projection_seed='0'; expected a python int"),
])
def test_bad_configuration_is_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _module(**kwargs)


def test_bad_calls_are_rejected():
  x = _x()
  with pytest.raises(ValueError, match="call init_cache"):
    _module(causal=True)(x, decode=True)
  with pytest.raises(ValueError, match="decode=True needs causal=True"):
    _module()(x, decode=True)
  with pytest.raises(ValueError, match="causal attention needs inputs_k of the length"):
    _module(causal=True)(x, x[:, :5])
  with pytest.raises(ValueError, match=r"inputs_q has shape \(2, 11, 16, 1\)"):
    _module()(x[..., None])
  with pytest.raises(ValueError, match="inputs_k is None but inputs_v is not"):
    _module()(x, inputs_v=x)
