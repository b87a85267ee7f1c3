"""Pathfinder-32 (LRA): are the two dots connected by a path? 1024 pixels, hard difficulty."""

from lra import config_lib

PRESETS = {}


def get_config(arg=None):
  config = config_lib.base_config("pathfinder")
  config.data_dir = "data/lra_release"  # scripts/prepare_data.sh puts the data here
  config.max_length = 1024
  config.batch_size = 512
  config.num_train_steps = 50000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.learning_rate = 1e-3
  config.schedule = "cosine"
  config.warmup_steps = 1000
  config.weight_decay = 0.0
  config.model.update(dict(num_layers=4, emb_dim=32, num_heads=4, qkv_dim=16, mlp_dim=32,
                           dropout_rate=0.1, pooling="mean"))
  return config_lib.apply_arg(config, arg, PRESETS)
