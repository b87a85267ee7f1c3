"""`RFAAttention`: multi-head random feature attention, a drop-in for Flax 0.12's `nnx.MultiHeadAttention`.

The constructor, the call, the modes (`set_attributes`, `nnx.view`) and the decode cache follow
`nnx.MultiHeadAttention`; the class docstring lists every argument and what differs. The guide is
docs/rfa_attention.md.
"""

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import dtypes, initializers
from flax.nnx.nn.attention import dot_product_attention
from flax.nnx.nn.linear import default_kernel_init

from rfa_jax.attention import decode_step, prefill, rfa, rfa_cross
from rfa_jax.causal import INTER_CHUNK, DecodeState, init_decode_state
from rfa_jax.masks import MaskReading, check_representable, read_mask
from rfa_jax.normalizer import check_normalizer
from rfa_jax.random_features import (FEATURE_MAPS, ORTHOGONAL_METHODS, feature_dim,
                                     random_projection)
from rfa_jax.reference import kernel_attention
from rfa_jax.validation import check_window
from rfa_jax.weights import rfa_weights, weights_of

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
_STORED_STREAMS = ("projection", "dropout", "default")


class RFAAttention(nnx.Module):
  """Multi-head RFA: self or cross attention, causal, optionally gated, with a decode cache.

  Per head h, with q, k, v the linear maps of the inputs (head_dim each):
  out = RFA(q, k, v; W_h, sigma_h) (`rfa_jax.rfa`), then a linear map to out_features.

  Args (those shared with `nnx.MultiHeadAttention`, in its order, act as there unless noted):
    num_heads, in_features, qkv_features, out_features, in_kv_features: as in MHA.
    num_kv_heads: grouped key/value heads; query head h uses key/value head h // (num_heads /
      num_kv_heads).
    dtype, param_dtype: of the activations / of the parameters. Features, the state (S, z), the
      normaliser and the cache are float32 whatever `dtype`; the output has `dtype`.
    broadcast_dropout, dropout_rate: attention dropout when not deterministic. RFA has no weights
      matrix: it drops whole key/value rows from the numerator, v_j -> v_j m_j / (1 - p),
      m_j ~ Bernoulli(1 - p), and keeps the denominator (softmax attention dropout with one mask for
      all queries); E[out] is the output without dropout. broadcast_dropout=True shares m across
      batch and heads.
    deterministic: evaluation (fixed projection, no dropout) when True; `None` means evaluation
      unless dropout_rate > 0, where it is an error as in MHA.
    precision, kernel_init, out_kernel_init, bias_init, out_bias_init, use_bias, *_promote_dtype,
      *_dot_general, *_dot_general_cls, *_metadata: passed to the q/k/v/out linear layers (and the
      q/k LayerNorms) as MHA passes them; the RFA core computes in float32.
    attention_fn: anything but `nnx.dot_product_attention` raises ValueError (RFA is the attention
      function).
    decode: continue the decode cache (causal only; see `init_cache`).
    normalize_qk: MHA's per-head LayerNorms (learned scale, no bias) on q and k before RFA's own L2
      normalisation: they reweight and centre the directions the features see.
    rngs: constructor randomness (parameters; and the kept stream, below).
    keep_rngs: keep a fork of rngs' 'projection', 'dropout' or 'default' stream (the first present)
      when redraw or dropout needs one, as MHA keeps its dropout rngs; inside a jitted step its counter
      is part of the state. With False the module holds no RngState, `nnx.split(model, nnx.Param)`
      and `nnx.split(model, nnx.Param, nnx.Cache)` are exhaustive, and training calls need `rngs=`.
    num_features: random features per head (the Gaussian map has 2 * num_features coordinates).
    feature_map: "gaussian" (sin/cos features of the Gaussian kernel, i.e. softmax on normalised
      q, k), "positive" (positive features of the same kernel) or "arccos" (relu, arc-cosine kernel).
    causal: key j visible to query i only when j <= i (`is_causal=True` at call does the same).
    gated: g_t = sigmoid(W_g x_t + b_g) per head and step, S_t = g_t S_{t-1} + (1 - g_t) phi(k_t)
      v_t^T (the paper's gate, causal). Not causal: bidirectional gating, a second gate
      h_t = sigmoid(W_h x_t + b_h) (the Linear `reverse_gate`) runs the same recurrence backwards
      and each query sums both directions (`rfa_jax.rfa`'s reverse_gate); called with
      is_causal=True such a module uses g alone. Self attention only.
    gate_bias_init: the initial b_g (and b_h) (gated): 0 starts every gate at 1/2, a memory of about
      two tokens; b starts it at sigmoid(b), about 1 + e^b tokens (e.g. 3: about 21).
    chunk_size: causal form; 1 = token recurrence, None = `rfa_jax.DEFAULT_CHUNK_SIZE`.
    inter_chunk: how the chunked forms pass the state across chunks: "scan" (sequential) or
      "parallel" (cumulative sums / an associative scan); the same result (`rfa_jax.rfa`).
    redraw: draw a fresh projection W at every training call, from the call's `rngs=` (an nnx.Rngs:
      stream 'projection', else 'dropout', else 'default'; or an RngStream or key), else from the
      kept stream. Evaluation and decoding always use the fixed projection.
    orthogonal: orthogonal random projections (`rfa_jax.random_projection`).
    orthogonal_method: how training redraws orthogonal projections, "gram_schmidt" or "qr"
      (`rfa_jax.random_projection`; the same distribution). Evaluation always uses Gram-Schmidt, so
      a checkpoint evaluates the same whatever the method.
    sigma_init: initial value of the learned per-head sigma (an nnx.Param of shape [heads]).
    sigma_per_dim: learn sigma per head and query/key dimension instead ([heads, head_dim], as the
      RFA authors' code): the kernel exp(-|sigma (q^ - k^)|^2 / 2) then weighs each dimension.
    projection_seed: python int; the fixed evaluation projection W [heads, num_features, head_dim]
      is computed in the graph from it (part of the graph definition, not of the state), so a Params
      checkpoint restored into any freshly built model reproduces evaluation exactly. Give layers
      distinct seeds for independent evaluation features.
    normalizer: the denominator rule, "floor" | "clamp1" | "rms" (`rfa_jax.normalizer`).
    window: None, or w: add exact softmax attention (logits q . k / sqrt(head_dim)) over the w
      nearest positions (i - w < j <= i causal, |i - j| < w otherwise) to the RFA output, which is
      weighted by a learned per-head `rfa_scale` (an nnx.Param); the decode cache then also holds
      the previous w - 1 keys and values (constant size). Self attention only.
    rfa_scale_init: the initial `rfa_scale` (with a window): 1 sums the two terms, 0 starts from the
      window alone and lets training bring RFA in.
    exact_kernel: compute exactly the kernel attention the features estimate
      (`rfa_jax.kernel_attention`: RFA with infinitely many features; quadratic in length), as a
      control. Not with decode=True.

  Call: `module(inputs_q, inputs_k=None, inputs_v=None, *, mask=None, deterministic=None, rngs=None,
  sow_weights=False, decode=None, is_causal=False, out_sharding=None, qkv_sharding=None,
  segment_ids=None, key_segment_ids=None)`, with inputs_q: [batch, q_length, in_features] and
  inputs_k/v: [batch, kv_length, in_kv_features] (default inputs_q: self attention; cross attention
  when inputs_k is another array), returning [batch, q_length, out_features].
    mask: `[batch, kv_len]` key padding, or `[batch|1, heads|1, q_len|1, kv_len]` as
      `nnx.make_attention_mask` / `make_causal_mask` / `combine_masks` build them. RFA takes causality
      from `causal` / `is_causal`, and from the mask the key padding (key j kept when some query may
      see it) and packed sequences: block-diagonal same-segment masks as Flax's lm1b and wmt examples
      build them (the rule: `rfa_jax.masks`). A mask RFA cannot apply (other per-query or per-head
      patterns) raises ValueError when concrete; traced (inside jit), the output of each batch element
      whose mask RFA cannot apply is NaN. Rows holding one sequence run RFA's unpacked forms (under jit
      chosen by `lax.cond`). In decoding, a mask over the new tokens or MHA's
      `[batch, 1, 1, max_length]` form (columns cache_index.. are read).
    segment_ids: [batch, q_length] int (0 = padding, equal ids = one sequence), the packed sequences
      of the queries (and, in self attention, of the keys), as MaxText's decoder_segment_ids; wins
      over the mask, of which only the key padding is then read. key_segment_ids: [batch, kv_length],
      the keys' ids in cross attention (with segment_ids). Padded queries output 0.
    sow_weights: sow the implicit weights a_ij (`rfa_jax.weights.rfa_weights`, out = a v, before
      dropout) as 'attention_weights' in nnx.Intermediate; read them with
      `nnx.capture(module, nnx.Intermediate)`. Quadratic memory; not with decode=True.
    decode: one token or several (a prompt, or a training segment through which gradients flow)
      continue the cached state (S, z) with the fixed projection. A packed block (a segment mask or
      segment_ids) continues the cache with its first sequence, restarts it at every later one, and
      leaves the last sequence's state in the cache: decoding continues that sequence.
  """

  def __init__(self, num_heads: int, in_features: int, qkv_features: int | None = None,
               out_features: int | None = None, num_kv_heads: int | None = None,
               in_kv_features: int | None = None, *, dtype: Any = None,
               param_dtype: Any = jnp.float32, broadcast_dropout: bool = True,
               dropout_rate: float = 0.0, deterministic: bool | None = None, precision: Any = None,
               kernel_init=default_kernel_init, out_kernel_init=None,
               bias_init=initializers.zeros_init(), out_bias_init=None, use_bias: bool = True,
               attention_fn=dot_product_attention, decode: bool | None = None,
               normalize_qk: bool = False, qkv_promote_dtype=dtypes.promote_dtype,
               out_promote_dtype=dtypes.promote_dtype, ln_promote_dtype=dtypes.promote_dtype,
               qkv_dot_general=None, out_dot_general=None, qkv_dot_general_cls=None,
               out_dot_general_cls=None, rngs: nnx.Rngs, keep_rngs: bool = True,
               kernel_metadata: Mapping[str, Any] = _NO_METADATA,
               out_kernel_metadata: Mapping[str, Any] = _NO_METADATA,
               bias_metadata: Mapping[str, Any] = _NO_METADATA,
               out_bias_metadata: Mapping[str, Any] = _NO_METADATA,
               query_ln_scale_metadata: Mapping[str, Any] = _NO_METADATA,
               key_ln_scale_metadata: Mapping[str, Any] = _NO_METADATA,
               num_features: int = 64, feature_map: str = "gaussian", causal: bool = False,
               gated: bool = False, chunk_size: int | None = None, redraw: bool = True,
               orthogonal: bool = True, sigma_init: float = 1.0, sigma_per_dim: bool = False,
               projection_seed: int = 0,
               normalizer: str = "floor", exact_kernel: bool = False, window: int | None = None,
               rfa_scale_init: float = 1.0, gate_bias_init: float = 0.0,
               inter_chunk: str = "scan", orthogonal_method: str = "gram_schmidt"):
    if attention_fn is not dot_product_attention:
      raise ValueError(f"attention_fn={attention_fn!r} cannot be used: RFA replaces the attention "
                       "function with its linear-time kernel, which has no attention weights to hand "
                       "to another function; drop attention_fn, or keep nnx.MultiHeadAttention")
    qkv_features = in_features if qkv_features is None else qkv_features
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if qkv_features % num_heads:
      raise ValueError(f"qkv_features={qkv_features} must be divisible by num_heads={num_heads}")
    if num_heads % num_kv_heads:
      raise ValueError(f"num_heads={num_heads} must be divisible by num_kv_heads={num_kv_heads}")
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"dropout_rate={dropout_rate}; expected 0 <= dropout_rate < 1")
    if feature_map not in FEATURE_MAPS:
      raise ValueError(f"feature_map={feature_map!r}; expected one of {FEATURE_MAPS}")
    check_normalizer(normalizer)
    check_window(window)
    if inter_chunk not in INTER_CHUNK:
      raise ValueError(f"inter_chunk={inter_chunk!r}; expected one of {INTER_CHUNK}")
    if orthogonal_method not in ORTHOGONAL_METHODS:
      raise ValueError(f"orthogonal_method={orthogonal_method!r}; expected one of "
                       f"{ORTHOGONAL_METHODS}")
    if gate_bias_init != 0.0 and not gated:
      raise ValueError(f"gate_bias_init={gate_bias_init} needs gated=True")
    if not isinstance(projection_seed, (int, np.integer)):
      raise ValueError(f"projection_seed={projection_seed!r}; expected a python int (it is part of "
                       "the graph definition, not of the state)")
    self.num_heads, self.in_features, self.qkv_features = num_heads, in_features, qkv_features
    self.out_features = in_features if out_features is None else out_features
    self.in_kv_features = in_features if in_kv_features is None else in_kv_features
    self.num_kv_heads, self.head_dim = num_kv_heads, qkv_features // num_heads
    self.dtype, self.param_dtype, self.precision, self.use_bias = dtype, param_dtype, precision, use_bias
    self.broadcast_dropout, self.dropout_rate = broadcast_dropout, dropout_rate
    self.deterministic, self.decode, self.normalize_qk = deterministic, decode, normalize_qk
    self.num_features, self.feature_map = num_features, feature_map
    self.causal, self.gated, self.chunk_size = causal, gated, chunk_size
    self.redraw, self.orthogonal, self.projection_seed = redraw, orthogonal, int(projection_seed)
    self.normalizer, self.exact_kernel, self.window = normalizer, exact_kernel, window
    self.inter_chunk, self.orthogonal_method = inter_chunk, orthogonal_method

    def linear(features_in, features_out, **kwargs):
      return nnx.LinearGeneral(features_in, features_out, dtype=dtype, param_dtype=param_dtype,
                               use_bias=use_bias, precision=precision, rngs=rngs, **kwargs)

    qkv = dict(kernel_init=kernel_init, bias_init=bias_init, promote_dtype=qkv_promote_dtype,
               dot_general=qkv_dot_general, dot_general_cls=qkv_dot_general_cls,
               kernel_metadata=kernel_metadata, bias_metadata=bias_metadata)
    self.query = linear(in_features, (num_heads, self.head_dim), **qkv)
    self.key = linear(self.in_kv_features, (num_kv_heads, self.head_dim), **qkv)
    self.value = linear(self.in_kv_features, (num_kv_heads, self.head_dim), **qkv)
    if normalize_qk:
      def layer_norm(metadata):
        return nnx.LayerNorm(self.head_dim, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                             promote_dtype=ln_promote_dtype, scale_metadata=metadata, rngs=rngs)
      self.query_ln, self.key_ln = layer_norm(query_ln_scale_metadata), layer_norm(key_ln_scale_metadata)
    else:
      self.query_ln, self.key_ln = nnx.data(None), nnx.data(None)
    self.out = linear((num_heads, self.head_dim), self.out_features, axis=(-2, -1),
                      kernel_init=out_kernel_init or kernel_init,
                      bias_init=out_bias_init or bias_init, promote_dtype=out_promote_dtype,
                      dot_general=out_dot_general, dot_general_cls=out_dot_general_cls,
                      kernel_metadata=out_kernel_metadata or kernel_metadata,
                      bias_metadata=out_bias_metadata or bias_metadata)
    gate = lambda: nnx.Linear(self.in_kv_features, num_heads, dtype=dtype, param_dtype=param_dtype,
                              precision=precision, bias_init=initializers.constant(gate_bias_init),
                              rngs=rngs)
    self.gate = gate() if gated else nnx.data(None)
    self.reverse_gate = gate() if gated and not causal else nnx.data(None)
    sigma_shape = (num_heads, self.head_dim) if sigma_per_dim else (num_heads,)
    self.sigma = nnx.Param(jnp.full(sigma_shape, sigma_init, param_dtype))
    self.rfa_scale = (nnx.Param(jnp.full((num_heads,), rfa_scale_init, param_dtype))
                      if window is not None else nnx.data(None))
    self.rngs = _stored_stream(rngs) if keep_rngs and (redraw or dropout_rate > 0) else None
    self.cached_s, self.cached_z, self.cache_index = nnx.data(None), nnx.data(None), nnx.data(None)
    self.cached_window_k, self.cached_window_v = nnx.data(None), nnx.data(None)
    self.cached_window_kept = nnx.data(None)
    self.cache_length = None

  def evaluation_projection(self) -> jax.Array:
    """The fixed W [heads, num_features, head_dim] of evaluation and decoding, from projection_seed
    (computed once per configuration; a constant inside traced functions)."""
    return _evaluation_projection(self.projection_seed, self.num_heads, self.num_features,
                                  self.head_dim, self.orthogonal)

  def _draw_projection(self, key):
    return _random_projection(key, self.num_heads, self.num_features, self.head_dim,
                              orthogonal=self.orthogonal, orthogonal_method=self.orthogonal_method)

  def init_cache(self, input_shape, dtype=jnp.float32):
    """Creates the decode state for inputs (batch, max_length, features): zero S, z (float32; `dtype` is
    accepted as in MHA), with `window` the previous w - 1 keys and values, and cache_index 0."""
    del dtype
    if len(input_shape) != 3:
      raise ValueError(f"input_shape={tuple(input_shape)}; expected (batch, max_length, features)")
    state = init_decode_state(input_shape[0], self.num_heads,
                              feature_dim(self.num_features, self.feature_map), self.head_dim,
                              window=self.window, head_dim=self.head_dim)
    self.cached_s, self.cached_z = nnx.Cache(state.s), nnx.Cache(state.z)
    if self.window is not None:
      self.cached_window_k, self.cached_window_v = nnx.Cache(state.window_k), nnx.Cache(state.window_v)
      self.cached_window_kept = nnx.Cache(state.window_kept)
    self.cache_index = nnx.Cache(jnp.array(0, jnp.int32))
    self.cache_length = int(input_shape[1])

  def set_view(self, deterministic: bool | None = None, decode: bool | None = None,
               batch_size: int | tuple[int, ...] | None = None, max_length: int | None = None):
    """Class method used by ``nnx.view``.

    Args:
      deterministic: if True, evaluation mode (fixed projection, no dropout).
      decode: if True, decode mode (causal modules continue their cache).
      batch_size: the batch size of the cache (created when decode=True and there is none yet).
      max_length: the max length of the cache (see init_cache).
    """
    if deterministic is not None:
      self.deterministic = deterministic
    if decode is not None:
      self.decode = decode
    if decode and self.cached_s is None and (batch_size, max_length) != (None, None):
      if batch_size is None or max_length is None:
        raise ValueError(f"batch_size={batch_size}, max_length={max_length}: creating the cache "
                         "needs both")
      batch = batch_size if isinstance(batch_size, int) else tuple(batch_size)
      if not isinstance(batch, int):
        if len(batch) != 1:
          raise ValueError(f"batch_size={batch_size}; RFAAttention takes one batch dimension")
        batch = batch[0]
      self.init_cache((batch, max_length, self.in_features))

  def __call__(self, inputs_q, inputs_k=None, inputs_v=None, *, mask=None,
               deterministic: bool | None = None, rngs=None, sow_weights: bool = False,
               decode: bool | None = None, is_causal: bool = False, out_sharding=None,
               qkv_sharding=None, segment_ids=None, key_segment_ids=None):
    """inputs_q: [batch, q_length, in_features]; inputs_k/v: [batch, kv_length, in_kv_features]
    (default: inputs_q, self attention). Returns [batch, q_length, out_features]."""
    cross = inputs_k is not None and inputs_k is not inputs_q
    if inputs_k is None:
      if inputs_v is not None:
        raise ValueError("inputs_k is None but inputs_v is not: pass the keys as inputs_k (inputs_v "
                         "defaults to inputs_k)")
      inputs_k = inputs_q
    inputs_v = inputs_k if inputs_v is None else inputs_v
    if np.ndim(inputs_q) != 3 or inputs_q.shape[-1] != self.in_features:
      raise ValueError(f"inputs_q has shape {np.shape(inputs_q)}; expected [batch, q_length, "
                       f"in_features={self.in_features}]")
    decode = _first(decode, self.decode, False)
    causal = self.causal or bool(is_causal)
    if causal and inputs_k.shape[1] != inputs_q.shape[1]:
      raise ValueError(f"causal attention needs inputs_k of the length of inputs_q "
                       f"({inputs_q.shape[1]}), got {inputs_k.shape[1]}; cross attention is not causal")
    if decode and not causal:
      raise ValueError("decode=True needs causal=True (a non-causal module has no decode cache); "
                       "call cross attention with decode=False")
    if decode and self.exact_kernel:
      raise ValueError("exact_kernel=True has no decode state (it attends to every key exactly); "
                       "decode with exact_kernel=False")
    if decode and sow_weights:
      raise ValueError("sow_weights=True is not available with decode=True: the cached keys are folded "
                       "into the state and have no weights left")
    cross = cross and not causal
    training = not self._is_deterministic(deterministic)

    q = self.query(inputs_q, out_sharding=qkv_sharding)
    k = self.key(inputs_k, out_sharding=qkv_sharding)
    v = self.value(inputs_v, out_sharding=qkv_sharding)
    if self.normalize_qk:
      q, k = self.query_ln(q), self.key_ln(k)
    k, v = self._repeat_kv_heads(k), self._repeat_kv_heads(v)
    gates = self._gates(inputs_k, causal)
    reading = self._read_mask(mask, q.shape, k.shape[1], decode, causal, cross,
                              explicit=segment_ids is not None or key_segment_ids is not None)
    if segment_ids is not None or key_segment_ids is not None:
      reading = _explicit_segments(reading, segment_ids, key_segment_ids, q.shape, k.shape, cross)
    key_mask = reading.key_mask
    if training and self.dropout_rate > 0:
      v = self._drop_values(v, self._next_key(rngs, "dropout"))
    options = dict(feature_map=self.feature_map, sigma=self.sigma[...].astype(jnp.float32),
                   normalizer=self.normalizer)
    if self.window is not None:
      options.update(window=self.window, rfa_scale=self.rfa_scale[...].astype(jnp.float32))

    if cross and self.gated:
      raise ValueError("gated=True gates along the one sequence of self attention (both ways when not "
                       "causal); cross attention (inputs_k another array than inputs_q) has no such "
                       "order: build it with gated=False")
    if cross and self.window is not None:
      raise ValueError(f"window={self.window} is a band of self attention; cross attention "
                       "(inputs_k another array than inputs_q) has none: build it with window=None")
    segments = {} if reading.segment_ids is None else dict(segment_ids=reading.segment_ids)
    if cross and segments:
      segments["key_segment_ids"] = reading.key_segment_ids

    projection = None
    if decode:
      projection = self.evaluation_projection()
      out = self._decode(q, k, v, gates.get("gate"), key_mask, projection, options,
                         reading.segment_ids)
    else:
      if not self.exact_kernel:
        projection = (self._draw_projection(self._next_key(rngs, "projection"))
                      if training and self.redraw else self.evaluation_projection())

      def attend(segments):
        if self.exact_kernel:
          return kernel_attention(q, k, v, causal=causal, key_mask=key_mask, **gates, **segments,
                                  **options)
        if cross or k.shape[1] != q.shape[1]:
          return rfa_cross(q, k, v, projection, key_mask=key_mask, **segments, **options)
        return rfa(q, k, v, projection, causal=causal, key_mask=key_mask, **gates,
                   chunk_size=self.chunk_size, inter_chunk=self.inter_chunk, **segments, **options)

      out = _unpacked_where_possible(attend, segments, reading.packed)
    if sow_weights:
      self.sow(nnx.Intermediate, "attention_weights",
               self._weights(q, k, causal, key_mask, gates, options, projection, segments))
    if reading.representable is not None:
      out = jnp.where(reading.representable[:, None, None, None], out, jnp.nan)
    return self.out(out, out_sharding=out_sharding)

  def _gates(self, inputs, causal):
    """This call's gates, [B, L, H] each: none ungated, `gate` when causal, else also
    `reverse_gate` (bidirectional gating)."""
    if not self.gated:
      return {}
    of = lambda linear: jax.nn.sigmoid(linear(inputs).astype(jnp.float32))
    return dict(gate=of(self.gate)) if causal else dict(gate=of(self.gate),
                                                        reverse_gate=of(self.reverse_gate))

  def _weights(self, q, k, causal, key_mask, gates, options, projection, segments):
    """The implicit attention weights a [B, H, Lq, Lk] of this call (out = a v)."""
    if projection is not None:
      return rfa_weights(q, k, projection, causal=causal, key_mask=key_mask, **gates, **segments,
                         **options)
    return weights_of(lambda values: kernel_attention(q, k, values, causal=causal, key_mask=key_mask,
                                                      **gates, **segments, **options), k.shape)

  def _is_deterministic(self, deterministic):
    value = _first(deterministic, self.deterministic, None)
    if value is None and self.dropout_rate > 0:
      raise ValueError("No `deterministic` argument was provided to RFAAttention (dropout_rate > 0) "
                       "as a __call__ argument, a constructor argument, set_attributes or nnx.view")
    return True if value is None else value

  def _repeat_kv_heads(self, x):
    """[B, L, num_kv_heads, d] -> [B, L, num_heads, d]; query head h uses kv head h // group."""
    group = self.num_heads // self.num_kv_heads
    return x if group == 1 else jnp.repeat(x, group, axis=2)

  def _read_mask(self, mask, q_shape, kv_len, decode, causal, cross, explicit):
    """The mask's key padding and segments (`rfa_jax.masks`); with explicit segment ids, only its
    key padding (its pattern is not checked)."""
    if decode and mask is not None and self.cache_length is not None:
      if np.shape(mask)[-1] == self.cache_length != kv_len:  # MHA decode convention: whole cache
        mask = jax.lax.dynamic_slice_in_dim(jnp.asarray(mask), self.cache_index[...], kv_len, axis=-1)
    shapes = dict(batch=q_shape[0], num_heads=self.num_heads, q_len=q_shape[1], kv_len=kv_len)
    runs = self.gated and not cross  # bidirectional gating restarts where a new id starts
    reading = read_mask(mask, causal=causal, cross=cross, runs=runs, **shapes)
    if explicit:
      return MaskReading(reading.key_mask)
    check_representable(mask, reading.representable, causal=causal, cross=cross, runs=runs, **shapes)
    return reading

  def _drop_values(self, v, key):
    """v_j -> v_j m_j / (1 - p): whole key/value rows leave the numerator (see module docstring)."""
    batch, length, heads, _ = v.shape
    shape = (1, length, 1, 1) if self.broadcast_dropout else (batch, length, heads, 1)
    keep = jax.random.bernoulli(key, 1.0 - self.dropout_rate, shape)
    return jnp.where(keep, v / jnp.asarray(1.0 - self.dropout_rate, v.dtype), jnp.zeros_like(v))

  def _next_key(self, rngs, purpose):
    """A key for 'projection' (redraw) or 'dropout' from the call's rngs, else the module's stream."""
    source = self.rngs if rngs is None else rngs
    names = ("projection", "dropout", "default") if purpose == "projection" else ("dropout", "default")
    if isinstance(source, nnx.Rngs):
      for name in names:
        if name in source:
          return source[name]()
      raise ValueError(f"rngs has no {' / '.join(map(repr, names))} stream for the {purpose} of "
                       "RFAAttention in training")
    if isinstance(source, nnx.RngStream):
      return source()
    if isinstance(source, jax.Array):
      return jax.random.fold_in(source, 0 if purpose == "dropout" else 1)
    need = ("fresh random features (redraw=True)" if purpose == "projection"
            else f"attention dropout (dropout_rate={self.dropout_rate})")
    raise ValueError(f"RFAAttention in training (deterministic=False) needs randomness for {need}, "
                     "but has no rngs: pass rngs= at call (e.g. rngs=nnx.Rngs(dropout=key)), or build "
                     "it with keep_rngs=True and an nnx.Rngs with a 'projection', 'dropout' or "
                     "'default' stream, or set redraw=False / deterministic=True")

  def _decode(self, q, k, v, gate, key_mask, projection, options, segment_ids):
    """Continues the cached state over the given tokens (one token: `decode_step`); with segment ids
    the block's first sequence continues it and later ones restart it (`rfa_jax.prefill`)."""
    if self.cached_s is None:
      raise ValueError("decode=True needs a cache: call init_cache((batch, max_length, features)) or "
                       "nnx.view(model, decode=True, batch_size=..., max_length=...) first")
    if self.cached_s.shape[0] != q.shape[0]:
      raise ValueError(f"the cache holds batch {self.cached_s.shape[0]}, the inputs have batch "
                       f"{q.shape[0]}; call init_cache with the inputs' batch size")
    window = (None if self.window is None else
              [self.cached_window_k[...], self.cached_window_v[...], self.cached_window_kept[...]])
    state = DecodeState(self.cached_s[...], self.cached_z[...], *(window or ()))
    if q.shape[1] == 1 and key_mask is None and segment_ids is None:
      state, out = decode_step(state, q[:, 0], k[:, 0], v[:, 0], projection,
                               gate_t=None if gate is None else gate[:, 0], **options)
      out = out[:, None]
    else:
      state, out = prefill(state, q, k, v, projection, key_mask=key_mask, gate=gate,
                           chunk_size=self.chunk_size, segment_ids=segment_ids,
                           inter_chunk=self.inter_chunk, **options)
    self.cached_s[...], self.cached_z[...] = state.s, state.z
    if self.window is not None:
      self.cached_window_k[...], self.cached_window_v[...] = state.window_k, state.window_v
      self.cached_window_kept[...] = state.window_kept
    self.cache_index[...] += q.shape[1]
    return out


