"""LRA training and evaluation: `python -m lra.train --config=configs/<task>.py:<attention> --workdir=DIR`.

`train_and_evaluate(config, workdir)` trains with one `jax.jit` step over a data-parallel mesh of all
devices, evaluates on the validation split every `eval_every` steps, keeps the latest and the best
checkpoints, tests the best one and writes `results.json`. Re-running the same command resumes.

The causal task `lm` runs through the same loop with its own hooks: the model is
`models.LanguageModel`, batches come from `lra.data.lm` (contiguous byte segments), every metric is
per predicted byte (loss in nats, next-byte accuracy, bits_per_byte = loss / ln 2) and the best
checkpoint has the lowest validation bits per byte. With `task_options.stateful=True` (RFA only) each
batch row reads one contiguous stream and the train state holds `carry`, the attention state (S, z)
of every layer for every row (`nnx.Cache`, sharded along the batch axis like the batch): each step
continues it over the row's next segment (RFA in decode mode, with the fixed evaluation projection,
so `redraw` does not apply), gradients stop at the segment boundary, and rows whose batch has
reset=True start again from zero. It is checkpointed with the rest of the state, so a resumed run
continues it exactly; evaluation then carries its own state through each split from zero. With
`task_options.stream_sets=K` > 1 the carry holds K states per row (leaves [B, K, ...]), one per set
of streams, and step t continues set t mod K, the set its batch comes from (`lra.data.lm`).
"""

import dataclasses
import json
import logging as std_logging
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import app, flags, logging
from flax import nnx
from jax.experimental import multihost_utils
from ml_collections import config_flags

import rfa_jax
from lra import data as lra_data
from lra import attention, models, parallelism, run_record
from lra.checkpoints import Checkpoints
from lra.data import listops, lm, pipeline
from lra.metrics import MetricsWriter
from lra.records import device_peak_memory_bytes, git_commit, max_rss_bytes, write_json_atomically


class TrainingDiverged(RuntimeError):
  """The training loss became NaN or Inf."""


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then rsqrt decay (LRA: lr * min(1, t/w) / sqrt(max(t, w)),
  peaking at lr / sqrt(w)) or cosine decay to 0 at `num_train_steps`."""
  warmup = max(config.warmup_steps, 1)
  if config.schedule == "rsqrt":
    return lambda step: (config.learning_rate * jnp.minimum(1.0, step / warmup)
                         / jnp.sqrt(jnp.maximum(step, warmup)))
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup,
                                              max(config.num_train_steps, warmup + 1))
  raise ValueError(f"schedule={config.schedule!r}; expected 'rsqrt' or 'cosine'")


def parameters_named(name: str):
  """A mask function: True for the parameters with `name` in their path (e.g. "sigma")."""
  def mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: name in jax.tree_util.keystr(path),
                                            params)
  return mask


def weight_decay_mask(params):
  """Every parameter but RFA's `sigma`, a kernel bandwidth that decay would shrink towards uniform
  attention (it fell 1 -> 0.9 in 400 ListOps steps from decay alone)."""
  return jax.tree.map(lambda is_sigma: not is_sigma, parameters_named("sigma")(params))


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW (decoupled weight decay, see `weight_decay_mask`) after optional global-norm clipping;
  then the updates of the parameters named in `config.learning_rate_scales` times their factor."""
  adamw = optax.adamw(learning_rate_schedule(config), b1=config.adam_b1, b2=config.adam_b2,
                      eps=config.adam_eps, weight_decay=config.weight_decay, mask=weight_decay_mask)
  steps = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
  steps.append(adamw)
  for name, factor in sorted(config.learning_rate_scales.items()):
    if factor != 1.0:
      steps.append(optax.masked(optax.scale(factor), parameters_named(name)))
  return steps[0] if len(steps) == 1 else optax.chain(*steps)


def load_data(config) -> lra_data.TaskData:
  """The task's splits. ListOps is generated first when data_dir is empty or absent (never in place
  of files that are there; see `listops.prepare`)."""
  options = dict(config.task_options)
  if config.task == "listops":
    generation = listops.generation_options(**{
        key: options.pop(key) for key in
        ("generate_train", "generate_eval", "min_length", "max_length", "generate_seed")})
    if listops.needs_generation(config.data_dir, generation) and jax.process_index() == 0:
      listops.prepare(config.data_dir, generation)
    multihost_utils.sync_global_devices("listops data ready")
  return lra_data.load_task(config.task, data_dir=config.data_dir, max_length=config.max_length,
                            **options)


