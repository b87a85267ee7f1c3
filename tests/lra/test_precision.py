"""Mixed precision: bfloat16 activations and matrix products with float32 parameters, optimiser state,
losses and RFA state. (Every registered mechanism trains in bfloat16 in tests/lra/test_tasks.py.)"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fixtures
import rfa_jax
from lra import attention, config_lib, models, train

ROOT = pathlib.Path(__file__).resolve().parents[2]
B, L, E, H = 8, 24, 16, 2
SETTINGS = {"max_length": L, "batch_size": B, "warmup_steps": 1, "learning_rate": 1e-3,
            "model.dropout_rate": 0.1}
assert (fixtures.TINY_MODEL["model.emb_dim"], fixtures.TINY_MODEL["model.num_heads"]) == (E, H)


def tiny_config(name, dtype):
  return fixtures.tiny_config("listops", name, dtype=dtype, **SETTINGS)


def padded_batch(seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(L // 2, L + 1, B)
  tokens = rng.integers(1, 20, (B, L)) * (np.arange(L) < lengths[:, None])
  return dict(inputs=tokens.astype(np.int32), targets=rng.integers(0, 10, B).astype(np.int32))


def floating_leaves(tree):
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


def test_default_dtype_is_float32():
  assert config_lib.base_config("listops").dtype == "float32"
  assert attention.compute_dtype("bfloat16") == jnp.bfloat16
  assert attention.compute_dtype(jnp.float32) == jnp.float32


@pytest.mark.parametrize("dtype", ["float16", "fp32", None])
def test_unknown_dtype_is_rejected(dtype):
  with pytest.raises(ValueError, match="dtype="):
    attention.make("softmax", emb_dim=E, num_heads=H, qkv_dim=E, max_length=L, rngs=nnx.Rngs(0),
                   dtype=dtype)
  with pytest.raises(ValueError, match="dtype="):
    train.build_model(tiny_config("softmax", dtype), vocab_size=20, num_classes=10, dual=False,
                      has_padding=True, rngs=nnx.Rngs(0))


def build(name, dtype, **options):
  return attention.make(name, emb_dim=E, num_heads=H, qkv_dim=E, max_length=L, rngs=nnx.Rngs(3),
                        dtype=dtype, **options)


def inputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, L, E))
  return x, jnp.asarray(np.arange(L)[None] < np.array([L, L - 7])[:, None])


@pytest.mark.parametrize("name", ["softmax", "rfa_gaussian", "performer"])
def test_bfloat16_attention_tracks_float32(name):
  """The same parameters in both dtypes: outputs at valid positions agree to bfloat16 accuracy."""
  x, mask = inputs()
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    out = nnx.jit(lambda module, x, mask: module(x, mask))(build(name, dtype), x, mask)
    assert out.dtype == jnp.dtype(dtype)
    outputs[dtype] = np.asarray(out.astype(jnp.float32))[np.asarray(mask)]
  scale = np.abs(outputs["float32"]).max()
  np.testing.assert_allclose(outputs["bfloat16"], outputs["float32"], atol=0.05 * scale)


def test_build_model_threads_the_config_dtype():
  """config.dtype reaches every layer of the harness model; parameters stay float32."""
  model = train.build_model(tiny_config("linear", "bfloat16"), vocab_size=20, num_classes=10,
                            dual=False, has_padding=True, rngs=train.model_rngs(0))
  layers = [m for _, m in nnx.iter_modules(model)
            if isinstance(m, (nnx.Linear, nnx.LinearGeneral, nnx.LayerNorm, nnx.Embed))]
  assert len(layers) == 12 and all(m.dtype == jnp.bfloat16 for m in layers)
  assert all(x.dtype == jnp.float32 for x in floating_leaves(nnx.state(model, nnx.Param)))
  model.eval()
  logits = nnx.jit(lambda model, batch: model(batch))(model, padded_batch())
  assert logits.dtype == jnp.bfloat16 and np.isfinite(np.asarray(logits, np.float32)).all()


def scan_carry_dtypes(jaxpr) -> list:
  """Dtypes of the loop carries of every `scan` in a (closed) jaxpr, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      found += [v.aval.dtype for v in eqn.outvars[:eqn.params["num_carry"]]]
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          found += scan_carry_dtypes(sub.jaxpr)
        elif hasattr(sub, "eqns"):
          found += scan_carry_dtypes(sub)
  return found


@pytest.mark.parametrize("gated", [False, True])
def test_rfa_state_stays_float32_under_bfloat16(gated):
  module = attention.make("rfa_gaussian", emb_dim=E, num_heads=H, qkv_dim=E, max_length=L,
                          rngs=nnx.Rngs(0), causal=True, dtype="bfloat16", gated=gated,
                          chunk_size=8)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, L, E))
  mask = jnp.ones((2, L), bool)
  graphdef, state = nnx.split(module)
  forward = lambda state, x: nnx.merge(graphdef, state)(x, mask)
  jaxpr = jax.make_jaxpr(forward)(state, x)
  carries = scan_carry_dtypes(jaxpr.jaxpr)
  assert carries and all(dtype == jnp.float32 for dtype in carries)  # the chunked state S, z
  assert jaxpr.out_avals[0].dtype == jnp.bfloat16

  rfa = module.attention
  rfa.init_cache((2, L, E))
  graphdef, state = nnx.split(rfa)

  def decode(state, x_t):
    rfa = nnx.merge(graphdef, state)
    out = rfa(x_t, decode=True)
    return out, rfa.cached_s[...], rfa.cached_z[...]

  out, s, z = jax.eval_shape(decode, state, x[:, :1].astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16 and s.dtype == jnp.float32 and z.dtype == jnp.float32

  q = k = v = x[..., :8].reshape(2, L, 2, 4).astype(jnp.bfloat16)
  projection = rfa_jax.random_projection(jax.random.PRNGKey(2), 2, 4, 4)
  initial = rfa_jax.init_decode_state(2, 2, rfa_jax.feature_dim(4), 4)
  new_state, out = jax.eval_shape(
      lambda *args: rfa_jax.prefill(*args, chunk_size=8), initial, q, k, v, projection)
  assert new_state.s.dtype == jnp.float32 and new_state.z.dtype == jnp.float32
  assert out.dtype == jnp.bfloat16


def test_encoder_casts_positions_and_pools_in_float32():
  encoder = models.Encoder(vocab_size=20, max_length=L, num_layers=1, emb_dim=E, num_heads=H,
                           qkv_dim=E, mlp_dim=16, dropout_rate=0.0, attention_name="linear",
                           attention_options={}, pooling="mean", positions="learned",
                           dtype="bfloat16", rngs=nnx.Rngs(0))
  tokens = jnp.asarray(padded_batch()["inputs"])
  pooled = nnx.jit(lambda encoder, tokens: encoder(tokens, tokens != 0))(encoder, tokens)
  assert pooled.dtype == jnp.float32 and np.isfinite(np.asarray(pooled)).all()
  assert encoder.positions[...].dtype == jnp.float32
