"""Exact multi-head dot-product attention (Vaswani et al., 2017): the baseline every mechanism is
compared with. O(L^2 d) time, O(L^2) memory per head."""

from lra.attention import register
from lra.baselines.common import Attention, dot_product_attention, key_visibility


@register("softmax")
class SoftmaxAttention(Attention):
  """out_i = sum_j softmax_j(q_i . k_j / sqrt(d)) v_j over unpadded keys (j <= i when causal)."""

  def attend(self, q, k, v, mask):
    return dot_product_attention(q, k, v, key_visibility(mask, self.causal))
