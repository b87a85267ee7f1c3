"""The swap nnx.MultiHeadAttention -> RFAAttention in two models written in Flax NNX example
conventions (a decoder-only LM as in Flax's lm1b_nnx, an encoder-decoder as in wmt): the model code is
the same for both classes; RFA only adds `causal=True` to decoder self attention."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import rfa_jax


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 24
  emb_dim: int = 16
  num_heads: int = 2
  qkv_dim: int = 16
  mlp_dim: int = 32
  num_layers: int = 2
  max_len: int = 10
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1


# (attention class, extra constructor arguments of decoder self attention)
KINDS = {
    "mha": (nnx.MultiHeadAttention, {}),
    "rfa": (rfa_jax.RFAAttention, dict(causal=True)),
    "rfa_gated": (rfa_jax.RFAAttention, dict(causal=True, gated=True)),
}


class AddPositionEmbs(nnx.Module):
  """Learned positions; in decode mode one position per call, tracked by its own cache_index."""

  def __init__(self, config, *, rngs):
    self.decode = False
    self.embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, config.max_len,
                                                                        config.emb_dim)))

  def __call__(self, x, positions=None):
    if positions is not None:  # packed rows: positions restart at every sequence
      return x + jnp.take(self.embedding[...][0], positions, axis=0)
    if self.decode:
      position = jax.lax.dynamic_slice_in_dim(self.embedding[...], self.cache_index[...], 1, axis=1)
      self.cache_index[...] += 1
      return x + position
    return x + self.embedding[:, :x.shape[1]]

  def init_cache(self, input_shape, dtype=jnp.float32):
    del input_shape, dtype
    self.cache_index = nnx.Cache(jnp.array(0, jnp.int32))


class MlpBlock(nnx.Module):

  def __init__(self, config, *, rngs):
    self.linear1 = nnx.Linear(config.emb_dim, config.mlp_dim, rngs=rngs)
    self.linear2 = nnx.Linear(config.mlp_dim, config.emb_dim, rngs=rngs)
    self.dropout = nnx.Dropout(rate=config.dropout_rate)

  def __call__(self, x, *, rngs=None):
    x = self.dropout(nnx.relu(self.linear1(x)), rngs=rngs)
    return self.dropout(self.linear2(x), rngs=rngs)


def make_attention(attention, config, rngs, **extra):
  return attention(num_heads=config.num_heads, in_features=config.emb_dim,
                   qkv_features=config.qkv_dim, kernel_init=nnx.initializers.xavier_uniform(),
                   bias_init=nnx.initializers.normal(stddev=1e-6), use_bias=False,
                   broadcast_dropout=False, dropout_rate=config.attention_dropout_rate,
                   keep_rngs=False, rngs=rngs, **extra)


class Block(nnx.Module):
  """Pre-LN block: self attention, optional cross attention, MLP."""

  def __init__(self, config, attention, self_attention_args, *, cross=False, rngs):
    self.ln1 = nnx.LayerNorm(config.emb_dim, rngs=rngs)
    self.attention = make_attention(attention, config, rngs, **self_attention_args)
    self.ln_cross = nnx.LayerNorm(config.emb_dim, rngs=rngs) if cross else None
    self.cross_attention = make_attention(attention, config, rngs) if cross else None
    self.ln2 = nnx.LayerNorm(config.emb_dim, rngs=rngs)
    self.mlp = MlpBlock(config, rngs=rngs)
    self.dropout = nnx.Dropout(rate=config.dropout_rate)

  def __call__(self, x, *, mask=None, encoded=None, cross_mask=None, rngs=None):
    x = x + self.dropout(self.attention(self.ln1(x), mask=mask, rngs=rngs), rngs=rngs)
    if self.cross_attention is not None:
      y = self.cross_attention(inputs_q=self.ln_cross(x), inputs_k=encoded, inputs_v=encoded,
                               mask=cross_mask, decode=False, rngs=rngs)
      x = x + self.dropout(y, rngs=rngs)
    return x + self.mlp(self.ln2(x), rngs=rngs)


class Stack(nnx.Module):
  """Embedding, positions, blocks, final norm."""

  def __init__(self, config, attention, self_attention_args, *, cross=False, rngs):
    self.embed = nnx.Embed(config.vocab_size, config.emb_dim, rngs=rngs)
    self.positions = AddPositionEmbs(config, rngs=rngs)
    self.dropout = nnx.Dropout(rate=config.dropout_rate)
    self.blocks = nnx.List([Block(config, attention, self_attention_args, cross=cross, rngs=rngs)
                            for _ in range(config.num_layers)])
    self.norm = nnx.LayerNorm(config.emb_dim, rngs=rngs)

  def __call__(self, tokens, *, positions=None, rngs=None, **masks):
    x = self.dropout(self.positions(self.embed(tokens), positions), rngs=rngs)
    for block in self.blocks:
      x = block(x, rngs=rngs, **masks)
    return self.norm(x)


def decoder_mask(tokens, segmentation=None):
  """lm1b's decoder mask; packed rows (segmentation given) add the same-segment mask."""
  mask = nnx.combine_masks(nnx.make_attention_mask(tokens > 0, tokens > 0),
                           nnx.make_causal_mask(tokens))
  if segmentation is None:
    return mask
  return nnx.combine_masks(mask, nnx.make_attention_mask(segmentation, segmentation, jnp.equal))


