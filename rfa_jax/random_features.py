"""Random projections and the random feature maps of RFA.

Shapes: `x: [..., heads, head_dim]`, `projection: [heads, num_features, head_dim]`.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

FEATURE_MAPS = ("gaussian", "arccos", "positive")
ORTHOGONAL_METHODS = ("gram_schmidt", "qr")

# pi/2 = _PIO2_HI + _PIO2_LO, _PIO2_HI with 8 significant bits so n * _PIO2_HI is exact for |n| < 2^16.
_PIO2_HI = np.float32(1.5703125)
_PIO2_LO = np.float32(math.pi / 2 - 1.5703125)
# Cephes sinf/cosf minimax coefficients on [-pi/4, pi/4].
_SIN = tuple(np.float32(c) for c in (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4))
_COS = tuple(np.float32(c) for c in (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5))


def random_projection(key, num_heads: int, num_features: int, head_dim: int, *,
                      orthogonal: bool = True, dtype=jnp.float32,
                      orthogonal_method: str = "gram_schmidt") -> jax.Array:
  """Draws `W: [num_heads, num_features, head_dim]` whose rows are marginally N(0, I).

  `orthogonal=False`: iid Gaussian rows. `orthogonal=True` (Yu et al., 2016): rows come in blocks of
  `head_dim` mutually orthogonal rows, the last block truncated; a block is a Haar-distributed orthogonal
  matrix (QR of a Gaussian matrix with the signs of R's diagonal folded into Q) whose rows are rescaled by
  independent chi(head_dim) norms, so each row is exactly N(0, I) while rows of a block are orthogonal.
  `orthogonal_method`: how Q is computed, "gram_schmidt" (matrix products in a `lax.scan` of
  head_dim steps) or "qr" (`jnp.linalg.qr`, one batched factorisation); the same distribution, and
  the same W up to float rounding.
  """
  if orthogonal_method not in ORTHOGONAL_METHODS:
    raise ValueError(f"orthogonal_method={orthogonal_method!r}; expected one of {ORTHOGONAL_METHODS}")
  if not orthogonal:
    return jax.random.normal(key, (num_heads, num_features, head_dim), jnp.float32).astype(dtype)
  num_blocks = -(-num_features // head_dim)
  block_key, norm_key = jax.random.split(key)
  gaussian = jax.random.normal(block_key, (num_heads, num_blocks, head_dim, head_dim), jnp.float32)
  orthonormal = _orthonormal_columns if orthogonal_method == "gram_schmidt" else _householder_q
  directions = jnp.swapaxes(orthonormal(gaussian), -1, -2).reshape(num_heads, num_blocks * head_dim, head_dim)
  directions = directions[:, :num_features]
  norms = jnp.linalg.norm(
      jax.random.normal(norm_key, (num_heads, num_features, head_dim), jnp.float32), axis=-1)
  return (directions * norms[..., None]).astype(dtype)


def _orthonormal_columns(a: jax.Array) -> jax.Array:
  """Q of a = QR with R's diagonal positive, for square a [..., n, n]: Gram-Schmidt with each
  column orthogonalised twice against the previous ones (float32-accurate). Of a Gaussian matrix
  this Q is Haar-distributed. Matrix products only: LAPACK's QR inside a jitted training step with
  a backward pass was seen to hang XLA CPU (jaxlib 0.10.2)."""

  def add_column(q, j):
    column = a[..., :, j]
    for _ in range(2):
      column = column - jnp.einsum("...ik,...k->...i", q, jnp.einsum("...ik,...i->...k", q, column))
    column = column / jnp.linalg.norm(column, axis=-1, keepdims=True)
    return q.at[..., :, j].set(column), None

  q, _ = jax.lax.scan(add_column, jnp.zeros_like(a), jnp.arange(a.shape[-1]))
  return q


def _householder_q(a: jax.Array) -> jax.Array:
  """Q of a = QR with R's diagonal positive, for square a [..., n, n], by `jnp.linalg.qr` (the signs of
  R's diagonal folded into Q). The draw needs no gradient, so none flows through the factorisation."""
  q, r = jnp.linalg.qr(jax.lax.stop_gradient(a))
  signs = jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))
  return q * jnp.where(signs == 0, 1.0, signs)[..., None, :]


