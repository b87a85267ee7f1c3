"""studies.listops in quick mode: a variant trains, its probes and the outputs are written."""

import json

import jax
import jax.numpy as jnp
import pytest

from studies import listops as study


@pytest.mark.slow
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
  stats = study.probe_softmax(q, k, jnp.array([[True, True, False]]))
  assert abs(stats["exact_entropy"] - 1) < 1e-6 and abs(stats["exact_max_weight"] - 0.5) < 1e-6


def test_variants_are_config_options():
  config = study.make_config(study.VARIANTS["exact_kernel_sigma_init_2"], steps=3, quick=True)
  assert config.model.attention_options.exact_kernel and config.model.attention_options.sigma_init == 2
  assert study.make_config(study.VARIANTS["rms"], 3, True).model.attention_options.normalizer == "rms"
  assert study.make_config(study.VARIANTS["sigma_lr_x10"], 3, True).learning_rate_scales.sigma == 10
