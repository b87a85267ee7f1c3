"""Why RFA does not learn ListOps: learning curves of attention variants, with probes of the attention.

    python -m studies.listops [--variants=all|name,...] [--steps=400] [--out=DIR] [--quick]

Every variant trains the `small` ListOps model of configs/listops.py (2 layers, emb 64, 4 heads) on
generated expressions of 64-256 tokens (`data/listops_64_256`, generated on first use) with the
harness's own model, optimiser and jitted steps (`lra.train.init_training`), one variant after the
other. Every `--measure-every` steps it records the validation loss and accuracy and, on one fixed
validation batch with the evaluation model, probes each attention layer:

- RFA: sigma per head; the exact softmax weights that the layer's q, k and sigma ask for (logits
  sigma^2 q^ . k^; the arc-cosine kernel's own weights for rfa_arccos): their entropy over the
  unpadded keys normalised by log(keys) (1 = uniform) and their mean largest weight; the L1 distance
  of RFA's implicit weight rows (`rfa_jax.weights.rfa_weights`) from them (2 = disjoint); the raw
  denominators phi(q) . z: fraction <= DENOMINATOR_FLOOR, fraction < 1, fraction < 0, median.
- softmax: the entropy and largest weight of its attention.

Every variant is a set of config overrides, i.e. options of the library and the harness:
`clamp1` and `rms` set RFA's denominator rule (`normalizer`: max(d, 1) as the official RFA code
does; no denominator, the numerator divided by its root mean square); `sigma_lr*` scale the
optimiser's updates of sigma (`learning_rate_scales.sigma`). The `exact_kernel*` controls compute
the kernel RFA estimates exactly (`exact_kernel=True`: softmax with logits sigma^2 q^ . k^, i.e. RFA
with infinitely many features), which separates what the parameterisation (normalised q, k, the
scale sigma) allows from what the random-feature estimate delivers. Per-dimension sigma (the
official code's) is not a variant: the library learns one sigma per head, and the estimator's failure
depends on the scale of sigma q^ . sigma k^, which a per-dimension sigma grows in the same way.

Each variant's record is written to DIR/runs/<variant>.json as soon as it is done and reused by
later invocations (delete it to rerun); DIR/results.{json,md} and DIR/learning_curves.png and
DIR/probes.png are rewritten from all records at the end.
"""

import argparse
import dataclasses
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import rfa_jax
from lra import config_lib, parallelism
from lra import train as train_lib
from lra.baselines.softmax import SoftmaxAttention
from lra.data import pipeline
from lra.models import token_mask
from lra.records import git_commit, write_json_atomically, write_text_atomically
from rfa_jax.random_features import arccos_kernel, l2_normalize, query_key_features
from rfa_jax.weights import rfa_weights

CONFIG_FILE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "listops.py"


@dataclasses.dataclass(frozen=True)
class Variant:
  attention: str
  description: str
  overrides: tuple = ()  # (dotted config key, value) pairs on top of the study's base config


