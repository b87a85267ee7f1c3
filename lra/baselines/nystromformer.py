"""Nystromformer (Xiong et al., 2021): softmax attention through m landmarks.

Landmarks q~, k~ are the means of the unpadded queries and keys over m contiguous segments, and
    out = F A^+ (B V),  F = softmax(Q K~^T / sqrt(d)) [L, m],
    A = softmax(Q~ K~^T / sqrt(d)) [m, m],  B = softmax(Q~ K^T / sqrt(d)) [m, L] (unpadded keys),
with A^+ from `pinv_iterations` steps of the iterative pseudo-inverse of the paper (Razavi et al.),
started from A^T / (max column sum * max row sum) of each matrix. O(L m d + m^3) time.

Padding: a segment with no unpadded token gives an empty landmark; F and B ignore it and A holds it
as an identity row, so it adds nothing. With one landmark per token it is exact softmax attention
(up to the pseudo-inverse iterations). The depthwise convolution of V that the paper adds on LRA
is not part of this mechanism. No causal form.
"""

import jax.numpy as jnp

from lra.baselines.common import Attention, integer, logits, masked_softmax, mix, to_blocks


def iterative_pinv(a, iterations: int):
  """Pseudo-inverse of a: [..., m, m] by Z <- Z (13 I - AZ (15 I - AZ (7 I - AZ))) / 4."""
  identity = jnp.eye(a.shape[-1], dtype=a.dtype)
  scale = (jnp.max(jnp.sum(jnp.abs(a), -2), -1) * jnp.max(jnp.sum(jnp.abs(a), -1), -1))
  z = jnp.swapaxes(a, -1, -2) / scale[..., None, None]
  for _ in range(iterations):
    az = a @ z
    z = 0.25 * z @ (13 * identity - az @ (15 * identity - az @ (7 * identity - az)))
  return z


class NystromAttention(Attention):
  """Options: num_landmarks (64), pinv_iterations (6)."""

  causal_unsupported = "landmarks average over every position"

  def __init__(self, *, num_landmarks: int = 64, pinv_iterations: int = 6, **common):
    super().__init__(**common)
    self.num_landmarks = integer("num_landmarks", num_landmarks)
    self.pinv_iterations = integer("pinv_iterations", pinv_iterations)

  def attend(self, q, k, v, mask):
    length = q.shape[1]
    segment = -(-length // min(self.num_landmarks, length))
    weight = to_blocks(mask.astype(jnp.float32), segment)  # [B, M, S]
    count = jnp.sum(weight, 2)
    present = count > 0  # [B, M]

    def landmarks(x):  # means over the unpadded tokens of each segment: [B, M, H, d]
      x = to_blocks(jnp.where(mask[..., None, None], x, 0), segment)
      return jnp.einsum("bms,bmshd->bmhd", weight, x) / jnp.maximum(count, 1)[..., None, None]

    q_landmarks, k_landmarks = landmarks(q), landmarks(k)
    to_landmarks = present[:, None, None, :]
    f = masked_softmax(logits(q, k_landmarks), to_landmarks)  # [B, H, L, M]
    a = masked_softmax(logits(q_landmarks, k_landmarks), to_landmarks)  # [B, H, M, M]
    a = jnp.where(present[:, None, :, None], a, jnp.eye(a.shape[-1], dtype=a.dtype))
    b = masked_softmax(logits(q_landmarks, k), mask[:, None, None, :])  # [B, H, M, L]
    summary = jnp.einsum("bhlm,bmhd->blhd", iterative_pinv(a, self.pinv_iterations), mix(b, v))
    return mix(f, summary).astype(v.dtype)
