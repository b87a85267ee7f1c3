"""`RFAAttention`: multi-head random feature attention as a Flax NNX module.

Constructor and call follow `nnx.MultiHeadAttention` where they apply (num_heads, in_features,
qkv_features, out_features, in_kv_features, dtype, param_dtype, initialisers, use_bias, deterministic,
decode; `module(inputs_q, inputs_k=None, inputs_v=None, *, mask=None, deterministic=None, decode=None)`,
`init_cache(input_shape, dtype)`), so that it can replace it in an existing model.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import initializers

from rfa_jax.attention import decode_step, prefill, rfa, rfa_cross
from rfa_jax.causal import init_decode_state
from rfa_jax.random_features import FEATURE_MAPS, feature_dim, random_projection


class RandomProjection(nnx.Variable):
  """Non-trainable random projection [heads, num_features, head_dim]; saved in checkpoints."""


class RFAAttention(nnx.Module):
  """Multi-head RFA: self or cross attention, causal, optionally gated, with a decode cache.

  Per head h, with q, k, v = linear maps of the inputs (head_dim each):
    out = RFA(q, k, v; W_h, sigma_h)  (see `rfa_jax.rfa`), then a linear map to out_features.
  - sigma: learned per head (nnx.Param, initialised to `sigma_init`).
  - gated (causal only): g_t = sigmoid(W_g x_t + b_g), one scalar per head and step, giving
    S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T.
  - projection: the fixed `RandomProjection` used for evaluation and decoding. With `redraw=True` and
    `deterministic=False` (e.g. after `model.train()`), every call draws a fresh projection from the
    'projection' rng stream (falling back to 'default'), as the paper does at each training step.
  - mask: key padding mask [batch, kv_length] bool (False = padding), or the broadcastable
    [batch, 1, 1, kv_length] form; general attention masks do not apply to RFA (use `causal=True`).
  """

  def __init__(self, num_heads: int, in_features: int, qkv_features: int | None = None,
               out_features: int | None = None, in_kv_features: int | None = None, *,
               num_features: int = 64, feature_map: str = "gaussian", causal: bool = False,
               gated: bool = False, chunk_size: int | None = None, redraw: bool = True,
               orthogonal: bool = True, sigma_init: float = 1.0, dtype: Any = None,
               param_dtype: Any = jnp.float32,
               kernel_init=initializers.lecun_normal(), out_kernel_init=None,
               bias_init=initializers.zeros_init(), out_bias_init=None, use_bias: bool = True,
               deterministic: bool | None = None, decode: bool | None = None, rngs: nnx.Rngs):
    qkv_features = qkv_features or in_features
    if qkv_features % num_heads:
      raise ValueError(f"qkv_features={qkv_features} must be divisible by num_heads={num_heads}")
    if feature_map not in FEATURE_MAPS:
      raise ValueError(f"feature_map={feature_map!r}; expected one of {FEATURE_MAPS}")
    if gated and not causal:
      raise ValueError("gated=True needs causal=True: the gate is a recency bias of causal attention")
    self.num_heads, self.in_features = num_heads, in_features
    self.qkv_features = qkv_features
    self.out_features = out_features or in_features
    self.in_kv_features = in_kv_features or in_features
    self.head_dim = qkv_features // num_heads
    self.num_features, self.feature_map = num_features, feature_map
    self.causal, self.gated, self.chunk_size = causal, gated, chunk_size
    self.redraw, self.orthogonal = redraw, orthogonal
    self.dtype, self.deterministic, self.decode = dtype, deterministic, decode

    def dense(features_in, **kwargs):
      return nnx.LinearGeneral(features_in, (num_heads, self.head_dim), dtype=dtype,
                               param_dtype=param_dtype, kernel_init=kernel_init,
                               bias_init=bias_init, use_bias=use_bias, rngs=rngs, **kwargs)

    self.query = dense(in_features)
    self.key = dense(self.in_kv_features)
    self.value = dense(self.in_kv_features)
    self.out = nnx.LinearGeneral((num_heads, self.head_dim), self.out_features, axis=(-2, -1),
                                 dtype=dtype, param_dtype=param_dtype,
                                 kernel_init=out_kernel_init or kernel_init,
                                 bias_init=out_bias_init or bias_init, use_bias=use_bias, rngs=rngs)
    self.gate = (nnx.Linear(self.in_kv_features, num_heads, dtype=dtype, param_dtype=param_dtype,
                            rngs=rngs) if gated else None)
    self.sigma = nnx.Param(jnp.full((num_heads,), sigma_init, param_dtype))
    self.rngs = rngs["projection"].fork()
    self.projection = RandomProjection(self._draw_projection(self.rngs()))

  def _draw_projection(self, key):
    return random_projection(key, self.num_heads, self.num_features, self.head_dim,
                             orthogonal=self.orthogonal)

  def init_cache(self, input_shape, dtype=jnp.float32):
    """Creates the constant-size decode state for inputs [batch, ..., features]: S, z in float32
    (`dtype` is accepted for `nnx.MultiHeadAttention` compatibility; the state stays float32)."""
    del dtype
    state = init_decode_state(input_shape[0], self.num_heads,
                              feature_dim(self.num_features, self.feature_map), self.head_dim)
    self.cached_s, self.cached_z = nnx.Cache(state.s), nnx.Cache(state.z)

  def __call__(self, inputs_q, inputs_k=None, inputs_v=None, *, mask=None,
               deterministic: bool | None = None, decode: bool | None = None):
    """inputs_q: [batch, q_length, in_features]; inputs_k/v: [batch, kv_length, in_kv_features]
    (default: inputs_q, self attention). Returns [batch, q_length, out_features]."""
    inputs_k = inputs_q if inputs_k is None else inputs_k
    inputs_v = inputs_k if inputs_v is None else inputs_v
    key_mask = _key_padding_mask(mask, inputs_k.shape[:2])
    q, k, v = self.query(inputs_q), self.key(inputs_k), self.value(inputs_v)
    gate = jax.nn.sigmoid(self.gate(inputs_k).astype(jnp.float32)) if self.gated else None
    options = dict(kind=self.feature_map, sigma=self.sigma[...].astype(jnp.float32))
    if _first(decode, self.decode, False):
      out = self._decode(q, k, v, gate, key_mask, options)
    else:
      projection = self._projection(_first(deterministic, self.deterministic, True))
      if self.causal:
        out = rfa(q, k, v, projection, causal=True, key_mask=key_mask, gate=gate,
                  chunk_size=self.chunk_size, **options)
      else:
        out = rfa_cross(q, k, v, projection, key_mask=key_mask, **options)
    return self.out(out)

  def _projection(self, deterministic):
    if self.redraw and not deterministic:
      return self._draw_projection(self.rngs())
    return self.projection[...]

  def _decode(self, q, k, v, gate, key_mask, options):
    """Continues the cached state over the given tokens (one token: `decode_step`)."""
    if not self.causal:
      raise ValueError("decode=True needs causal=True")
    if not hasattr(self, "cached_s"):
      raise ValueError("decode=True needs a cache: call init_cache(input_shape) first")
    state = init_decode_state(*self.cached_s.shape[:3], self.head_dim)._replace(
        s=self.cached_s[...], z=self.cached_z[...])
    projection = self.projection[...]
    if q.shape[1] == 1 and key_mask is None:
      state, out = decode_step(state, q[:, 0], k[:, 0], v[:, 0], projection,
                               gate_t=None if gate is None else gate[:, 0], **options)
      out = out[:, None]
    else:
      state, out = prefill(state, q, k, v, projection, key_mask=key_mask, gate=gate,
                           chunk_size=self.chunk_size, **options)
    self.cached_s[...], self.cached_z[...] = state.s, state.z
    return out


def _first(*values):
  return next(value for value in values if value is not None)


def _key_padding_mask(mask, kv_shape):
  """[batch, kv_length] or [batch, 1, 1, kv_length] bool -> [batch, kv_length] (or None)."""
  if mask is None:
    return None
  batch, kv_length = kv_shape
  if mask.shape == (batch, kv_length):
    return mask.astype(bool)
  if mask.ndim == 4 and mask.shape[1:3] == (1, 1) and mask.shape[-1] == kv_length:
    return jnp.broadcast_to(mask[:, 0, 0], (batch, kv_length)).astype(bool)
  raise ValueError(f"mask has shape {mask.shape}; RFA takes a key padding mask [batch={batch}, "
                   f"kv_length={kv_length}] or [batch, 1, 1, kv_length] (False = padding). For causal "
                   "masking construct RFAAttention(causal=True)")
