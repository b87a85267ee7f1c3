"""Path-X (LRA): Pathfinder at 128x128, 16384 pixels, hard difficulty. Pathfinder's training setup
(configs/pathfinder.py) with LRA's Path-X model and gradient clipping."""

import pathlib

from lra import config_lib

PRESETS = {}


def get_config(arg=None):
  config = config_lib.load(str(pathlib.Path(__file__).with_name("pathfinder.py")))
  config.task = "pathx"
  config.max_length = 16384
  config.grad_clip = 1.0
  config.model.update(dict(num_layers=1, emb_dim=32, num_heads=2, qkv_dim=32, mlp_dim=32))
  return config_lib.apply_arg(config, arg, PRESETS)