_RFA = "rfa_gaussian"
_NORMALIZER, _SIGMA_LR = "model.attention_options.normalizer", "learning_rate_scales.sigma"
_EXACT_KERNEL = ("model.attention_options.exact_kernel", True)
_FEATURE_MAP = "model.attention_options.feature_map"
VARIANTS = {  # in the order `--variants=all` runs them: the most telling first
    "softmax": Variant("softmax", "exact softmax attention"),
    "rfa_gaussian": Variant(_RFA, "RFA sin/cos, the harness default: sigma 1 per head learned, "
                            "1e-6 floor, redraw, 64 features, lr 0.05 rsqrt, CLS"),
    "linear": Variant("linear", "linear attention, elu + 1 features"),
    "clamp1": Variant(_RFA, "denominator max(d, 1) (official RFA code)", ((_NORMALIZER, "clamp1"),)),
    "rms": Variant(_RFA, "no denominator: numerator / rms(numerator)", ((_NORMALIZER, "rms"),)),
    "adam_1e-3_cosine": Variant(_RFA, "lr 1e-3, cosine decay",
                                (("learning_rate", 1e-3), ("schedule", "cosine"))),
    "sigma_init_2": Variant(_RFA, "sigma initialised to 2", (("model.attention_options.sigma_init", 2.0),)),
    "sigma_frozen": Variant(_RFA, "sigma fixed at 1 (no updates)", ((_SIGMA_LR, 0.0),)),
    "features_256": Variant(_RFA, "256 random features", (("model.attention_options.num_features", 256),)),
    "fixed_features": Variant(_RFA, "one fixed projection (no redraw)",
                              (("model.attention_options.redraw", False),)),
    "mean_pooling": Variant(_RFA, "mean pooling instead of CLS", (("model.pooling", "mean"),)),
    "performer": Variant("performer", "FAVOR+ positive random features (256, its default), "
                         "unnormalised q, k"),
    "rfa_arccos": Variant("rfa_arccos", "RFA relu features (arc-cosine kernel)"),
    "sigma_lr_x10": Variant(_RFA, "sigma's updates x10", ((_SIGMA_LR, 10.0),)),
    "sigma_init_0.5": Variant(_RFA, "sigma initialised to 0.5",
                              (("model.attention_options.sigma_init", 0.5),)),
    "softmax_1e-3_cosine": Variant("softmax", "softmax, lr 1e-3, cosine decay",
                                   (("learning_rate", 1e-3), ("schedule", "cosine"))),
    "exact_kernel": Variant(_RFA, "control: the kernel RFA estimates, computed exactly (softmax, "
                            "logits sigma^2 q^.k^), sigma learned from 1", (_EXACT_KERNEL,)),
    "exact_kernel_sigma_init_2": Variant(
        _RFA, "control: exact kernel, sigma initialised to 2",
        (("model.attention_options.sigma_init", 2.0), _EXACT_KERNEL)),
    "exact_kernel_sigma_init_1.5": Variant(
        _RFA, "control: exact kernel, sigma initialised to 1.5",
        (("model.attention_options.sigma_init", 1.5), _EXACT_KERNEL)),
    "sigma_init_1.5_features_256": Variant(
        _RFA, "sigma initialised to 1.5, 256 random features",
        (("model.attention_options.sigma_init", 1.5),
         ("model.attention_options.num_features", 256))),
    "positive_sigma_init_1.5": Variant(
        _RFA, "positive features of the same kernel, sigma initialised to 1.5",
        ((_FEATURE_MAP, "positive"), ("model.attention_options.sigma_init", 1.5))),
    "positive_sigma_init_2": Variant(
        _RFA, "positive features of the same kernel, sigma initialised to 2",
        ((_FEATURE_MAP, "positive"), ("model.attention_options.sigma_init", 2.0))),
    "positive_sigma_init_2_features_256": Variant(
        _RFA, "positive features, sigma initialised to 2, 256 random features",
        ((_FEATURE_MAP, "positive"), ("model.attention_options.sigma_init", 2.0),
         ("model.attention_options.num_features", 256))),
    "window_16": Variant(_RFA, "RFA + exact softmax over a band of 16 positions",
                         (("model.attention_options.window", 16),)),
    "sliding_window_16": Variant("sliding_window", "control: the band of 16 positions alone",
                                 (("model.attention_options.window", 16),)),
    "local": Variant("local", "control: local attention in blocks of 50"),
}