def build_model(config, *, vocab_size: int, num_classes: int | None = None, dual: bool = False,
                has_padding: bool = False, rngs: nnx.Rngs) -> nnx.Module:
  """The classifier (dual encoder for retrieval), or for task lm the language model, that `config`
  describes."""
  m = config.model
  encoder_args = dict(
      vocab_size=vocab_size, max_length=config.max_length, num_layers=m.num_layers,
      emb_dim=m.emb_dim, num_heads=m.num_heads, qkv_dim=m.qkv_dim, mlp_dim=m.mlp_dim,
      dropout_rate=m.dropout_rate, attention_name=config.attention,
      attention_options=dict(m.attention_options), positions=m.positions, dtype=config.dtype)
  if config.task == "lm":
    return models.LanguageModel(rngs=rngs, **encoder_args)
  model_class = models.DualEncoderClassifier if dual else models.Classifier
  return model_class(num_classes=num_classes, padding_id=0 if has_padding else None,
                     pooling=m.pooling, rngs=rngs, **encoder_args)


def model_args(task) -> dict:
  """The arguments of `build_model` that the task's data decides."""
  if isinstance(task, lm.LMData):
    return dict(vocab_size=task.vocab_size)
  return dict(vocab_size=task.vocab_size, num_classes=task.num_classes, dual=task.dual,
              has_padding=task.has_padding)


def is_stateful(config) -> bool:
  return config.task == "lm" and bool(config.task_options.get("stateful", False))


def stream_sets(config) -> int:
  """The number of carried states per row: the stateful LM's sets of streams that take turns."""
  return int(config.task_options.get("stream_sets", 1)) if is_stateful(config) else 1


def check_stateful(model: models.LanguageModel, attention_name: str):
  """Stateful training carries RFA's recurrent state; other mechanisms have none to carry."""
  try:
    decoders = model.decoders()
  except NotImplementedError:
    decoders = []
  if not decoders or not all(isinstance(d, rfa_jax.RFAAttention) for d in decoders):
    raise ValueError(f"task_options.stateful=True carries RFA's attention state (S, z) across "
                     f"segments, and attention {attention_name!r} has no such state; use "
                     "rfa_gaussian or rfa_arccos, or set --config.task_options.stateful=False")


def model_rngs(seed: int) -> nnx.Rngs:
  return nnx.Rngs(params=seed, dropout=seed + 1, projection=seed + 2)


def _row_sums(logits, batch) -> dict:
  """Per batch row, float32 [B]: weighted sums of the cross-entropy (nats), of the correct
  predictions and of the weights (targets counted). A row is one example (logits [B, classes]) or,
  for the LM, a segment (logits [B, L, 256], one target per position)."""
  logits = logits.astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
  weights = batch["weights"].astype(jnp.float32)
  axes = tuple(range(1, loss.ndim))
  return dict(loss=jnp.sum(loss * weights, axes), correct=jnp.sum(correct * weights, axes),
              count=jnp.sum(weights, axes))


def _reset_rows(carry, reset):
  """The carried state with the rows where `reset` [B] is True set to zero (leaves [B, ...]; scalar
  leaves such as cache_index are kept), and no gradient into it: the segment boundary."""
  def reset_leaf(x):
    if x.ndim == 0:
      return x
    return jnp.where(reset.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.zeros_like(x), x)
  return jax.lax.stop_gradient(jax.tree.map(reset_leaf, carry))


def _with_sets(carry, sets: int):
  """The carry with `sets` copies per row: leaves [B, ...] -> [B, sets, ...] (scalars shared)."""
  return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.repeat(x[:, None], sets, axis=1), carry)


def _carried_set(carry, index):
  """Set `index` (a traced int) of a carry with sets: leaves [B, K, ...] -> [B, ...]."""
  return jax.tree.map(
      lambda x: x if x.ndim == 0 else jax.lax.dynamic_index_in_dim(x, index, 1, keepdims=False),
      carry)


def _replace_set(carry, new, index):
  """`carry` (leaves [B, K, ...]) with set `index` replaced by `new` (leaves [B, ...])."""
  return jax.tree.map(
      lambda x, y: y if x.ndim == 0 else jax.lax.dynamic_update_index_in_dim(x, y, index, 1),
      carry, new)


