"""The model-level decoding benchmark in its quick mode: every row measured, caches sized as stated."""

import json

import jax
import pytest

from benchmarks import decode as decode_benchmark


@pytest.mark.slow
def test_quick_decode_benchmark_writes_json_and_markdown(tmp_path):
  results = decode_benchmark.main(["--quick", f"--out={tmp_path}"])
  saved = json.loads((tmp_path / "decode.json").read_text())
  assert saved["summary"] == json.loads(json.dumps(results["summary"]))
  rows = {(r["mechanism"], r["batch_size"], r["output_length"]): r for r in saved["per_token"]}
  assert set(rows) == {(m, 2, t) for m in decode_benchmark.PER_TOKEN for t in (16, 32)}
  assert all(r["seconds_per_token"] > 0 and r["spread"] >= 0 and r["bandwidth_seconds_per_token"] > 0
             for r in rows.values())
  # softmax keeps keys and values of every position; RFA's state does not depend on the length
  index = 4  # the int32 cache_index of the one layer
  softmax = [rows["softmax", 2, t]["cache_bytes"] - index for t in (16, 32)]
  assert softmax[1] == 2 * softmax[0]
  assert rows["rfa_gaussian", 2, 32]["cache_bytes"] == rows["rfa_gaussian", 2, 16]["cache_bytes"]
  # the hand-written decoder's cache is the model's, heads first: 1 layer, keys and values
  assert rows["handwritten", 2, 32]["cache_bytes"] == softmax[1]
  # a step reads every parameter, and softmax also the filled keys and values
  assert rows["softmax", 2, 32]["bytes_per_token"] > rows["identity", 2, 32]["bytes_per_token"]
  assert rows["handwritten", 2, 32]["bytes_per_token"] < softmax[1]
  assert {r["mechanism"] for r in saved["whole"]} == {"softmax", "rfa_gaussian", "identity"}
  (entry,) = saved["summary"]
  assert entry["whole_speedup"] > 0 and entry["identity_bound"] > 0
  assert [e["output_length"] for e in entry["per_length"]] == [16, 32]
  assert all(e["softmax_over_careful"] > 0 for e in entry["per_length"])
  markdown = (tmp_path / "decode.md").read_text()
  assert "| softmax | 2 |" in markdown and "RFA speed-up" in markdown
  assert "| handwritten | 2 |" in markdown and "| careful softmax | 2 |" in markdown


def test_every_call_of_a_decode_loop_times_the_same_positions():
  args = decode_benchmark.parse_args(["--quick"])
  model = decode_benchmark.build(decode_benchmark.lm_config(args), "softmax")
  compiled, state, tokens = decode_benchmark.decode_loop(model, 2, 32, 28, 4)
  for _ in range(3):  # the state is donated: each call takes the previous call's
    state, tokens = compiled(state, tokens)
  (index,) = {int(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state)
              if "cache_index" in jax.tree_util.keystr(path)}
  assert index == 32
