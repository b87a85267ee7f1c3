"""Linformer attention (Wang et al., 2020): keys and values are projected along the sequence to
`low_rank_features` (k) rows by one learned E: [max_length, k] shared by keys and values (LRA's
form), then queries attend to those k rows: O(L k d) time and memory.

Padded keys and values are zeroed before the projection, so padding cannot reach the output (LRA
projected them as they were). Shorter inputs use the first L rows of E. No causal form: every
projected row mixes all positions.
"""

import jax.numpy as jnp
from flax import nnx

from lra.baselines.common import Attention, dot_product_attention, integer


class LinformerAttention(Attention):
  """Options: low_rank_features (16, LRA's default)."""

  causal_unsupported = "the projection along the sequence mixes future positions into every row"

  def __init__(self, *, low_rank_features: int = 16, **common):
    super().__init__(**common)
    self.low_rank_features = integer("low_rank_features", low_rank_features)
    init = nnx.initializers.lecun_normal()  # fan-in max_length, as LRA's kernel
    self.projection = nnx.Param(
        init(common["rngs"].params(), (self.max_length, self.low_rank_features)))

  def attend(self, q, k, v, mask):
    length = q.shape[1]
    self.check_length(length)
    projection = self.projection[...][:length].astype(k.dtype)
    keep = mask[:, :, None, None]
    k, v = (jnp.einsum("blhd,lr->brhd", jnp.where(keep, x, 0), projection) for x in (k, v))
    return dot_product_attention(q, k, v, True)