@dataclasses.dataclass
class Steps:
  """The jitted train and eval steps over the split model state. With `stateful`, the eval step
  returns (row sums, carry) and the state holds "carry"."""
  train: callable
  evaluate: callable
  stateful: bool = False


def make_steps(train_graphdef, eval_graphdef, optimizer, mesh, state_sharding=None,
               sets: int = 1, microbatches: int = 1) -> Steps:
  """`state_sharding` (the train state's shardings) is given for stateful training: the carry stays
  sharded along the batch axis from step to step. `sets` > 1: the carry holds that many states per
  row; training step t continues set t mod sets, evaluation set 0. `microbatches` > 1: the train
  step runs the batch in that many parts one after another (`jax.lax.scan`) and sums their
  gradients: one update from the whole batch with the activations of one part in memory."""
  stateful = state_sharding is not None

  def carry_in(state, batch, index):
    """The carry a step continues: set `index`, zero in the rows that restart; None without."""
    if not stateful:
      return None
    carry = state["carry"] if sets == 1 else _carried_set(state["carry"], index)
    return _reset_rows(carry, batch["reset"])

  def merge(graphdef, params, rest, carry):
    return nnx.merge(graphdef, params, rest, *([] if carry is None else [carry]))

  def carried(state, cache, index):
    """The state's carry continued by the model's caches `cache`."""
    return cache if sets == 1 else _replace_set(state["carry"], cache, index)

  def part_step(params, rest, carry, batch, count):
    """Gradients of the summed loss of the rows of `batch` over `count` (the whole batch's
    targets) -> (rest, cache, sums of loss and correct, grads)."""
    model = merge(train_graphdef, params, rest, carry)

    def loss_fn(model):
      sums = _row_sums(model(batch), batch)
      sums = dict(loss=jnp.sum(sums["loss"]), correct=jnp.sum(sums["correct"]))
      return sums["loss"] / count, sums

    gradient = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
    (_, sums), grads = gradient(model)
    if stateful:
      _, _, cache, rest = nnx.split(model, nnx.Param, nnx.Cache, ...)
      return rest, cache, sums, grads
    return nnx.split(model, nnx.Param, ...)[2], None, sums, grads

  def accumulated(state, carry, batch, count):
    """`part_step` over `microbatches` parts of the batch in turn, gradients and sums added."""
    split = lambda tree: parallelism.split_microbatches(tree, microbatches, mesh)

    def add_part(totals, part):
      rest, sums, grads = totals
      params = jax.tree.map(jnp.asarray, state["params"])  # NNX variables of this trace level
      rest, cache, part_sums, part_grads = part_step(params, rest, part[0], part[1], count)
      return (rest, jax.tree.map(jnp.add, sums, part_sums),
              jax.tree.map(jnp.add, grads, part_grads)), cache

    zero = jnp.zeros((), jnp.float32)
    totals = (state["rest"], dict(loss=zero, correct=zero),
              jax.tree.map(jnp.zeros_like, state["params"]))
    (rest, sums, grads), caches = jax.lax.scan(add_part, totals, (split(carry), split(batch)))
    return rest, parallelism.join_microbatches(caches, carry), sums, grads

  def train_step(state, batch):
    index = state["step"] % sets
    carry = carry_in(state, batch, index)
    count = jnp.maximum(jnp.sum(batch["weights"].astype(jnp.float32)), 1.0)
    if microbatches == 1:
      rest, cache, sums, grads = part_step(state["params"], state["rest"], carry, batch, count)
    else:
      rest, cache, sums, grads = accumulated(state, carry, batch, count)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = dict(step=state["step"] + 1, params=optax.apply_updates(state["params"], updates),
                     opt_state=opt_state, rest=rest)
    if stateful:
      new_state["carry"] = carried(state, cache, index)
    return new_state, dict(loss=sums["loss"] / count, accuracy=sums["correct"] / count)

  def eval_step(state, batch):
    model = merge(eval_graphdef, state["params"], state["rest"], carry_in(state, batch, 0))
    sums = _row_sums(model(batch), batch)
    return (sums, carried(state, nnx.state(model, nnx.Cache), 0)) if stateful else sums

  # Evaluation returns per-example values, sharded like the batch: no cross-device reduction, so the
  # independent evaluation steps that are in flight at once never wait on each other (see `evaluate`).
  rows = parallelism.batch_sharded(mesh)
  if not stateful:
    return Steps(train=jax.jit(train_step, donate_argnums=0),
                 evaluate=jax.jit(eval_step, out_shardings=rows))
  return Steps(
      train=jax.jit(train_step, donate_argnums=0,
                    out_shardings=(state_sharding, parallelism.replicated(mesh))),
      evaluate=jax.jit(eval_step, out_shardings=(rows, state_sharding["carry"])), stateful=True)


