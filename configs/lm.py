"""Byte-level causal language modelling (task `lm`): next-byte prediction, bits per byte.

`--config=configs/lm.py:<attention>[,<preset>...]`, e.g. `rfa_gaussian,quick,gated,positive`.
`max_length` is the segment length. `task_options.source`: "stdlib" (the running Python's standard
library sources, offline), "enwik8" / "text8" (`<data_dir>/enwik8[.zip]`, `<data_dir>/text8[.zip]`) or
"files" (`task_options.files`, comma-separated UTF-8 text paths). `task_options.stateful=True` (RFA
only) carries each layer's attention state from a segment to the next (see `lra.train`), with
`task_options.stream_segments` (streams of that many segments, then a jump) and
`task_options.stream_sets` (sets of streams that take turns, batch by batch);
`task_options.pack_documents=True` keeps attention within each document (file) of a segment.
RFA options under `model.attention_options` include `gated` (recency gate) and `chunk_size`.
"""

from lra import config_lib

PRESETS = {
    # The CPU run of docs/lm.md (about 6 minutes on 2 cores): a 2-layer, 128-wide model on 128-byte
    # segments of the offline corpus.
    "quick": {
        "max_length": 128, "batch_size": 16, "num_train_steps": 1200, "warmup_steps": 100,
        "eval_every": 300, "checkpoint_every": 300, "log_every": 100, "num_eval_batches": 20,
        "learning_rate": 3e-3,
        "model.num_layers": 2, "model.emb_dim": 128, "model.num_heads": 4, "model.qkv_dim": 128,
        "model.mlp_dim": 512, "model.dropout_rate": 0.0,
    },
    "gated": {"model.attention_options.gated": True},
    # Positive random features of the same Gaussian kernel (rfa_gaussian only): with `gated`, pure
    # RFA at softmax's bits per byte in docs/choosing.md's runs.
    "positive": {"model.attention_options.feature_map": "positive"},
    # No denominator: RFA's numerator divided by its RMS over the value dimension. With `gated`, the
    # paper's sin/cos RFA-Gate at softmax's bits per byte in docs/choosing.md's runs.
    "rms": {"model.attention_options.normalizer": "rms"},
    "stateful": {"task_options.stateful": True},
    # Exact softmax over the 32 previous bytes beside RFA with positive features, whose weight starts
    # at 0 (rfa_gaussian; rfa_arccos keeps its own features): see docs/choosing.md.
    "recommended": {"model.attention_options.window": 32,
                    "model.attention_options.feature_map": "positive",
                    "model.attention_options.rfa_scale_init": 0.0},
}
RFA_ONLY = ("gated", "stateful", "positive", "rms", "recommended")


def get_config(arg=None):
  config = config_lib.base_config("lm")
  config.data_dir = "data/lm"  # enwik8 / text8 live here; stdlib and files need none
  config.max_length = 512
  config.batch_size = 32
  config.num_train_steps = 20000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.log_every = 100
  config.learning_rate = 2e-3
  config.schedule = "cosine"
  config.warmup_steps = 1000
  config.weight_decay = 0.01
  config.grad_clip = 1.0
  config.model.update(dict(num_layers=4, emb_dim=256, num_heads=4, qkv_dim=256, mlp_dim=1024,
                           dropout_rate=0.1, pooling="none"))
  config.task_options.source = "stdlib"
  config.task_options.files = ""
  config.task_options.stateful = False
  # Stateful training: each row reads this many consecutive segments, then jumps to a random place
  # (reset); 0: one contiguous stream per row through the whole split.
  config.task_options.stream_segments = 0
  # Stateful training: this many independent sets of streams take turns, batch by batch, each with
  # its own carried state, so consecutive batches are unrelated text.
  config.task_options.stream_sets = 1
  # Pack documents: each file of the stdlib / files corpus one document; attention and positions
  # restart at every document (softmax and RFA).
  config.task_options.pack_documents = False
  name, *presets = (arg or config.attention).split(",")
  rfa_presets = [preset for preset in presets if preset in RFA_ONLY]
  if rfa_presets and not name.startswith("rfa_"):
    raise ValueError(f"preset(s) {rfa_presets} need an RFA attention (rfa_gaussian, rfa_arccos); "
                     f"got {name!r}")
  if name == "rfa_arccos" and "positive" in presets:
    raise ValueError("preset 'positive' gives rfa_gaussian positive features of its Gaussian kernel; "
                     "rfa_arccos has the arc-cosine kernel's own features: use rfa_gaussian,...,positive")
  presets = PRESETS
  if name == "rfa_arccos":  # the arc-cosine kernel has one feature map
    presets = {**PRESETS, "recommended": {key: value for key, value in PRESETS["recommended"].items()
                                          if not key.endswith("feature_map")}}
  return config_lib.apply_arg(config, arg, presets)