def _sin_quadrants(x: jax.Array, shift) -> jax.Array:
  """sin(x + shift pi/2) of float32 x for integer `shift` (broadcast to x), within 1e-7 absolute
  for |x| <= 200.

  XLA CPU's sin and cos cost ~8 ns per element each; this reduces x = n pi/2 + r, |r| <= pi/4, and
  picks +-sin r or +-cos r (degree-7/8 polynomials in r) by the quadrant (n + shift) mod 4, so a
  shift of 1 gives cos x exactly as sin x is given.
  """
  n = jnp.round(x * np.float32(2 / math.pi))
  r = (x - n * _PIO2_HI) - n * _PIO2_LO
  r2 = r * r
  sin_r = r + r * r2 * (_SIN[0] + r2 * (_SIN[1] + r2 * _SIN[2]))
  cos_r = 1 - 0.5 * r2 + r2 * r2 * (_COS[0] + r2 * (_COS[1] + r2 * _COS[2]))
  quadrant = n.astype(jnp.int32) + shift
  odd, flip = (quadrant & 1) == 1, (quadrant & 2) == 2  # + pi/2: sin r -> cos r; + pi: negate
  value = jnp.where(odd, cos_r, sin_r)
  return jnp.where(flip, -value, value)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sin_cos(wx: jax.Array, num_features: int) -> jax.Array:
  """[sin, cos] features from wx: [..., 2 num_features] that holds the projections Wx twice: sin of
  the first num_features columns, cos (= sin shifted by pi/2) of the rest, in one elementwise pass
  that writes the feature array in place (no concatenation); d/dx = [cos, -sin]."""
  return _sin_quadrants(wx, _cos_columns(wx.shape, num_features))


@_sin_cos.defjvp
def _sin_cos_jvp(num_features, primals, tangents):
  (wx,), (dwx,) = primals, tangents
  shift = _cos_columns(wx.shape, num_features)
  return _sin_quadrants(wx, shift), _sin_quadrants(wx, shift + 1) * dwx


@jax.custom_jvp
def _sin_then_cos(wx: jax.Array) -> jax.Array:
  """[sin wx, cos wx]: [..., F] -> [..., 2F], two elementwise passes and a concatenation: cheaper
  than `_sin_cos` on [W; W] for small inputs (one token: decoding); d/dx = [cos, -sin]."""
  return jnp.concatenate([_sin_quadrants(wx, 0), _sin_quadrants(wx, 1)], axis=-1)


@_sin_then_cos.defjvp
def _sin_then_cos_jvp(primals, tangents):
  (wx,), (dwx,) = primals, tangents
  return _sin_then_cos(wx), jnp.concatenate([_sin_quadrants(wx, 1) * dwx,
                                             _sin_quadrants(wx, 2) * dwx], axis=-1)


def _cos_columns(shape, num_features):
  """int32 [..., 2 num_features] (broadcastable to `shape`): 0 on the sin columns, 1 on the cos ones."""
  return (jnp.arange(shape[-1], dtype=jnp.int32) >= num_features).astype(jnp.int32)


def feature_map(x: jax.Array, projection: jax.Array, kind: str = "gaussian") -> jax.Array:
  """Random feature map phi with E[phi(x) . phi(y)] = k(x, y), computed in float32.

  gaussian: phi(x) = sqrt(1/D) [sin(Wx), cos(Wx)]  -> [..., heads, 2D];  k(x, y) = exp(-|x - y|^2 / 2).
  arccos:   phi(x) = sqrt(2/D) relu(Wx)            -> [..., heads, D];
            k(x, y) = |x| |y| (sin t + (pi - t) cos t) / pi with t = angle(x, y), the order-1 arc-cosine
            kernel of Cho & Saul (2009); the sqrt(2) compensates E[relu(w.x) relu(w.y)] = k(x, y) / 2.
  positive: phi(x) = sqrt(1/D) exp(Wx - |x|^2)     -> [..., heads, D];  k(x, y) = exp(-|x - y|^2 / 2),
            the Gaussian kernel again, with positive features (FAVOR+, Choromanski et al. 2021):
            E[exp(w.x) exp(w.y)] = exp(|x + y|^2 / 2). Their estimate's error vanishes where the kernel
            is small, where the sin/cos estimate's does not; every phi . phi is positive.
  """
  if kind not in FEATURE_MAPS:
    raise ValueError(f"kind={kind!r} is not a feature map; expected one of {FEATURE_MAPS}")
  x = x.astype(jnp.float32)
  wx = jnp.einsum("...hd,hfd->...hf", x, projection.astype(jnp.float32))
  return _phi(wx, kind, projection.shape[-2], _squared_norm(x) if kind == "positive" else None)


def _squared_norm(x):
  return jnp.sum(jnp.square(x), axis=-1, keepdims=True)


def _rows(projection, kind):
  """The rows x is projected on, float32: W, or [W; W] for the sin/cos features (`_sin_cos`)."""
  projection = projection.astype(jnp.float32)
  return jnp.concatenate([projection, projection], -2) if kind == "gaussian" else projection


