"""What every baseline shares: the projections and the call, masked softmax over sets of keys,
blocking helpers, global tokens, redrawable random state and option checks.

Shapes: x: [B, L, emb_dim], mask: [B, L] bool (False = padding); per head q, k, v: [B, L, H, d] with
d = qkv_dim / H. A mechanism subclasses `Attention` and writes only `attend(q, k, v, mask)`.
Mixed precision: parameters are float32; the projections compute in `dtype` (float32 or bfloat16), so
q, k, v arrive in it. Logits, softmax weights, feature maps and feature sums are float32; weighted sums
of values take the weights in v's dtype with float32 accumulation; outputs have v's dtype.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

MASKED_LOGIT = float(jnp.finfo(jnp.float32).min)


class RandomDraw(nnx.Variable):
  """Non-trainable random state (projections, rotations, scores): fixed for evaluation, saved in
  checkpoints, not updated by the optimiser."""


class Attention(nnx.Module):
  """Multi-head attention frame: q, k, v = per-head linear maps of x (emb_dim -> H x d), then
  `attend(q, k, v, mask) -> [B, L, H, d]`, then a linear map back to emb_dim.

  Subclasses may narrow `projections` (the maps they use; absent ones reach `attend` as None) and
  set `causal_unsupported` to the reason they have no causal form (construction with causal=True
  then raises NotImplementedError).
  """

  projections = ("query", "key", "value")
  causal_unsupported: str | None = None

  def __init__(self, *, emb_dim: int, num_heads: int, qkv_dim: int, max_length: int,
               rngs: nnx.Rngs, causal: bool = False, dtype=jnp.float32):
    if causal and self.causal_unsupported:
      raise NotImplementedError(
          f"{type(self).__name__} has no causal variant: {self.causal_unsupported}")
    self.num_heads, self.head_dim = num_heads, qkv_dim // num_heads
    self.max_length, self.causal, self.dtype = max_length, causal, dtype
    for name in self.projections:
      setattr(self, name, nnx.LinearGeneral(emb_dim, (num_heads, self.head_dim), dtype=dtype,
                                            param_dtype=jnp.float32, rngs=rngs))
    self.out = nnx.LinearGeneral((num_heads, self.head_dim), emb_dim, axis=(-2, -1), dtype=dtype,
                                 param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, segment_ids=None) -> jax.Array:
    """x: [B, L, emb_dim], mask: [B, L] bool (False = padding) or None (no padding), segment_ids:
    [B, L] int (packed sequences; mechanisms with `attend_within` only) -> [B, L, emb_dim]."""
    if segment_ids is not None and not hasattr(self, "attend_within"):
      raise ValueError(f"{type(self).__name__} cannot keep attention within packed sequences "
                       "(segment_ids); use softmax or RFA, or unpacked batches")
    q, k, v = (getattr(self, name)(x) if name in self.projections else None
               for name in ("query", "key", "value"))
    mask = jnp.ones(x.shape[:2], bool) if mask is None else mask.astype(bool)
    if segment_ids is not None:
      return self.out(self.attend_within(q, k, v, mask, segment_ids))
    return self.out(self.attend(q, k, v, mask))

  def attend(self, q, k, v, mask):
    """The mechanism: q, k, v: [B, L, H, d] (or None), mask: [B, L] -> [B, L, H, d]."""
    raise NotImplementedError

  def check_length(self, length: int):
    """Mechanisms with parameters sized by max_length accept at most max_length tokens."""
    if length > self.max_length:
      raise ValueError(f"{type(self).__name__} was built for max_length={self.max_length}; "
                       f"got {length} tokens")

  def init_random(self, rngs: nnx.Rngs, redraw: bool):
    """Keeps a fixed draw `self.draw(key)` for evaluation, and a fork of the 'projection' rng stream
    (falling back to 'default') for fresh draws at every call in training when `redraw`."""
    self.redraw, self.deterministic = redraw, True
    self.random_stream = rngs["projection"].fork()
    self.random_state = RandomDraw(self.draw(self.random_stream()))

  def random(self) -> jax.Array:
    """The fixed draw, or a fresh one when `redraw` and deterministic=False (`model.train()`)."""
    if self.redraw and not self.deterministic:
      return self.draw(self.random_stream())
    return self.random_state[...]


# Option checks: a bad value raises ValueError naming the option; unknown options raise TypeError.

def integer(name: str, value, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name}={value!r}; expected an integer >= {minimum}")
  return int(value)


def positive_number(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ValueError(f"{name}={value!r}; expected a positive number")
  return float(value)


def one_of(name: str, value, choices: tuple) -> str:
  if value not in choices:
    raise ValueError(f"{name}={value!r}; expected one of {choices}")
  return value


# Dot-product attention over explicit sets of keys.

def logits(q, k):
  """q: [..., Lq, H, d], k: [..., Lk, H, d] (leading dims broadcast) -> [..., H, Lq, Lk] float32,
  q . k / sqrt(d)."""
  return jnp.einsum("...qhd,...khd->...hqk", q, k,
                    preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5


def mix(weights, v):
  """weights: [..., H, Lq, Lk], v: [..., Lk, H, dv] -> sum_k weights v: [..., Lq, H, dv] float32
  (weights in v's dtype, float32 accumulation)."""
  return jnp.einsum("...hqk,...khd->...qhd", weights.astype(v.dtype), v,
                    preferred_element_type=jnp.float32)


def masked_softmax(scores, visible):
  """Softmax over the last axis restricted to `visible` (broadcastable bool); a row that sees no
  key gets zero weights."""
  visible = jnp.broadcast_to(visible, jnp.broadcast_shapes(scores.shape, jnp.shape(visible)))
  return jax.nn.softmax(jnp.where(visible, scores, MASKED_LOGIT), axis=-1) * visible


def joint_softmax(scores, visible):
  """One softmax over the union of disjoint key sets: scores[i]: [..., K_i], visible[i]
  broadcastable to it. Returns the weights per set."""
  sizes = [s.shape[-1] for s in scores]
  shape = jnp.broadcast_shapes(*(s.shape[:-1] for s in scores))
  weights = masked_softmax(
      jnp.concatenate([jnp.broadcast_to(s, shape + s.shape[-1:]) for s in scores], -1),
      jnp.concatenate([jnp.broadcast_to(m, shape + s.shape[-1:])
                       for s, m in zip(scores, visible)], -1))
  return jnp.split(weights, np.cumsum(sizes)[:-1], axis=-1)


def dot_product_attention(q, k, v, visible):
  """softmax(q k^T / sqrt(d)) v over the visible keys. q: [..., Lq, H, d], k, v: [..., Lk, H, *],
  visible broadcastable to [..., H, Lq, Lk] -> [..., Lq, H, dv]."""
  return mix(masked_softmax(logits(q, k), visible), v).astype(v.dtype)


def fused_attention(q, k, v, mask, causal: bool, implementation: str | None = None):
  """Exact softmax attention over the unpadded keys (j <= i when causal) through
  `jax.nn.dot_product_attention`. q, k, v: [B, L, H, d], mask: [B, L] bool -> [B, L, H, d].

  implementation None: cuDNN's fused flash attention where it applies (a CUDA GPU, bfloat16/float16,
  head_dim a multiple of 8 up to 128), else XLA's. "xla" | "cudnn" force one. A query that sees no
  key outputs 0. XLA takes the key mask as a boolean mask; cuDNN takes key lengths instead (its
  boolean masks are materialised [T, S] biases), so the unpadded tokens are first moved to the front
  of each row in order (`compact_attention`), which keeps every valid query's result exact for any
  mask. Outputs at padded positions are those of the reference for trailing padding.
  """
  if implementation is None:
    implementation = "cudnn" if cudnn_applies(q) else "xla"
  if implementation == "cudnn":
    try:
      return compact_attention(q, k, v, mask, causal, "cudnn")
    except (NotImplementedError, RuntimeError, ValueError) as error:  # raised while tracing
      logging.warning("cuDNN attention does not apply (%s); using XLA's", error)
  elif implementation != "xla":
    raise ValueError(f"implementation={implementation!r}; expected None, 'xla' or 'cudnn'")
  if causal:
    sees_a_key = jnp.cumsum(mask, 1) > 0  # [B, L]
  else:
    sees_a_key = jnp.broadcast_to(jnp.any(mask, 1, keepdims=True), mask.shape)
  out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], is_causal=causal,
                                     implementation="xla")
  return jnp.where(sees_a_key[:, :, None, None], out, 0).astype(v.dtype)