class TransformerLM(nnx.Module):

  def __init__(self, config, attention, self_attention_args, *, rngs):
    self.decode = False
    self.decoder = Stack(config, attention, self_attention_args, rngs=rngs)
    self.logits = nnx.Linear(config.emb_dim, config.vocab_size, rngs=rngs)

  def __call__(self, tokens, *, segmentation=None, positions=None, rngs=None):
    mask = None if self.decode else decoder_mask(tokens, segmentation)  # decoding needs no mask
    return self.logits(self.decoder(tokens, mask=mask, positions=positions, rngs=rngs))


class EncoderDecoder(nnx.Module):

  def __init__(self, config, attention, self_attention_args, *, rngs):
    self.decode = False
    self.encoder = Stack(config, attention, {}, rngs=rngs)
    self.decoder = Stack(config, attention, self_attention_args, cross=True, rngs=rngs)
    self.logits = nnx.Linear(config.emb_dim, config.vocab_size, rngs=rngs)

  def encode(self, source, *, rngs=None):
    return self.encoder(source, mask=nnx.make_attention_mask(source > 0, source > 0), rngs=rngs)

  def __call__(self, source, targets, *, encoded=None, rngs=None):
    encoded = self.encode(source, rngs=rngs) if encoded is None else encoded
    mask = None if self.decode else decoder_mask(targets)
    y = self.decoder(targets, mask=mask, encoded=encoded,
                     cross_mask=nnx.make_attention_mask(targets > 0, source > 0), rngs=rngs)
    return self.logits(y)


def build(model_class, kind, seed=0):
  attention, args = KINDS[kind]
  return model_class(Config(), attention, args, rngs=nnx.Rngs(params=seed))


def tokens(seed, length, lengths=(None, 6)):
  """[2, length] ids in 1..vocab-1, right-padded with 0 to `lengths`."""
  ids = jax.random.randint(jax.random.PRNGKey(seed), (2, length), 1, Config.vocab_size)
  valid = jnp.arange(length)[None] < jnp.array([length if n is None else n for n in lengths])[:, None]
  return jnp.where(valid, ids, 0)


def init_caches(model, batch, length):
  for _, module in nnx.iter_modules(model):
    if hasattr(module, "init_cache"):
      module.init_cache((batch, length, Config.emb_dim))


def cross_entropy(logits, targets):
  weights = (targets > 0).astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return jnp.sum(loss * weights) / jnp.sum(weights)


def train_step_fn(graphdef, optimizer, loss_of_logits):
  @jax.jit
  def train_step(params, opt_state, batch, key):
    def loss_fn(params):
      model = nnx.merge(graphdef, params)
      model.set_attributes(deterministic=False, decode=False)
      return loss_of_logits(model, batch, nnx.Rngs(dropout=key))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads
  return train_step


def check_training_and_checkpoint(model_class, kind, batch, loss_of_logits, evaluate, tmp_path):
  """Exhaustive Param split, two jitted optax steps, Params checkpoint restored into a fresh model."""
  model = build(model_class, kind)
  graphdef, params = nnx.split(model, nnx.Param)  # raises unless exhaustive
  optimizer = optax.adamw(1e-2)
  step = train_step_fn(graphdef, optimizer, loss_of_logits)
  opt_state = optimizer.init(params)
  new_params, opt_state, loss, grads = step(params, opt_state, batch, jax.random.PRNGKey(1))
  _, _, other_loss, _ = step(params, opt_state, batch, jax.random.PRNGKey(2))
  assert np.isfinite(loss) and loss != other_loss  # dropout (and RFA's redraw) follow the key
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)) > 0
  new_params, _, _, _ = step(new_params, opt_state, batch, jax.random.PRNGKey(3))

  trained = nnx.merge(graphdef, new_params)
  trained.set_attributes(deterministic=True, decode=False)
  expected = evaluate(trained)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "params", nnx.state(trained, nnx.Param))
  checkpointer.wait_until_finished()
  fresh = nnx.eval_shape(lambda: build(model_class, kind, seed=7))
  fresh_graphdef, abstract = nnx.split(fresh, nnx.Param)
  restored = nnx.merge(fresh_graphdef, checkpointer.restore(tmp_path / "params", abstract))
  restored.set_attributes(deterministic=True, decode=False)
  np.testing.assert_array_equal(evaluate(restored), expected)


