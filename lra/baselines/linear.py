"""Linear attention (Katharopoulos et al., 2020): softmax(q . k) replaced by phi(q) . phi(k) with
phi(x) = elu(x) + 1, so attention is computed through sum_j phi(k_j) v_j^T: O(L d^2) time and
O(d^2) state per head instead of O(L^2 d). Padded keys are dropped from the sums (LRA kept them).
causal=True: prefix sums (chunked, see `feature_attention`)."""

import jax

from lra.baselines.common import Attention, feature_attention


def elu_features(x):
  """phi(x) = elu(x) + 1 > 0, elementwise: [..., d] -> [..., d] in float32."""
  return jax.nn.elu(x.astype("float32")) + 1


class LinearAttention(Attention):
  """out_i = phi(q_i)^T S / phi(q_i) . z over unpadded keys (j <= i when causal)."""

  def attend(self, q, k, v, mask):
    return feature_attention(elu_features(q), elu_features(k), v, mask, self.causal)
