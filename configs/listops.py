"""ListOps (LRA): sequences of nested MIN/MAX/MED/SM operations, 10 classes.

`--config=configs/listops.py:<attention>[,small]`. `data_dir` is the LRA release (outer or inner
`lra_release/`) or its `listops-1000/` folder; when it is empty or absent, a training run generates a
dataset there with the LRA distribution (see `task_options`) and says so in its results.
"""

from lra import config_lib

PRESETS = {
    # About 10 minutes on a 2-core CPU: short expressions (16-128 tokens), a small model. On the
    # full-length task, linear-time attention sits at the majority class for thousands of steps (LRA
    # reports 16-18% for linear attention and Performer), the paper's RFA too; short sequences learn
    # within minutes. With `gated` or `recommended` RFA learns the longer ones as well (docs/choosing.md).
    "small": {
        "data_dir": "data/listops_small", "max_length": 128, "num_train_steps": 3000,
        "eval_every": 500, "checkpoint_every": 500, "log_every": 100,
        "warmup_steps": 200, "learning_rate": 0.05,
        "model.num_layers": 2, "model.emb_dim": 64, "model.num_heads": 4, "model.qkv_dim": 64,
        "model.mlp_dim": 128, "model.dropout_rate": 0.0,
        "task_options.generate_train": 40000, "task_options.generate_eval": 1000,
        "task_options.min_length": 16, "task_options.max_length": 128,
    },
    # RFA with exact softmax attention over a band of 16 positions beside it (rfa_gaussian,
    # rfa_arccos): see docs/choosing.md.
    "recommended": {"model.attention_options.window": 16},
    # Pure RFA with bidirectional gating (rfa_gaussian, rfa_arccos): a forward and a reverse gate
    # give the encoder a learned recency bias both ways; see docs/choosing.md.
    "gated": {"model.attention_options.gated": True},
}


def get_config(arg=None):
  config = config_lib.base_config("listops")
  config.data_dir = "data/listops"  # the LRA files: --config.data_dir=data/lra_release
  config.max_length = 2000
  config.batch_size = 32
  config.num_train_steps = 5000
  config.warmup_steps = 1000
  config.learning_rate = 0.05
  config.schedule = "rsqrt"
  config.weight_decay = 0.1
  config.model.update(dict(num_layers=4, emb_dim=512, num_heads=8, qkv_dim=512, mlp_dim=1024,
                           dropout_rate=0.1, pooling="cls"))
  # Generated when data_dir holds no ListOps files: counts of the LRA release, lengths 500-2000.
  config.task_options.generate_train = 96000
  config.task_options.generate_eval = 2000
  config.task_options.min_length = 500
  config.task_options.max_length = 2000
  config.task_options.generate_seed = 0  # the same data for every training seed
  config.task_options.parentheses = False  # True keeps "(" and ")" as tokens
  return config_lib.apply_arg(config, arg, PRESETS)