def init_training(config, mesh, **model_args):
  """Builds the model and optimiser; returns (replicated train state, jitted steps).

  The state is a dict pytree: step, params (nnx.Param), opt_state, rest (every other variable:
  rng stream counters, random projections, fixed position tables), and for stateful LM training
  carry (every layer's decode cache, [batch_size, ...] per leaf, or [batch_size, stream_sets, ...]
  with several sets of streams, sharded along the batch axis).
  """
  if config.task == "lm" and config.task_options.get("pack_documents") and \
      config.attention not in attention.PACKS:
    raise ValueError(f"task_options.pack_documents=True keeps attention within each document, which "
                     f"attention {config.attention!r} cannot; use one of {attention.PACKS}")
  model = build_model(config, rngs=model_rngs(config.seed), **model_args)
  stateful = is_stateful(config)
  if stateful:
    check_stateful(model, config.attention)
    model.init_cache(config.batch_size, config.max_length)
  model.eval()
  eval_graphdef = nnx.split(model)[0]
  model.train()
  optimizer = make_optimizer(config)
  if not stateful:
    train_graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                 rest=rest)
    return (parallelism.replicate(state, mesh),
            make_steps(train_graphdef, eval_graphdef, optimizer, mesh,
                       microbatches=config.microbatches))
  train_graphdef, params, carry, rest = nnx.split(model, nnx.Param, nnx.Cache, ...)
  sets = stream_sets(config)
  if sets > 1:
    carry = _with_sets(carry, sets)
  state = parallelism.replicate(
      dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
           rest=rest), mesh)
  state["carry"] = parallelism.shard_rows(carry, mesh)
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  return state, make_steps(train_graphdef, eval_graphdef, optimizer, mesh, state_sharding, sets,
                           config.microbatches)


def train_batches(task, config):
  """The endless, resumable training batches of the task (this process's rows)."""
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if isinstance(task, lm.LMData):
    return task.train_batches(global_batch_size=config.batch_size, seed=config.seed, **process)
  return pipeline.make_batches(task.splits["train"], global_batch_size=config.batch_size,
                               seed=config.seed, shuffle=True, repeat=True, **process)


