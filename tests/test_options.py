"""The options that change what RFA computes (`normalizer`, the exact kernel, the `kind=` alias):
every form against the quadratic reference, forward and gradients, and the module's use of them."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rfa_jax
from rfa_jax import reference
from rfa_jax.normalizer import normalize
from rfa_jax.random_features import l2_normalize

from decoding import decode_then_prefill

B, L, H, D, DV, F = 2, 11, 3, 8, 5, 16


def _inputs(seed=0, length=L):
  ks = jax.random.split(jax.random.PRNGKey(seed), 6)
  q = jax.random.normal(ks[0], (B, length, H, D))
  k = jax.random.normal(ks[1], (B, length, H, D))
  v = jax.random.normal(ks[2], (B, length, H, DV))
  projection = rfa_jax.random_projection(ks[3], H, F, D)
  gate = jax.nn.sigmoid(3.0 * jax.random.normal(ks[4], (B, length, H)))
  mask = jnp.arange(length)[None] < jnp.array([[length], [length - 4]])
  return q, k, v, projection, gate, mask


def _assert_same(fast, reference, args, atol=2e-5):
  np.testing.assert_allclose(fast(*args), reference(*args), atol=atol, rtol=1e-4)
  cotangent = jax.random.normal(jax.random.PRNGKey(9), reference(*args).shape)
  grads = [jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent),
                           argnums=tuple(range(len(args)))))(*args) for fn in (fast, reference)]
  for g_fast, g_ref in zip(*grads):
    np.testing.assert_allclose(g_fast, g_ref, atol=atol * 10, rtol=1e-3)


@pytest.mark.parametrize("normalizer, feature_map", [(rule, "gaussian") for rule in rfa_jax.NORMALIZERS]
                         + [("floor", "positive")])
@pytest.mark.parametrize("form", ["noncausal", "cross", "token_scan", "chunked", "gated_chunked",
                                  "gated_token_scan"])
def test_every_form_applies_the_normalizer_like_the_reference(normalizer, feature_map, form):
  q, k, v, projection, gate, mask = _inputs()
  options = dict(sigma=jnp.array([0.6, 1.0, 1.4]), normalizer=normalizer, key_mask=mask,
                 feature_map=feature_map)
  if form == "cross":
    fast = lambda q, k, v: rfa_jax.rfa_cross(q[:, :6], k, v, projection, **options)
    ref = lambda q, k, v: rfa_jax.rfa_reference(q[:, :6], k, v, projection, **options)
  elif form == "noncausal":
    fast = lambda q, k, v: rfa_jax.rfa(q, k, v, projection, **options)
    ref = lambda q, k, v: rfa_jax.rfa_reference(q, k, v, projection, **options)
  else:
    g = gate if form.startswith("gated") else None
    chunk_size = 1 if form.endswith("token_scan") else 4
    fast = jax.jit(lambda q, k, v: rfa_jax.rfa(q, k, v, projection, causal=True, gate=g,
                                              chunk_size=chunk_size, **options))
    ref = lambda q, k, v: rfa_jax.rfa_reference(q, k, v, projection, causal=True, gate=g, **options)
  _assert_same(fast, ref, (q, k, v))


@pytest.mark.parametrize("normalizer", ["clamp1", "rms"])
def test_decode_steps_and_prefill_apply_the_normalizer(normalizer):
  q, k, v, projection, gate, _ = _inputs()
  options = dict(sigma=1.2, normalizer=normalizer)
  expected = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate, **options)
  np.testing.assert_allclose(decode_then_prefill(q, k, v, projection, gate, 5, **options), expected,
                             atol=2e-5)


def test_normalizer_rules():
  numerator = jnp.array([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
  denominator = jnp.array([0.5, 0.0, -2.0])
  np.testing.assert_allclose(normalize(numerator, denominator, "clamp1"),
                             [[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
  rms = normalize(numerator, denominator, "rms")
  np.testing.assert_allclose(rms[0], [3 / np.sqrt(12.5), 4 / np.sqrt(12.5)], rtol=1e-5)
  np.testing.assert_array_equal(rms[1], 0.0)
  q, k, v, projection, _, _ = _inputs()
  with pytest.raises(ValueError, match="normalizer='softplus'; expected one of"):
    rfa_jax.rfa(q, k, v, projection, normalizer="softplus")


@pytest.mark.parametrize("causal", [False, True])
def test_gaussian_kernel_attention_is_softmax_over_sigma_squared_normalised_logits(causal):
  q, k, v, _, _, mask = _inputs()
  sigma = jnp.array([1.5, 0.7, 2.0])
  out = rfa_jax.kernel_attention(q, k, v, sigma=sigma, causal=causal, key_mask=mask)
  for h in range(H):
    head = slice(h, h + 1)
    expected = rfa_jax.softmax_attention(l2_normalize(q[:, :, head]), l2_normalize(k[:, :, head]),
                                         v[:, :, head], causal=causal, key_mask=mask,
                                         scale=sigma[h] ** 2)
    np.testing.assert_allclose(out[:, :, head], expected, atol=1e-6)


# sigma: one for all heads, or one per head and dimension ([heads, head_dim]).
SIGMAS = {"scalar": 0.9, "per_dim": 0.5 + jax.random.uniform(jax.random.PRNGKey(7), (H, D))}


@pytest.mark.parametrize("feature_map, gating, sigma", [
    *((m, g, "scalar") for m in ("gaussian", "arccos", "positive") for g in ("none", "causal")),
    ("gaussian", "bidirectional", "scalar"),
    *((m, "causal", "per_dim") for m in ("gaussian", "arccos", "positive"))])
def test_rfa_converges_to_kernel_attention_as_features_grow(feature_map, gating, sigma):
  q, k, v, _, gate, mask = _inputs(seed=4)
  gates = {"none": {}, "causal": dict(gate=gate),
           "bidirectional": dict(gate=gate, reverse_gate=gate[:, ::-1])}[gating]
  options = dict(feature_map=feature_map, sigma=SIGMAS[sigma], causal=gating == "causal",
                 key_mask=mask, **gates)
  exact = rfa_jax.kernel_attention(q, k, v, **options)
  errors = []
  for num_features in (16, 256, 4096):
    projections = [rfa_jax.random_projection(jax.random.PRNGKey(s), H, num_features, D)
                   for s in range(4)]
    errors.append(np.mean([float(jnp.sqrt(jnp.mean((rfa_jax.rfa(q, k, v, p, **options) - exact) ** 2)))
                           for p in projections]))
  assert errors[2] < errors[1] < errors[0] and errors[2] < 0.25 * errors[0], errors


def test_kind_is_a_deprecated_alias_of_feature_map():
  q, k, v, projection, _, _ = _inputs()
  with pytest.warns(DeprecationWarning, match="kind= is deprecated"):
    old = rfa_jax.rfa(q, k, v, projection, kind="arccos")
  np.testing.assert_array_equal(old, rfa_jax.rfa(q, k, v, projection, feature_map="arccos"))
  with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
    rfa_jax.rfa(q, k, v, projection, feature_map="arccos", kind="gaussian")


def _module(**kwargs):
  return rfa_jax.RFAAttention(H, 12, qkv_features=H * D, rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("causal, gated", [(False, False), (True, False), (True, True),
                                           (False, True)])
def test_exact_kernel_module_is_kernel_attention_of_its_projections(causal, gated):
  module = _module(causal=causal, gated=gated, exact_kernel=True, sigma_init=1.7)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, L, 12))
  mask = jnp.arange(L)[None] < jnp.array([[L], [L - 3]])
  gates = {} if not gated else dict(gate=jax.nn.sigmoid(module.gate(x)))
  if gated and not causal:
    gates["reverse_gate"] = jax.nn.sigmoid(module.reverse_gate(x))
  expected = module.out(rfa_jax.kernel_attention(
      module.query(x), module.key(x), module.value(x), sigma=module.sigma[...], causal=causal,
      key_mask=mask, **gates))
  np.testing.assert_allclose(module(x, mask=mask), expected, atol=1e-5)
  out, captured = nnx.capture(module, nnx.Intermediate)(x, mask=mask, sow_weights=True)
  weights = captured["attention_weights"].get_value()[0]
  mixed = jnp.einsum("bhij,bjhd->bihd", weights, module.value(x))
  np.testing.assert_allclose(module.out(mixed), out, atol=1e-5)
  if causal:
    module.init_cache((B, L, 12))
    with pytest.raises(ValueError, match="exact_kernel=True has no decode state"):
      module(x[:, :1], decode=True)


def test_module_normalizer_reaches_every_path():
  x = jax.random.normal(jax.random.PRNGKey(2), (B, L, 12))
  for normalizer in ("clamp1", "rms"):
    module = _module(causal=True, normalizer=normalizer)
    q, k, v = module.query(x), module.key(x), module.value(x)
    expected = module.out(rfa_jax.rfa_reference(q, k, v, module.evaluation_projection(), causal=True,
                                                normalizer=normalizer))
    np.testing.assert_allclose(module(x), expected, atol=1e-5)
    module.init_cache((B, L, 12))
    decoded = jnp.concatenate([module(x[:, t:t + 1], decode=True) for t in range(L)], 1)
    np.testing.assert_allclose(decoded, expected, atol=1e-5)
  with pytest.raises(ValueError, match="normalizer='max'"):
    _module(normalizer="max")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length, window", [(11, 1), (11, 4), (8, 8), (5, 9), (12, 3)])
def test_window_attention_is_softmax_over_the_band(causal, length, window):
  q, k, v, _, _, mask = _inputs(seed=length * window, length=length)
  options = dict(window=window, causal=causal, key_mask=mask)
  fast = jax.jit(lambda q, k, v: rfa_jax.window_attention(q, k, v, **options))
  ref = lambda q, k, v: rfa_jax.softmax_attention(q, k, v, **options)
  _assert_same(fast, ref, (2.0 * q, k, v))


@pytest.mark.parametrize("form", ["noncausal", "token_scan", "chunked", "gated_chunked"])
@pytest.mark.parametrize("window", [1, 3, 16])
def test_rfa_with_a_window_matches_the_reference_in_every_form(form, window):
  q, k, v, projection, gate, mask = _inputs(seed=window)
  causal = form != "noncausal"
  options = dict(sigma=1.1, causal=causal, key_mask=mask, window=window,
                 gate=gate if form.startswith("gated") else None,
                 rfa_scale=jnp.array([0.5, 1.0, 2.0]))
  chunk_size = 1 if form == "token_scan" else 4
  fast = jax.jit(lambda q, k, v: rfa_jax.rfa(q, k, v, projection, chunk_size=chunk_size, **options))
  ref = lambda q, k, v: rfa_jax.rfa_reference(q, k, v, projection, **options)
  _assert_same(fast, ref, (q, k, v))
  expected = (rfa_jax.rfa_reference(q, k, v, projection, **{**options, "window": None})
              + rfa_jax.softmax_attention(q, k, v, causal=causal, key_mask=mask, window=window))
  np.testing.assert_allclose(ref(q, k, v), expected, atol=1e-6)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_decoding_with_a_window_reproduces_causal_rfa(window):
  q, k, v, projection, gate, mask = _inputs()
  options = dict(sigma=1.2, window=window, rfa_scale=jnp.array([0.3, 1.0, -0.5]))
  expected = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate, key_mask=mask, **options)
  state = rfa_jax.init_decode_state(B, H, rfa_jax.feature_dim(F), DV, window=window, head_dim=D)
  step = jax.jit(functools.partial(rfa_jax.decode_step, projection=projection, **options))
  outputs = []
  for t in range(3):
    state, out = step(state, q[:, t], k[:, t], v[:, t], gate_t=gate[:, t])
    outputs.append(out[:, None])
  state, middle = rfa_jax.prefill(state, q[:, 3:9], k[:, 3:9], v[:, 3:9], projection,
                                  gate=gate[:, 3:9], key_mask=mask[:, 3:9], **options)
  outputs.append(middle)
  for t in range(9, L):  # the second row's keys from 7 on are padding: decode_step sees them
    state, out = step(state, q[:, t], k[:, t], v[:, t], gate_t=gate[:, t])
    outputs.append(out[:, None])
  decoded = jnp.concatenate(outputs, 1)
  np.testing.assert_allclose(decoded[0], expected[0], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(decoded[1, :9], expected[1, :9], atol=2e-5, rtol=1e-4)
  assert state.window_k.shape == (B, window - 1, H, D) and state.window_kept.shape == (B, window - 1)


def test_a_window_needs_its_cache_and_a_positive_size():
  q, k, v, projection, _, _ = _inputs()
  plain = rfa_jax.init_decode_state(B, H, rfa_jax.feature_dim(F), DV)
  with pytest.raises(ValueError, match="window=3 needs a decode state with the window's cache"):
    rfa_jax.decode_step(plain, q[:, 0], k[:, 0], v[:, 0], projection, window=3)
  with pytest.raises(ValueError, match="window=0; expected None or a positive integer"):
    rfa_jax.rfa(q, k, v, projection, window=0)
  with pytest.raises(ValueError, match="needs head_dim"):
    rfa_jax.init_decode_state(B, H, 4, DV, window=3)


def test_kernel_attention_with_a_window_adds_the_band():
  q, k, v, _, gate, mask = _inputs()
  options = dict(sigma=1.3, causal=True, key_mask=mask, gate=gate)
  np.testing.assert_allclose(
      rfa_jax.kernel_attention(q, k, v, window=3, **options),
      rfa_jax.kernel_attention(q, k, v, **options)
      + rfa_jax.softmax_attention(q, k, v, causal=True, key_mask=mask, window=3), atol=1e-6)


@pytest.mark.parametrize("gated", [False, True])
def test_module_window_decodes_trains_and_sows_like_its_forward(gated):
  module = _module(causal=True, gated=gated, window=3)
  x = jax.random.normal(jax.random.PRNGKey(3), (B, L, 12))
  q, k, v = module.query(x), module.key(x), module.value(x)
  gate = jax.nn.sigmoid(module.gate(x)) if gated else None
  module.rfa_scale[...] = jnp.array([0.5, 1.5, -1.0])
  expected = module.out(rfa_jax.rfa_reference(q, k, v, module.evaluation_projection(), causal=True,
                                              gate=gate, window=3, sigma=module.sigma[...],
                                              rfa_scale=module.rfa_scale[...]))
  out, captured = nnx.capture(module, nnx.Intermediate)(x, sow_weights=True)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  weights = captured["attention_weights"].get_value()[0]
  np.testing.assert_allclose(module.out(jnp.einsum("bhij,bjhd->bihd", weights, v)), out, atol=1e-5)
  module.init_cache((B, L, 12))
  assert module.cached_window_k.shape == (B, 2, H, D)
  head = module(x[:, :4], decode=True)
  tail = jnp.concatenate([module(x[:, t:t + 1], decode=True) for t in range(4, L)], 1)
  np.testing.assert_allclose(jnp.concatenate([head, tail], 1), expected, atol=1e-5)
  with pytest.raises(ValueError, match="cross attention .* has none"):
    _module(window=3)(x, x[:, :5])


def test_quadratic_gate_weights_equal_the_explicit_products():
  _, _, _, _, gate, _ = _inputs()
  np.testing.assert_allclose(reference.decay_weights(gate), reference.gate_weights(gate), atol=1e-6)
  reverse = 1 - gate[:, ::-1]
  g, h = (np.moveaxis(np.asarray(x, np.float64), -1, 1) for x in (gate, reverse))  # [B, H, L]
  expected = np.zeros(g.shape + (L,))
  for i in range(L):
    for j in range(L):
      if j <= i:
        expected[..., i, j] += (1 - g[..., j]) * np.prod(g[..., j + 1:i + 1], axis=-1)
      if j >= i:
        expected[..., i, j] += (1 - h[..., j]) * np.prod(h[..., i:j], axis=-1)
  for weigh in (reference.decay_weights, reference.gate_weights):
    np.testing.assert_allclose(reference.gating_weights(gate, reverse, weigh), expected, atol=1e-5)


def test_gate_bias_init_sets_the_initial_memory():
  module = _module(causal=True, gated=True, gate_bias_init=3.0)
  np.testing.assert_allclose(module.gate.bias[...], 3.0)
  gate = jax.nn.sigmoid(module.gate(jnp.zeros((1, 1, 12))))
  np.testing.assert_allclose(gate, jax.nn.sigmoid(3.0), rtol=1e-6)
  with pytest.raises(ValueError, match="gate_bias_init=3.0 needs gated=True"):
    _module(causal=True, gate_bias_init=3.0)
  np.testing.assert_allclose(_module(gated=True, gate_bias_init=3.0).reverse_gate.bias[...], 3.0)


@pytest.mark.parametrize("gated", [True])
def test_module_speed_options_keep_what_it_computes(gated):
  """inter_chunk="parallel" and orthogonal_method="qr" change how, not what: the same output, and a
  jitted training step with redraws from QR has finite gradients and new features every call."""
  x = jax.random.normal(jax.random.PRNGKey(4), (B, L, 12))
  plain = _module(causal=True, gated=gated, chunk_size=4)
  fast = _module(causal=True, gated=gated, chunk_size=4, inter_chunk="parallel",
                 orthogonal_method="qr")
  np.testing.assert_allclose(fast(x), plain(x), atol=1e-5)  # evaluation projections are equal

  @nnx.jit
  def loss_and_grad(module, key):
    loss = lambda module: jnp.mean(module(x, deterministic=False, rngs=nnx.Rngs(key)) ** 2)
    return nnx.value_and_grad(loss)(module)

  (first, grads), (second, _) = (loss_and_grad(fast, jax.random.PRNGKey(i)) for i in (1, 2))
  assert first != second and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match="inter_chunk='tree'"):
    _module(inter_chunk="tree")
  with pytest.raises(ValueError, match="orthogonal_method='svd'"):
    _module(orthogonal_method="svd")
