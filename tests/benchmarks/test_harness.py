"""The harness benchmark: rows per attention spec, options included, ratios against the baseline."""

import pytest

from benchmarks import harness

TINY = ["model.num_layers=1", "model.emb_dim=16", "model.num_heads=2", "model.qkv_dim=16",
        "model.mlp_dim=16"]
SPEC = "rfa_gaussian:window=4,feature_map=positive,num_features=8"


def test_a_spec_with_options_is_its_own_row(tmp_path):
  args = harness.parse_args(
      ["--attentions", "softmax", "rfa_gaussian:num_features=8", SPEC, "--lengths", "16",
       "--batch-size", "8", "--steps", "1", "--out", str(tmp_path), "--override", *TINY])
  rows = {r["attention"]: r for r in harness.run(args)}
  assert set(rows) == set(args.attentions)
  assert rows["softmax"]["speedup"] == 1.0
  assert all(r["steps_per_sec"] > 0 and "memory_ratio" in r for r in rows.values())
  config = harness.text_config(SPEC, 16, args)
  assert config.model.attention_options.window == 4
  assert config.model.attention_options.feature_map == "positive"
  assert config.model.attention_options.num_features == 8


@pytest.mark.parametrize("spec, match", [
    ("rfa_gaussian:windw=4", "'windw=4' is not key=value with a key of rfa_gaussian's options"),
    ("rfa_gaussian:window", "'window' is not key=value"),
    ("softmx", "unknown attention 'softmx'"),
])
def test_bad_specs_are_refused_before_anything_runs(spec, match):
  args = harness.parse_args(["--attentions", "softmax", spec, "--lengths", "16", "--batch-size", "8"])
  with pytest.raises(ValueError, match=match):
    harness.run(args)


def test_microbatches_that_do_not_split_the_batch_are_refused_before_anything_runs():
  args = harness.parse_args(["--attentions", "softmax", "--lengths", "16", "--batch-size", "8",
                             "--override", "microbatches=3"])
  with pytest.raises(ValueError, match="not divisible into microbatches=3"):
    harness.run(args)


def test_cells_are_timed_in_turn_and_a_failing_cell_leaves_the_rotation():
  calls = []

  def stepper(name, fail_at=None):
    def step():
      calls.append(name)
      if len([c for c in calls if c == name]) == fail_at:
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
      return 0.5 if name == "a" else 0.25
    return step

  cells = [(dict(attention="a"), stepper("a")), (dict(attention="b"), stepper("b", fail_at=2)),
           (dict(attention="c", skipped="needs 20 GiB"), None), (dict(attention="d"), stepper("d"))]
  harness.time_in_turn(cells, steps=3)
  assert calls == ["a", "b", "d", "a", "b", "d", "a", "d"]
  rows = {row["attention"]: row for row, _ in cells}
  assert rows["a"]["steps_per_sec"] == 2.0 and rows["a"]["step_times"] == [0.5] * 3
  assert rows["a"]["spread"] == 0.0 and rows["d"]["steps_per_sec"] == 4.0
  assert rows["b"]["skipped"].startswith("out of memory") and "steps_per_sec" not in rows["b"]
  assert rows["c"] == dict(attention="c", skipped="needs 20 GiB")


def test_ratio_line_compares_two_mechanisms_where_both_ran():
  rows = [dict(attention="a", length=128, steps_per_sec=3.0), dict(attention="b", length=128,
                                                                  steps_per_sec=4.0),
          dict(attention="a", length=512, steps_per_sec=1.0), dict(attention="b", length=512,
                                                                  skipped="out of memory: x")]
  assert harness.ratio_line(rows, "a", "b") == "a / b steps/s: 0.75 at 128"
  assert harness.ratio_line(rows[2:], "a", "b") == "a / b steps/s: not measured"


def test_target_is_checked_against_softmax_only():
  rows = [dict(attention="rfa_gaussian", length=1024, speedup=7.0, memory_ratio=0.1)]
  assert harness.target_line(rows, 1024, "softmax").endswith(": PASS")
  assert harness.target_line(rows, 1024, "rfa_gaussian") == (
      "target: set against softmax; not checked with --baseline rfa_gaussian")