def compact_attention(q, k, v, mask, causal: bool, implementation: str):
  """`fused_attention` through key lengths: a stable reorder puts each row's unpadded tokens first
  (keys and values; queries too when causal, which keeps the causal order among valid tokens), then
  `key_value_seq_lengths` hides the rest, and causal outputs go back to their positions."""
  order = jnp.argsort(~mask, axis=1, stable=True)  # [B, L]: valid positions first, in order
  count = jnp.sum(mask, 1, dtype=jnp.int32)
  gather = lambda x: jnp.take_along_axis(x, order[:, :, None, None], axis=1)
  k, v = gather(k), gather(v)
  if causal:
    q = gather(q)
  out = jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                     key_value_seq_lengths=jnp.maximum(count, 1),
                                     implementation=implementation)
  if causal:
    out = jnp.take_along_axis(out, jnp.argsort(order, axis=1)[:, :, None, None], axis=1)
  return jnp.where((count > 0)[:, None, None, None], out, 0).astype(v.dtype)


def cudnn_applies(q) -> bool:
  """Whether cuDNN's flash attention takes these queries: CUDA GPU, bfloat16 or float16, head_dim
  a multiple of 8 up to 128 (the limits of jax.nn.dot_product_attention's cuDNN path)."""
  return (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
          and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128)


