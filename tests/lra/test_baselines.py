"""Baseline attention mechanisms: the common contract (shape, padding, jit, gradients, causality)
for every registered baseline, and each mechanism against an exact reference or its exact limit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rfa_jax
from lra import attention
from lra.baselines.common import RandomDraw
from lra.baselines.linear import elu_features

B, L, E, H, QKV = 2, 37, 16, 2, 16
LENGTHS = (L, 23)

# Small options so that every structured path (several blocks, chunks, landmarks) runs at L = 37.
SMALL = {
    "softmax": {},
    "local": dict(block_size=8),
    "sparse": dict(block_size=8, summary_size=3),
    "longformer": dict(window=8),
    "linformer": dict(low_rank_features=8),
    "reformer": dict(num_buckets=4, chunk_size=4, num_hashes=2),
    "sinkhorn": dict(block_size=8),
    "synthesizer": {},
    "bigbird": dict(block_size=4, num_random_blocks=2),
    "linear": {},
    "performer": dict(num_features=32),
    "nystromformer": dict(num_landmarks=8),
    "sliding_window": dict(window=8),
}
VARIANTS = {"sparse": dict(pattern="strided"), "synthesizer": dict(variant="dense")}
CASES = [(name, options) for name, options in SMALL.items()] + [
    (name, {**SMALL[name], **extra}) for name, extra in VARIANTS.items()]
IDS = list(SMALL) + [f"{name}-{next(iter(extra.values()))}" for name, extra in VARIANTS.items()]
CAUSAL = ["softmax", "local", "sparse", "longformer", "bigbird", "linear", "performer",
          "synthesizer", "sliding_window"]
NONCAUSAL_ONLY = ["linformer", "reformer", "sinkhorn", "nystromformer"]


run = nnx.jit(lambda module, x, mask: module(x, mask))


def build(name, *, causal=False, max_length=L, seed=0, **options):
  return attention.make(name, emb_dim=E, num_heads=H, qkv_dim=QKV, max_length=max_length,
                        rngs=nnx.Rngs(seed), causal=causal, **options)


def inputs(seed=0, length=L, lengths=LENGTHS):
  x = jax.random.normal(jax.random.PRNGKey(seed), (B, length, E))
  mask = np.arange(length)[None] < np.array(lengths)[:, None]
  return x, jnp.asarray(mask)


def with_garbage(x, mask, seed=1):
  garbage = 10 * jax.random.normal(jax.random.PRNGKey(seed), x.shape)
  return jnp.where(mask[..., None], x, garbage)


def close_at(mask, actual, expected, atol=1e-5):
  np.testing.assert_allclose(np.asarray(actual)[np.asarray(mask)],
                             np.asarray(expected)[np.asarray(mask)], atol=atol, rtol=1e-5)


def same_parameters(module, reference):
  nnx.update(module, nnx.state(reference, nnx.Param))
  return module


def test_every_baseline_is_registered():
  assert set(SMALL) <= set(attention.names())
  assert set(CAUSAL) | set(NONCAUSAL_ONLY) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_defaults_build(name):
  module = build(name, max_length=1000)
  assert isinstance(module, nnx.Module)


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_shape_finite_gradients_and_padding_invariance_under_jit(name, options):
  module = build(name, **options)
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  x, mask = inputs()

  def loss(params, x):
    out = nnx.merge(graphdef, params, rest)(x, mask)
    return jnp.sum(jnp.where(mask[..., None], out, 0) ** 2), out

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (_, out), grads = step(params, x)
  (_, out_garbage), grads_garbage = step(params, with_garbage(x, mask))
  assert out.shape == (B, L, E)
  assert np.isfinite(np.asarray(out)).all()
  close_at(mask, out_garbage, out)
  leaves, leaves_garbage = jax.tree.leaves(grads), jax.tree.leaves(grads_garbage)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  for g, g_garbage in zip(leaves, leaves_garbage):
    np.testing.assert_allclose(g_garbage, g, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name, options", [c for c in CASES if c[0] in CAUSAL],
                         ids=[i for i, c in zip(IDS, CASES) if c[0] in CAUSAL])
def test_causal_outputs_ignore_later_tokens(name, options):
  module = build(name, causal=True, **options)
  x, mask = inputs()
  cut = 19
  changed = x.at[:, cut:].set(jax.random.normal(jax.random.PRNGKey(7), x[:, cut:].shape))
  before, after = run(module, x, mask), run(module, changed, mask)
  np.testing.assert_allclose(after[:, :cut], before[:, :cut], atol=1e-6)
  assert np.abs(np.asarray(after[:, cut:] - before[:, cut:])).max() > 1e-3


@pytest.mark.parametrize("name", NONCAUSAL_ONLY)
def test_mechanisms_without_causal_form_refuse_it(name):
  with pytest.raises(NotImplementedError, match="no causal variant"):
    build(name, causal=True)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_unknown_option_is_rejected(name):
  with pytest.raises(TypeError, match="not_an_option"):
    build(name, not_an_option=1)


def test_an_option_that_defines_the_name_cannot_be_overridden():
  with pytest.raises(ValueError, match=r"'rfa_arccos' is defined by feature_map='arccos'.*rfa_gaussian"):
    build("rfa_arccos", feature_map="positive")
  assert build("rfa_arccos", feature_map="arccos").attention.feature_map == "arccos"


@pytest.mark.parametrize("name, options, bad", [
    ("local", dict(block_size=0), "block_size"), ("sparse", dict(pattern="diagonal"), "pattern"),
    ("reformer", dict(num_buckets=5), "num_buckets"), ("synthesizer", dict(variant="x"), "variant"),
    ("sinkhorn", dict(temperature=0.0), "temperature"),
    ("performer", dict(num_features=2.5), "num_features")])
def test_bad_option_values_are_rejected(name, options, bad):
  with pytest.raises(ValueError, match=bad):
    build(name, **options)


def test_lengths_beyond_max_length_are_rejected():
  x, mask = inputs()
  for name in ("linformer", "sinkhorn", "synthesizer", "bigbird"):
    with pytest.raises(ValueError, match="max_length"):
      run(build(name, max_length=L - 1), x, mask)


# Exact references and limits.

def dense_reference(module, x, mask, visible, causal=False):
  """module's own projections with exact softmax attention over the [L, L] pattern `visible`."""
  q, k, v = module.query(x), module.key(x), module.value(x)
  logits = jnp.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
  seen = np.asarray(visible)[None, None] & np.asarray(mask)[:, None, None, :]
  if causal:
    seen = seen & np.tri(x.shape[1], dtype=bool)
  weights = jax.nn.softmax(jnp.where(seen, logits, -1e30), -1)
  return module.out(jnp.einsum("bhij,bjhd->bihd", weights, v))


