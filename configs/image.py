"""Grayscale CIFAR-10 as a sequence of 1024 pixels (LRA image). No pixel value is padding."""

from lra import config_lib

PRESETS = {}


def get_config(arg=None):
  config = config_lib.base_config("image")
  config.data_dir = "data/tfds"  # scripts/prepare_data.sh puts the data here
  config.max_length = 1024
  config.batch_size = 256
  config.num_train_steps = 35000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.learning_rate = 5e-4
  config.schedule = "cosine"
  config.warmup_steps = 1000
  config.weight_decay = 0.0
  config.model.update(dict(num_layers=1, emb_dim=128, num_heads=8, qkv_dim=64, mlp_dim=128,
                           dropout_rate=0.3, pooling="cls"))
  config.task_options.validation = "holdout"  # every 10th training image; "test": the test split
  return config_lib.apply_arg(config, arg, PRESETS)