def base_overrides(steps: int, quick: bool) -> dict:
  """The study's config on top of the `small` preset: 64-256-token expressions, `steps` steps."""
  if quick:
    return {"data_dir": "data/listops_study_quick", "max_length": 32, "batch_size": 8,
            "task_options.min_length": 8, "task_options.max_length": 32,
            "task_options.generate_train": 64, "task_options.generate_eval": 16,
            "model.num_layers": 1, "model.emb_dim": 16, "model.qkv_dim": 16, "model.mlp_dim": 16,
            "model.num_heads": 2, "num_train_steps": steps, "warmup_steps": 2}
  return {"data_dir": "data/listops_64_256", "max_length": 256,
          "task_options.min_length": 64, "task_options.max_length": 256,
          "task_options.generate_train": 20000, "task_options.generate_eval": 500,
          "num_train_steps": steps}


def make_config(variant: Variant, steps: int, quick: bool, data_root: str | None = None):
  config = config_lib.load(str(CONFIG_FILE), f"{variant.attention},small")
  config_lib.override(config, {**base_overrides(steps, quick), **dict(variant.overrides)})
  if data_root is not None:
    config.data_dir = str(pathlib.Path(data_root) / pathlib.Path(config.data_dir).name)
  return config


# --- probes --------------------------------------------------------------------------------------

def exact_gaussian_weights(q, k, sigma, key_mask=None):
  """The weights RFA's gaussian features estimate: softmax over keys of sigma_h^2 q^ . k^.

  q: [B, Lq, H, d], k: [B, Lk, H, d], sigma: scalar or [H], key_mask: [B, Lk] -> [B, H, Lq, Lk].
  """
  qn, kn = l2_normalize(q.astype(jnp.float32)), l2_normalize(k.astype(jnp.float32))
  logits = jnp.einsum("bihd,bjhd->bhij", qn, kn) * jnp.reshape(sigma, (-1, 1, 1)) ** 2
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


def _weight_stats(weights, key_mask):
  """Mean normalised entropy and largest weight of rows [B, H, Lq, Lk] over unpadded queries."""
  num_keys = jnp.sum(key_mask, -1)[:, None, None]  # [B, 1, 1]
  safe = jnp.where(weights > 0, weights, 1.0)
  entropy = -jnp.sum(jnp.where(weights > 0, weights * jnp.log(safe), 0.0), -1)
  entropy = entropy / jnp.log(jnp.maximum(num_keys, 2))
  valid = jnp.broadcast_to(key_mask[:, None, :], weights.shape[:3])
  mean = lambda x: float(jnp.sum(jnp.where(valid, x, 0)) / jnp.sum(valid))
  return dict(entropy=mean(entropy), max_weight=mean(jnp.max(weights, -1))), valid, mean


def probe_rfa(q, k, key_mask, projection, kind, sigma):
  """RFA's implicit weights (the library's floor rule) and denominators against the exact ones."""
  if kind in ("gaussian", "positive"):
    exact = exact_gaussian_weights(q, k, sigma, key_mask)
  else:
    qn, kn = l2_normalize(q.astype(jnp.float32)), l2_normalize(k.astype(jnp.float32))
    scores = jnp.moveaxis(arccos_kernel(qn[:, :, None], kn[:, None, :]), -1, 1)
    scores = scores * key_mask[:, None, None, :]
    exact = scores / jnp.sum(scores, -1, keepdims=True)
  stats, valid, mean = _weight_stats(exact, key_mask)
  estimate = rfa_weights(q, k, projection, feature_map=kind, sigma=sigma, key_mask=key_mask)
  phi_q, phi_k = query_key_features(q, jnp.where(key_mask[..., None, None], k, 0), projection, kind,
                                    sigma)
  z = jnp.sum(phi_k * key_mask[:, None, :, None], 2)  # heads first: [B, H, F]
  denominator = jnp.einsum("bhif,bhf->bhi", phi_q, z)  # [B, H, Lq]
  valid_denominator = np.asarray(denominator)[np.asarray(valid)]
  return dict(sigma=[float(s) for s in np.ravel(sigma)], exact_entropy=stats["entropy"],
              exact_max_weight=stats["max_weight"],
              weights_l1=mean(jnp.sum(jnp.abs(estimate - exact), -1)),
              denominator_floor=float(np.mean(valid_denominator <= rfa_jax.DENOMINATOR_FLOOR)),
              denominator_below_1=float(np.mean(valid_denominator < 1.0)),
              denominator_negative=float(np.mean(valid_denominator < 0)),
              denominator_median=float(np.median(valid_denominator)))


