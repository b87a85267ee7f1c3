"""Sampling from a trained byte-level LM:

    python -m lra.generate --workdir=DIR --prompt=TEXT --num_tokens=N [--temperature=T --top_k=K --seed=S]

Rebuilds the model from DIR's configuration (results.json, else run.json), loads the best
checkpoint (the latest if no validation has run yet), feeds the prompt's UTF-8 bytes through the
decode cache in one call (prefill), then samples N bytes with one jitted `lax.fori_loop` over the
fixed-shape cache: RFA continues its constant-size state (S, z), softmax writes its keys and
values into a cache of len(prompt) + N positions. Byte t of the stream gets position
t mod max_length, as in training (`models.LanguageModel`). Writes the N bytes, decoded as UTF-8
with replacement, to stdout. temperature 0 is greedy (argmax); top_k > 0 samples among the k most
likely bytes only.
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx
from jax.sharding import Mesh

from lra import models, parallelism, train
from lra.checkpoints import Checkpoints
from lra.data import lm


def choose(logits, key, temperature: float, top_k: int):
  """Next bytes [B] from logits [B, V]: argmax when temperature is 0, else a draw from
  softmax(logits / temperature) restricted to the top_k largest logits (top_k 0: all)."""
  if temperature == 0:
    return jnp.argmax(logits, -1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(key, logits).astype(jnp.int32)


def check_sampling(num_tokens: int, temperature: float, top_k: int, vocab_size: int = 256):
  if num_tokens < 1:
    raise ValueError(f"num_tokens={num_tokens}; expected at least 1")
  if temperature < 0:
    raise ValueError(f"temperature={temperature}; expected >= 0 (0 = greedy)")
  if not 0 <= top_k <= vocab_size:
    raise ValueError(f"top_k={top_k}; expected 0 (no limit) to {vocab_size}")


def sample(model: models.LanguageModel, prompt, num_tokens: int, *, temperature: float = 1.0,
           top_k: int = 0, seed: int = 0) -> np.ndarray:
  """Continues each row of `prompt` (int32 [B, P], P >= 1) by `num_tokens` sampled bytes.

  Returns int32 [B, num_tokens]. The model is switched to evaluation and decode mode, with a
  cache for P + num_tokens tokens; prefill and the sampling loop are one jitted function.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f"prompt has shape {prompt.shape}; expected [batch, length >= 1]")
  check_sampling(num_tokens, temperature, top_k)
  batch, length = prompt.shape
  model.eval()
  model.init_cache(batch, length + num_tokens)
  graphdef, state = nnx.split(model)

  def forward(state, tokens, offset):
    """Logits of the byte after `tokens` [B, n] at positions offset.., and the updated state."""
    model = nnx.merge(graphdef, state)
    logits = model({"inputs": tokens}, offset)[:, -1].astype(jnp.float32)
    return logits, nnx.state(model)

  @jax.jit
  def run(state, prompt, key):
    logits, state = forward(state, prompt, 0)

    def step(i, carry):
      state, logits, key, out = carry
      key, draw = jax.random.split(key)
      token = choose(logits, draw, temperature, top_k)
      logits, state = forward(state, token[:, None], length + i)
      return state, logits, key, out.at[:, i].set(token)

    out = jnp.zeros((batch, num_tokens), jnp.int32)
    return jax.lax.fori_loop(0, num_tokens, step, (state, logits, key, out))[3]

  return np.asarray(run(state, prompt, jax.random.key(seed)))


def load_config(workdir) -> ml_collections.ConfigDict:
  """The configuration of the LM run in `workdir`."""
  workdir = pathlib.Path(workdir)
  for name in ("results.json", "run.json"):
    path = workdir / name
    if path.exists():
      config = ml_collections.ConfigDict(json.loads(path.read_text())["config"])
      if config.task != "lm":
        raise ValueError(f"{workdir} holds a {config.task!r} run; generation needs a task 'lm' "
                         "run (configs/lm.py)")
      return config
  raise FileNotFoundError(f"{workdir} has no results.json or run.json: train a model there with "
                          "python -m lra.train --config=configs/lm.py:<attention> "
                          f"--workdir={workdir}")


def load_model(workdir) -> tuple[models.LanguageModel, int]:
  """(the model of `workdir` with its best checkpoint's parameters, that checkpoint's step)."""
  config = load_config(workdir)
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallelism.DATA_AXIS,))
  template, _ = train.init_training(config, mesh, vocab_size=lm.VOCAB_SIZE)
  checkpoints = Checkpoints(workdir)
  try:
    restored, slot = checkpoints.best.restore(template), "best"
    if restored is None:
      restored, slot = checkpoints.latest.restore(template), "latest"
  finally:
    checkpoints.close()
  if restored is None:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint yet; train longer (the "
                            "first one is written after checkpoint_every or eval_every steps)")
  state, _ = restored
  logging.info("Sampling from the %s checkpoint of %s (step %d).", slot, workdir,
               int(state["step"]))
  model = train.build_model(config, vocab_size=lm.VOCAB_SIZE, rngs=train.model_rngs(config.seed))
  nnx.update(model, jax.device_get(state["params"]), jax.device_get(state["rest"]))
  return model, int(state["step"])


def define_flags():
  """The CLI flags besides --workdir, which lra.train defines (defined only when run as a program,
  so that importing this module adds no flags)."""
  flags.DEFINE_string("prompt", None, "Text to continue (its UTF-8 bytes; at least one).")
  flags.DEFINE_integer("num_tokens", 256, "Bytes to generate.")
  flags.DEFINE_float("temperature", 1.0, "Sampling temperature; 0 = greedy.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely bytes; 0 = all.")
  flags.DEFINE_integer("seed", 0, "Random seed of the sampling.")
  flags.mark_flags_as_required(["workdir", "prompt"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  args = flags.FLAGS
  prompt = args.prompt.encode("utf-8")
  if not prompt:
    raise app.UsageError("--prompt is empty; give at least one character to continue")
  try:
    check_sampling(args.num_tokens, args.temperature, args.top_k)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  model, _ = load_model(args.workdir)
  out = sample(model, np.frombuffer(prompt, np.uint8)[None].astype(np.int32), args.num_tokens,
               temperature=args.temperature, top_k=args.top_k, seed=args.seed)
  sys.stdout.write(bytes(out[0].astype(np.uint8)).decode("utf-8", errors="replace"))
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
