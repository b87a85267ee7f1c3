"""Decoding speed of the LM at model level: softmax (key/value cache) against RFA (constant state).

    python -m benchmarks.decode [--lengths=256,...,8192] [--batch_sizes=1,16] [--quick]

The model is `configs/lm.py`'s (layers, width, heads, RFA features; `--preset` picks a preset). Each
measurement is a jitted `lax.fori_loop` of greedy decoding steps (the loop of `lra.generate`):

- Per token at output length T: the decode cache is sized for T tokens (softmax: keys and values of
  T positions, the least a T-token output needs; RFA: S and z, whatever T) and the loop decodes
  `--steps` tokens at positions T - steps .. T - 1; time per token = median loop time / steps, with
  the spread (max - min) / median of the `--repeats` loops. Rows: softmax, RFA, the model with
  attention replaced by the identity (`Identity`: the rest of the model), and `handwritten`:
  softmax attention alone as a few lines of jnp write it (per layer a [B, H, T, d] cache updated in
  place, one masked softmax over all T slots), so that identity + handwritten is what a careful
  softmax decoder of this shape costs here.
- Bytes each step must read: every parameter once, plus the attention cache (softmax: the keys and
  values of the filled positions; RFA: its state), and that over this machine's memory bandwidth
  (a jitted sum over `--bandwidth_mib` MiB, measured in the same run): the least time a step can
  take when it is memory-bound.
- Whole output of `--whole_length` tokens after a one-byte prompt (softmax cache sized for it), for
  softmax, RFA and identity: the speed-up of RFA over softmax, and softmax time / identity time, the
  bound that the model's non-attention work puts on any speed-up of attention alone.

Memory: XLA's compiled memory of each loop (arguments, including the cache, + outputs + temporaries;
the state is donated) and the cache's own bytes. Medians of `--repeats` after a warm-up, with
`block_until_ready`; the machine's float32 matmul peak is measured in the same run.
Writes `decode.json` and `decode.md` under `--out`.
"""

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from benchmarks.attention import compiled_memory_bytes, machine_info, matmul_peak, median_time
from lra import config_lib, train
from lra.data import lm
from lra.records import git_commit, markdown_table, write_results

ROOT = pathlib.Path(__file__).resolve().parents[1]
MECHANISMS = ("softmax", "rfa_gaussian")
PER_TOKEN = MECHANISMS + ("identity", "handwritten")


class Identity(nnx.Module):
  """Attention replaced by the identity map (the block still adds x to itself): what the rest of
  the model costs. Has a no-op decode cache."""

  decode = False

  def init_cache(self, input_shape, dtype=jnp.float32):
    del input_shape, dtype

  def __call__(self, x, mask):
    return x


def build(config, mechanism: str):
  """The LM of `config` (an RFA config) with `mechanism`'s attention; "identity": none."""
  config = config.copy_and_resolve_references()
  if mechanism == "softmax":
    config.attention, config.model.attention_options = "softmax", ml_collections.ConfigDict()
  model = train.build_model(config, vocab_size=lm.VOCAB_SIZE, rngs=train.model_rngs(0))
  if mechanism == "identity":
    for block in model.encoder.blocks:
      block.attention = Identity()
  return model


def state_bytes(model, kind=nnx.Cache) -> int:
  """Bytes of the model's variables of `kind` (the decode cache by default)."""
  return int(sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, kind))))


def decode_loop(model, batch_size: int, cache_length: int, start: int, steps: int):
  """(compiled loop, state, first tokens): `steps` greedy steps from position `start` of a cache
  sized for `cache_length` tokens; the loop takes and returns (state, tokens), state donated. Every
  call starts again at `start` (the cache's positions from there on are rewritten), so repeated
  calls time the same positions."""
  model.eval()
  model.init_cache(batch_size, cache_length)
  graphdef, state = nnx.split(model)

  def run(state, tokens):
    model = nnx.merge(graphdef, state)
    for module in model.decoders():
      if getattr(module, "cache_index", None) is not None:
        module.cache_index[...] = jnp.array(start, jnp.int32)
    state = nnx.state(model)

    def step(i, carry):
      state, tokens = carry
      model = nnx.merge(graphdef, state)
      logits = model({"inputs": tokens[:, None]}, start + i)[:, -1]
      return nnx.state(model), jnp.argmax(logits, -1).astype(jnp.int32)
    return jax.lax.fori_loop(0, steps, step, (state, tokens))

  tokens = jnp.zeros((batch_size,), jnp.int32)
  compiled = jax.jit(run, donate_argnums=0).lower(state, tokens).compile()
  return compiled, state, tokens


def time_loop(compiled, state, tokens, repeats: int) -> dict:
  """Median time of the loop, feeding each call's state to the next (the state is donated)."""
  carry = [state, tokens]

  def call(*_):
    carry[:] = compiled(*carry)
    return carry[1]

  return median_time(call, (), repeats, max_seconds=120.0)


