"""lra.studies.listops in quick mode: a variant trains, its probes and the outputs are written."""

import json

import jax
import jax.numpy as jnp
import numpy as np

import rfa_jax.attention
import rfa_jax.module
from lra.studies import listops as study
from rfa_jax import reference
from rfa_jax.random_features import l2_normalize


def test_quick_study_trains_probes_and_writes_tables_and_plots(tmp_path):
  out, data = tmp_path / "out", tmp_path / "data"
  args = ["--quick", "--variants=clamp1", "--steps=2", "--measure-every=1", f"--out={out}",
          f"--data-root={data}"]
  study.main(args)
  record = json.loads((out / "results.json").read_text())["records"][0]
  assert [row["step"] for row in record["curve"]] == [1, 2]
  layer = record["curve"][-1]["layers"][0]
  assert len(layer["sigma"]) == 2  # quick model: one layer, 2 heads
  assert 0 < layer["exact_entropy"] <= 1 and layer["weights_l1"] >= 0
  assert 0 <= layer["denominator_negative"] <= layer["denominator_floor"] <= 1
  assert "| clamp1 |" in (out / "results.md").read_text()
  assert (out / "learning_curves.png").stat().st_size > 0 and (out / "probes.png").stat().st_size > 0
  # A finished variant is reused, not retrained.
  (out / "runs" / "clamp1.json").write_text(json.dumps({**record, "description": "kept"}))
  study.main(args)
  assert json.loads((out / "results.json").read_text())["records"][0]["description"] == "kept"


def test_softmax_probe_entropy_is_one_for_equal_logits_and_ignores_padding():
  q = jnp.zeros((1, 3, 1, 4))
  k = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 1, 4))
  stats = study.probe_softmax(dict(q=q, k=k, key_mask=jnp.array([[True, True, False]])))
  assert abs(stats["exact_entropy"] - 1) < 1e-6 and abs(stats["exact_max_weight"] - 0.5) < 1e-6


def test_exact_kernel_control_is_softmax_over_sigma_squared_normalised_logits():
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 5, 2, 4)) for i in range(3))
  key_mask = jnp.arange(5)[None] < jnp.array([[5], [3]])
  sigma = jnp.array([1.5, 0.7])
  out = study._exact_kernel_attention(q, k, v, None, sigma=sigma, key_mask=key_mask)
  for h in range(2):
    head = slice(h, h + 1)
    expected = reference.softmax_attention(l2_normalize(q[:, :, head]), l2_normalize(k[:, :, head]),
                                           v[:, :, head], key_mask=key_mask, scale=sigma[h] ** 2)
    np.testing.assert_allclose(out[:, :, head], expected, atol=1e-6)
  with study.patched(study.VARIANTS["exact_kernel"]):
    assert rfa_jax.module.rfa_cross is study._exact_kernel_attention
  assert rfa_jax.module.rfa_cross is rfa_jax.attention.rfa_cross
