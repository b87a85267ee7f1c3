"""AAN document retrieval (LRA): do two papers cite each other? Byte-level, two documents per example,
a dual encoder with shared weights."""

from lra import config_lib

PRESETS = {}


def get_config(arg=None):
  config = config_lib.base_config("retrieval")
  config.data_dir = "data/lra_release"  # scripts/prepare_data.sh puts the data here
  config.max_length = 4000  # per document
  config.batch_size = 32
  config.num_train_steps = 5000
  config.warmup_steps = 1000
  config.learning_rate = 0.05
  config.schedule = "rsqrt"
  config.weight_decay = 0.1
  config.model.update(dict(num_layers=4, emb_dim=128, num_heads=4, qkv_dim=128, mlp_dim=512,
                           dropout_rate=0.1, pooling="cls"))
  return config_lib.apply_arg(config, arg, PRESETS)