def test_softmax_is_exact_attention():
  module = build("softmax")
  x, mask = inputs()
  for causal in (False, True):
    module.causal = causal
    expected = module.out(rfa_jax.softmax_attention(module.query(x), module.key(x), module.value(x),
                                                    causal=causal, key_mask=mask))
    close_at(mask, run(module, x, mask), expected)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name, options", [
    ("local", dict(block_size=64)),
    ("sliding_window", dict(window=L)),
    ("longformer", dict(window=2 * L)),
    ("longformer", dict(window=2 * L, num_global_tokens=0)),
    ("bigbird", dict(block_size=4, num_random_blocks=L)),
    ("sparse", dict(block_size=L, num_global_tokens=0)),
])
def test_limit_is_softmax(name, options, causal):
  x, mask = inputs()
  softmax = build("softmax", causal=causal)
  module = same_parameters(build(name, causal=causal, seed=3, **options), softmax)
  close_at(mask, run(module, x, mask), run(softmax, x, mask))


@pytest.mark.parametrize("name, options", [
    ("nystromformer", dict(num_landmarks=L, pinv_iterations=40)),
    ("sinkhorn", dict(block_size=64)),
])
def test_noncausal_limit_is_softmax(name, options):
  x, mask = inputs()
  softmax = build("softmax")
  module = same_parameters(build(name, seed=3, **options), softmax)
  close_at(mask, run(module, x, mask), run(softmax, x, mask), atol=1e-4)


def test_linformer_with_identity_projection_is_softmax():
  x, mask = inputs(lengths=(L, L))
  softmax = build("softmax")
  module = same_parameters(build("linformer", low_rank_features=L, seed=3), softmax)
  module.projection[...] = jnp.eye(L)
  close_at(mask, run(module, x, mask), run(softmax, x, mask))


