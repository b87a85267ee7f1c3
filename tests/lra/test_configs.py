"""Every task config builds for every registered attention and carries the keys of the contract."""

import pathlib

import pytest

from lra import attention, config_lib, data

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[2] / "configs").glob("*.py"))
REQUIRED = ["data_dir", "batch_size", "num_train_steps", "eval_every", "checkpoint_every",
            "max_length", "seed", "attention", "model.num_layers", "model.emb_dim",
            "model.num_heads", "model.qkv_dim", "model.mlp_dim", "model.dropout_rate",
            "model.attention_options"]


def test_every_task_has_a_config():
  assert {p.stem for p in CONFIGS} == {"listops", "text", "retrieval", "image", "pathfinder",
                                       "pathx", "lm"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("name", attention.names())
def test_config_has_contract_keys_and_attention_options(path, name):
  config = config_lib.load(str(path), name)
  assert config.task == path.stem and config.attention == name
  for key in REQUIRED:
    node = config
    for part in key.split("."):
      node = node[part]
  assert set(config.model.attention_options) == set(attention.default_options(name))
  assert config.model.qkv_dim % config.model.num_heads == 0


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_option_of_the_tasks_loader_is_in_its_config(path):
  config = config_lib.load(str(path), "softmax")
  missing = set(data.options(config.task)) - set(config.task_options)
  assert not missing, f"configs/{path.name} cannot set {sorted(missing)}"


def test_bad_config_arguments_name_the_problem():
  with pytest.raises(ValueError, match="unknown attention 'rfa_gausian'.*rfa_gaussian"):
    config_lib.load(str(CONFIGS[0]), "rfa_gausian")
  with pytest.raises(ValueError, match="unknown preset 'huge'"):
    config_lib.load(str(CONFIGS[0]), "rfa_gaussian,huge")


def test_rfa_options_are_its_constructor_defaults():
  assert attention.default_options("rfa_gaussian")["num_features"] == 64


@pytest.mark.parametrize("task", ["lm", "listops"])
@pytest.mark.parametrize("name", ["rfa_gaussian", "rfa_arccos"])
def test_recommended_preset_switches_on_the_window_for_rfa_only(task, name):
  path = next(p for p in CONFIGS if p.stem == task)
  options = config_lib.load(str(path), f"{name},recommended").model.attention_options
  assert options.window is not None
  assert options.feature_map == ("arccos" if name == "rfa_arccos" else
                                 "positive" if task == "lm" else "gaussian")
  assert config_lib.load(str(path), name).model.attention_options.window is None
  with pytest.raises(ValueError, match="recommended"):
    config_lib.load(str(path), "softmax,recommended")


def test_listops_gated_preset_switches_on_bidirectional_gating_for_rfa_only():
  path = next(p for p in CONFIGS if p.stem == "listops")
  config = config_lib.load(str(path), "rfa_gaussian,small,gated")
  assert config.model.attention_options.gated and config.task == "listops"
  with pytest.raises(ValueError, match="preset 'gated' sets model.attention_options.gated"):
    config_lib.load(str(path), "softmax,gated")


def test_positive_preset_gives_rfa_gaussian_positive_features_and_refuses_the_others():
  path = next(p for p in CONFIGS if p.stem == "lm")
  options = config_lib.load(str(path), "rfa_gaussian,quick,gated,positive").model.attention_options
  assert options.feature_map == "positive" and options.gated and options.window is None
  with pytest.raises(ValueError, match="rfa_arccos has the arc-cosine kernel's own features"):
    config_lib.load(str(path), "rfa_arccos,positive")
  with pytest.raises(ValueError, match=r"need an RFA attention.*'softmax'"):
    config_lib.load(str(path), "softmax,positive")


@pytest.mark.parametrize("name", ["rfa_gaussian", "rfa_arccos"])
def test_rms_preset_drops_the_denominator_for_rfa_only(name):
  path = next(p for p in CONFIGS if p.stem == "lm")
  options = config_lib.load(str(path), f"{name},quick,gated,rms").model.attention_options
  assert options.normalizer == "rms" and options.gated
  assert config_lib.load(str(path), f"{name},quick,gated").model.attention_options.normalizer != "rms"
  with pytest.raises(ValueError, match=r"need an RFA attention.*'softmax'"):
    config_lib.load(str(path), "softmax,rms")
