"""RFAAttention on packed rows: the segment masks of Flax's lm1b and wmt examples (and explicit
`segment_ids=`) give, at every real token, what each packed sequence gives alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rfa_jax

B, E, H = 2, 16, 2
# Decoder rows: sequences of 4, 1 and 3 tokens then padding; one sequence then padding.
DECODER = np.array([[1, 1, 1, 1, 2, 3, 3, 3, 0, 0],
                    [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]], np.int32)
# Encoder rows of the same pairs (wmt packs inputs and targets with matching ids).
ENCODER = np.array([[1, 1, 2, 2, 2, 3, 0], [1, 1, 1, 1, 1, 0, 0]], np.int32)


def _module(**options):
  return rfa_jax.RFAAttention(H, E, num_features=32, rngs=nnx.Rngs(0), **options)


def _x(seed, length):
  return jax.random.normal(jax.random.PRNGKey(seed), (B, length, E))


def self_mask(ids, causal):
  """lm1b's decoder mask (causal) or its encoder form: padding x (causal) x same segment."""
  masks = [nnx.make_attention_mask(ids > 0, ids > 0), nnx.make_attention_mask(ids, ids, jnp.equal)]
  return nnx.combine_masks(*masks, *([nnx.make_causal_mask(ids)] if causal else []))


def cross_mask(query_ids, key_ids):
  """wmt's encoder-decoder mask: padding x same segment."""
  return nnx.combine_masks(nnx.make_attention_mask(query_ids > 0, key_ids > 0),
                           nnx.make_attention_mask(query_ids, key_ids, jnp.equal))


def _assert_sequences_alone(packed, alone, query_ids):
  """packed: [B, Lq, E]; alone(row, seq, where) -> [len(where), E]."""
  for row in range(B):
    for seq in set(query_ids[row]) - {0}:
      (where,) = np.nonzero(query_ids[row] == seq)
      np.testing.assert_allclose(packed[row, where], alone(row, seq, where), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("causal, gated, jit", [(False, False, True), (True, False, True),
                                                (True, True, True), (True, False, False),
                                                (False, True, True)])
def test_self_attention_mask_gives_each_sequence_alone(causal, gated, jit):
  module = _module(causal=causal, gated=gated)
  x, mask = _x(0, DECODER.shape[1]), self_mask(DECODER, causal)
  call = (lambda x, m: module(x, mask=m))
  packed = (nnx.jit(lambda module, x, m: module(x, mask=m)) if jit else
            lambda module, x, m: module(x, mask=m))(module, x, mask)
  _assert_sequences_alone(packed, lambda row, seq, where: call(x[row:row + 1, where], None)[0],
                          DECODER)
  grads = nnx.jit(nnx.grad(lambda module, x: jnp.sum(module(x, mask=mask) ** 2),
                           argnums=(0, 1)))(module, x)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("jit", [False, True])
def test_cross_attention_mask_gives_each_pair_alone(jit):
  module = _module()
  x, encoded = _x(1, DECODER.shape[1]), _x(2, ENCODER.shape[1])
  mask = cross_mask(DECODER, ENCODER)
  forward = lambda module, x, encoded, m: module(x, encoded, mask=m)
  packed = (nnx.jit(forward) if jit else forward)(module, x, encoded, mask)

  def alone(row, seq, where):
    (keys,) = np.nonzero(ENCODER[row] == seq)
    return module(x[row:row + 1, where], encoded[row:row + 1, keys])[0]

  _assert_sequences_alone(packed, alone, DECODER)
  grads = jax.jit(jax.grad(lambda x, e: jnp.sum(module(x, e, mask=mask) ** 2),
                           argnums=(0, 1)))(x, encoded)
  assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("causal", [True])
def test_explicit_segment_ids_match_the_mask_and_win_over_it(causal):
  module = _module(causal=causal)
  x = _x(3, DECODER.shape[1])
  from_mask = module(x, mask=self_mask(DECODER, causal))
  real = (DECODER > 0)[..., None]
  np.testing.assert_allclose(jnp.where(real, module(x, segment_ids=DECODER), 0),
                             jnp.where(real, from_mask, 0), atol=1e-6)
  one_sequence = np.where(DECODER > 0, 1, 0)  # the ids decide: the mask's segments are not read
  np.testing.assert_allclose(module(x, mask=self_mask(DECODER, causal), segment_ids=one_sequence),
                             module(x, segment_ids=one_sequence), atol=1e-6)


def test_explicit_cross_segment_ids_match_the_mask():
  module, x, encoded = _module(), _x(3, DECODER.shape[1]), _x(4, ENCODER.shape[1])
  real = (DECODER > 0)[..., None]
  np.testing.assert_allclose(
      jnp.where(real, module(x, encoded, segment_ids=DECODER, key_segment_ids=ENCODER), 0),
      jnp.where(real, module(x, encoded, mask=cross_mask(DECODER, ENCODER)), 0), atol=1e-6)


def test_a_mask_of_one_sequence_per_row_runs_the_unpacked_forms():
  """Key padding as a 4-D mask takes the same path, and gives the same output, as the key mask."""
  module = _module(causal=True)
  ids = np.where(DECODER > 0, 5, 0)
  x = _x(5, DECODER.shape[1])
  padding = jnp.asarray(ids > 0)
  expected = module(x, mask=padding)
  for out in (module(x, mask=self_mask(ids, True)),
              jax.jit(lambda x, m: module(x, mask=m))(x, self_mask(ids, True))):
    np.testing.assert_allclose(jnp.where(padding[..., None], out, 0),
                               jnp.where(padding[..., None], expected, 0), atol=1e-6)


def test_segment_masks_rfa_cannot_apply_are_refused():
  module = _module(causal=True)
  x = _x(6, DECODER.shape[1])
  split = DECODER.copy()
  split[0, 5] = 1  # sequence 1 again after sequence 2: one id in two runs
  with pytest.raises(ValueError, match="cannot apply"):
    module(x, mask=self_mask(split, True))
  with pytest.raises(ValueError, match="segment_ids has shape"):
    module(x, segment_ids=DECODER[:, :4])
  with pytest.raises(ValueError, match="key_segment_ids"):
    _module()(x, _x(7, ENCODER.shape[1]), segment_ids=DECODER)
  bad = jax.jit(lambda x, m: module(x, mask=m))(x, self_mask(split, True))
  assert np.isnan(bad[0]).all() and np.isfinite(bad[1]).all()
  bidirectional = _module(gated=True)  # its gates run along each sequence: one run each
  assert np.isfinite(_module()(x, mask=self_mask(split, False))).all()
  with pytest.raises(ValueError, match="cannot apply.*each sequence one run of positions"):
    bidirectional(x, mask=self_mask(split, False))


def test_decoding_after_a_packed_prompt_continues_its_last_sequence():
  """A packed prompt through the decode cache: each sequence as alone, and the cache holds the last
  sequence's state, so the next token continues it."""
  module = _module(causal=True, gated=True)
  ids = np.array([[1, 1, 2, 2, 2, 2]] * B, np.int32)
  x = _x(8, 7)
  module.init_cache((B, 7, E))
  prompt = module(x[:, :6], mask=self_mask(ids, True), decode=True)
  nxt = module(x[:, 6:], decode=True)
  alone = module(x[:, 2:], decode=False)
  np.testing.assert_allclose(prompt[:, 2:], alone[:, :4], atol=2e-5)
  np.testing.assert_allclose(nxt, alone[:, 4:], atol=2e-5)
