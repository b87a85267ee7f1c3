"""How well random features estimate softmax attention, as the attention gets sharper and longer.

    python -m studies.estimator [--out benchmarks/results/estimator] [--quick]

Queries and keys are random unit vectors (head_dim 64), values N(0, I); each of `--projections`
independent orthogonal projections is one head, all heads see the same q, k, v. For sigma s the
target is exact softmax attention with logits s^2 q^ . k^ (`softmax_attention(..., scale=s^2)`):

- `rfa_gaussian`: `rfa_cross(..., sigma=s)` (the non-causal `rfa` form with Lq != Lk), sin/cos features of s q^ and s k^, whose dot product estimates
  k_gauss(s q^, s k^) = exp(-|s q^ - s k^|^2 / 2) = exp(-s^2) exp(s^2 q^ . k^): the weights' numerators
  up to the constant exp(-s^2), which cancels in the normalisation.
- `positive` (FAVOR+, Choromanski et al., 2021): phi(x) = exp(W x - |x|^2 / 2) / sqrt(m) with the same
  projections, an unbiased estimate of exp(x . y) with positive terms only; written here, for contrast.
- `rfa_arccos`: relu features estimate the order-1 arc-cosine kernel, not exp; its target is exact
  attention with weights k_arccos(q^, k^) / sum_j k_arccos(q^, k^_j). Both the kernel and the features
  are homogeneous of degree 1 in each argument, so sigma cancels: arccos attention is the same at
  every sigma, exactly and estimated.

Per setting: the relative error |out - exact|_F / |exact|_F over all queries and heads; the mean L1
distance between estimated and exact weight rows (2 = disjoint); the fraction of denominators
phi(q) . z at or below DENOMINATOR_FLOOR (`floor`), and below zero (`negative`); the exact weights'
entropy normalised by log(num_keys) (1 = uniform). Also the error against length and against
sharpness at fixed sigma (each query has one planted key at cosine c).

Why the gaussian estimator fails for sharp attention: with iid rows w, phi(x) . phi(y) is the mean of
m terms cos(w . (x - y)), whose variance is (1 - k^2)^2 / 2 for kernel value k = k_gauss(x, y): the
noise ~ 1 / sqrt(2m) does not shrink with k. The softmax weight of key j is exp(s^2 q.k_j) / sum, and
RFA's numerator for it is k_gauss(s q, s k_j) = exp(-s^2) exp(s^2 q.k_j): a typical key (q.k ~ 0) has
k ~ exp(-s^2), so each implicit weight carries a relative error ~ exp(s^2) / sqrt(2m), above 1 once
s^2 > ln(2m) / 2 (s > 1.56 with 64 features, s > 1.95 with 1,024). The same noise in phi(q) . z, a
sum of signed terms, sends denominators to zero or below, and dividing by them makes outputs explode.
Positive features have a similar relative noise per term (exp(s^2 |q + k|^2) - 1 over m), but every
term is positive, the denominator never crosses zero and each weight row stays a distribution, so
their error grows slowly with sigma. Sharp attention needs large sigma: with unit q, k the logits lie
in [-s^2, s^2], and one key can outweigh L - 1 keys orthogonal to q only when s^2 > ln(L - 1)
(s > 2.35 for 256 keys, 2.63 for 1,024), far beyond where the sin/cos estimate breaks down.
"""

import argparse
import functools
import math
import platform
import time

import jax
import jax.numpy as jnp

from lra.records import markdown_table, write_results
from rfa_jax.attention import rfa_cross
from rfa_jax.normalizer import DENOMINATOR_FLOOR
from rfa_jax.random_features import (arccos_kernel, l2_normalize, query_key_features,
                                     random_projection)
from rfa_jax.reference import softmax_attention
from rfa_jax.weights import rfa_weights

HEAD_DIM = 64
KINDS = ("rfa_gaussian", "positive", "rfa_arccos")


def unit_vectors(key, shape):
  return l2_normalize(jax.random.normal(key, shape, jnp.float32))


def make_problem(key, *, num_queries, num_keys, heads, planted_cosine=None):
  """q: [1, Lq, H, d], k: [1, Lk, H, d] unit norm (same in every head), v: [1, Lk, H, d].

  planted_cosine c: key i (i < Lq) is c q_i + sqrt(1 - c^2) u_i, u_i a unit vector orthogonal to q_i.
  """
  kq, kk, kv, ku = jax.random.split(key, 4)
  q = unit_vectors(kq, (num_queries, HEAD_DIM))
  k = unit_vectors(kk, (num_keys, HEAD_DIM))
  if planted_cosine is not None:
    u = jax.random.normal(ku, (num_queries, HEAD_DIM))
    u = l2_normalize(u - jnp.sum(u * q, -1, keepdims=True) * q)
    c = planted_cosine
    k = k.at[:num_queries].set(c * q + math.sqrt(1 - c * c) * u)
  v = jax.random.normal(kv, (num_keys, HEAD_DIM))
  tile = lambda x: jnp.broadcast_to(x[None, :, None], (1, x.shape[0], heads, HEAD_DIM))
  return tile(q), tile(k), tile(v)


