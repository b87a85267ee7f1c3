"""One Transformer encoder for every LRA task, parameterised by the attention mechanism's name.

Encoder: token embedding + positions (sinusoidal or learned) [+ CLS token], pre-LayerNorm blocks
(attention, MLP, dropout), final LayerNorm, CLS or masked-mean pooling. Heads: a classifier, and a dual
encoder for retrieval (shared towers, head on [x1, x2, x1 * x2, x1 - x2]). The causal byte-level
language model is the same encoder with causal attention and no pooling, and a next-byte head.

Mixed precision: `dtype` ("float32" | "bfloat16") is the dtype of activations and matrix products
(embeddings, positions, LayerNorm outputs, every linear map and the attention's projections);
parameters are float32 (`param_dtype`), LayerNorm statistics and mean pooling are float32, and the
logits are cast to float32 before the loss (`lra.train`).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra import attention


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """[length, dim] fixed sin/cos position encodings (Vaswani et al., 2017)."""
  position = np.arange(length)[:, None]
  rate = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(position * rate)
  table[:, 1::2] = np.cos(position * rate)[:, :dim // 2]
  return table


class EncoderBlock(nnx.Module):
  """x + Dropout(Attention(LN(x))), then x + Dropout(MLP(LN(x))). x: [B, L, emb_dim]."""

  def __init__(self, *, attention_name, attention_options, emb_dim, num_heads, qkv_dim, mlp_dim,
               dropout_rate, max_length, causal, dtype, rngs):
    precision = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.attention_norm = nnx.LayerNorm(emb_dim, **precision)
    self.attention = attention.make(attention_name, emb_dim=emb_dim, num_heads=num_heads,
                                    qkv_dim=qkv_dim, max_length=max_length, causal=causal,
                                    dtype=dtype, rngs=rngs, **attention_options)
    self.mlp_norm = nnx.LayerNorm(emb_dim, **precision)
    self.mlp_in = nnx.Linear(emb_dim, mlp_dim, **precision)
    self.mlp_out = nnx.Linear(mlp_dim, emb_dim, **precision)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x, mask, segment_ids=None):
    packed = {} if segment_ids is None else dict(segment_ids=segment_ids)
    x = x + self.dropout(self.attention(self.attention_norm(x), mask, **packed))
    hidden = self.dropout(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))
    return x + self.dropout(self.mlp_out(hidden))


class Encoder(nnx.Module):
  """tokens: [B, L] int32, mask: [B, L] bool (False = padding) -> pooled [B, emb_dim], or with
  pooling="none" every position [B, L, emb_dim] (mask may then be None: no padding).

  Token t of the input, counted from `offset`, gets position (offset + t) mod max_length: a table of
  max_length positions repeats along longer inputs. Packed rows give `segment_ids` [B, L] (attention
  within each sequence; `lra.attention`) and `positions` [B, L] (each token's own) instead.
  """

  def __init__(self, *, vocab_size, max_length, num_layers, emb_dim, num_heads, qkv_dim, mlp_dim,
               dropout_rate, attention_name, attention_options, pooling="cls",
               positions="sinusoidal", causal=False, dtype="float32", rngs):
    if pooling not in ("cls", "mean", "none"):
      raise ValueError(f"pooling={pooling!r}; expected 'cls', 'mean' or 'none'")
    if positions not in ("sinusoidal", "learned"):
      raise ValueError(f"positions={positions!r}; expected 'sinusoidal' or 'learned'")
    self.pooling, self.dtype = pooling, attention.compute_dtype(dtype)
    length = max_length + (pooling == "cls")
    self.embed = nnx.Embed(vocab_size, emb_dim, dtype=self.dtype, param_dtype=jnp.float32, rngs=rngs)
    if positions == "learned":
      self.positions = nnx.Param(jax.random.normal(rngs.params(), (length, emb_dim)) * 0.02)
    else:
      self.positions = nnx.Variable(jnp.asarray(sinusoidal_positions(length, emb_dim)))
    self.cls = nnx.Param(jnp.zeros((1, 1, emb_dim))) if pooling == "cls" else None
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.blocks = nnx.List([
        EncoderBlock(attention_name=attention_name, attention_options=attention_options,
                     emb_dim=emb_dim, num_heads=num_heads, qkv_dim=qkv_dim, mlp_dim=mlp_dim,
                     dropout_rate=dropout_rate, max_length=length, causal=causal,
                     dtype=self.dtype, rngs=rngs)
        for _ in range(num_layers)])
    self.final_norm = nnx.LayerNorm(emb_dim, dtype=self.dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, tokens, mask, offset=0, *, segment_ids=None, positions=None):
    x = self.embed(tokens)
    if self.cls is not None:
      cls = jnp.broadcast_to(self.cls[...].astype(x.dtype), (x.shape[0], 1, x.shape[2]))
      x = jnp.concatenate([cls, x], 1)
      mask = jnp.concatenate([jnp.ones((mask.shape[0], 1), bool), mask], 1)
    if positions is None:
      x = x + self.position_table(x.shape[1], offset).astype(x.dtype)
    else:
      x = x + jnp.take(self.positions[...], positions % self.positions.shape[0], axis=0).astype(x.dtype)
    x = self.dropout(x)
    for block in self.blocks:
      x = block(x, mask, segment_ids)
    x = self.final_norm(x)
    if self.pooling == "none":
      return x
    if self.cls is not None:
      return x[:, 0]
    weights = mask[..., None].astype(jnp.float32)
    return jnp.sum(x * weights, 1) / jnp.maximum(jnp.sum(weights, 1), 1.0)

  def position_table(self, length: int, offset=0) -> jax.Array:
    """[length, emb_dim]: the positions of tokens offset .. offset + length - 1 (offset may be
    traced)."""
    table = self.positions[...]
    if isinstance(offset, int) and offset == 0 and length <= table.shape[0]:
      return table[:length]
    return jnp.take(table, (offset + jnp.arange(length)) % table.shape[0], axis=0)


class ClassifierHead(nnx.Module):
  """[B, in_dim] -> Linear -> ReLU -> Linear -> logits [B, num_classes]."""

  def __init__(self, in_dim, hidden_dim, num_classes, *, dtype=jnp.float32, rngs):
    self.hidden = nnx.Linear(in_dim, hidden_dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.logits = nnx.Linear(hidden_dim, num_classes, dtype=dtype, param_dtype=jnp.float32,
                             rngs=rngs)

  def __call__(self, x):
    return self.logits(jax.nn.relu(self.hidden(x)))


class Classifier(nnx.Module):
  """Sequence classifier: batch {"inputs": [B, L]} -> logits [B, num_classes]."""

  def __init__(self, *, num_classes, padding_id, rngs, **encoder_args):
    self.padding_id = padding_id
    self.encoder = Encoder(rngs=rngs, **encoder_args)
    emb_dim = encoder_args["emb_dim"]
    self.head = ClassifierHead(emb_dim, encoder_args["mlp_dim"], num_classes,
                               dtype=self.encoder.dtype, rngs=rngs)

  def __call__(self, batch):
    return self.head(self.encoder(batch["inputs"], token_mask(batch["inputs"], self.padding_id)))


class DualEncoderClassifier(nnx.Module):
  """Retrieval: one shared encoder for both documents; head on [x1, x2, x1 * x2, x1 - x2].

  batch {"inputs1": [B, L], "inputs2": [B, L]} -> logits [B, num_classes].
  """

  def __init__(self, *, num_classes, padding_id, rngs, **encoder_args):
    self.padding_id = padding_id
    self.encoder = Encoder(rngs=rngs, **encoder_args)
    emb_dim = encoder_args["emb_dim"]
    self.head = ClassifierHead(4 * emb_dim, encoder_args["mlp_dim"], num_classes,
                               dtype=self.encoder.dtype, rngs=rngs)

  def __call__(self, batch):
    x1, x2 = (self.encoder(batch[name], token_mask(batch[name], self.padding_id))
              for name in ("inputs1", "inputs2"))
    return self.head(jnp.concatenate([x1, x2, x1 * x2, x1 - x2], -1))


class LanguageModel(nnx.Module):
  """Causal byte-level LM: batch {"inputs": [B, L] int32} -> next-byte logits [B, L, vocab_size].

  The `Encoder` with causal attention and no pooling, then a linear map to the vocabulary. A
  segment has no padding token: the loss weights mark padded targets, and causal attention keeps
  the trailing padding of a last segment from reaching real positions, so attention gets no mask.
  Positions repeat with period max_length (the segment length): the byte at stream position t gets
  position t mod max_length, so segments read one after another (stateful training and evaluation,
  generation) each restart the positions, and the attention state carried across them (RFA's S, z)
  is the only context beyond a segment; one causal pass over a whole stream gives the same outputs.
  Batches of packed documents (`segment_ids`, `positions`; `lra.data.lm`) attend within each
  document, with positions counted from its start.

  Decoding: `init_cache(batch_size, length)` creates every layer's decode cache (RFA: its
  constant-size state; softmax: keys and values of `length` positions) and switches the attention to
  decode=True, where each call continues the cache over its tokens; `offset` is then the position of
  the call's first token in the stream.
  """

  def __init__(self, *, vocab_size, rngs, **encoder_args):
    self.attention_name = encoder_args["attention_name"]
    self.encoder = Encoder(vocab_size=vocab_size, pooling="none", causal=True, rngs=rngs,
                           **encoder_args)
    self.head = nnx.Linear(encoder_args["emb_dim"], vocab_size, dtype=self.encoder.dtype,
                           param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, batch, offset=0):
    packed = {key: batch[key] for key in ("segment_ids", "positions") if key in batch}
    return self.head(self.encoder(batch["inputs"], None, offset, **packed))

  def decoders(self) -> list[nnx.Module]:
    """The module holding the decode cache of each block's attention (the first submodule with an
    `init_cache` method); NotImplementedError for a mechanism that has none."""
    found = []
    for block in self.encoder.blocks:
      modules = [module for _, module in nnx.iter_modules(block.attention)
                 if callable(getattr(module, "init_cache", None))]
      if not modules:
        raise NotImplementedError(
            f"attention {self.attention_name!r} has no decoding path (a cache that continues over "
            "new tokens); the mechanisms that decode are softmax (a key/value cache) and "
            "rfa_gaussian / rfa_arccos (a constant-size state)")
      found.append(modules[0])
    return found

  def init_cache(self, batch_size: int, length: int):
    """Creates zero decode caches for `batch_size` streams of up to `length` tokens; sets
    decode=True."""
    emb_dim = self.head.in_features
    for module in self.decoders():
      module.init_cache((batch_size, length, emb_dim), dtype=self.encoder.dtype)
      module.decode = True


def token_mask(tokens, padding_id):
  """[B, L] bool, False where tokens == padding_id; all True when the task has no padding token."""
  if padding_id is None:
    return jnp.ones(tokens.shape, bool)
  return tokens != padding_id