def handwritten_loop(config, batch_size: int, cache_length: int, start: int, steps: int):
  """(compiled loop, state, x): softmax attention alone for `steps` tokens from position `start`,
  as a few lines of jnp write it: per layer a [B, H, T, d] key/value cache updated in place and a
  masked softmax over all T slots; each layer's output is the next layer's q, k and v (the
  projections are the model's other work, which `Identity` measures)."""
  m = config.model
  layers, heads, head_dim = m.num_layers, m.num_heads, m.qkv_dim // m.num_heads
  slots = jnp.arange(cache_length)

  def run(state, x):
    def step(i, carry):
      (keys, values), x = carry
      t, visible = start + i, slots <= start + i
      for layer in range(layers):
        keys = keys.at[layer, :, :, t].set(x)
        values = values.at[layer, :, :, t].set(x)
        logits = jnp.einsum("bhd,bhtd->bht", x, keys[layer]) * head_dim ** -0.5
        weights = jax.nn.softmax(jnp.where(visible, logits, -jnp.inf), axis=-1)
        x = jnp.einsum("bht,bhtd->bhd", weights, values[layer])
      return (keys, values), x
    return jax.lax.fori_loop(0, steps, step, (state, x))

  shape = (layers, batch_size, heads, cache_length, head_dim)
  state = (jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))
  x = jnp.ones((batch_size, heads, head_dim), jnp.float32) / head_dim
  compiled = jax.jit(run, donate_argnums=0).lower(state, x).compile()
  return compiled, state, x


def bytes_per_step(mechanism: str, config, batch_size: int, filled: int, model=None) -> int:
  """What one decoding step must read: the parameters (none for `handwritten`) and the attention
  cache: keys and values of `filled` positions per layer (softmax, handwritten) or RFA's state."""
  m = config.model
  kv = 2 * m.num_layers * batch_size * m.qkv_dim * filled * 4
  if mechanism == "handwritten":
    return kv
  weights = state_bytes(model, nnx.Param)
  if mechanism == "softmax":
    return weights + kv
  return weights + (state_bytes(model) if mechanism == "rfa_gaussian" else 0)


def memory_bandwidth(mib: int, repeats: int) -> dict:
  """Bytes/s of a jitted sum over a float32 array of `mib` MiB (median of `repeats`)."""
  x = jnp.ones((mib * 2**18,), jnp.float32)
  timing = median_time(jax.jit(jnp.sum).lower(x).compile(), (x,), repeats, max_seconds=30.0)
  bandwidth = x.nbytes / timing["median_s"]
  print(f"memory bandwidth ({mib} MiB sum): {bandwidth / 1e9:.1f} GB/s", flush=True)
  return dict(mib=mib, bytes_per_s=bandwidth, **timing)


def timing_fields(timing: dict, tokens: int) -> dict:
  times = timing["times_s"]
  return dict(seconds_per_token=timing["median_s"] / tokens, times_s=times,
              spread=(max(times) - min(times)) / timing["median_s"])