def lm_loss(model, batch, rngs):
  return cross_entropy(model(batch[:, :-1], rngs=rngs), batch[:, 1:])


@pytest.mark.parametrize("kind", ["mha", "rfa"])
def test_lm_forward_causality_training_and_checkpoint(kind, tmp_path):
  model = build(TransformerLM, kind)
  model.set_attributes(deterministic=True, decode=False)
  ids = tokens(0, Config.max_len)
  forward = nnx.jit(lambda model, ids: model(ids))
  logits = forward(model, ids)
  assert logits.shape == (2, Config.max_len, Config.vocab_size)
  changed = forward(model, ids.at[:, 5:].set(tokens(1, Config.max_len, (None, None))[:, 5:]))
  np.testing.assert_allclose(changed[:, :5], logits[:, :5], atol=1e-5)
  assert np.abs(changed[0, 5:] - logits[0, 5:]).max() > 1e-4
  check_training_and_checkpoint(TransformerLM, kind, ids, lm_loss, lambda m: forward(m, ids),
                                tmp_path)


def pack(documents, length):
  """lm1b-style packing of token lists into rows: tokens, segmentation (1, 2, ...; 0 = padding) and
  positions restarting at every document, each [len(documents), length]."""
  rows = {name: np.zeros((len(documents), length), np.int32)
          for name in ("tokens", "segmentation", "positions")}
  for row, docs in enumerate(documents):
    start = 0
    for segment, doc in enumerate(docs, 1):
      where = slice(start, start + len(doc))
      rows["tokens"][row, where] = doc
      rows["segmentation"][row, where] = segment
      rows["positions"][row, where] = np.arange(len(doc))
      start += len(doc)
  return {name: jnp.asarray(value) for name, value in rows.items()}


@pytest.mark.parametrize("kind", ["rfa_gated"])
def test_lm_packed_rows_train_and_match_each_document_alone(kind):
  """lm1b's packed batches: each document of a packed row gets the logits it gets alone, and a jitted
  training step on packed rows has a finite loss and gradients."""
  documents = [[[3, 5, 7, 2], [9, 4, 4], [8]], [[6, 2, 3, 3, 5, 11, 4]]]
  batch = pack(documents, Config.max_len)
  model = build(TransformerLM, kind)
  model.set_attributes(deterministic=True, decode=False)
  forward = nnx.jit(lambda model, batch: model(batch["tokens"], segmentation=batch["segmentation"],
                                               positions=batch["positions"]))
  packed = forward(model, batch)
  for row, docs in enumerate(documents):
    start = 0
    for doc in docs:
      alone = forward(model, pack([[doc]], len(doc)))[0]
      np.testing.assert_allclose(packed[row, start:start + len(doc)], alone, atol=2e-5)
      start += len(doc)

  def packed_loss(model, batch, rngs):
    logits = model(batch["tokens"][:, :-1], segmentation=batch["segmentation"][:, :-1],
                   positions=batch["positions"][:, :-1], rngs=rngs)
    same = batch["segmentation"][:, 1:] == batch["segmentation"][:, :-1]  # no target across documents
    return cross_entropy(logits, jnp.where(same, batch["tokens"][:, 1:], 0))

  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = optax.adamw(1e-2)
  step = train_step_fn(graphdef, optimizer, packed_loss)
  _, _, loss, grads = step(params, optimizer.init(params), batch, jax.random.PRNGKey(1))
  assert np.isfinite(loss)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def greedy_sampler(graphdef, params, prompt, num_prompt, num_steps, step_logits):
  """Greedy decoding in a jitted lax.while_loop over a fixed cache structure: prompt tokens for the
  first `num_prompt` steps, then argmax over ids 1.. (0 is padding). Returns (tokens, logits)."""
  def body(carry):
    t, cache, out_tokens, out_logits = carry
    token = jax.lax.dynamic_slice_in_dim(out_tokens, t, 1, axis=1)
    model = nnx.merge(graphdef, params, cache)
    model.set_attributes(deterministic=True, decode=True)
    logits = step_logits(model, token)
    cache = nnx.state(model, nnx.Cache)
    out_logits = jax.lax.dynamic_update_slice_in_dim(out_logits, logits, t, axis=1)
    sampled = jnp.argmax(logits[:, 0, 1:], -1)[:, None] + 1
    next_token = jnp.where(t + 1 < num_prompt, jax.lax.dynamic_slice_in_dim(prompt, t + 1, 1, 1),
                           sampled)
    out_tokens = jax.lax.dynamic_update_slice_in_dim(out_tokens, next_token.astype(out_tokens.dtype),
                                                     t + 1, axis=1)
    return t + 1, cache, out_tokens, out_logits

  @jax.jit
  def sample(cache):
    batch = prompt.shape[0]
    out_tokens = jnp.zeros((batch, num_steps + 1), prompt.dtype).at[:, 0].set(prompt[:, 0])
    start = (0, cache, out_tokens, jnp.zeros((batch, num_steps, Config.vocab_size)))
    _, _, out_tokens, out_logits = jax.lax.while_loop(lambda c: c[0] < num_steps, body, start)
    return out_tokens[:, :num_steps], out_logits
  return sample