def exact_weights(q, k, kind, sigma):
  """[1, H, Lq, Lk] exact attention weights of the kernel that `kind` estimates."""
  if kind == "rfa_arccos":
    scores = arccos_kernel(q[:, :, None], k[:, None, :])  # [1, Lq, Lk, H]
    scores = jnp.moveaxis(scores, -1, 1)
    return scores / jnp.sum(scores, -1, keepdims=True)
  logits = jnp.einsum("bihd,bjhd->bhij", q, k) * sigma ** 2
  return jax.nn.softmax(logits, axis=-1)


def positive_features(x, projection, sigma):
  """exp(W (s x) - s^2 |x|^2 / 2) / sqrt(m): [B, L, H, d] -> [B, L, H, m] (finite in float32 for
  unit x and s <= 3: |W s x| stays below ~40)."""
  sx = x * sigma
  wx = jnp.einsum("blhd,hfd->blhf", sx, projection)
  return jnp.exp(wx - 0.5 * jnp.sum(sx * sx, -1, keepdims=True)) / math.sqrt(projection.shape[1])


def estimate(q, k, v, projection, kind, sigma):
  """(out [1, Lq, H, d], weights [1, H, Lq, Lk], denominators [1, Lq, H]) of the estimator `kind`."""
  if kind == "positive":
    phi_q, phi_k = positive_features(q, projection, sigma), positive_features(k, projection, sigma)
    scores = jnp.einsum("bihf,bjhf->bhij", phi_q, phi_k)
    denominator = jnp.einsum("bihf,bhf->bih", phi_q, jnp.sum(phi_k, 1))
    weights = scores / jnp.moveaxis(denominator, 1, 2)[..., None]
    return jnp.einsum("bhij,bjhd->bihd", weights, v), weights, denominator
  feature_kind = "gaussian" if kind == "rfa_gaussian" else "arccos"
  out = rfa_cross(q, k, v, projection, feature_map=feature_kind, sigma=sigma)
  weights = rfa_weights(q, k, projection, feature_map=feature_kind, sigma=sigma)
  phi_q, phi_k = query_key_features(q, k, projection, feature_kind, sigma)  # heads first
  denominator = jnp.einsum("bhif,bhf->bih", phi_q, jnp.sum(phi_k, 2))
  return out, weights, denominator


@functools.partial(jax.jit, static_argnames="kind")
def _figures(q, k, v, projection, sigma, *, kind):
  """The figures of one setting as scalars (see the module docstring)."""
  target_weights = exact_weights(q, k, kind, sigma)
  if kind == "rfa_arccos":
    target = jnp.einsum("bhij,bjhd->bihd", target_weights, v)
  else:
    target = softmax_attention(q, k, v, scale=sigma ** 2)
  out, weights, denominator = estimate(q, k, v, projection, kind, sigma)
  entropy = -jnp.sum(jnp.where(target_weights > 0, target_weights * jnp.log(target_weights), 0.0), -1)
  return dict(
      relative_error=jnp.linalg.norm(out - target) / jnp.linalg.norm(target),
      weights_l1=jnp.mean(jnp.sum(jnp.abs(weights - target_weights), -1)),
      floor_fraction=jnp.mean(denominator <= DENOMINATOR_FLOOR),
      negative_fraction=jnp.mean(denominator < 0),
      exact_entropy=jnp.mean(entropy) / math.log(k.shape[1]),
      max_exact_weight=jnp.mean(jnp.max(target_weights, -1)))


def measure(key, *, kind, sigma, num_features, num_keys, num_queries, heads, planted_cosine=None):
  """One setting: a fresh problem and projections from `key`; a dict of the settings and figures."""
  problem_key, projection_key = jax.random.split(key)
  q, k, v = make_problem(problem_key, num_queries=num_queries, num_keys=num_keys, heads=heads,
                         planted_cosine=planted_cosine)
  projection = random_projection(projection_key, heads, num_features, HEAD_DIM)
  figures = _figures(q, k, v, projection, jnp.float32(sigma), kind=kind)
  return dict(kind=kind, sigma=sigma, num_features=num_features, num_keys=num_keys,
              planted_cosine=planted_cosine, **{name: float(x) for name, x in figures.items()})


