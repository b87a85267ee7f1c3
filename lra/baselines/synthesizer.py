"""Synthesizer attention (Tay et al., 2021): attention weights synthesised without query-key dot
products.

- variant="random": a learned logit matrix R_h: [max_length, max_length] per head, independent of
  the input (LRA's initialisation: lecun normal).
- variant="dense": the logits of token i over key positions are W2_h relu(q_i) + b2_h, where the
  per-head query map plays the paper's first layer W1 and W2_h: [d, max_length].

Logits over padded keys (and, when causal, future keys) are masked before the softmax (LRA did not
mask them); the first L rows and columns serve inputs of L tokens. O(L^2 d) time: synthesis
removes the dot products, not the L x L weights.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra.baselines.common import Attention, key_visibility, masked_softmax, mix, one_of


class SynthesizerAttention(Attention):
  """Options: variant ("random" | "dense", default "random")."""

  def __init__(self, *, variant: str = "random", **common):
    self.variant = one_of("variant", variant, ("random", "dense"))
    self.projections = ("value",) if variant == "random" else ("query", "value")
    super().__init__(**common)
    key, length = common["rngs"].params(), self.max_length
    init = nnx.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    if variant == "random":
      self.logits = nnx.Param(init(key, (self.num_heads, length, length)))
    else:
      self.kernel = nnx.Param(init(key, (self.num_heads, self.head_dim, length)))
      self.bias = nnx.Param(jnp.zeros((self.num_heads, length)))

  def attend(self, q, k, v, mask):
    length = v.shape[1]
    self.check_length(length)
    if self.variant == "random":
      scores = self.logits[...][None, :, :length, :length]  # [1, H, L, L]
    else:
      scores = (jnp.einsum("blhd,hdm->bhlm", jax.nn.relu(q),
                           self.kernel[...][..., :length].astype(q.dtype),
                           preferred_element_type=jnp.float32)
                + self.bias[...][None, :, None, :length])
    weights = masked_softmax(scores.astype(jnp.float32), key_visibility(mask, self.causal))
    return mix(weights, v).astype(v.dtype)
