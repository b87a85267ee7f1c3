"""Random projections have the right distribution; feature maps converge to their kernels."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rfa_jax
from rfa_jax.random_features import (_householder_q, _orthonormal_columns, _sin_cos, arccos_kernel,
                                     gaussian_kernel, query_key_features, token_features)


def _normal_cdf(x):
  return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _ks_statistic(samples, cdf):
  samples = np.sort(samples)
  n = len(samples)
  fitted = cdf(samples)
  return max(np.max(np.arange(1, n + 1) / n - fitted), np.max(fitted - np.arange(n) / n))


@pytest.mark.parametrize("orthogonal", [False, True])
def test_projection_shape_and_dtype(orthogonal):
  w = rfa_jax.random_projection(jax.random.PRNGKey(0), 3, 20, 8, orthogonal=orthogonal,
                                dtype=jnp.bfloat16)
  assert w.shape == (3, 20, 8) and w.dtype == jnp.bfloat16


@pytest.mark.parametrize("method", ["gram_schmidt", "qr"])
def test_orthogonal_blocks_are_orthogonal(method):
  w = np.asarray(rfa_jax.random_projection(jax.random.PRNGKey(1), 2, 20, 8,
                                           orthogonal_method=method))
  for block in (w[:, 0:8], w[:, 8:16], w[:, 16:20]):
    gram = block @ np.swapaxes(block, -1, -2)
    off_diagonal = gram - np.eye(gram.shape[-1]) * np.diagonal(gram, axis1=-2, axis2=-1)[..., None]
    assert np.abs(off_diagonal).max() < 1e-4


@pytest.mark.parametrize("orthogonal, method", [(False, "gram_schmidt"), (True, "gram_schmidt"),
                                                (True, "qr")])
def test_rows_are_marginally_standard_normal(orthogonal, method):
  """Every row position, including the first row of a block (biased by an uncorrected QR), is N(0, I)."""
  dim = 4
  w = np.asarray(rfa_jax.random_projection(jax.random.PRNGKey(2), 4000, dim, dim,
                                           orthogonal=orthogonal, orthogonal_method=method))
  for row in range(dim):
    rows = w[:, row]  # [4000, dim]
    assert np.abs(rows.mean(0)).max() < 4 / math.sqrt(4000), rows.mean(0)
    np.testing.assert_allclose(np.cov(rows.T), np.eye(dim), atol=0.12)
    for coordinate in range(dim):
      assert _ks_statistic(rows[:, coordinate], _normal_cdf) < 1.95 / math.sqrt(4000)
  squared_norms = (w ** 2).sum(-1).ravel()  # chi-square with `dim` degrees of freedom
  assert abs(squared_norms.mean() - dim) < 0.1 and abs(squared_norms.var() - 2 * dim) < 0.5


def _kernel_rmse(kind, orthogonal, num_features, trials=48, dim=8):
  rng = np.random.default_rng(0)
  # Positive features' variance grows like exp(|x + y|^2) (heavy tails): smaller norms keep the
  # 1/sqrt(D) law visible in 48 trials.
  spread = 0.2 if kind == "positive" else 0.4
  x = rng.normal(size=(64, 1, dim)) * spread
  y = x + rng.normal(size=(64, 1, dim)) * 0.75 * spread
  exact = (arccos_kernel if kind == "arccos" else gaussian_kernel)(x, y)[:, 0]
  keys = jax.random.split(jax.random.PRNGKey(num_features), trials)
  w = jax.vmap(lambda key: rfa_jax.random_projection(key, 1, num_features, dim,
                                                     orthogonal=orthogonal))(keys)
  estimate = jax.vmap(lambda p: jnp.sum(rfa_jax.feature_map(x, p, kind) *
                                        rfa_jax.feature_map(y, p, kind), -1)[:, 0])(w)
  return float(jnp.sqrt(jnp.mean((estimate - exact) ** 2)))


@pytest.mark.parametrize("kind", ["gaussian", "arccos", "positive"])
@pytest.mark.parametrize("orthogonal", [False, True])
def test_feature_map_error_shrinks_like_inverse_sqrt_features(kind, orthogonal):
  sizes = [16, 64, 256, 1024]
  rmse = np.array([_kernel_rmse(kind, orthogonal, d) for d in sizes])
  # 64x more features: error 8x smaller for iid; orthogonal features are at least as good.
  assert 5 < rmse[0] / rmse[-1] < (12 if not orthogonal else 40), rmse
  assert np.all(np.diff(rmse) < 0), rmse
  scaled = rmse * np.sqrt(sizes)
  assert scaled.max() / scaled.min() < (1.6 if not orthogonal else 4), scaled


@pytest.mark.parametrize("kind", ["gaussian", "arccos", "positive"])
@pytest.mark.parametrize("orthogonal", [False, True])
def test_feature_map_is_unbiased(kind, orthogonal):
  """The mean of phi(x) . phi(y) over 4000 independent projections is within 4 standard errors."""
  x, y = jnp.array([[0.3, -0.2, 0.5, 0.1]]), jnp.array([[0.1, 0.4, 0.2, -0.3]])
  keys = jax.random.split(jax.random.PRNGKey(7), 4000)
  w = jax.vmap(lambda key: rfa_jax.random_projection(key, 1, 4, 4, orthogonal=orthogonal))(keys)
  estimates = np.asarray(jax.vmap(lambda p: jnp.sum(rfa_jax.feature_map(x, p, kind) *
                                                    rfa_jax.feature_map(y, p, kind)))(w))
  exact = float((arccos_kernel if kind == "arccos" else gaussian_kernel)(x, y)[0])
  assert abs(estimates.mean() - exact) < 4 * estimates.std() / math.sqrt(len(estimates))


def test_orthogonal_features_are_no_worse_than_iid():
  assert _kernel_rmse("gaussian", True, 64) < 1.05 * _kernel_rmse("gaussian", False, 64)


def test_gaussian_feature_layout():
  x = jnp.ones((2, 3, 4))
  w = jnp.ones((3, 5, 4))
  phi = rfa_jax.feature_map(x, w, "gaussian")
  assert phi.shape == (2, 3, 10)
  np.testing.assert_allclose(phi[..., :5], np.sin(4.0) / math.sqrt(5), rtol=1e-5)
  np.testing.assert_allclose(phi[..., 5:], np.cos(4.0) / math.sqrt(5), rtol=1e-5)
  assert rfa_jax.feature_map(x, w, "arccos").shape == (2, 3, 5)


def test_sin_cos_matches_float64():
  """Within 2e-7 of float64 sin/cos on a dense grid over [-50, 50] and on random x up to |x| = 200."""
  large = np.random.default_rng(0).uniform(-200, 200, 1_000_000)
  x = np.concatenate([np.linspace(-50, 50, 2_000_001), large, [-200, 200, 1e-30, 0]]).astype(np.float32)
  sin, cos = _sin_and_cos(x)
  exact = x.astype(np.float64)
  assert np.abs(np.asarray(sin, np.float64) - np.sin(exact)).max() < 2e-7
  assert np.abs(np.asarray(cos, np.float64) - np.cos(exact)).max() < 2e-7


def _sin_and_cos(x):
  """(sin x, cos x) from the feature layout: x twice in one array, sin columns then cos columns."""
  phi = jax.jit(_sin_cos, static_argnums=1)(jnp.concatenate([x, x]), x.shape[0])
  return phi[:x.shape[0]], phi[x.shape[0]:]


def test_sin_cos_gradient():
  x = jnp.linspace(-200, 200, 100_001)
  n = x.shape[0]
  sin, cos = _sin_and_cos(x)
  d_sin, d_cos = (jax.jit(jax.grad(lambda y: jnp.sum(_sin_cos(y, n)[part])))(jnp.concatenate([x, x]))
                  for part in (slice(None, n), slice(n, None)))
  np.testing.assert_allclose(d_sin[:n], cos, rtol=0, atol=1e-7)
  np.testing.assert_allclose(d_cos[n:], -sin, rtol=0, atol=1e-7)
  assert not np.any(d_sin[n:]) and not np.any(d_cos[:n])


def test_unknown_feature_map_is_rejected():
  with pytest.raises(ValueError, match="kind='relu'.*gaussian"):
    rfa_jax.feature_map(jnp.ones((1, 2)), jnp.ones((1, 3, 2)), "relu")


@pytest.mark.parametrize("orthonormal", [_orthonormal_columns, _householder_q])
def test_orthonormal_columns_is_qr_with_positive_diagonal(orthonormal):
  a = jax.random.normal(jax.random.PRNGKey(3), (2, 64, 64))
  q, r = np.linalg.qr(np.asarray(a, np.float64))
  q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
  np.testing.assert_allclose(orthonormal(a), q, atol=2e-6)


def test_both_orthogonal_methods_draw_the_same_projection():
  """The methods differ in rounding only: same key, same W; an unknown method is refused."""
  draw = lambda method: rfa_jax.random_projection(jax.random.PRNGKey(4), 3, 80, 16,
                                                  orthogonal_method=method)
  np.testing.assert_allclose(draw("qr"), draw("gram_schmidt"), atol=2e-5)
  with pytest.raises(ValueError, match="orthogonal_method='svd'; expected one of"):
    draw("svd")


def test_positive_features_are_positive_and_estimate_small_kernel_values_closely():
  """Where the Gaussian kernel is small (opposite directions), positive features' error is small and
  sin/cos features' is not (Choromanski et al. 2021, Lemma 2)."""
  x = jnp.array([[1.0, 0.0, 0.0, 0.0]]) * 1.5
  keys = jax.random.split(jax.random.PRNGKey(3), 200)
  w = jax.vmap(lambda key: rfa_jax.random_projection(key, 1, 64, 4))(keys)
  exact = float(gaussian_kernel(x, -x)[0])
  errors = {}
  for kind in ("gaussian", "positive"):
    phi = jax.vmap(lambda p: rfa_jax.feature_map(x, p, kind))(w)
    estimates = jax.vmap(lambda p: jnp.sum(rfa_jax.feature_map(x, p, kind)
                                           * rfa_jax.feature_map(-x, p, kind)))(w)
    errors[kind] = float(jnp.sqrt(jnp.mean((estimates - exact) ** 2)))
    if kind == "positive":
      assert bool(jnp.all(phi > 0))
  assert errors["positive"] < 0.1 * errors["gaussian"], errors


def test_feature_layouts_agree_with_their_gradients():
  """The sin/cos features of one token (`feature_map`: two passes and a concatenation) equal those
  of a sequence (`query_key_features`: one pass over [W; W]), values and gradients."""
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(keys[0], (2, 3, 4, 8))  # [B, L, H, d]
  w = rfa_jax.random_projection(keys[1], 4, 6, 8)
  sigma = jnp.array([0.5, 1.0, 1.5, 2.0])
  cotangent = jax.random.normal(keys[2], (2, 4, 3, 12))
  sequence = lambda x: query_key_features(x, x, w, "gaussian", sigma)[0]
  tokens = lambda x: jnp.stack([token_features(x[:, i], x[:, i], w, "gaussian", sigma)[0]
                                for i in range(x.shape[1])], axis=2)
  np.testing.assert_allclose(tokens(x), sequence(x), atol=1e-6)
  grads = [jax.jit(jax.grad(lambda x: jnp.sum(f(x) * cotangent)))(x) for f in (tokens, sequence)]
  np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)