def _bigbird_pattern(i, j, causal):  # window of 3 blocks of 4; global first (and last) block
  globals_ = (i < 4) | (j < 4) | (((i >= 36) | (j >= 36)) & (not causal))
  return (np.abs(i // 4 - j // 4) <= 1) | globals_


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name, options, pattern", [
    ("local", dict(block_size=8), lambda i, j, causal: i // 8 == j // 8),
    ("sliding_window", dict(window=8), lambda i, j, causal: np.abs(i - j) < 8),
    ("longformer", dict(window=8, num_global_tokens=2),
     lambda i, j, causal: (np.abs(i - j) <= 4) | (i < 2) | (j < 2)),
    ("sparse", dict(pattern="fixed", block_size=8, summary_size=3),
     lambda i, j, causal: (i // 8 == j // 8) | (j % 8 >= 5) | (i < 1) | (j < 1)),
    ("sparse", dict(pattern="strided", block_size=8, num_global_tokens=0),
     lambda i, j, causal: (np.abs(i - j) < 8) | ((i - j) % 8 == 0)),
    ("bigbird", dict(block_size=4, num_random_blocks=0), _bigbird_pattern),
])
def test_sparse_patterns_match_dense_reference(name, options, pattern, causal):
  module = build(name, causal=causal, **options)
  x, mask = inputs()
  visible = pattern(np.arange(L)[:, None], np.arange(L)[None, :], causal)
  close_at(mask, run(module, x, mask), dense_reference(module, x, mask, visible, causal))


def test_bigbird_random_blocks_add_keys_to_the_window():
  module = build("bigbird", block_size=4, num_random_blocks=3)
  x, mask = inputs(lengths=(L, L))
  window_only = build("bigbird", block_size=4, num_random_blocks=0)
  same_parameters(window_only, module)
  assert np.abs(np.asarray(run(module, x, mask) - run(window_only, x, mask))).max() > 1e-4


@pytest.mark.parametrize("num_hashes", [1, 2])
def test_reformer_with_one_chunk_is_shared_query_key_attention(num_hashes):
  module = build("reformer", num_hashes=num_hashes, chunk_size=4 * L)
  x, mask = inputs()
  q, v = module.query(x), module.value(x)
  k = q * jax.lax.rsqrt(jnp.mean(q ** 2, -1, keepdims=True) + 1e-6)
  logits = jnp.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
  logits = jnp.where(np.eye(L, dtype=bool), -1e5, logits)
  logits = jnp.where(mask[:, None, None, :], logits, -1e30)
  expected = module.out(jnp.einsum("bhij,bjhd->bihd", jax.nn.softmax(logits, -1), v))
  close_at(mask, run(module, x, mask), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_matches_quadratic_reference(causal):
  module = build("linear", causal=causal)
  x, mask = inputs(length=150, lengths=(150, 97))  # several causal chunks
  phi_q, phi_k = elu_features(module.query(x)), elu_features(module.key(x))
  scores = jnp.einsum("bihf,bjhf->bhij", phi_q, phi_k) * mask[:, None, None, :]
  if causal:
    scores = scores * np.tri(150)
  weights = scores / jnp.sum(scores, -1, keepdims=True)
  expected = module.out(jnp.einsum("bhij,bjhd->bihd", weights, module.value(x)))
  close_at(mask, run(module, x, mask), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_tends_to_softmax(causal):
  # The estimator's variance grows like exp(2 |q + k|^2): half-scale inputs converge within 512.
  x, mask = inputs()
  x = 0.5 * x
  softmax = build("softmax", causal=causal)
  expected = run(softmax, x, mask)
  errors = []
  for num_features in (8, 64, 512):
    error = 0.0
    for seed in range(3):
      module = same_parameters(
          build("performer", num_features=num_features, causal=causal, seed=seed), softmax)
      error += float(jnp.mean(jnp.abs(run(module, x, mask) - expected)[mask]))
    errors.append(error / 3)
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 0.25 * errors[0]


@pytest.mark.parametrize("name, options", [("performer", {}), ("reformer", {}),
                                           ("bigbird", dict(block_size=4, redraw=True))])
def test_random_state_is_redrawn_in_training_and_fixed_in_evaluation(name, options):
  module = build(name, **options)
  x, mask = inputs()
  evaluation = run(module, x, mask)
  np.testing.assert_array_equal(run(module, x, mask), evaluation)
  module.train()
  assert np.abs(np.asarray(run(module, x, mask) - run(module, x, mask))).max() > 1e-5
  module.eval()
  np.testing.assert_array_equal(run(module, x, mask), evaluation)
  params = nnx.state(module, nnx.Param)
  assert not jax.tree.leaves(nnx.state(params, RandomDraw))
