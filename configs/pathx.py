"""Path-X (LRA): Pathfinder at 128x128, 16384 pixels, hard difficulty."""

from lra import config_lib

PRESETS = {}


def get_config(arg=None):
  config = config_lib.base_config("pathx")
  config.data_dir = "data/lra_release"  # scripts/prepare_data.sh puts the data here
  config.max_length = 16384
  config.batch_size = 512
  config.num_train_steps = 50000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.learning_rate = 1e-3
  config.schedule = "cosine"
  config.warmup_steps = 1000
  config.weight_decay = 0.0
  config.grad_clip = 1.0
  config.model.update(dict(num_layers=1, emb_dim=32, num_heads=2, qkv_dim=32, mlp_dim=32,
                           dropout_rate=0.1, pooling="mean"))
  return config_lib.apply_arg(config, arg, PRESETS)