def probe_softmax(q, k, key_mask):
  logits = jnp.einsum("bihd,bjhd->bhij", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
  weights = jax.nn.softmax(jnp.where(key_mask[:, None, None, :], logits, -jnp.inf), -1)
  stats, _, _ = _weight_stats(weights, key_mask)
  return dict(exact_entropy=stats["entropy"], exact_max_weight=stats["max_weight"])


def probe(model, batch) -> list[dict]:
  """One dict per attention layer (see the module docstring); `model` in evaluation mode. Each
  layer's q and k are the outputs of its `query` and `key` maps, captured with `nnx.capture`."""
  _, captured = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(batch)
  outputs = {path: variable.get_value()[0] for path, variable in nnx.to_flat_state(captured)}
  key_mask = token_mask(batch["inputs"], 0)
  if model.encoder.cls is not None:
    key_mask = jnp.concatenate([jnp.ones((key_mask.shape[0], 1), bool), key_mask], 1)
  layers = []
  for path, module in nnx.iter_modules(model):
    if isinstance(module, (rfa_jax.RFAAttention, SoftmaxAttention)):
      q, k = (outputs[(*path, name, "__call__")] for name in ("query", "key"))
      if isinstance(module, SoftmaxAttention):
        layers.append(probe_softmax(q, k, key_mask))
      else:
        layers.append(probe_rfa(q, k, key_mask, module.evaluation_projection(), module.feature_map,
                                module.sigma[...].astype(jnp.float32)))
  return layers


# --- training ------------------------------------------------------------------------------------

def train_variant(name: str, variant: Variant, *, steps: int, measure_every: int, quick: bool,
                  data_root: str | None = None) -> dict:
  """Trains one variant and returns its record: config summary, curve (one row per measurement)."""
  config = make_config(variant, steps, quick, data_root)
  task = train_lib.load_data(config)
  mesh = parallelism.data_mesh()
  model_args = dict(vocab_size=task.vocab_size, num_classes=task.num_classes, dual=task.dual,
                    has_padding=task.has_padding)
  probe_batch = next(iter(pipeline.make_batches(
      task.splits["validation"], global_batch_size=config.batch_size, seed=0, shuffle=False,
      repeat=False)))
  eval_model = train_lib.build_model(config, rngs=train_lib.model_rngs(config.seed), **model_args)
  eval_model.eval()
  curve, recent = [], []
  start = time.perf_counter()
  state, steps_fn = train_lib.init_training(config, mesh, **model_args)
  batches = pipeline.make_batches(task.splits["train"], global_batch_size=config.batch_size,
                                  seed=config.seed, shuffle=True, repeat=True)
  for step in range(1, steps + 1):
    state, metrics = steps_fn.train(state, parallelism.global_batch(next(batches), mesh))
    recent.append(metrics)
    if step % measure_every and step != steps:
      continue
    logged = jax.device_get(recent)
    recent = []
    validation = train_lib.evaluate(steps_fn, state, task.splits["validation"], config, mesh)
    nnx.update(eval_model, jax.device_get(state["params"]))
    row = dict(step=step, seconds=round(time.perf_counter() - start, 1),
               train_loss=float(np.mean([m["loss"] for m in logged])),
               train_accuracy=float(np.mean([m["accuracy"] for m in logged])),
               validation_loss=validation["loss"], validation_accuracy=validation["accuracy"],
               layers=probe(eval_model, probe_batch))
    curve.append(row)
    print(f"{name} step {step}: train loss {row['train_loss']:.3f}, validation accuracy "
          f"{row['validation_accuracy']:.3f} ({row['seconds']:.0f} s)", flush=True)
    if not np.isfinite(row["train_loss"]):
      break
  targets = np.asarray(task.splits["validation"].targets)
  majority = float(np.max(np.bincount(targets)) / len(targets))
  return dict(name=name, attention=variant.attention, description=variant.description,
              overrides=dict(variant.overrides), steps=steps, curve=curve,
              validation_majority_accuracy=majority, data=task.data, config=config.to_dict(),
              commit=git_commit(), date=time.strftime("%Y-%m-%d"))



# --- tables and plots ----------------------------------------------------------------------------

def _final(record):
  return record["curve"][-1] if record["curve"] else {}


def _layer_mean(row, key):
  values = [np.mean(layer[key]) for layer in row.get("layers", []) if key in layer]
  return float(np.mean(values)) if values else None


def summary_rows(records) -> list[dict]:
  rows = []
  for record in records:
    final = _final(record)
    best = max(record["curve"], key=lambda r: r["validation_accuracy"]) if record["curve"] else {}
    rows.append(dict(
        variant=record["name"], description=record["description"], steps=final.get("step"),
        seconds=final.get("seconds"), best_validation_accuracy=best.get("validation_accuracy"),
        final_validation_accuracy=final.get("validation_accuracy"),
        final_train_loss=final.get("train_loss"),
        **{key: _layer_mean(final, key) for key in
           ("sigma", "exact_entropy", "exact_max_weight", "weights_l1", "denominator_floor",
            "denominator_below_1", "denominator_negative", "denominator_median")}))
  return rows


def _cell(value, digits=3):
  if value is None:
    return "-"
  return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def to_markdown(records, setup) -> str:
  majority = records[0]["validation_majority_accuracy"] if records else None
  commits = sorted({record.get("commit", "unrecorded") for record in records})
  lines = [
      "# ListOps study: attention variants on 64-256-token expressions",
      "",
      f"Regenerate: `{setup['command']}`. Model: configs/listops.py `small` preset (2 layers, emb 64, "
      f"4 heads, mlp 128), max_length 256, batch 32, generated data ({setup['data']}); every variant "
      f"{setup['steps']} steps, validation on the whole validation split every {setup['measure_every']} "
      f"steps; probes on one validation batch with the evaluation model. Majority class: "
      f"{_cell(majority)} of validation. {setup['device']}; tables written at commit "
      f"{setup['commit']}, {setup['date']}; the runs' commits: {', '.join(commits)} (per run in "
      f"runs/<variant>.json).",
      "",
      "Columns after the accuracies are the last measurement's layer means: sigma; entropy / max "
      "weight = the exact weights the layer's q, k, sigma ask for (entropy / log(keys), 1 = uniform); "
      "L1 = distance of RFA's implicit weights from them (2 = disjoint); floor / <1 / neg = fraction of "
      "denominators phi(q).z <= 1e-6 / below 1 / negative; median denominator.",
      "",
      "| variant | what | best val acc | final val acc | final train loss | s | sigma | entropy | "
      "max weight | L1 | floor | <1 | neg | median d |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in summary_rows(records):
    lines.append("| " + " | ".join([
        r["variant"], r["description"], _cell(r["best_validation_accuracy"]),
        _cell(r["final_validation_accuracy"]), _cell(r["final_train_loss"]), _cell(r["seconds"], 4),
        _cell(r["sigma"]), _cell(r["exact_entropy"]), _cell(r["exact_max_weight"], 2),
        _cell(r["weights_l1"]), _cell(r["denominator_floor"], 2), _cell(r["denominator_below_1"], 2),
        _cell(r["denominator_negative"], 2), _cell(r["denominator_median"])]) + " |")
  return "\n".join(lines) + "\n"


def plot(records, out: pathlib.Path):
  """learning_curves.png (validation accuracy, training loss) and probes.png (sigma, entropy,
  weight error, denominators at or below the floor) against step."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  colors = plt.get_cmap("tab20").colors

  def panels(path, specs, title, majority_line):
    fig, axes = plt.subplots(1, len(specs), figsize=(5 * len(specs), 4.2))
    for ax, (label, value, log) in zip(axes, specs):
      for index, record in enumerate(records):
        points = [(row["step"], value(row)) for row in record["curve"]]
        points = [(x, y) for x, y in points if y is not None]
        if points:
          style = "-" if record["attention"].startswith("rfa") else "--"
          ax.plot(*zip(*points), style, marker=".", color=colors[index % len(colors)],
                  label=record["name"])
      ax.set_xlabel("step")
      ax.set_ylabel(label)
      if log:
        ax.set_yscale("log")
      ax.grid(alpha=0.3)
    if majority_line and records:
      axes[0].axhline(records[0]["validation_majority_accuracy"], color="gray", lw=0.8)
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines() if not h.get_label().startswith("_")}
    axes[-1].legend(handles.values(), handles.keys(), fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

  panels(out / "learning_curves.png",
         [("validation accuracy", lambda r: r["validation_accuracy"], False),
          ("training loss", lambda r: r["train_loss"], False)],
         "ListOps 64-256 tokens (gray: majority class)", majority_line=True)
  panels(out / "probes.png",
         [("sigma (mean over heads, layers)", lambda r: _layer_mean(r, "sigma"), False),
          ("exact weights' entropy / log(keys)", lambda r: _layer_mean(r, "exact_entropy"), False),
          ("L1(RFA weights, exact)", lambda r: _layer_mean(r, "weights_l1"), True),
          ("denominators <= floor", lambda r: _layer_mean(r, "denominator_floor"), False)],
         "Attention probes on one validation batch (dashed: not RFA)", majority_line=False)


def write_outputs(records, setup, out: pathlib.Path):
  write_json_atomically(out / "results.json", dict(setup=setup, summary=summary_rows(records),
                                                   records=records))
  write_text_atomically(out / "results.md", to_markdown(records, setup))
  plot(records, out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variants", default="all", help=f"all or some of: {', '.join(VARIANTS)}")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--measure-every", type=int, default=100)
  parser.add_argument("--out", default="benchmarks/results/listops_study")
  parser.add_argument("--data-root", default=None, help="folder for the generated data (default data/)")
  parser.add_argument("--quick", action="store_true", help="tiny data and model, for tests")
  args = parser.parse_args(argv)
  names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
  unknown = [name for name in names if name not in VARIANTS]
  if unknown:
    raise ValueError(f"--variants: unknown {unknown}; expected 'all' or some of {list(VARIANTS)}")
  out = pathlib.Path(args.out)
  (out / "runs").mkdir(parents=True, exist_ok=True)
  for name in names:
    path = out / "runs" / f"{name}.json"
    if path.exists():
      continue
    record = train_variant(name, VARIANTS[name], steps=args.steps, measure_every=args.measure_every,
                           quick=args.quick, data_root=args.data_root)
    write_json_atomically(path, record)
  records = [json.loads((out / "runs" / f"{name}.json").read_text()) for name in VARIANTS
             if (out / "runs" / f"{name}.json").exists()]
  command = ("python -m studies.listops --variants=" + ",".join(r["name"] for r in records)
             + (f" --steps={args.steps}" if args.steps != 400 else ""))
  generator = records[0]["data"].get("generator", {}) if records else {}
  setup = dict(command=command, steps=args.steps, measure_every=args.measure_every,
               data=f"seed {generator.get('seed')}, {generator.get('num_train')} train",
               device=f"{jax.device_count()} x {jax.devices()[0].device_kind}",
               commit=git_commit(), date=time.strftime("%Y-%m-%d"))
  write_outputs(records, setup, out)
  print(to_markdown(records, setup))


if __name__ == "__main__":
  main()