def eval_source(task, split: str, config):
  """What `evaluate` reads: the split's source, or for the LM a fresh pass of its segments."""
  if isinstance(task, lm.LMData):
    return task.eval_batches(split, global_batch_size=config.batch_size,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
  return task.splits[split]


def evaluate(steps: Steps, state, source, config, mesh, max_batches=-1) -> dict:
  """Loss and accuracy over a whole split (each example counted once), or its first `max_batches`.

  `source`: a random-access source (batched here), or LM batches (`lm.LMBatches`, see
  `eval_source`), whose examples are the predicted bytes, with bits_per_byte in the result. With
  stateful steps the carry goes from batch to batch (the first batch resets it).

  The steps are dispatched without waiting and all read the same state, so many are in flight at
  once. If a step reduced across devices, each device would wait at that step's rendezvous; on XLA
  CPU a device thread may meanwhile have started another in-flight step and wait at its rendezvous
  instead, and the run deadlocks (aborted after 40 s). So each step returns per-example values, with
  no cross-device collective, and the sums are taken here per process, with one cross-process sum
  at the end.
  """
  if isinstance(source, lm.LMBatches):
    batches = source
  else:
    batches = pipeline.make_batches(
        source, global_batch_size=config.batch_size, seed=config.seed, shuffle=False,
        repeat=False, drop_remainder=False, process_index=jax.process_index(),
        process_count=jax.process_count())
  outputs = []
  for index, batch in enumerate(batches):
    if index == max_batches:
      break
    output = steps.evaluate(state, parallelism.global_batch(batch, mesh))
    if steps.stateful:
      output, carry = output
      state = {**state, "carry": carry}
    outputs.append(output)
  totals = parallelism.sum_across_processes(
      {name: sum(parallelism.local_sum(output[name]) for output in outputs)
       for name in ("loss", "correct", "count")})
  count = totals["count"]
  result = dict(loss=float(totals["loss"] / max(count, 1)),
                accuracy=float(totals["correct"] / max(count, 1)), num_examples=int(count))
  if isinstance(source, lm.LMBatches):
    result["bits_per_byte"] = result["loss"] / math.log(2)
  return result


def _improves(validation: dict, best: dict) -> bool:
  """Lower bits per byte (LM), else higher accuracy, than the best so far."""
  if "bits_per_byte" in validation:
    return best["step"] is None or validation["bits_per_byte"] < best["bits_per_byte"]
  return validation["accuracy"] > best["accuracy"]


def _check_finite(losses, step):
  values = np.asarray(jax.device_get(losses))
  if not np.all(np.isfinite(values)):
    raise TrainingDiverged(
        f"the training loss is {values[~np.isfinite(values)][0]} by step {step}; training stopped "
        "and the last good checkpoint is kept. Lower --config.learning_rate, set "
        "--config.grad_clip, or check the data.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains and evaluates the model described by `config`; returns the contents of results.json."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = parallelism.data_mesh()
  parallelism.check_batch_size(config.batch_size, mesh, config.microbatches)
  run_record.check_config(workdir, config.to_dict(), write=jax.process_index() == 0)
  task = load_data(config)
  run_record.check_data(workdir, task.data, write=jax.process_index() == 0)

  is_lm = isinstance(task, lm.LMData)
  state, steps = init_training(config, mesh, **model_args(task))
  checkpoints = Checkpoints(workdir)
  batches = train_batches(task, config)
  best = dict(bits_per_byte=None, step=None) if is_lm else dict(accuracy=-1.0, step=None)
  restored = checkpoints.latest.restore(state)
  if restored is not None:
    state, metadata = restored
    batches.set_state(metadata["data_state"])
    best = metadata["best"]
    logging.info("Resuming from step %d.", int(state["step"]))
  start_step = int(state["step"])
  if start_step >= config.num_train_steps and (workdir / "results.json").exists():
    logging.info("%s is complete; nothing to do.", workdir)
    checkpoints.close()
    return json.loads((workdir / "results.json").read_text())
  finished = workdir / "results.json"
  if finished.exists() and jax.process_index() == 0:  # training on past a finished run
    finished.rename(workdir / f"results.step{start_step}.json")
    logging.info("Training on from step %d to %d; the results at step %d are kept in %s.",
                 start_step, config.num_train_steps, start_step, f"results.step{start_step}.json")
  writer = MetricsWriter(workdir)
  writer.truncate_after(start_step)

  num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  compiled_train = None
  recent, losses, times = [], [], []
  last_time = time.perf_counter()
  progress = tqdm.tqdm(total=config.num_train_steps, initial=start_step, desc="train",
                       disable=jax.process_index() != 0, dynamic_ncols=True)
  for step in range(start_step + 1, config.num_train_steps + 1):
    batch = parallelism.global_batch(next(batches), mesh)
    if compiled_train is None:
      compiled_train = steps.train.lower(state, batch).compile()
      last_time = time.perf_counter()
    state, step_metrics = compiled_train(state, batch)
    recent.append(step_metrics)
    losses.append(step_metrics["loss"])

    if step % config.log_every == 0 or step == config.num_train_steps:
      _check_finite(losses, step)
      logged = jax.device_get(recent)
      now = time.perf_counter()
      steps_per_sec = len(recent) / (now - last_time)
      times.append(steps_per_sec)
      summary = dict(loss=float(np.mean([m["loss"] for m in logged])),
                     accuracy=float(np.mean([m["accuracy"] for m in logged])),
                     steps_per_sec=steps_per_sec,
                     learning_rate=float(learning_rate_schedule(config)(step)))
      if is_lm:
        summary["bits_per_byte"] = summary["loss"] / math.log(2)
      writer.write(step, "train", **summary)
      progress.set_postfix(loss=f"{summary['loss']:.4f}", acc=f"{summary['accuracy']:.3f}",
                           steps_per_s=f"{steps_per_sec:.2f}")
      recent, last_time = [], now
    progress.update(1)

    if step % config.eval_every == 0 or step == config.num_train_steps:
      _check_finite(losses, step)
      validation = evaluate(steps, state, eval_source(task, "validation", config), config, mesh,
                            config.num_eval_batches)
      writer.write(step, "validation", **validation)
      if _improves(validation, best):
        metric = "bits_per_byte" if is_lm else "accuracy"
        best = {metric: float(validation[metric]), "step": step}
        checkpoints.best.save(step, state, dict(best=best))
      last_time = time.perf_counter()

    if step % config.checkpoint_every == 0 or step == config.num_train_steps:
      _check_finite(losses, step)
      losses = []
      checkpoints.latest.save(step, state, dict(data_state=batches.get_state(), best=best))
      last_time = time.perf_counter()
  progress.close()

  final_state = state
  if best["step"] is not None:
    final_state, _ = checkpoints.best.restore(state)
  test = evaluate(steps, final_state, eval_source(task, "test", config), config, mesh)
  writer.write(best["step"] or config.num_train_steps, "test", **test)
  memory_analysis = compiled_train.memory_analysis() if compiled_train is not None else None
  compiled_bytes = (memory_analysis.temp_size_in_bytes + memory_analysis.argument_size_in_bytes
                    + memory_analysis.output_size_in_bytes) if memory_analysis else None
  device_peak = device_peak_memory_bytes()
  results = dict(
      test_accuracy=test["accuracy"], test_loss=test["loss"],
      num_test_examples=test["num_examples"], best_step=best["step"],
      steps_per_sec=float(np.median(times)) if times else None,
      peak_memory_bytes=device_peak if device_peak is not None else compiled_bytes,
      peak_memory_source="device" if device_peak is not None else "xla_compiled_train_step",
      compiled_train_step_bytes=compiled_bytes, max_rss_bytes=max_rss_bytes(),
      num_parameters=int(num_params), num_devices=jax.device_count(),
      platform=jax.devices()[0].platform, device_kind=jax.devices()[0].device_kind,
      git_commit=git_commit(),
      num_processes=jax.process_count(), data=task.data, config=config.to_dict())
  if is_lm:
    results.update(
        test_bits_per_byte=test["bits_per_byte"],
        best_validation_bits_per_byte=best["bits_per_byte"],
        unigram_test_bits_per_byte=lm.unigram_bits_per_byte(task.splits["train"],
                                                            task.splits["test"]))
  else:
    results["best_validation_accuracy"] = best["accuracy"]
  if jax.process_index() == 0:
    write_json_atomically(workdir / "results.json", results)
  checkpoints.close()
  writer.close()
  return results


_CONFIG = config_flags.DEFINE_config_file("config", None, "Task config file: "
                                          "configs/<task>.py[:<attention>[,<preset>...]]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


def _quiet_library_info(record) -> bool:
  """Drops INFO records of checkpointing and data libraries (orbax, grain) from the absl log."""
  return record.levelno >= std_logging.WARNING or not any(
      part in record.pathname for part in ("/orbax/", "/grain/"))


def _summary(config, results, workdir) -> str:
  speed, memory = results["steps_per_sec"], results["peak_memory_bytes"]
  if "test_bits_per_byte" in results:
    headline = (f"test {results['test_bits_per_byte']:.4f} bits per byte (unigram "
                f"{results['unigram_test_bits_per_byte']:.4f}; next-byte accuracy "
                f"{results['test_accuracy']:.4f}, {results['num_test_examples']} bytes, best "
                f"validation step {results['best_step']})")
  else:
    headline = (f"test accuracy {results['test_accuracy']:.4f} (loss {results['test_loss']:.4f}, "
                f"{results['num_test_examples']} examples, best validation step "
                f"{results['best_step']})")
  return (f"\n{config.task} / {config.attention}: {headline}"
          + (f", {speed:.2f} steps/s" if speed is not None else "")
          + (f", peak memory {memory / 2**20:.1f} MiB" if memory is not None else "")
          + f"; data: {run_record.describe_data(results['data'], brief=True)}"
          + f"; results in {pathlib.Path(workdir) / 'results.json'}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_quiet_library_info)
  parallelism.initialize_distributed()
  config = _CONFIG.value
  results = train_and_evaluate(config, _WORKDIR.value)
  if jax.process_index() == 0:
    print(_summary(config, results, _WORKDIR.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