def run_study(*, sigmas, feature_counts, lengths, planted_cosines, num_queries, heads,
              sharp_sigma=2.0, sweep_features=256, seed=0, kinds=KINDS):
  """All rows: the main grid (num_keys = the middle of `lengths`), the length sweep (sigma 1 and
  `sharp_sigma`, `sweep_features`) and the sharpness sweep (planted keys, `sharp_sigma`)."""
  key = jax.random.PRNGKey(seed)
  main_length = lengths[len(lengths) // 2]
  rows = dict(grid=[], length=[], sharpness=[])
  common = dict(num_queries=num_queries, heads=heads)
  for kind in kinds:
    for sigma in sigmas:
      for num_features in feature_counts:
        rows["grid"].append(measure(key, kind=kind, sigma=sigma, num_features=num_features,
                                    num_keys=main_length, **common))
  for kind in kinds[:2]:  # arccos attention does not depend on sigma
    for sigma in (1.0, sharp_sigma):
      for num_keys in lengths:
        rows["length"].append(measure(key, kind=kind, sigma=sigma, num_features=sweep_features,
                                      num_keys=num_keys, **common))
    for cosine in planted_cosines:
      rows["sharpness"].append(measure(
          key, kind=kind, sigma=sharp_sigma, num_features=sweep_features, num_keys=main_length,
          planted_cosine=cosine, **common))
  return rows


def _fmt(x):
  return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def to_markdown(results) -> str:
  rows, setup = results["rows"], results["setup"]
  lines = [
      "# Random-feature estimates of softmax attention",
      "",
      f"Regenerate: `{setup['command']}`. Unit-norm random q, k (head_dim {HEAD_DIM}), "
      f"{setup['num_queries']} queries, {setup['heads']} independent orthogonal projections (heads); "
      f"target softmax with logits s^2 q^.k^ (`rfa_arccos`: its own exact kernel attention). "
      f"rel err = |out - exact|_F / |exact|_F; L1 = mean L1 distance of weight rows; floor/neg = "
      f"fraction of denominators phi(q).z <= {DENOMINATOR_FLOOR} / < 0; entropy = exact weights' "
      f"entropy / log(keys). {setup['platform']}, jax {setup['jax']}, {setup['date']}.",
      "",
      f"## Error against sigma and features ({rows['grid'][0]['num_keys']} keys)",
      "",
      *markdown_table(
          ["estimator", "sigma", "features", "rel err", "L1", "floor", "neg", "entropy",
           "max weight"],
          [[r["kind"], str(r["sigma"]), str(r["num_features"]), _fmt(r["relative_error"]),
            _fmt(r["weights_l1"]), f"{r['floor_fraction']:.3f}", f"{r['negative_fraction']:.3f}",
            f"{r['exact_entropy']:.3f}", f"{r['max_exact_weight']:.2g}"] for r in rows["grid"]]),
  ]
  lines += ["", f"## Error against length ({rows['length'][0]['num_features']} features)", ""]
  lines += markdown_table(
      ["estimator", "sigma", "keys", "rel err", "L1", "floor", "entropy"],
      [[r["kind"], str(r["sigma"]), str(r["num_keys"]), _fmt(r["relative_error"]),
        _fmt(r["weights_l1"]), f"{r['floor_fraction']:.3f}", f"{r['exact_entropy']:.3f}"]
       for r in rows["length"]])
  s = rows["sharpness"][0]
  lines += ["", f"## Error against sharpness (sigma {s['sigma']}, {s['num_keys']} keys, "
            f"{s['num_features']} features; query i's planted key at cosine c)", ""]
  lines += markdown_table(
      ["estimator", "c", "entropy", "max weight", "rel err", "L1", "floor"],
      [[r["kind"], str(r["planted_cosine"]), f"{r['exact_entropy']:.3f}",
        f"{r['max_exact_weight']:.2g}", _fmt(r["relative_error"]), _fmt(r["weights_l1"]),
        f"{r['floor_fraction']:.3f}"] for r in rows["sharpness"]])
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="benchmarks/results/estimator")
  parser.add_argument("--quick", action="store_true", help="tiny grid, for tests")
  args = parser.parse_args(argv)
  if args.quick:
    grid = dict(sigmas=(1.0, 3.0), feature_counts=(16,), lengths=(64,), planted_cosines=(0.9,),
                num_queries=16, heads=2, sweep_features=16)
  else:
    grid = dict(sigmas=(1.0, 1.5, 2.0, 3.0), feature_counts=(64, 256, 1024),
                lengths=(256, 1024, 4096), planted_cosines=(0.0, 0.5, 0.8, 0.9, 1.0),
                num_queries=256, heads=4)
  start = time.time()
  rows = run_study(**grid)
  command = "python -m studies.estimator" + (" --quick" if args.quick else "")
  results = dict(setup=dict(grid, command=command, head_dim=HEAD_DIM, floor=DENOMINATOR_FLOOR,
                            platform=f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})",
                            jax=jax.__version__, date=time.strftime("%Y-%m-%d"),
                            seconds=round(time.time() - start, 1)),
                 rows=rows)
  write_results(args.out, results, to_markdown(results))


if __name__ == "__main__":
  main()