def per_token_rows(config, args, bandwidth: float) -> list[dict]:
  rows = []
  for batch_size in args.batch_sizes:
    for mechanism in PER_TOKEN:
      for length in args.lengths:
        start = length - args.steps
        if mechanism == "handwritten":
          model = None
          compiled, state, tokens = handwritten_loop(config, batch_size, length, start, args.steps)
          cache = sum(x.nbytes for x in jax.tree.leaves(state))  # keys and values
        else:
          model = build(config, mechanism)
          compiled, state, tokens = decode_loop(model, batch_size, length, start, args.steps)
          cache = state_bytes(model)
        timing = time_loop(compiled, state, tokens, args.repeats)
        needed = bytes_per_step(mechanism, config, batch_size, length - args.steps // 2, model)
        row = dict(mechanism=mechanism, batch_size=batch_size, output_length=length,
                   steps=args.steps, **timing_fields(timing, args.steps), cache_bytes=cache,
                   bytes_per_token=needed, bandwidth_seconds_per_token=needed / bandwidth,
                   **compiled_memory_bytes(compiled))
        print(f"{mechanism:>12} batch {batch_size:>2} T={length:>5}: "
              f"{row['seconds_per_token'] * 1e3:8.3f} ms/token (spread {row['spread']:.0%}), "
              f"cache {row['cache_bytes'] / 2**20:8.2f} MiB, reads {needed / 2**20:8.2f} MiB",
              flush=True)
        rows.append(row)
        del compiled, state, tokens, model
  return rows


def whole_rows(config, args) -> list[dict]:
  rows = []
  for batch_size in args.batch_sizes:
    for mechanism in MECHANISMS + ("identity",):
      model = build(config, mechanism)
      compiled, state, tokens = decode_loop(model, batch_size, args.whole_length, 0,
                                            args.whole_length)
      timing = time_loop(compiled, state, tokens, args.whole_repeats)
      row = dict(mechanism=mechanism, batch_size=batch_size, output_length=args.whole_length,
                 seconds=timing["median_s"], **timing_fields(timing, args.whole_length),
                 cache_bytes=state_bytes(model), **compiled_memory_bytes(compiled))
      print(f"{mechanism:>12} batch {batch_size:>2}: {args.whole_length} tokens in "
            f"{row['seconds']:.3f} s", flush=True)
      rows.append(row)
  return rows


def summary(per_token: list[dict], whole: list[dict], lengths) -> list[dict]:
  """Per batch size: each mechanism's cost at the first and last length and their ratio; at each
  length, RFA's speed-up over softmax and softmax against the careful decoder (identity +
  handwritten); RFA's whole-output speed-up over softmax and the identity bound."""
  def find(rows, **keys):
    return next(r for r in rows if all(r[k] == v for k, v in keys.items()))

  out = []
  for batch_size in sorted({r["batch_size"] for r in per_token}):
    entry = dict(batch_size=batch_size, per_length=[])
    for mechanism in MECHANISMS:
      first = find(per_token, mechanism=mechanism, batch_size=batch_size, output_length=lengths[0])
      last = find(per_token, mechanism=mechanism, batch_size=batch_size, output_length=lengths[-1])
      entry[mechanism] = dict(first_seconds_per_token=first["seconds_per_token"],
                              last_seconds_per_token=last["seconds_per_token"],
                              last_over_first=last["seconds_per_token"]
                              / first["seconds_per_token"])
    for length in lengths:
      cost = {m: find(per_token, mechanism=m, batch_size=batch_size,
                      output_length=length)["seconds_per_token"] for m in PER_TOKEN}
      careful = cost["identity"] + cost["handwritten"]
      entry["per_length"].append(dict(
          output_length=length, rfa_speedup=cost["softmax"] / cost["rfa_gaussian"],
          careful_softmax_seconds_per_token=careful, softmax_over_careful=cost["softmax"] / careful,
          rfa_speedup_over_careful=careful / cost["rfa_gaussian"]))
    times = {m: find(whole, mechanism=m, batch_size=batch_size)["seconds"]
             for m in MECHANISMS + ("identity",)}
    entry.update(whole_speedup=times["softmax"] / times["rfa_gaussian"],
                 identity_bound=times["softmax"] / times["identity"],
                 rfa_attention_share=1 - times["identity"] / times["rfa_gaussian"])
    out.append(entry)
  return out


def markdown(results: dict) -> str:
  lengths, model = results["lengths"], results["model"]
  bandwidth = results["memory_bandwidth"]["bytes_per_s"]
  lines = [f"# LM decoding: time per generated token ({results['machine']['device_kind']}, "
           f"{model})", "",
           f"`{results['command']}` at commit {results['commit']}; float32 matmul peak "
           f"{results['matmul_peak']['flops_per_s'] / 1e9:.1f} GFLOP/s, memory bandwidth "
           f"{bandwidth / 1e9:.1f} GB/s.", "",
           f"ms per token (median of {results['repeats']} loops of {results['steps']} tokens, "
           "± (max - min) / median) with the decode cache sized for T output tokens (softmax: "
           "keys and values of T positions; RFA: its constant-size state). identity: the model "
           "without attention; handwritten: softmax attention alone, a few lines of jnp.", ""]
  table = []
  for entry in results["summary"]:
    for mechanism in PER_TOKEN:
      rows = [r for r in results["per_token"]
              if r["mechanism"] == mechanism and r["batch_size"] == entry["batch_size"]]
      cells = [f"{r['seconds_per_token'] * 1e3:.3f} ±{r['spread']:.0%}" for r in rows]
      table.append([mechanism, str(entry["batch_size"]), *cells,
                    f"{rows[-1]['cache_bytes'] / 2**20:.1f} MiB"])
  lines += markdown_table(["mechanism", "batch", *(f"T={t}" for t in lengths), "cache at T last"],
                          table)
  lines += ["", "Against a careful softmax decoder (identity + handwritten) and the memory bound "
            "(bytes a step must read / bandwidth), ms per token:", ""]
  table = []
  for entry in results["summary"]:
    batch = entry["batch_size"]
    for mechanism in MECHANISMS:
      rows = [r for r in results["per_token"]
              if r["mechanism"] == mechanism and r["batch_size"] == batch]
      table.append([f"{mechanism} memory bound", str(batch),
                    *(f"{r['bandwidth_seconds_per_token'] * 1e3:.3f}" for r in rows)])
    table.append(["careful softmax", str(batch),
                  *(f"{e['careful_softmax_seconds_per_token'] * 1e3:.3f}"
                    for e in entry["per_length"])])
    table.append(["softmax / careful", str(batch),
                  *(f"{e['softmax_over_careful']:.2f}x" for e in entry["per_length"])])
    table.append(["RFA speed-up over softmax", str(batch),
                  *(f"{e['rfa_speedup']:.2f}x" for e in entry["per_length"])])
    table.append(["RFA speed-up over careful", str(batch),
                  *(f"{e['rfa_speedup_over_careful']:.2f}x" for e in entry["per_length"])])
  lines += markdown_table(["", "batch", *(f"T={t}" for t in lengths)], table)
  lines += ["", f"Whole output of {results['whole_length']} tokens (one jitted loop, median of "
            f"{results['whole_repeats']} ± spread):", ""]
  table = []
  for entry in results["summary"]:
    batch = entry["batch_size"]
    rows = {r["mechanism"]: r for r in results["whole"] if r["batch_size"] == batch}
    seconds = [f"{rows[m]['seconds']:.3f} ±{rows[m]['spread']:.0%}"
               for m in ("softmax", "rfa_gaussian", "identity")]
    table.append([str(batch), *seconds, f"{entry['whole_speedup']:.2f}x",
                  f"{entry['identity_bound']:.2f}x", f"{entry['rfa_attention_share']:.0%}"])
  lines += markdown_table(["batch", "softmax s", "RFA s", "identity s", "RFA speed-up",
                           "bound (softmax / identity)", "RFA attention share"], table)
  lines += ["", "The bound is the speed-up that attention costing nothing would give: the rest of "
            "the model (embedding, MLPs, LayerNorms, the 256-way output layer) runs at every step "
            "whatever the attention. RFA attention share: the part of RFA's time that its "
            "attention takes (1 - identity / RFA).", ""]
  return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  integers = lambda text: [int(x) for x in text.split(",") if x]
  parser.add_argument("--preset", default="", help="a preset of configs/lm.py for the model size")
  parser.add_argument("--lengths", type=integers, default=[256, 512, 1024, 2048, 4096, 8192])
  parser.add_argument("--batch_sizes", type=integers, default=[1, 16])
  parser.add_argument("--steps", type=int, default=64, help="tokens timed per measurement")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--whole_length", type=int, default=2048)
  parser.add_argument("--whole_repeats", type=int, default=3)
  parser.add_argument("--bandwidth_mib", type=int, default=512,
                      help="size of the array whose sum measures the memory bandwidth")
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes for a test: lengths 16,32, batch 2, a 1-layer model")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decode"))
  args = parser.parse_args(argv)
  if args.quick:
    args.lengths, args.batch_sizes, args.steps = [16, 32], [2], 4
    args.repeats, args.whole_length, args.whole_repeats, args.bandwidth_mib = 2, 16, 1, 16
  if args.steps < 1 or any(length <= args.steps for length in args.lengths):
    raise SystemExit(f"--steps={args.steps} must be at least 1 and below every length "
                     f"({args.lengths})")
  return args


