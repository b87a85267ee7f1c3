"""RFA in the attention registry: `rfa_gaussian` and `rfa_arccos` wrap `rfa_jax.RFAAttention`.

`rfa_gaussian` and `rfa_arccos` differ in the default of `feature_map` only. Options (config
`model.attention_options`): num_features (64), feature_map ("gaussian": the paper's sin/cos features;
"positive": positive features of the same Gaussian kernel; "arccos"), chunk_size (the chunked causal and gated
forms; None = the library default), gated (causal: the paper's gate; otherwise bidirectional gating, a forward and a
reverse gate), redraw (True: new random features at every training step),
orthogonal (True), sigma_init (1.0), sigma_per_dim (False: one sigma per head; True: per head and
query/key dimension, as the RFA authors' code), normalizer ("floor": the denominator rule, see
`rfa_jax.normalizer`), exact_kernel (False; True computes the kernel the features estimate exactly, a
quadratic control), window (None; w adds exact softmax attention within w positions to
RFA's output, which a learned per-head rfa_scale weights), rfa_scale_init (1.0), gate_bias_init
(0.0: gates start at 1/2; b: at sigmoid(b)), inter_chunk ("scan" or "parallel": how the chunked
causal form passes its state across chunks; the same result), orthogonal_method ("gram_schmidt" or
"qr": how training redraws orthogonal projections; the same distribution). `dtype` (a common argument of the
registry) is the dtype of the projections; features, states and sums stay float32 inside `rfa_jax`.
"""

import functools

import jax.numpy as jnp
from flax import nnx

import rfa_jax


class RFASelfAttention(nnx.Module):
  """Self attention `module(x, mask, segment_ids=None)` over `RFAAttention`; x: [B, L, emb_dim],
  mask: [B, L] bool, segment_ids: [B, L] int (packed sequences) or None."""

  def __init__(self, *, emb_dim, num_heads, qkv_dim, max_length, rngs, causal=False,
               num_features=64, feature_map="gaussian", chunk_size=None, gated=False, redraw=True,
               orthogonal=True, sigma_init=1.0, sigma_per_dim=False, normalizer="floor",
               exact_kernel=False, window=None, rfa_scale_init=1.0, gate_bias_init=0.0, inter_chunk="scan",
               orthogonal_method="gram_schmidt", dtype=jnp.float32):
    del max_length  # RFA has no length-dependent parameters.
    self.attention = rfa_jax.RFAAttention(
        num_heads, emb_dim, qkv_features=qkv_dim, out_features=emb_dim, num_features=num_features,
        feature_map=feature_map, causal=causal, gated=gated, chunk_size=chunk_size, redraw=redraw,
        orthogonal=orthogonal, sigma_init=sigma_init, sigma_per_dim=sigma_per_dim,
        normalizer=normalizer,
        exact_kernel=exact_kernel, window=window, rfa_scale_init=rfa_scale_init,
        gate_bias_init=gate_bias_init, inter_chunk=inter_chunk,
        orthogonal_method=orthogonal_method, dtype=dtype,
        param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, segment_ids=None) -> jnp.ndarray:
    return self.attention(x, mask=mask, segment_ids=segment_ids)


# The registry's entries: the same module with the paper's two feature maps as defaults.
GaussianRFA = RFASelfAttention
ArccosRFA = functools.partial(RFASelfAttention, feature_map="arccos")
