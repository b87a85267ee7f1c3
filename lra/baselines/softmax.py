"""Exact multi-head dot-product attention (Vaswani et al., 2017): the baseline every mechanism is
compared with, through `jax.nn.dot_product_attention` (cuDNN's fused flash attention on a GPU where
it applies, XLA's elsewhere; see `common.fused_attention`). O(L^2 d) time; O(L^2) memory per head
with XLA, O(L) with the fused kernel."""

from lra.attention import register
from lra.baselines.common import Attention, fused_attention


@register("softmax")
class SoftmaxAttention(Attention):
  """out_i = sum_j softmax_j(q_i . k_j / sqrt(d)) v_j over unpadded keys (j <= i when causal)."""

  def attend(self, q, k, v, mask):
    return fused_attention(q, k, v, mask, self.causal)
