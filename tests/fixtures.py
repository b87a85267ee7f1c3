"""What the tests share: tiny data sets in the official formats of the LRA tasks (no downloads), the
tiny model configuration, and the environment of the command-line runs."""

import json
import os
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from lra import config_lib
from lra.data import listops, retrieval

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A one-layer, 16-wide model: what every test that trains starts from.
TINY_MODEL = {"model.num_layers": 1, "model.emb_dim": 16, "model.num_heads": 2, "model.qkv_dim": 16,
              "model.mlp_dim": 16}


def tiny_config(task: str, arg: str, **settings):
  """`--config=configs/<task>.py:<arg>` with `TINY_MODEL`, then `settings` (dotted keys to values)."""
  config = config_lib.load(str(ROOT / "configs" / f"{task}.py"), arg)
  return config_lib.override(config, {**TINY_MODEL, **settings})


# `[MAX 2 9 [MIN 4 7 ] 0 ]` = 9 and `[SM 9 8 ]` = 7 in the LRA generator's text form.
LISTOPS_EXPRESSIONS = [("( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )", 9),
                       ("( ( ( [SM 9 ) 8 ) ] )", 7)]

AAN_ROWS = [("1.0", "P01-1", "P02-2", "Citing paper \"A\".", "Cited paper B."),
            ("0", "P01-1", "P03-3", "Citing paper \"A\".", "Unrelated caf\u00e9."),
            ("0.0", "P03-3", "P02-2", "Unrelated caf\u00e9.", "Cited paper B.")]


TINY_LM = {
    **TINY_MODEL,
    "num_train_steps": 6, "eval_every": 3, "checkpoint_every": 2, "log_every": 2,
    "batch_size": 8, "max_length": 16, "warmup_steps": 2, "num_eval_batches": -1,
    "model.mlp_dim": 32, "model.dropout_rate": 0.1,
}


def write_corpus(path) -> str:
  """About 12 KB of text with some structure: numbered lines of words."""
  words = ["alpha", "beta", "gamma", "delta", "rfa", "state", "segment", "byte"]
  rng = np.random.default_rng(0)
  lines = [f"{i}: " + " ".join(rng.choice(words, 4)) for i in range(500)]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def tiny_lm_config(corpus, arg="rfa_gaussian,gated,stateful", **overrides):
  """The lm task on the text file `corpus` with a tiny model, 6 steps; `overrides`: dotted keys."""
  config = tiny_config("lm", arg, **{**TINY_LM, "task_options.source": "files",
                                     "task_options.files": corpus, **overrides})
  if "num_features" in config.model.attention_options and "model.attention_options.num_features" \
      not in overrides:
    config.model.attention_options.num_features = 8
  return config


def subprocess_env(devices: int, **extra) -> dict:
  """The environment for a command-line run on `devices` CPU devices, with the tests' XLA flags."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
  return dict(os.environ, JAX_PLATFORMS="cpu", **extra,
              XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip())


def write_listops_tsv(path, rows, header="Source\tTarget"):
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [header] + [f"{source}\t{target}" for source, target in rows]
  path.write_text("\r\n".join(lines) + "\r\n")


def write_listops(data_dir, rows=LISTOPS_EXPRESSIONS):
  """`listops-1000/basic_{train,val,test}.tsv`, each holding `rows`."""
  for name in listops.SPLIT_FILES.values():
    write_listops_tsv(data_dir / "listops-1000" / name, rows)


def write_aclimdb(root, per_class=10):
  """`aclImdb/{train,test}/{neg,pos}/<i>_<rating>.txt`: `per_class` short reviews per folder."""
  for split in ("train", "test"):
    for label in ("neg", "pos"):
      folder = root / "aclImdb" / split / label
      folder.mkdir(parents=True)
      for i in range(per_class):
        (folder / f"{i}_{i % 10 + 1}.txt").write_text(f"{split} {label} review {i}, caf\u00e9")
  (root / "aclImdb" / "train" / "unsup").mkdir()


def write_aan(data_dir, rows=AAN_ROWS, split_file="new_aan_pairs.test.tsv"):
  """`tsv_data/new_aan_pairs.{train,eval,test}.tsv`: `split_file` holds `rows`, the others
  AAN_ROWS."""
  folder = data_dir / "tsv_data"
  folder.mkdir(parents=True, exist_ok=True)
  for name in retrieval.SPLIT_FILES.values():
    lines = ["\t".join(row) for row in (rows if name == split_file else AAN_ROWS)]
    (folder / name).write_text("\n".join(lines) + "\n")


def write_pathfinder(data_dir, resolution=32, num_images=40, empty=("imgs/1", "sample_3.png"),
                     metadata_files=2):
  """Images imgs/<i % 2>/sample_<i>.png of `pathfinder<resolution>/curv_contour_length_14` whose
  pixel (0, 0) is i and label i % 3 == 0, listed round-robin in metadata/<k>.npy; `empty` is
  written as a zero-byte file. Returns the difficulty folder."""
  root = data_dir / f"pathfinder{resolution}" / "curv_contour_length_14"
  lines = [[] for _ in range(metadata_files)]
  rng = np.random.default_rng(0)
  for i in range(num_images):
    subdir, filename = f"imgs/{i % 2}", f"sample_{i}.png"
    path = root / subdir / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if (subdir, filename) == empty:
      path.write_bytes(b"")
    else:
      pixels = rng.integers(0, 256, (resolution, resolution), dtype=np.uint8)
      pixels[0, 0] = i
      Image.fromarray(pixels).save(path)
    lines[i % metadata_files].append(f"{subdir} {filename} {i} {int(i % 3 == 0)}\n")
  (root / "metadata").mkdir()
  for k, file_lines in enumerate(lines):
    (root / "metadata" / f"{k}.npy").write_text("".join(file_lines))
  return root


def mock_tfds(num_examples=20):
  """Context in which every tensorflow-datasets data set (`imdb_reviews`, `cifar10`) reads as
  `num_examples` random examples per split, without files or TensorFlow."""
  return tfds.testing.mock_data(num_examples=num_examples)


def records(workdir):
  """The rows of a workdir's metrics.jsonl without their timing (`steps_per_sec`)."""
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if k != "steps_per_sec"} for line in lines]