def key_visibility(mask, causal: bool, query_positions=None):
  """[B, 1, Lq, L] bool: query (at `query_positions`, default all L) may see key j: j is not
  padding and, when causal, j <= the query's position."""
  length = mask.shape[1]
  queries = np.arange(length) if query_positions is None else np.asarray(query_positions)
  visible = mask[:, None, None, :]
  if causal:
    visible = visible & (np.arange(length)[None, :] <= queries[:, None])
  return jnp.broadcast_to(visible, (mask.shape[0], 1, len(queries), length))


def full_rows(out, q, k, v, mask, causal: bool, rows):
  """Replaces out[:, rows] ([B, L, H, d]) by exact attention of those queries over every visible key
  (the rows of global tokens). `rows`: static positions."""
  rows = np.asarray(rows, dtype=int)
  if not rows.size:
    return out
  exact = dot_product_attention(q[:, rows], k, v, key_visibility(mask, causal, rows))
  return out.at[:, rows].set(exact.astype(out.dtype))


# Blocks: [B, L, ...] <-> [B, N, C, ...] with N = ceil(L / C).

def to_blocks(x, size: int):
  """[B, L, ...] -> [B, ceil(L / size), size, ...], zero (False) padded at the end."""
  length = x.shape[1]
  num_blocks = -(-length // size)
  x = jnp.pad(x, [(0, 0), (0, num_blocks * size - length)] + [(0, 0)] * (x.ndim - 2))
  return x.reshape(x.shape[0], num_blocks, size, *x.shape[2:])


def from_blocks(x, length: int):
  """[B, N, C, ...] -> [B, length, ...] (drops the padding of `to_blocks`)."""
  return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :length]


def neighbours(x, offsets):
  """x: [B, N, C, ...] -> [B, N, len(offsets) * C, ...]: for block n, blocks n + o (o in offsets)
  side by side; blocks outside [0, N) are zeros (False). NumPy in, NumPy out (static positions)."""
  xp = np if isinstance(x, np.ndarray) else jnp
  num_blocks = x.shape[1]

  def shifted(offset):
    pad = [(0, 0), (max(-offset, 0), max(offset, 0))] + [(0, 0)] * (x.ndim - 2)
    return xp.pad(x, pad)[:, max(offset, 0):max(offset, 0) + num_blocks]

  return xp.concatenate([shifted(o) for o in offsets], axis=2)


def block_positions(num_blocks: int, size: int) -> np.ndarray:
  """[N, C] token positions of each block."""
  return np.arange(num_blocks * size).reshape(num_blocks, size)


# Attention through positive features: out_i = sum_j A_ij v_j / sum_j A_ij, A_ij = phi_q_i.phi_k_j

CAUSAL_CHUNK = 64


def feature_attention(phi_q, phi_k, v, mask, causal: bool):
  """phi_q, phi_k: [B, L, H, F] positive features, v: [B, L, H, dv] -> [B, L, H, dv].

  Padded keys get weight 0. Non-causal: S = sum_j phi_k_j v_j^T and z = sum_j phi_k_j once,
  O(L F dv). Causal: chunks of CAUSAL_CHUNK tokens, explicit (masked) within a chunk plus the
  prefix sums of the earlier chunks' S and z, O(L (C + F) dv). The ratio is taken as it is (no
  floor, unlike RFA's sin/cos features): positive features give a positive denominator whenever a
  key is visible; a query that sees none outputs 0.
  """
  dtype, keep = v.dtype, mask[:, :, None, None]
  phi_k = jnp.where(keep, phi_k, 0)
  v = jnp.where(keep, v, 0).astype(jnp.float32)
  if not causal:
    numerator = jnp.einsum("blhf,bhfd->blhd", phi_q, jnp.einsum("blhf,blhd->bhfd", phi_k, v))
    denominator = jnp.einsum("blhf,bhf->blh", phi_q, jnp.sum(phi_k, 1))
  else:
    length = phi_q.shape[1]
    pq, pk, vc = (to_blocks(x, min(CAUSAL_CHUNK, length)) for x in (phi_q, phi_k, v))
    scores = jnp.einsum("bnihf,bnjhf->bnhij", pq, pk) * np.tri(pq.shape[2], dtype=bool)
    earlier_states = _sum_of_earlier_blocks(jnp.einsum("bnjhf,bnjhd->bnhfd", pk, vc))
    earlier_sums = _sum_of_earlier_blocks(jnp.sum(pk, 2))  # [B, N, H, F]
    numerator = (jnp.einsum("bnhij,bnjhd->bnihd", scores, vc)
                 + jnp.einsum("bnihf,bnhfd->bnihd", pq, earlier_states))
    denominator = (jnp.sum(scores, -1).swapaxes(2, 3)
                   + jnp.einsum("bnihf,bnhf->bnih", pq, earlier_sums))
    numerator, denominator = from_blocks(numerator, length), from_blocks(denominator, length)
  return (numerator / jnp.where(denominator > 0, denominator, 1.0)[..., None]).astype(dtype)


def _sum_of_earlier_blocks(x):
  """Exclusive prefix sum over axis 1: out[:, n] = sum of x[:, :n] (exactly, no subtraction)."""
  return jnp.cumsum(jnp.pad(x, [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2))[:, :-1], 1)
