"""Byte-level IMDb sentiment (LRA text): 2 classes, UTF-8 bytes as tokens.

`--config=configs/text.py:<attention>[,len4000]`: length 1000 (LRA repository) or 4000 (LRA paper).
"""

from lra import config_lib

PRESETS = {"len4000": {"max_length": 4000}}


def get_config(arg=None):
  config = config_lib.base_config("text")
  config.data_dir = "data/tfds"  # scripts/prepare_data.sh puts the data here
  config.max_length = 1000
  config.batch_size = 32
  config.num_train_steps = 20000
  config.warmup_steps = 8000
  config.learning_rate = 0.05
  config.schedule = "rsqrt"
  config.weight_decay = 0.1
  config.model.update(dict(num_layers=4, emb_dim=256, num_heads=4, qkv_dim=256, mlp_dim=1024,
                           dropout_rate=0.1, pooling="cls"))
  config.task_options.source = "tfds"  # or "aclimdb": data_dir holds the unpacked aclImdb/ folder
  config.task_options.validation = "holdout"  # every 10th training review; "test": the test split
  return config_lib.apply_arg(config, arg, PRESETS)
