"""Sinkhorn attention (Tay et al., 2020): sorted block attention.

The sequence is cut into N blocks of C = block_size tokens. A sorting network (one linear map
d -> N_max shared by the heads, N_max = ceil(max_length / C), as in LRA) maps the summary of block n
(the sum of its unpadded keys) to logits R_n: [N]; `sinkhorn_iterations` rounds of row and column
normalisation of R / temperature in log space, then a row softmax, give a soft permutation P
(rows sum to 1; 0 iterations is the plain softmax sorting of LRA's default). The queries of block n
attend, in one softmax, to their own block's keys and to the sorted block sum_m P_nm K_m (values
alike). O(N^2 d + L 2 C d) time. LRA instead added two separate softmaxes.

Padding: summaries sum unpadded keys only, padded keys and values are zeroed, and a sorted key's
weight is scaled by its share of unpadded tokens, sum_m P_nm mask_m (a log added to its logit), so
padding cannot reach the output. No causal form.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra.baselines.common import (Attention, from_blocks, integer, joint_softmax, logits, mix,
                                  positive_number, to_blocks)


def sinkhorn(log_alpha, iterations: int):
  """[..., N, N] logits -> soft permutation with rows summing to 1: `iterations` rounds of row and
  column normalisation in log space, then a row softmax."""
  for _ in range(iterations):
    log_alpha = log_alpha - jax.nn.logsumexp(log_alpha, -1, keepdims=True)
    log_alpha = log_alpha - jax.nn.logsumexp(log_alpha, -2, keepdims=True)
  return jax.nn.softmax(log_alpha, -1)


class SinkhornAttention(Attention):
  """Options: block_size (50), sinkhorn_iterations (0), temperature (1.0): LRA's defaults, plain
  softmax sorting; the Sinkhorn paper's best setting is 5 iterations at temperature 0.75."""

  causal_unsupported = "sorted blocks mix keys from every position"

  def __init__(self, *, block_size: int = 50, sinkhorn_iterations: int = 0,
               temperature: float = 1.0, **common):
    super().__init__(**common)
    self.block_size = integer("block_size", block_size)
    self.sinkhorn_iterations = integer("sinkhorn_iterations", sinkhorn_iterations, minimum=0)
    self.temperature = positive_number("temperature", temperature)
    self.sort = nnx.Linear(self.head_dim, -(-self.max_length // self.block_size),
                           dtype=self.dtype, param_dtype=jnp.float32, rngs=common["rngs"])

  def attend(self, q, k, v, mask):
    length = q.shape[1]
    self.check_length(length)
    size = min(self.block_size, length)
    keep = mask[:, :, None, None]
    qb, kb, vb, mb = (to_blocks(x, size)
                      for x in (q, jnp.where(keep, k, 0), jnp.where(keep, v, 0), mask))
    num_blocks = qb.shape[1]
    sort_logits = self.sort(jnp.sum(kb, 2))[..., :num_blocks].astype(jnp.float32)  # [B, N, H, N]
    permutation = sinkhorn(jnp.moveaxis(sort_logits, 2, 1) / self.temperature,
                           self.sinkhorn_iterations)  # [B, H, N, N]
    ks, vs = (jnp.einsum("bhnm,bmchd->bnchd", permutation, x) for x in (kb, vb))
    share = jnp.einsum("bhnm,bmc->bnhc", permutation, mb.astype(jnp.float32))[:, :, :, None, :]
    sorted_scores = logits(qb, ks) + jnp.log(jnp.where(share > 0, share, 1.0))
    weights = joint_softmax([logits(qb, kb), sorted_scores],
                            [mb[:, :, None, None, :], share > 0])
    out = mix(weights[0], vb) + mix(weights[1], vs)
    return from_blocks(out, length).astype(v.dtype)