def _phi(wx: jax.Array, kind: str, num_features: int, squared_norm=None) -> jax.Array:
  """phi from the projections wx = Wx: [..., num_features], or x . `_rows(W, kind)`: [...,
  2 num_features] for the sin/cos features (one pass, no concatenation: long inputs), ->
  [..., feature_dim] (`feature_map`); squared_norm: |x|^2 [..., 1], positive map only."""
  if kind == "gaussian" and wx.shape[-1] == num_features:
    return _sin_then_cos(wx) / math.sqrt(num_features)
  if kind == "gaussian":
    return _sin_cos(wx, num_features) / math.sqrt(num_features)
  if kind == "positive":
    return jnp.exp(wx - squared_norm) / math.sqrt(num_features)
  return jax.nn.relu(wx) * math.sqrt(2.0 / num_features)


def feature_dim(num_features: int, kind: str = "gaussian") -> int:
  """Length of phi(x) for `num_features` random projections."""
  return 2 * num_features if kind == "gaussian" else num_features


def gaussian_kernel(x: jax.Array, y: jax.Array) -> jax.Array:
  """exp(-|x - y|^2 / 2) over the last axis."""
  return jnp.exp(-0.5 * jnp.sum((x - y) ** 2, axis=-1))


def arccos_kernel(x: jax.Array, y: jax.Array) -> jax.Array:
  """Order-1 arc-cosine kernel |x| |y| (sin t + (pi - t) cos t) / pi over the last axis."""
  nx, ny = jnp.linalg.norm(x, axis=-1), jnp.linalg.norm(y, axis=-1)
  cos = jnp.clip(jnp.sum(x * y, axis=-1) / (nx * ny), -1.0, 1.0)
  t = jnp.arccos(cos)
  return nx * ny * (jnp.sin(t) + (jnp.pi - t) * cos) / jnp.pi


def l2_normalize(x: jax.Array) -> jax.Array:
  """x / |x| over the last axis (0 stays 0)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def query_key_features(q, k, projection, kind, sigma):
  """phi(sigma q^) and phi(sigma k^) heads first, in float32: q: [B, Lq, H, d] -> [B, H, Lq, F] (and
  k likewise), where x^ = x / |x| and sigma is a scalar, `[heads]` or `[heads, d]` (elementwise);
  the projections are those of `feature_map`. With one sigma per head the positive map's |x|^2 is
  |x^|^2 = 1: the dropped factor exp(1 - sigma^2) is the same for every token of a head and cancels
  in RFA's ratio. Per dimension it is |sigma x^|^2, which differs from key to key.

  Scaling by sigma gives a Gaussian kernel exp(sigma^2 (q^ . k^ - 1)), i.e. softmax attention with
  logits sigma^2 q^ . k^ once normalised; per dimension, exp(-|sigma (q^ - k^)|^2 / 2). Heads
  first, every RFA form sums over the length axis of [B, H, L, F]. For L >= d the projection is a product batched over (batch, head), W broadcast
  over the batch, whose output the feature map reads in place; for shorter inputs (decoding: L = 1)
  W is shared by the batch's rows (a [B, H, 2F, d] copy of W would outweigh the features) and the
  small output is transposed. One token at a time: `token_features`.
  """
  sigma = jnp.asarray(sigma, jnp.float32)
  per_dim = sigma.ndim == 2
  # To scale [B, H, L, d]: [H, 1, d] per dimension, [H, 1, 1] per head, [1, 1] one for all.
  sigma = sigma[:, None] if per_dim else jnp.reshape(sigma, sigma.shape + (1, 1))
  rows = _rows(projection, kind)

  def features(x):
    unit = jnp.swapaxes(l2_normalize(x.astype(jnp.float32)), 1, 2)  # [B, H, L, d]
    scaled = unit * sigma
    if unit.shape[2] >= unit.shape[3]:
      w = jnp.broadcast_to(rows, unit.shape[:1] + rows.shape)
      wx = jnp.einsum("bhld,bhfd->bhlf", scaled, w)
    else:
      wx = jnp.einsum("bhld,hfd->bhlf", scaled, rows)
    norm = _squared_norm(scaled if per_dim else unit) if kind == "positive" else None
    return _phi(wx, kind, projection.shape[-2], norm)

  return features(q), features(k)


def token_features(q, k, projection, kind, sigma):
  """`query_key_features` of one token: q, k: [B, H, d] -> [B, H, F] (decoding's layout, no
  transposes): per head, sigma folded into W; per dimension, phi(sigma x^)."""
  sigma = jnp.asarray(sigma, jnp.float32)
  if sigma.ndim == 2:
    return tuple(feature_map(l2_normalize(x.astype(jnp.float32)) * sigma, projection, kind)
                 for x in (q, k))
  scaled = projection.astype(jnp.float32) * jnp.reshape(sigma, sigma.shape + (1, 1))
  return (feature_map(l2_normalize(q.astype(jnp.float32)), scaled, kind),
          feature_map(l2_normalize(k.astype(jnp.float32)), scaled, kind))
