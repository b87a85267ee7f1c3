"""Every fast RFA form against the quadratic reference, forward and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rfa_jax
from rfa_jax import causal as causal_forms

B, L, H, D, DV, F = 2, 13, 3, 8, 5, 16


def _inputs(seed=0, length=L, gate_scale=3.0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 6)
  q = jax.random.normal(ks[0], (B, length, H, D))
  k = jax.random.normal(ks[1], (B, length, H, D))
  v = jax.random.normal(ks[2], (B, length, H, DV))
  projection = rfa_jax.random_projection(ks[3], H, F, D)
  gate = jax.nn.sigmoid(gate_scale * jax.random.normal(ks[4], (B, length, H)))
  mask = jnp.arange(length)[None] < jnp.array([[length], [length - 4]])
  return q, k, v, projection, gate, mask


def _grads(fn, q, k, v, gate):
  cotangent = jax.random.normal(jax.random.PRNGKey(9), fn(q, k, v, gate).shape)
  loss = lambda *args: jnp.sum(fn(*args) * cotangent)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2) if gate is None else (0, 1, 2, 3)))(q, k, v, gate)


def _assert_matches_reference(fast, reference, q, k, v, gate, atol=2e-5):
  """Outputs within atol; gradients within 10 atol or 1e-5 of their largest entry (a gate's gradient
  sums terms of opposite signs as large as that entry: float32 rounding scales with it)."""
  np.testing.assert_allclose(fast(q, k, v, gate), reference(q, k, v, gate), atol=atol, rtol=1e-4)
  for g_fast, g_ref in zip(_grads(fast, q, k, v, gate), _grads(reference, q, k, v, gate)):
    scale = float(np.abs(np.asarray(g_ref)).max())
    np.testing.assert_allclose(g_fast, g_ref, atol=max(atol * 10, 1e-5 * scale), rtol=1e-3)


@pytest.mark.parametrize("kind", ["gaussian", "arccos"])
@pytest.mark.parametrize("masked", [False, True])
def test_noncausal_matches_reference(kind, masked):
  q, k, v, projection, _, mask = _inputs()
  mask = mask if masked else None
  options = dict(feature_map=kind, sigma=jnp.array([0.5, 1.0, 1.5]), key_mask=mask)
  fast = lambda q, k, v, g: rfa_jax.rfa(q, k, v, projection, **options)
  ref = lambda q, k, v, g: rfa_jax.rfa_reference(q, k, v, projection, **options)
  _assert_matches_reference(fast, ref, q, k, v, None)


@pytest.mark.parametrize("kind", ["gaussian", "arccos"])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 13, 64])
def test_causal_matches_reference(kind, gated, chunk_size):
  q, k, v, projection, gate, mask = _inputs(seed=chunk_size)
  gate = gate if gated else None
  options = dict(feature_map=kind, sigma=1.3, causal=True, key_mask=mask)
  fast = jax.jit(lambda q, k, v, g: rfa_jax.rfa(q, k, v, projection, gate=g, chunk_size=chunk_size,
                                               **options))
  ref = lambda q, k, v, g: rfa_jax.rfa_reference(q, k, v, projection, gate=g, **options)
  _assert_matches_reference(fast, ref, q, k, v, gate)


@pytest.mark.parametrize("kind, chunk_size, inter_chunk", [
    ("gaussian", 1, "scan"), ("positive", 4, "scan"), ("gaussian", 4, "parallel")])
def test_bidirectional_gating_matches_reference(kind, chunk_size, inter_chunk):
  """A forward gate and a reverse gate (causal=False), forward and gradients of both gates."""
  q, k, v, projection, gate, mask = _inputs(seed=chunk_size)
  reverse = jax.nn.sigmoid(3.0 * jax.random.normal(jax.random.PRNGKey(11), gate.shape))
  options = dict(feature_map=kind, sigma=1.3, key_mask=mask)
  fast = jax.jit(lambda q, k, v, g: rfa_jax.rfa(q, k, v, projection, gate=g[0], reverse_gate=g[1],
                                               chunk_size=chunk_size, inter_chunk=inter_chunk,
                                               **options))
  ref = lambda q, k, v, g: rfa_jax.rfa_reference(q, k, v, projection, gate=g[0],
                                                 reverse_gate=g[1], **options)
  _assert_matches_reference(fast, ref, q, k, v, (gate, reverse))


@pytest.mark.parametrize("chunk_size, inter_chunk", [(4, "scan"), (5, "parallel")])
def test_bidirectional_sums_are_a_forward_and_a_reversed_chunked_pass(chunk_size, inter_chunk):
  """`bidirectional_sums` (one C x C score matrix per chunk for both directions) against its
  definition: `chunked_sums` of the sequence plus that of the reversed sequence, reversed back, with
  restarts and a length that is no multiple of the chunk; forward and gradients."""
  ks = jax.random.split(jax.random.PRNGKey(3), 8)
  phi_q, phi_k = (jax.random.uniform(ks[i], (B, H, L, F)) for i in range(2))
  v = jax.random.normal(ks[2], (B, H, L, DV))
  weights = [jax.random.uniform(ks[3 + i], (B, H, L)) for i in range(2)]
  log_decays = [jnp.log(jax.random.uniform(ks[5 + i], (B, H, L), minval=0.3)) for i in range(2)]
  reset = jnp.zeros((B, L), bool).at[0, 5].set(True).at[1, 3].set(True).at[1, 9].set(True)
  reverse_reset = jnp.roll(reset, -1, axis=1)  # the reverse pass restarts after each sequence's end
  flip = lambda x: jnp.flip(x, axis=2)

  def fused(phi_q, phi_k, v, weights, log_decays):
    return causal_forms.bidirectional_sums(
        phi_q, phi_k, v, weights[0], log_decays[0], weights[1], log_decays[1],
        chunk_size=chunk_size, reset=reset, reverse_reset=reverse_reset, inter_chunk=inter_chunk)

  def two_passes(phi_q, phi_k, v, weights, log_decays):
    sums = functools.partial(causal_forms.chunked_sums, chunk_size=chunk_size,
                             inter_chunk=inter_chunk)
    num, den, _ = sums(phi_q, phi_k, v, weights[0], log_decays[0], reset=reset)
    num_rev, den_rev, _ = sums(flip(phi_q), flip(phi_k), flip(v), flip(weights[1]),
                               flip(log_decays[1]), reset=jnp.flip(reverse_reset, axis=1))
    return num + flip(num_rev), den + flip(den_rev)

  args = (phi_q, phi_k, v, weights, log_decays)
  for got, want in zip(jax.jit(fused)(*args), jax.jit(two_passes)(*args)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  loss = lambda f: lambda *a: sum(jnp.sum(jnp.sin(x)) for x in f(*a))
  grads = [jax.jit(jax.grad(loss(f), argnums=tuple(range(5))))(*args) for f in (fused, two_passes)]
  for got, want in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("gated, packed", [(False, False), (True, True)])
def test_parallel_inter_chunk_pass_equals_the_scan(gated, packed):
  """inter_chunk="parallel" (cumulative sums / an associative scan over chunks) against "scan" and
  the reference, forward and gradients, from a non-zero state (prefill), with and without
  restarts."""
  q, k, v, projection, gate, _ = _inputs(seed=5)
  gate = gate if gated else None
  ids = jnp.array([[1] * 6 + [2] * 3 + [3] * 4, [1] * 9 + [0] * 4]) if packed else None
  options = dict(causal=True, gate=gate, segment_ids=ids)
  run = lambda form: jax.jit(lambda q, k, v, g: rfa_jax.rfa(
      q, k, v, projection, chunk_size=3, inter_chunk=form, **dict(options, gate=g)))
  ref = lambda q, k, v, g: rfa_jax.rfa_reference(q, k, v, projection, **dict(options, gate=g))
  _assert_matches_reference(run("parallel"), run("scan"), q, k, v, gate, atol=1e-5)
  _assert_matches_reference(run("parallel"), ref, q, k, v, gate)
  start = rfa_jax.init_decode_state(B, H, 2 * F, DV)
  start = start._replace(s=start.s + 0.3, z=start.z + 0.2)
  states = [rfa_jax.prefill(start, q, k, v, projection, gate=gate, chunk_size=4, segment_ids=ids,
                            inter_chunk=form) for form in ("scan", "parallel")]
  for got, want in zip(jax.tree.leaves(states[1]), jax.tree.leaves(states[0])):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
  with pytest.raises(ValueError, match="inter_chunk='tree'; expected one of"):
    rfa_jax.rfa(q, k, v, projection, causal=True, inter_chunk="tree")


def test_cross_attention_matches_reference():
  q, k, v, projection, _, mask = _inputs()
  q = q[:, :7]
  fast = lambda q, k, v, g: rfa_jax.rfa_cross(q, k, v, projection, key_mask=mask, sigma=0.8)
  ref = lambda q, k, v, g: rfa_jax.rfa_reference(q, k, v, projection, key_mask=mask, sigma=0.8)
  _assert_matches_reference(fast, ref, q, k, v, None)


@pytest.mark.parametrize("gated", [False, True])
def test_decode_steps_reproduce_causal_rfa(gated):
  q, k, v, projection, gate, _ = _inputs()
  gate = gate if gated else None
  expected = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate, sigma=1.2)
  state = rfa_jax.init_decode_state(B, H, rfa_jax.feature_dim(F, "gaussian"), DV)
  step = jax.jit(functools.partial(rfa_jax.decode_step, projection=projection, sigma=1.2))
  outputs = []
  for t in range(L):
    state, out = step(state, q[:, t], k[:, t], v[:, t],
                      gate_t=None if gate is None else gate[:, t])
    outputs.append(out)
  np.testing.assert_allclose(jnp.stack(outputs, 1), expected, atol=2e-5)


def test_prefill_then_decode_continues_the_sequence():
  q, k, v, projection, gate, _ = _inputs()
  expected = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate)
  state = rfa_jax.init_decode_state(B, H, 2 * F, DV)
  state, head = rfa_jax.prefill(state, q[:, :9], k[:, :9], v[:, :9], projection, gate=gate[:, :9],
                                chunk_size=4)
  state, tail = rfa_jax.prefill(state, q[:, 9:], k[:, 9:], v[:, 9:], projection, gate=gate[:, 9:])
  np.testing.assert_allclose(jnp.concatenate([head, tail], 1), expected, atol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_content_cannot_reach_valid_outputs(causal):
  q, k, v, projection, _, mask = _inputs()
  padded = ~mask[:, :, None, None]
  fn = jax.jit(lambda k, v: rfa_jax.rfa(q, k, v, projection, causal=causal, key_mask=mask))
  clean = fn(k, v)
  garbage = fn(jnp.where(padded, jnp.nan, k), jnp.where(padded, 1e30, v))
  valid = mask[:, :, None, None] if causal else jnp.ones_like(padded)
  np.testing.assert_array_equal(jnp.where(valid, garbage, 0), jnp.where(valid, clean, 0))
  grad = jax.jit(jax.grad(lambda k: jnp.sum(fn(k, v) ** 2)))(jnp.where(padded, 1e30, k))
  assert np.all(np.isfinite(grad))


def test_fully_masked_queries_output_zero():
  q, k, v, projection, _, _ = _inputs()
  out = rfa_jax.rfa(q, k, v, projection, key_mask=jnp.zeros((B, L), bool))
  np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("logit_range", [(-80.0, -40.0), (8.0, 15.0), (-80.0, 15.0)])
def test_chunked_gate_is_stable_for_any_decay_strength(logit_range):
  q, k, v, projection, _, _ = _inputs(length=40)
  logits = jax.random.uniform(jax.random.PRNGKey(3), (B, 40, H), minval=logit_range[0],
                              maxval=logit_range[1])
  gate = jax.nn.sigmoid(logits)
  chunked = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate, chunk_size=16)
  recurrent = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate, chunk_size=1)
  assert np.all(np.isfinite(chunked))
  np.testing.assert_allclose(chunked, recurrent, atol=1e-4, rtol=1e-3)
  grad = jax.jit(jax.grad(lambda g: jnp.sum(rfa_jax.rfa(q, k, v, projection, causal=True, gate=g,
                                                         chunk_size=16) ** 2)))(gate)
  assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("causal", [False, True])
def test_converges_to_softmax_attention_as_features_grow(causal):
  """Gaussian RFA with sigma tends to softmax attention with logits sigma^2 q^ . k^."""
  q, k, v, _, _, _ = _inputs(length=16)
  sigma = 1.5
  normalize = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  exact = rfa_jax.softmax_attention(normalize(q), normalize(k), v, causal=causal, scale=sigma ** 2)
  errors = []
  for num_features in (16, 256, 4096):
    projection = rfa_jax.random_projection(jax.random.PRNGKey(num_features), H, num_features, D)
    out = rfa_jax.rfa(q, k, v, projection, sigma=sigma, causal=causal)
    errors.append(float(jnp.sqrt(jnp.mean((out - exact) ** 2))))
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[2] < 0.03, errors


def test_bfloat16_inputs_keep_float32_state():
  q, k, v, projection, gate, _ = _inputs(length=64)
  bf16 = lambda x: x.astype(jnp.bfloat16)
  out = rfa_jax.rfa(bf16(q), bf16(k), bf16(v), projection, causal=True, gate=gate, chunk_size=16)
  assert out.dtype == jnp.bfloat16
  reference = rfa_jax.rfa(*(bf16(x).astype(jnp.float32) for x in (q, k, v)), projection,
                          causal=True, gate=gate, chunk_size=16)
  error = jnp.max(jnp.abs(out.astype(jnp.float32) - reference)) / jnp.max(jnp.abs(reference))
  assert error < 0.01


def test_chunked_backward_keeps_no_per_token_state():
  """XLA's temp memory for the chunked gradient stays below the size of one state per token."""
  length, heads, dim, features = 2048, 2, 64, 64
  shape = jax.ShapeDtypeStruct((1, length, heads, dim), jnp.float32)
  projection = jax.ShapeDtypeStruct((heads, features, dim), jnp.float32)

  def temp_bytes(chunk_size):
    loss = lambda q, k, v, p: jnp.sum(rfa_jax.rfa(q, k, v, p, causal=True, chunk_size=chunk_size))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(shape, shape, shape,
                                                                projection).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  per_token_states = length * heads * 2 * features * dim * 4
  assert temp_bytes(64) < 0.3 * per_token_states
  assert temp_bytes(1) >= per_token_states  # plain autodiff of the token scan keeps them all
