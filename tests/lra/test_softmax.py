"""The softmax baseline against the explicit reference `rfa_jax.softmax_attention`: through
jax.nn.dot_product_attention (forward and gradients, with padding, fully padded rows, causal or not)
and through its decode cache (blocks of filled positions, prompts and single tokens)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rfa_jax
from lra.baselines import common
from lra.baselines.softmax import SoftmaxAttention, cached_attention

B, L, H, D = 3, 13, 2, 8


def masks():
  """Row 0: trailing padding; row 1: padding inside and in front; row 2: all padding."""
  mask = np.ones((B, L), bool)
  mask[0, 9:] = False
  mask[1, [0, 3, 4, 11]] = False
  mask[2] = False
  return jnp.asarray(mask)


def qkv_and_cotangent(dtype=jnp.float32):
  return tuple(x.astype(dtype) for x in jax.random.normal(jax.random.PRNGKey(0), (4, B, L, H, D)))


def reference(causal, mask):
  return lambda q, k, v: rfa_jax.softmax_attention(q, k, v, causal=causal, key_mask=mask)


def value_and_grads(attend, q, k, v, cotangent, rows):
  """attend(q, k, v), and the gradients of sum(out * cotangent) over the query positions `rows`."""
  loss = lambda q, k, v: jnp.sum(attend(q, k, v) * cotangent * rows[:, :, None, None])
  return jax.jit(attend)(q, k, v), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def assert_same(actual, expected, atol=1e-5):
  (out, grads), (out_ref, grads_ref) = actual, expected
  np.testing.assert_allclose(out, out_ref, atol=atol)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, atol=atol)


@pytest.mark.parametrize("causal", [False, True])
def test_xla_path_matches_the_reference_everywhere(causal):
  mask = masks()
  q, k, v, cotangent = qkv_and_cotangent()
  everywhere = jnp.ones((B, L), bool)
  fused = jax.jit(lambda q, k, v: common.fused_attention(q, k, v, mask, causal))
  expected = value_and_grads(reference(causal, mask), q, k, v, cotangent, everywhere)
  assert_same(value_and_grads(fused, q, k, v, cotangent, everywhere), expected)
  np.testing.assert_array_equal(fused(q, k, v)[2], 0)  # a row that sees no key outputs 0


@pytest.mark.parametrize("causal", [False, True])
def test_key_length_path_matches_the_reference_at_valid_queries(causal):
  """The path cuDNN takes (valid tokens moved to the front, key lengths), run by XLA here: exact at
  every valid query for any mask, and at every query of a row with trailing padding."""
  mask = masks()
  q, k, v, cotangent = qkv_and_cotangent()
  compact = jax.jit(lambda q, k, v: common.compact_attention(q, k, v, mask, causal, "xla"))
  expected = value_and_grads(reference(causal, mask), q, k, v, cotangent, mask)
  out, grads = value_and_grads(compact, q, k, v, cotangent, mask)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(expected[0])[valid], atol=1e-5)
  for g, g_ref in zip(grads, expected[1]):
    np.testing.assert_allclose(g, g_ref, atol=1e-5)
  np.testing.assert_allclose(out[0], expected[0][0], atol=1e-5)
  np.testing.assert_array_equal(out[2], 0)


def test_bfloat16_inputs_give_bfloat16_outputs_close_to_float32():
  mask = masks()
  q, k, v, _ = qkv_and_cotangent()
  low = common.fused_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), mask, False)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), reference(False, mask)(q, k, v),
                             atol=3e-2)


def test_cudnn_is_chosen_only_where_it_applies(monkeypatch):
  q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
  assert not common.cudnn_applies(q)  # the CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert common.cudnn_applies(q)
  assert not common.cudnn_applies(q.astype(jnp.float32))
  assert not common.cudnn_applies(jnp.zeros((1, 8, 2, 12), jnp.bfloat16))
  assert not common.cudnn_applies(jnp.zeros((1, 8, 2, 256), jnp.bfloat16))


def test_cudnn_that_cannot_run_falls_back_to_xla(monkeypatch):
  """On a machine without cuDNN the 'gpu' choice fails while tracing and XLA's result is used."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  mask = masks()
  q, k, v, _ = (x.astype(jnp.bfloat16) for x in qkv_and_cotangent())
  out = jax.jit(lambda q, k, v: common.fused_attention(q, k, v, mask, True))(q, k, v)
  expected = common.fused_attention(q, k, v, mask, True, implementation="xla")
  np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))


def test_unknown_implementation_is_rejected():
  q, k, v, _ = qkv_and_cotangent()
  with pytest.raises(ValueError, match="implementation"):
    common.fused_attention(q, k, v, masks(), False, implementation="flash")


@pytest.mark.parametrize("index, n", [(0, 1), (0, 5), (6, 1), (7, 4), (15, 1)])
def test_cached_attention_reads_the_filled_blocks_like_full_causal_softmax(index, n):
  q, k, v, _ = (x[:, :16] for x in jax.random.normal(jax.random.PRNGKey(1), (4, B, 16, H, D)))
  expected = rfa_jax.softmax_attention(q, k, v, causal=True)[:, index:index + n]
  filled = jnp.arange(16)[None, :, None, None] < index + n  # later slots hold garbage
  cache = lambda x: jnp.swapaxes(jnp.where(filled, x, 1e4), 1, 2)
  out = jax.jit(cached_attention, static_argnums=4)(q[:, index:index + n], cache(k), cache(v),
                                                     index, 4)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_decoding_a_prompt_then_tokens_equals_the_causal_forward():
  module = SoftmaxAttention(emb_dim=12, num_heads=H, qkv_dim=H * D, max_length=L,
                            rngs=nnx.Rngs(0), causal=True)
  x = jax.random.normal(jax.random.PRNGKey(2), (B, L, 12))
  expected = module(x, None)
  module.init_cache((B, L, 12))
  module.decode = True
  outs = [module(x[:, :5], None)] + [module(x[:, t:t + 1], None) for t in range(5, L)]
  np.testing.assert_allclose(jnp.concatenate(outs, 1), expected, atol=1e-5)
  assert module.cached_key.shape == (B, H, L, D) and int(module.cache_index[...]) == L
