"""Packed sequences (`segment_ids`): every form against the quadratic reference with block-diagonal
masks, forward and gradients, and a packed row against its sequences run alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rfa_jax
from rfa_jax.segments import grouped, restarts, within_runs

B, L, H, D, DV, F = 2, 13, 2, 8, 5, 16
# Row 0: sequences of 5, 1 and 4 tokens, then 3 padding; row 1: one sequence then padding; and rows
# that are all one sequence or all padding.
PACKED = np.array([[1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 0, 0, 0],
                   [7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 0]], np.int32)
ONE_SEQUENCE = np.full((B, L), 4, np.int32)
ALL_PADDING = np.array([[1] * L, [0] * L], np.int32)
# Padding inside sequences and before the first one (a padded key restarts nothing).
PADDING_INSIDE = np.array([[1, 1, 0, 1, 1, 2, 2, 0, 3, 3, 3, 0, 0],
                           [0, 0, 5, 5, 5, 0, 5, 5, 5, 5, 0, 6, 6]], np.int32)
# Every layout above, one batch of 8 rows.
LAYOUTS = np.concatenate([PACKED, ONE_SEQUENCE, ALL_PADDING, PADDING_INSIDE])


def _inputs(seed=0, length=L, batch=B):
  ks = jax.random.split(jax.random.PRNGKey(seed), 5)
  q = jax.random.normal(ks[0], (batch, length, H, D))
  k = jax.random.normal(ks[1], (batch, length, H, D))
  v = jax.random.normal(ks[2], (batch, length, H, DV))
  gate = jax.nn.sigmoid(3.0 * jax.random.normal(ks[3], (batch, length, H)))
  return q, k, v, gate, rfa_jax.random_projection(ks[4], H, F, D)


def _check(fast, reference, args, atol=2e-5):
  """fast(*args) == reference(*args), and the gradients of a random projection of the output. Sin/cos
  denominators phi(q) . z near zero amplify float rounding (outputs of 10 and more; a query that
  sees one key has an exactly zero gradient that rounding cannot keep), hence rtol 5e-4 and a
  gradient tolerance relative to the largest gradient."""
  np.testing.assert_allclose(fast(*args), reference(*args), atol=atol, rtol=5e-4)
  cotangent = jax.random.normal(jax.random.PRNGKey(9), reference(*args).shape)
  grads = lambda fn: jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent),
                                      tuple(range(len(args)))))(*args)
  for g_fast, g_ref in zip(grads(fast), grads(reference)):
    assert np.all(np.isfinite(g_fast))
    np.testing.assert_allclose(g_fast, g_ref, atol=atol * 10 * max(1.0, np.abs(g_ref).max()),
                               rtol=1e-3)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 5])
def test_causal_matches_block_diagonal_reference(gated, chunk_size):
  """Every layout; chunk sizes that split sequences (3) or align with the first boundary (5)."""
  q, k, v, gate, projection = _inputs(chunk_size, batch=len(LAYOUTS))
  options = dict(sigma=1.3, causal=True, segment_ids=LAYOUTS)
  fast = jax.jit(lambda q, k, v, g: rfa_jax.rfa(q, k, v, projection, gate=g if gated else None,
                                               chunk_size=chunk_size, **options))
  ref = lambda q, k, v, g: rfa_jax.rfa_reference(q, k, v, projection, gate=g if gated else None,
                                                 **options)
  _check(fast, ref, (q, k, v, gate))


@pytest.mark.parametrize("chunk_size", [3])
def test_bidirectional_gating_matches_block_diagonal_reference(chunk_size):
  """Both passes restart at every new id; the reverse one on the reversed row."""
  q, k, v, gate, projection = _inputs(chunk_size + 20, batch=len(LAYOUTS))
  reverse = jax.nn.sigmoid(3.0 * jax.random.normal(jax.random.PRNGKey(chunk_size), gate.shape))
  options = dict(sigma=1.3, segment_ids=LAYOUTS)
  fast = jax.jit(lambda q, k, v, g, h: rfa_jax.rfa(q, k, v, projection, gate=g, reverse_gate=h,
                                                  chunk_size=chunk_size, **options))
  ref = lambda q, k, v, g, h: rfa_jax.rfa_reference(q, k, v, projection, gate=g, reverse_gate=h,
                                                    **options)
  _check(fast, ref, (q, k, v, gate, reverse))


@pytest.mark.parametrize("feature_map, mixed", [("gaussian", False), ("arccos", False),
                                                 ("gaussian", True)])
def test_noncausal_matches_block_diagonal_reference(feature_map, mixed):
  """Every layout, and with `mixed` a last row whose id 2 comes back after id 1 (its tokens sorted
  into one run and back)."""
  ids = np.concatenate([LAYOUTS, [[2, 2, 1, 1, 1, 2, 0, 3, 3, 3, 3, 0, 0]]]) if mixed else LAYOUTS
  q, k, v, _, projection = _inputs(1, batch=len(ids))
  options = dict(feature_map=feature_map, segment_ids=ids)
  _check(jax.jit(lambda q, k, v: rfa_jax.rfa(q, k, v, projection, chunk_size=4, **options)),
         lambda q, k, v: rfa_jax.rfa_reference(q, k, v, projection, **options), (q, k, v))


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 16])
def test_within_runs_equals_grouped_where_every_id_is_one_run(chunk_size):
  """The two non-causal forms on the same features: chunks that split sequences (3), align with a
  boundary (5), hold single tokens (1) or the whole row (16)."""
  ks = jax.random.split(jax.random.PRNGKey(chunk_size), 3)
  phi_q, phi_k = (jax.random.uniform(key, (len(LAYOUTS), H, L, F)) for key in ks[:2])
  v = jax.random.normal(ks[2], (len(LAYOUTS), H, L, DV))
  key_weight = jnp.asarray(LAYOUTS != 0, jnp.float32)[:, None]
  real = (LAYOUTS != 0)[:, None, :, None]  # padded queries' outputs are not defined by either form
  options = dict(chunk_size=chunk_size)
  _check(jax.jit(lambda q, k, v: jnp.where(real, within_runs(q, k, v, LAYOUTS, key_weight,
                                                               **options), 0)),
         lambda q, k, v: jnp.where(real, grouped(q, LAYOUTS, k, v, LAYOUTS, key_weight,
                                                 **options), 0), (phi_q, phi_k, v))


def test_noncausal_ids_need_not_be_contiguous():
  q, k, v, _, projection = _inputs(2)
  ids = np.array([[1, 2, 1, 1, 3, 2, 2, 0, 1, 3, 3, 2, 1]] * B, np.int32)
  _check(jax.jit(lambda q, k, v: rfa_jax.rfa(q, k, v, projection, segment_ids=ids)),
         lambda q, k, v: rfa_jax.rfa_reference(q, k, v, projection, segment_ids=ids), (q, k, v))


def test_noncausal_packed_rows_have_forward_mode_derivatives():
  """jax.jvp goes through the sort into runs as through every other form (the library's custom
  derivatives are JVPs)."""
  q, k, v, _, projection = _inputs(11)
  ids = np.array([[2, 2, 1, 1, 1, 2, 0, 3, 3, 3, 3, 0, 0]] * B, np.int32)
  tangents = tuple(jax.random.normal(jax.random.PRNGKey(i), x.shape) for i, x in enumerate((q, k, v)))
  jvp = lambda fn: jax.jvp(lambda q, k, v: fn(q, k, v, projection, segment_ids=ids), (q, k, v),
                           tangents)[1]
  np.testing.assert_allclose(jvp(rfa_jax.rfa), jvp(rfa_jax.rfa_reference), atol=1e-4, rtol=1e-3)


def test_cross_matches_block_diagonal_reference():
  """wmt packing: decoder segments attend to the encoder segments of the same id."""
  q, _, _, _, projection = _inputs(3)
  _, k, v, _, _ = _inputs(4, length=9)
  query_ids = PACKED
  key_ids = np.array([[1, 1, 2, 2, 2, 3, 0, 0, 0], [7, 7, 7, 7, 0, 0, 0, 0, 0]], np.int32)
  options = dict(segment_ids=query_ids, key_segment_ids=key_ids)
  _check(jax.jit(lambda q, k, v: rfa_jax.rfa_cross(q, k, v, projection, **options)),
         lambda q, k, v: rfa_jax.rfa_reference(q, k, v, projection, **options), (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_window_matches_block_diagonal_reference(causal):
  q, k, v, _, projection = _inputs(5)
  options = dict(causal=causal, segment_ids=PACKED, window=3, rfa_scale=0.5)
  _check(jax.jit(lambda q, k, v: rfa_jax.rfa(q, k, v, projection, chunk_size=4, **options)),
         lambda q, k, v: rfa_jax.rfa_reference(q, k, v, projection, **options), (q, k, v))


@pytest.mark.parametrize("causal, gated, jit", [(False, False, True), (True, False, True),
                                                (True, True, False), (False, True, True)])
def test_packed_row_equals_sequences_run_alone(causal, gated, jit):
  """The property a user relies on: at every real token, the packed output is the sequence's own.
  Gated and not causal: bidirectional gating, with 1 - g as the reverse gate."""
  q, k, v, gate, projection = _inputs(6)
  options = dict(causal=causal, chunk_size=4)

  def attend(q, k, v, g, ids=None):
    gates = {} if not gated else dict(gate=g) if causal else dict(gate=g, reverse_gate=1 - g)
    return rfa_jax.rfa(q, k, v, projection, segment_ids=ids, **gates, **options)

  packed = (jax.jit(attend) if jit else attend)(q, k, v, gate, PACKED)
  for row in range(B):
    for seq in set(PACKED[row]) - {0}:
      (where,) = np.nonzero(PACKED[row] == seq)
      alone = attend(*(x[row:row + 1, where] for x in (q, k, v, gate)))
      np.testing.assert_allclose(packed[row, where], alone[0], atol=2e-5, rtol=1e-4)
  padded = PACKED == 0
  np.testing.assert_array_equal(np.asarray(packed)[padded], 0.0)


@pytest.mark.parametrize("window", [None, 3])
def test_decoding_restarts_like_segment_ids(window):
  """decode_step with reset_t where a sequence starts, and prefill over the packed row, reproduce
  rfa(..., causal=True, segment_ids=...)."""
  q, k, v, gate, projection = _inputs(7)
  ids = np.array([[1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 4, 4, 4]] * B, np.int32)
  options = dict(window=window, rfa_scale=0.7) if window else {}
  expected = rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate, segment_ids=ids, **options)
  start = lambda: rfa_jax.init_decode_state(B, H, 2 * F, DV, window=window, head_dim=D)
  state, reset = start(), restarts(ids)
  step = jax.jit(lambda state, q, k, v, g, r: rfa_jax.decode_step(
      state, q, k, v, projection, gate_t=g, reset_t=r, **options))
  outs = []
  for t in range(L):
    state, out = step(state, q[:, t], k[:, t], v[:, t], gate[:, t], reset[:, t])
    outs.append(out)
  np.testing.assert_allclose(jnp.stack(outs, 1), expected, atol=2e-5, rtol=1e-4)
  prefilled, out = rfa_jax.prefill(start(), q, k, v, projection, gate=gate, segment_ids=ids,
                                   chunk_size=4, **options)
  np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-4)
  for got, want in zip(prefilled, state):  # the state is the last sequence's
    if want is not None:
      np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_gradients_are_finite_at_strong_decay():
  """A gate near 0 and near 1 beside restarts: no exp(-inf) arithmetic reaches values or gradients."""
  q, k, v, _, projection = _inputs(8)
  gate = jnp.where(jnp.arange(L) % 2 == 0, 1e-30, 1 - 1e-7)[None, :, None] * jnp.ones((B, L, H))
  gate = jnp.clip(gate, 1e-30, 1 - 1e-7)
  fn = lambda q, k, v, g: jnp.sum(rfa_jax.rfa(q, k, v, projection, causal=True, gate=g,
                                              segment_ids=PACKED, chunk_size=4) ** 2)
  grads = jax.jit(jax.grad(fn, range(4)))(q, k, v, gate)
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_bad_segment_ids_are_refused():
  q, k, v, _, projection = _inputs()
  with pytest.raises(ValueError, match="segment_ids has shape"):
    rfa_jax.rfa(q, k, v, projection, segment_ids=PACKED[:, :5])
  with pytest.raises(ValueError, match="expected integers"):
    rfa_jax.rfa(q, k, v, projection, segment_ids=PACKED.astype(np.float32))
  split = PACKED.copy()
  split[0, 7] = 1  # id 1 again after id 3
  with pytest.raises(ValueError, match="row 0 an id occurs in separate runs"):
    rfa_jax.rfa(q, k, v, projection, causal=True, segment_ids=split)
  with pytest.raises(ValueError, match="key_segment_ids"):
    rfa_jax.rfa_cross(q, k, v, projection, segment_ids=PACKED)
  with pytest.raises(ValueError, match="reset_t has shape"):
    rfa_jax.decode_step(rfa_jax.init_decode_state(B, H, 2 * F, DV), q[:, 0], k[:, 0], v[:, 0],
                        projection, reset_t=np.zeros((B, 1), bool))
