"""Bad arguments raise a ValueError naming the argument, what it got and what it expects."""

import jax.numpy as jnp
import pytest

import rfa_jax

B, L, H, D, DV, F = 2, 6, 3, 4, 5, 8
Q = jnp.ones((B, L, H, D))
V = jnp.ones((B, L, H, DV))
P = jnp.ones((H, F, D))
GATE = jnp.full((B, L, H), 0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(q=jnp.ones((B, L, H * D))), r"q has shape \(2, 6, 12\); expected rank 4"),
    (dict(k=jnp.ones((B, L + 1, H, D))), r"k has shape \(2, 7, 3, 4\); expected \[batch=2, length=6"),
    (dict(v=jnp.ones((B, L, H + 1, DV))), r"v has shape .*heads=3"),
    (dict(projection=jnp.ones((H, F, D + 1))), r"projection has shape \(3, 8, 5\).*head_dim=4"),
    (dict(projection=jnp.ones((F, D))), r"projection has shape \(8, 4\); expected rank 3"),
    (dict(feature_map="laplace"), r"feature_map='laplace'.*'gaussian', 'arccos'"),
    (dict(sigma=jnp.ones(H + 1)), r"sigma has shape \(4,\); expected a scalar or \[heads=3\]"),
    (dict(key_mask=jnp.ones((B, L + 2), bool)), r"key_mask has shape \(2, 8\); expected \[batch=2"),
    (dict(gate=GATE), r"gate is given with causal=False.*add reverse_gate= for bidirectional"),
    (dict(gate=GATE, reverse_gate=GATE, causal=True), r"reverse_gate .*with gate=.*causal=False"),
    (dict(reverse_gate=GATE), r"reverse_gate is the backward gate"),
    (dict(gate=GATE, reverse_gate=GATE[:, :-1]), r"reverse_gate has shape \(2, 5, 3\); expected"),
    (dict(gate=GATE, reverse_gate=GATE.at[1, 2, 0].set(1.0)), r"reverse_gate must lie in the open"),
    (dict(gate=GATE, reverse_gate=GATE, segment_ids=jnp.array([[1, 1, 2, 2, 1, 1]] * B)),
     r"segment_ids: in batch row 0 an id occurs in separate runs"),
    (dict(gate=jnp.ones((B, L)) * 0.5, causal=True), r"gate has shape \(2, 6\); expected \[batch=2"),
    (dict(gate=GATE.at[0, 0, 0].set(1.0), causal=True), r"gate must lie in the open interval"),
    (dict(gate=GATE.at[0, 0, 0].set(0.0), causal=True), r"gate must lie in the open interval"),
    (dict(chunk_size=0, causal=True), r"chunk_size=0; expected a positive integer"),
    (dict(chunk_size=2.5, causal=True), r"chunk_size=2.5; expected a positive integer"),
])
def test_rfa_rejects_bad_arguments(kwargs, message):
  args = dict(q=Q, k=Q, v=V, projection=P)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    rfa_jax.rfa(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("projection"), **args)


def test_cross_attention_rejects_mismatched_keys_and_values():
  with pytest.raises(ValueError, match=r"v has shape \(2, 6, 3, 5\); expected \[batch=2, length=9"):
    rfa_jax.rfa_cross(Q, jnp.ones((B, 9, H, D)), V, P)


def test_decode_step_rejects_bad_arguments():
  state = rfa_jax.init_decode_state(B, H, 2 * F, DV)
  q_t, v_t = jnp.ones((B, H, D)), jnp.ones((B, H, DV))
  with pytest.raises(ValueError, match=r"q_t has shape \(2, 6, 3, 4\); expected rank 3"):
    rfa_jax.decode_step(state, Q, Q, V, P)
  with pytest.raises(ValueError, match=r"gate_t has shape \(2, 3, 1\)"):
    rfa_jax.decode_step(state, q_t, q_t, v_t, P, gate_t=jnp.full((B, H, 1), 0.5))
  with pytest.raises(ValueError, match=r"state.s has shape \(2, 3, 16, 5\); expected \(2, 3, None, 7\)"):
    rfa_jax.decode_step(state, q_t, q_t, jnp.ones((B, H, 7)), P)