def decode_setup(model_class, kind, batch, length):
  model = build(model_class, kind)
  model.set_attributes(deterministic=True, decode=False)
  init_caches(model, batch, length)
  graphdef, params, cache = nnx.split(model, nnx.Param, nnx.Cache)  # raises unless exhaustive
  return model, graphdef, params, cache


@pytest.mark.parametrize("kind", ["mha", "rfa", "rfa_gated"])
def test_lm_sampling_loop_over_the_cache_reproduces_the_full_forward(kind):
  length = Config.max_len
  model, graphdef, params, cache = decode_setup(TransformerLM, kind, 2, length)
  prompt = tokens(2, 4, (None, None))
  sample = greedy_sampler(graphdef, params, prompt, 4, length, lambda m, token: m(token))
  generated, logits = sample(cache)
  np.testing.assert_array_equal(generated[:, :4], prompt)
  full = nnx.jit(lambda model, ids: model(ids))(model, generated)
  np.testing.assert_allclose(logits, full, atol=2e-5)


def seq2seq_loss(model, batch, rngs):
  source, targets = batch
  return cross_entropy(model(source, targets[:, :-1], rngs=rngs), targets[:, 1:])


SOURCE_LEN, TARGET_LEN = 9, 7


@pytest.mark.parametrize("kind", ["mha", "rfa"])
def test_encoder_decoder_forward_causality_training_and_checkpoint(kind, tmp_path):
  model = build(EncoderDecoder, kind)
  model.set_attributes(deterministic=True, decode=False)
  source, targets = tokens(3, SOURCE_LEN, (None, 5)), tokens(4, TARGET_LEN)
  forward = nnx.jit(lambda model, source, targets: model(source, targets))
  logits = forward(model, source, targets)
  assert logits.shape == (2, TARGET_LEN, Config.vocab_size)
  changed = forward(model, source, targets.at[:, 4:].set(tokens(5, TARGET_LEN, (None, None))[:, 4:]))
  np.testing.assert_allclose(changed[:, :4], logits[:, :4], atol=1e-5)
  assert np.abs(forward(model, source.at[1, :2].set(1), targets) - logits)[1].max() > 1e-4
  check_training_and_checkpoint(EncoderDecoder, kind, (source, targets), seq2seq_loss,
                                lambda m: forward(m, source, targets), tmp_path)


@pytest.mark.parametrize("kind", ["mha", "rfa"])
def test_encoder_decoder_decoding_reproduces_the_full_forward(kind):
  model, graphdef, params, cache = decode_setup(EncoderDecoder, kind, 2, TARGET_LEN)
  source, prompt = tokens(3, SOURCE_LEN, (None, 5)), tokens(4, 2, (None, None))
  encoded = nnx.jit(lambda model, source: model.encode(source))(model, source)
  sample = greedy_sampler(graphdef, params, prompt, 2, TARGET_LEN,
                          lambda m, token: m(source, token, encoded=encoded))
  generated, logits = sample(cache)
  full = nnx.jit(lambda model, source, targets: model(source, targets))(model, source, generated)
  np.testing.assert_allclose(logits, full, atol=2e-5)