def lm_config(args):
  arg = ",".join(["rfa_gaussian"] + ([args.preset] if args.preset else []))
  config = config_lib.load(str(ROOT / "configs" / "lm.py"), arg)
  if args.quick:
    config.model.update(dict(num_layers=1, emb_dim=32, num_heads=2, qkv_dim=32, mlp_dim=64))
    config.model.attention_options.num_features = 16
  config.model.dropout_rate = 0.0
  return config


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = lm_config(args)
  m = config.model
  started = time.time()
  results = dict(
      command="python -m benchmarks.decode" + (" --quick" if args.quick else "")
      + (f" --preset={args.preset}" if args.preset else ""),
      machine=machine_info(), lengths=args.lengths, batch_sizes=args.batch_sizes,
      steps=args.steps, whole_length=args.whole_length,
      model=(f"{m.num_layers} layers, emb {m.emb_dim}, {m.num_heads} heads, qkv {m.qkv_dim}, "
             f"mlp {m.mlp_dim}, {m.attention_options.num_features} RFA features"),
      repeats=args.repeats, whole_repeats=args.whole_repeats, commit=git_commit(),
      matmul_peak=matmul_peak(256 if args.quick else 1024, args.repeats),
      memory_bandwidth=memory_bandwidth(args.bandwidth_mib, args.repeats))
  results["per_token"] = per_token_rows(config, args, results["memory_bandwidth"]["bytes_per_s"])
  results["whole"] = whole_rows(config, args)
  results["summary"] = summary(results["per_token"], results["whole"], args.lengths)
  results["seconds"] = time.time() - started
  write_results(args.out, results, markdown(results), name="decode")
  return results


if __name__ == "__main__":
  main()