# One compiled program per shape (eagerly, the Gram-Schmidt steps would dispatch op by op).
_random_projection = jax.jit(random_projection, static_argnums=(1, 2, 3),
                             static_argnames=("orthogonal", "orthogonal_method"))


@functools.lru_cache(maxsize=64)
def _evaluation_projection(seed, num_heads, num_features, head_dim, orthogonal):
  with jax.ensure_compile_time_eval():
    return _random_projection(jax.random.key(seed), num_heads, num_features, head_dim,
                              orthogonal=orthogonal)


def _stored_stream(rngs: nnx.Rngs):
  """A fork of the first of the 'projection', 'dropout', 'default' streams of rngs, or None."""
  for name in _STORED_STREAMS:
    if name in rngs:
      return rngs[name].fork()
  return None


def _explicit_segments(reading, segment_ids, key_segment_ids, q_shape, k_shape, cross):
  """The reading with the call's `segment_ids=` (and `key_segment_ids=`, cross attention)."""
  if segment_ids is None:
    raise ValueError("key_segment_ids= needs segment_ids= (the queries' ids) as well")
  if cross and key_segment_ids is None:
    raise ValueError("cross attention takes segment_ids= (the queries') and key_segment_ids= (the "
                     "keys'): pass both")
  if not cross and key_segment_ids is not None:
    raise ValueError("key_segment_ids= is for cross attention; self attention takes segment_ids= "
                     "alone (the ids of its queries and keys)")
  for name, ids, shape in (("segment_ids", segment_ids, q_shape), ("key_segment_ids", key_segment_ids,
                                                                   k_shape)):
    if ids is not None and np.shape(ids) != shape[:2]:
      raise ValueError(f"{name} has shape {np.shape(ids)}; expected [batch={shape[0]}, "
                       f"length={shape[1]}] (int, 0 = padding, equal ids = one sequence)")
  return reading._replace(segment_ids=jnp.asarray(segment_ids),
                          key_segment_ids=None if key_segment_ids is None else jnp.asarray(key_segment_ids))


def _unpacked_where_possible(attend, segments, packed):
  """attend(segments), or attend({}) (RFA's unpacked forms) when the mask's segments are one sequence
  per row: decided in Python for a concrete mask, by `lax.cond` for a traced one."""
  if not segments or packed is None:
    return attend(segments)
  if not isinstance(packed, jax.core.Tracer):
    return attend(segments) if np.any(packed) else attend({})
  return jax.lax.cond(jnp.any(packed), lambda: attend(segments), lambda: attend({}))


def _first(*values):
  return next((value for value in values if value is not None), None)
