"""Shared pieces of the task configs in configs/: the common keys and the `<attention>[,<preset>...]`
argument that follows the ':' in `--config=configs/<task>.py:<arg>`."""

import importlib.util
import pathlib

import ml_collections
from ml_collections import config_dict

from lra import attention


def base_config(task: str) -> ml_collections.ConfigDict:
  """Keys every task has; task files set their LRA defaults on top."""
  config = ml_collections.ConfigDict()
  config.task = task
  config.data_dir = f"data/{task}"
  config.attention = "rfa_gaussian"
  config.seed = 0
  # Activations and matrix products: "float32" or "bfloat16". Parameters, optimiser state, losses and
  # RFA's state stay float32 either way.
  config.dtype = "float32"
  config.max_length = 1000
  config.batch_size = 32  # global, split across all devices and hosts
  # Gradient accumulation: each train step runs its batch in this many parts one after another and
  # makes one update from their summed gradients, with one part's activations in memory.
  config.microbatches = 1
  config.num_train_steps = 5000
  config.eval_every = 500
  config.num_eval_batches = -1  # -1: the whole validation split
  config.checkpoint_every = 500
  config.log_every = 50
  config.learning_rate = 0.05
  config.schedule = "rsqrt"  # linear warmup, then rsqrt decay ("rsqrt") or cosine decay ("cosine")
  config.warmup_steps = 1000
  config.weight_decay = 0.1
  config.grad_clip = 0.0  # global norm; 0 disables clipping
  config.adam_b1 = 0.9
  config.adam_b2 = 0.98
  config.adam_eps = 1e-9
  # Factors on the updates of the parameters with these names in their path, e.g.
  # --config.learning_rate_scales.sigma=10 (RFA's kernel bandwidth); 1 changes nothing.
  config.learning_rate_scales = ml_collections.ConfigDict({"sigma": 1.0})
  config.task_options = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      num_layers=4, emb_dim=512, num_heads=8, qkv_dim=512, mlp_dim=1024, dropout_rate=0.1,
      pooling="cls", positions="sinusoidal"))
  return config


def apply_arg(config, arg: str | None, presets: dict[str, dict]) -> ml_collections.ConfigDict:
  """`arg` = "<attention>[,<preset>...]": picks the attention (its options, with their defaults, land
  in `model.attention_options`) and applies the named presets (dicts of dotted keys to values)."""
  name, *preset_names = (arg or config.attention).split(",")
  if name not in attention.names():
    raise ValueError(f"unknown attention {name!r} in the config argument; "
                     f"registered: {', '.join(attention.names())}")
  config.attention = name
  config.model.attention_options = ml_collections.ConfigDict(
      {key: config_dict.placeholder(int) if value is None else value
       for key, value in attention.default_options(name).items()})
  for preset in preset_names:
    if preset not in presets:
      raise ValueError(f"unknown preset {preset!r} in the config argument; this task has: "
                       f"{', '.join(sorted(presets)) or 'none'}")
    options = config.model.attention_options
    foreign = [key for key in presets[preset] if key.startswith("model.attention_options.")
               and key.split(".", 2)[2] not in options]
    if foreign:
      raise ValueError(f"preset {preset!r} sets {', '.join(foreign)}, which attention {name!r} does "
                       f"not have (its options: {', '.join(sorted(options)) or 'none'})")
    override(config, presets[preset])
  return config


def override(config, settings: dict) -> ml_collections.ConfigDict:
  """Sets dotted keys ("model.emb_dim") of `config` to values, as `--config.<key>=<value>` does."""
  for key, value in settings.items():
    *parents, leaf = key.split(".")
    target = config
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def load(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config=<path>:<arg>` would give it."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
