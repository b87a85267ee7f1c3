"""Speed and memory of RFA against exact softmax attention, side by side in one run.

    python -m benchmarks.attention [--lengths 1024 ... 16384] [--chunk-sizes 32 64 128] [--quick]

At each length: forward and forward+backward time (grad of sum(out * cotangent) w.r.t. q, k, v) and
XLA's compiled memory (temp + argument + output bytes) of exact softmax (non-causal and causal), RFA
non-causal, RFA causal as the token scan (chunk_size=1) and in chunked form, and gated RFA in
chunked form; and the options, each beside the form it changes: positive features (non-causal), a
local window of --window positions (non-causal, chunked causal, gated chunked) and bidirectional
gating (non-causal, a gated chunked form each way). Also the
decoding cost per token (RFA's state, with positive features, with the window's cache, against a
softmax KV cache), the bfloat16 error
of chunked causal RFA, and this machine's fp32 matmul peak with the fraction of it each measurement
reaches. A computation whose compiled memory exceeds --memory-budget-gib is recorded with its memory
but not run; one that fails to compile or run (out of memory) is recorded with the error. Writes
results.json (raw figures) and results.md to --out, atomically.

Softmax is `jax.nn.dot_product_attention`, the strongest form a user has: cuDNN's fused flash
attention where it compiles (a CUDA GPU, bfloat16, head_dim a multiple of 8 up to 128), XLA's
otherwise; every row records which ran. All tokens are valid (no padding mask) in every form.

FLOPs are analytic counts (2 per multiply-add) of the useful work of each form, per batch row and
head with L tokens, head_dim d, F features (2 x num_features for gaussian), chunk C:
  softmax        4 L^2 d (q k^T and p v); causal half of it (cuDNN skips the masked blocks; XLA
                 computes all L^2 logits and so reaches half the rate it would on this count)
  rfa            4 L m d (features of q and k, m = num_features) + 4 L F d (S and the read-out)
  chunked        that + 2 L C (F + d) (the C x C scores and their product with v within chunks)
  token scan     as rfa (one rank-1 update and one read-out per token)
  + window w     4 L s d more (logits and p v over s = 3w keys non-causal, 2w causal per query)
forward+backward = 3 x forward (each product has two gradient products; recomputation and the
elementwise work are not counted).
"""

import argparse
import functools
import os
import platform
import resource
import statistics
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import rfa_jax
from lra.records import git_commit, markdown_table, max_rss_bytes, write_results

PACKED_SEQUENCES = 4  # sequences per row in the packed forms
TARGET_LENGTHS = {"noncausal": 4096, "causal": 8192, "long": 16384}
QUICK = dict(lengths=[64, 128], chunk_sizes=[16, 32], repeats=2, decode_tokens=64, heads=2,
             head_dim=16, num_features=16, bf16_length=128, matmul_size=256)


class Form(NamedTuple):
  """One attention computation: `apply(q, k, v, gate, projection)` -> out."""
  name: str
  label: str
  chunk_size: int | None
  apply: Callable
  window: int | None = None


class Sizes(NamedTuple):
  batch: int
  heads: int
  head_dim: int
  num_features: int
  feature_dim: int


def attention_forms(chunk_sizes, softmax_implementation: str = "xla", window: int = 32) -> list[Form]:
  """Every measured form; the chunked ones once per chunk size, the options at the
  library's default chunk (or the first)."""
  forms = [
      Form("softmax", "softmax", None, softmax(False, softmax_implementation)),
      Form("rfa", "rfa", None, lambda q, k, v, g, w: rfa_jax.rfa(q, k, v, w)),
      Form("softmax_causal", "softmax causal", None, softmax(True, softmax_implementation)),
      Form("rfa_causal_scan", "rfa causal token scan", 1,
           lambda q, k, v, g, w: rfa_jax.rfa(q, k, v, w, causal=True, chunk_size=1)),
  ]
  forms += [Form("rfa_causal_chunked", f"rfa causal chunked C={c}", c, causal_rfa(c, gated=False))
            for c in chunk_sizes]
  forms += [Form("rfa_gated_chunked", f"rfa gated chunked C={c}", c, causal_rfa(c, gated=True))
            for c in chunk_sizes]
  c = rfa_jax.DEFAULT_CHUNK_SIZE if rfa_jax.DEFAULT_CHUNK_SIZE in chunk_sizes else chunk_sizes[0]
  forms += [
      Form("rfa_positive", "rfa positive features", None,
           lambda q, k, v, g, w: rfa_jax.rfa(q, k, v, w, feature_map="positive")),
      Form("rfa_window", f"rfa + window {window}", None,
           lambda q, k, v, g, w: rfa_jax.rfa(q, k, v, w, window=window), window),
      Form("rfa_causal_window", f"rfa causal chunked C={c} + window {window}", c,
           causal_rfa(c, gated=False, window=window), window),
      Form("rfa_gated_window", f"rfa gated chunked C={c} + window {window}", c,
           causal_rfa(c, gated=True, window=window), window),
      Form("rfa_causal_parallel", f"rfa causal chunked C={c} parallel", c,
           causal_rfa(c, gated=False, inter_chunk="parallel")),
      Form("rfa_gated_parallel", f"rfa gated chunked C={c} parallel", c,
           causal_rfa(c, gated=True, inter_chunk="parallel")),
      Form("rfa_packed", f"rfa packed ({PACKED_SEQUENCES} sequences a row)", None,
           lambda q, k, v, g, w: rfa_jax.rfa(q, k, v, w, segment_ids=packed_ids(q))),
      Form("rfa_causal_packed", f"rfa causal chunked C={c} packed", c,
           causal_rfa(c, gated=False, packed=True)),
      Form("rfa_gated_packed", f"rfa gated chunked C={c} packed", c,
           causal_rfa(c, gated=True, packed=True)),
      Form("rfa_bidirectional", f"rfa bidirectional gated C={c}", c,
           lambda q, k, v, g, w: rfa_jax.rfa(q, k, v, w, gate=g, reverse_gate=1 - g, chunk_size=c)),
  ]
  return forms


def packed_ids(q):
  """[batch, length] segment ids: PACKED_SEQUENCES sequences of equal length in every row."""
  length = q.shape[1]
  return jnp.broadcast_to(jnp.arange(length) * PACKED_SEQUENCES // length + 1, q.shape[:2])


def softmax(causal: bool, implementation: str) -> Callable:
  """Exact softmax attention through jax.nn.dot_product_attention ("cudnn" or "xla")."""
  def apply(q, k, v, gate, projection):
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=implementation)
  return apply


def softmax_implementation(sizes, dtype) -> dict:
  """"cudnn" when cuDNN's fused attention compiles for these sizes and dtype (forward and backward,
  on a short sequence), else "xla", with the reason."""
  if jax.default_backend() != "gpu":
    return dict(implementation="xla", reason=f"backend {jax.default_backend()}")
  shape = (1, 128, sizes.heads, sizes.head_dim)
  q = jnp.zeros(shape, dtype)
  try:
    attend = functools.partial(jax.nn.dot_product_attention, implementation="cudnn")
    jax.jit(jax.grad(lambda q: jnp.sum(attend(q, q, q).astype(jnp.float32)))).lower(q).compile()
  except Exception as error:  # noqa: BLE001 - any failure means cuDNN does not apply
    return dict(implementation="xla", reason=f"cuDNN: {type(error).__name__}: {error}"[:300])
  return dict(implementation="cudnn", reason="compiles")


def causal_rfa(chunk_size: int, gated: bool, window: int | None = None,
               packed: bool = False, inter_chunk: str = "scan") -> Callable:
  def apply(q, k, v, gate, projection):
    return rfa_jax.rfa(q, k, v, projection, causal=True, gate=gate if gated else None,
                       chunk_size=chunk_size, window=window, inter_chunk=inter_chunk,
                       segment_ids=packed_ids(q) if packed else None)
  return apply


def forward_flops(form: Form, length: int, s: Sizes) -> float:
  """Analytic forward FLOPs (2 per multiply-add) of `form` at `length`."""
  tokens = s.batch * length * s.heads
  if form.name.startswith("softmax"):
    return 2.0 * tokens * length * 2 * s.head_dim * (0.5 if form.name.endswith("causal") else 1.0)
  features = 2.0 * 2 * tokens * s.num_features * s.head_dim
  state = 2.0 * 2 * tokens * s.feature_dim * s.head_dim
  intra_chunk = 0.0
  if form.chunk_size and form.chunk_size > 1:
    intra_chunk = 2.0 * tokens * form.chunk_size * (s.feature_dim + s.head_dim)
  local = 0.0
  if form.window:
    local = 2.0 * tokens * (2 if form.chunk_size else 3) * form.window * 2 * s.head_dim
  if form.name == "rfa_bidirectional":  # a state each way; one C x C score matrix serves both
    state *= 2
  return features + state + intra_chunk + local


def make_inputs(key, length: int, s: Sizes, dtype):
  """q, k, v, cotangent: [batch, length, heads, head_dim] and gate = sigmoid(logits) in (0, 1)."""
  keys = jax.random.split(key, 5)
  shape = (s.batch, length, s.heads, s.head_dim)
  q, k, v, cotangent = (jax.random.normal(x, shape).astype(dtype) for x in keys[:4])
  gate = jax.nn.sigmoid(jax.random.normal(keys[4], shape[:3]))
  return q, k, v, cotangent, gate


def forward(form: Form):
  return jax.jit(lambda q, k, v, cotangent, gate, w: form.apply(q, k, v, gate, w))


def forward_backward(form: Form):
  """Gradient of sum(out * cotangent) with respect to q, k and v."""
  def loss(q, k, v, cotangent, gate, w):
    out = form.apply(q, k, v, gate, w)
    return jnp.sum(out.astype(jnp.float32) * cotangent.astype(jnp.float32))
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def compiled_memory_bytes(compiled) -> dict:
  """XLA's compiled memory: temp + argument + output bytes (empty where the backend has none)."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - backends without the analysis
    analysis = None
  if analysis is None:
    return {}
  parts = dict(temp_bytes=analysis.temp_size_in_bytes,
               argument_bytes=analysis.argument_size_in_bytes,
               output_bytes=analysis.output_size_in_bytes)
  return dict(parts, memory_bytes=sum(parts.values()))


def device_memory() -> dict:
  """Device 0's memory statistics where the backend reports them (GPU, TPU): bytes_limit and the
  process's peak_bytes_in_use so far (a running maximum: it cannot be reset per measurement)."""
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - backends without statistics
    stats = {}
  return {key: stats[key] for key in ("bytes_limit", "peak_bytes_in_use") if key in stats}


def failure(error: Exception) -> str:
  """'out of memory: ...' or 'error: ...', one line."""
  text = f"{type(error).__name__}: {error}".strip().splitlines()[0][:300]
  lowered = str(error).lower()
  if "resource_exhausted" in lowered or "out of memory" in lowered:
    return f"out of memory: {text}"
  return f"error: {text}"


def median_time(compiled, args, repeats: int, max_seconds: float) -> dict:
  """Median wall time of `repeats` calls after one warm-up call (fewer calls when one is slow), and
  the process's CPU time and minor page faults per call (kernel time is mostly page faults of the
  buffers XLA allocates per call)."""
  start = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  warmup = time.perf_counter() - start
  repeats = max(1, min(repeats, int(max_seconds / max(warmup, 1e-9))))
  times = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
  return dict(median_s=statistics.median(times), times_s=times, warmup_s=warmup,
              user_cpu_s=user / repeats, system_cpu_s=system / repeats,
              system_cpu_fraction=system / max(user + system, 1e-9),
              minor_faults=(after.ru_minflt - before.ru_minflt) / repeats)


def measure(jitted, args, flops: float, args_ns, softmax: bool = False) -> dict:
  """Compiles, checks the compiled memory against the budget, then times (unless over budget).
  A failure to compile or run (out of memory) is recorded as `skipped`, never raised. `softmax`:
  also records `implementation`, what the compiled program runs ("cudnn" or "xla")."""
  start = time.perf_counter()
  row = dict(flops=flops)
  try:
    compiled = jitted.lower(*args).compile()
    row.update(compile_s=time.perf_counter() - start, **compiled_memory_bytes(compiled))
    if softmax:
      row["implementation"] = "cudnn" if runs_cudnn_attention(compiled) else "xla"
    budget = args_ns.memory_budget_gib * 2**30
    if row.get("memory_bytes", 0) > budget:
      row["skipped"] = (f"needs {row['memory_bytes'] / 2**30:.1f} GiB > budget "
                        f"{args_ns.memory_budget_gib:g} GiB; memory from the compiled analysis")
    else:
      row.update(median_time(compiled, args, args_ns.repeats, args_ns.max_seconds))
      row["flops_per_s"] = flops / row["median_s"]
  except Exception as error:  # noqa: BLE001 - recorded per measurement; the run goes on
    row["skipped"] = failure(error)
  row.update(max_rss_bytes=max_rss_bytes(), **device_memory())
  return row


def runs_cudnn_attention(compiled) -> bool:
  """Whether a compiled program calls cuDNN's fused attention (a `__cudnn$fmha...` custom call)."""
  return "__cudnn$fmha" in compiled.as_text()


def progress(text: str, row: dict):
  memory = f"{row['memory_bytes'] / 2**20:9.1f} MiB" if "memory_bytes" in row else "memory n/a"
  if "skipped" in row:
    print(f"{text}: skipped ({row['skipped']}), {memory}", flush=True)
  else:
    print(f"{text}: {row['median_s'] * 1e3:10.2f} ms, {memory}, "
          f"{row['flops_per_s'] / 1e9:7.1f} GFLOP/s, kernel {row['system_cpu_fraction']:4.0%} "
          f"of CPU (n={len(row['times_s'])})", flush=True)


def attention_rows(args, sizes: Sizes, deadline: float | None = None, select=None,
                   on_row=None) -> list[dict]:
  """Every form at every length, forward and forward+backward (only those where
  `select(form, length, mode)` holds, when given); `on_row(row)` after each. Measurements after
  `deadline` (time.monotonic()) and token scans longer than --scan-max-length are recorded as not
  run. Softmax rows say which implementation ran and why: where cuDNN's was chosen but fails to
  compile at that shape, the row is XLA's, with cuDNN's error as the reason."""
  key = jax.random.PRNGKey(args.seed)
  projection = rfa_jax.random_projection(key, sizes.heads, sizes.num_features, sizes.head_dim)
  softmax_choice = softmax_implementation(sizes, args.dtype)
  print(f"softmax ({args.dtype}): {softmax_choice['implementation']} "
        f"({softmax_choice['reason']})", flush=True)
  rows = []
  for length in args.lengths:
    inputs = make_inputs(jax.random.fold_in(key, length), length, sizes, args.dtype) + (projection,)
    for form in attention_forms(args.chunk_sizes, softmax_choice["implementation"], args.window):
      for name, build, factor in (("fwd", forward, 1), ("fwd_bwd", forward_backward, 3)):
        if select is not None and not select(form, length, name):
          continue
        flops = factor * forward_flops(form, length, sizes)
        row = dict(form=form.name, label=form.label, chunk_size=form.chunk_size, length=length,
                   mode=name, dtype=args.dtype)
        if form.chunk_size == 1 and args.scan_max_length and length > args.scan_max_length:
          row.update(flops=flops, skipped=f"token scan runs to L={args.scan_max_length}")
        elif deadline is not None and time.monotonic() > deadline:
          row.update(flops=flops, skipped="time budget spent")
        elif form.name.startswith("softmax"):
          row.update(measure_softmax(form, build, inputs, flops, args, softmax_choice))
        else:
          row.update(measure(build(form), inputs, flops, args))
        progress(f"L={length:>6} {form.label:<26} {name:<7}", row)
        rows.append(row)
        if on_row is not None:
          on_row(row)
  return rows


def measure_softmax(form: Form, build, inputs, flops: float, args, choice: dict) -> dict:
  """`measure` of a softmax form with the implementation chosen for the run; XLA's instead where
  cuDNN's fails to compile at this shape. Records which ran and why."""
  row = measure(build(form), inputs, flops, args, softmax=True)
  reason = choice["reason"]
  if choice["implementation"] == "cudnn" and row.get("skipped", "").startswith("error"):
    reason = f"cuDNN failed at this shape ({row['skipped']}); XLA's ran"
    fallback = form._replace(apply=softmax(form.name.endswith("causal"), "xla"))
    row = measure(build(fallback), inputs, flops, args, softmax=True)
  elif row.get("implementation", choice["implementation"]) != choice["implementation"]:
    reason = (f"{choice['implementation']} was asked for; the compiled program runs "
              f"{row['implementation']}")
  return dict(row, implementation_reason=reason)


def rfa_decoder(projection, sizes: Sizes, feature_map: str = "gaussian", window: int | None = None):
  """One jitted scan of `decode_step` over precomputed q, k, v: [tokens, batch, heads, head_dim]
  (with `window`, the state also holds the previous window - 1 keys and values)."""
  def generate(q, k, v):
    state = rfa_jax.init_decode_state(sizes.batch, sizes.heads,
                                      rfa_jax.feature_dim(sizes.num_features, feature_map),
                                      sizes.head_dim, window=window, head_dim=sizes.head_dim)
    step = lambda state, x: rfa_jax.decode_step(state, *x, projection, feature_map=feature_map,
                                                window=window)
    return jax.lax.scan(step, state, (q, k, v))[1]
  return jax.jit(generate)


def softmax_decoder(sizes: Sizes, tokens: int):
  """One jitted scan that writes k_t, v_t into a `tokens`-slot KV cache and attends over the filled
  slots."""
  slots = jnp.arange(tokens)

  def step(carry, x):
    k_cache, v_cache, t = carry
    q_t, k_t, v_t = x
    k_cache = jax.lax.dynamic_update_slice(k_cache, k_t[:, None], (0, t, 0, 0))
    v_cache = jax.lax.dynamic_update_slice(v_cache, v_t[:, None], (0, t, 0, 0))
    filled = jnp.broadcast_to(slots <= t, (sizes.batch, 1, 1, tokens))
    out = jax.nn.dot_product_attention(q_t[:, None], k_cache, v_cache, mask=filled)[:, 0]
    return (k_cache, v_cache, t + 1), out

  def generate(q, k, v):
    cache = jnp.zeros((sizes.batch, tokens, sizes.heads, sizes.head_dim), q.dtype)
    return jax.lax.scan(step, (cache, cache, jnp.int32(0)), (q, k, v))[1]
  return jax.jit(generate)


def decode_rows(args, sizes: Sizes, on_row=None) -> list[dict]:
  """Per-token cost of generating --decode-tokens tokens with RFA and with a softmax KV cache;
  `on_row(row)` after each."""
  key = jax.random.PRNGKey(args.seed + 1)
  projection = rfa_jax.random_projection(key, sizes.heads, sizes.num_features, sizes.head_dim)
  shape = (args.decode_tokens, sizes.batch, sizes.heads, sizes.head_dim)
  q, k, v = (jax.random.normal(x, shape).astype(args.dtype) for x in jax.random.split(key, 3))
  heads = sizes.batch * sizes.heads
  rfa_flops = lambda features: 2.0 * heads * 2 * (sizes.num_features + features) * sizes.head_dim
  per_token_flops = {  # features of q_t and k_t, then the state update and read-out (+ the window)
      "rfa_decode": rfa_flops(sizes.feature_dim),
      "rfa_positive_decode": rfa_flops(sizes.num_features),
      "rfa_window_decode": rfa_flops(sizes.feature_dim) + 2.0 * heads * args.window * 2 * sizes.head_dim,
      "softmax_decode": 2.0 * heads * args.decode_tokens * 2 * sizes.head_dim,
  }
  decoders = dict(rfa_decode=rfa_decoder(projection, sizes),
                  rfa_positive_decode=rfa_decoder(projection, sizes, feature_map="positive"),
                  rfa_window_decode=rfa_decoder(projection, sizes, window=args.window),
                  softmax_decode=softmax_decoder(sizes, args.decode_tokens))
  rows = []
  for name, jitted in decoders.items():
    flops = per_token_flops[name] * args.decode_tokens
    row = dict(form=name, tokens=args.decode_tokens, **measure(jitted, (q, k, v), flops, args))
    if "median_s" in row:
      row["per_token_s"] = row["median_s"] / args.decode_tokens
    progress(f"decode {args.decode_tokens} tokens {name:<16}", row)
    rows.append(row)
    if on_row is not None:
      on_row(row)
  return rows


def bf16_error(args, sizes: Sizes) -> dict:
  """max |out_bf16 - out_fp32| / max |out_fp32| of chunked causal RFA from bf16 vs fp32 q, k, v
  (projection in fp32, default chunk size). The fp32 reference runs at the highest matmul
  precision (a GPU would otherwise use TF32 for it)."""
  key = jax.random.PRNGKey(args.seed + 2)
  projection = rfa_jax.random_projection(key, sizes.heads, sizes.num_features, sizes.head_dim)
  q, k, v, _, _ = make_inputs(key, args.bf16_length, sizes, jnp.float32)
  attend = jax.jit(lambda q, k, v: rfa_jax.rfa(q, k, v, projection, causal=True))
  with jax.default_matmul_precision("highest"):
    exact = np.asarray(attend(q, k, v), np.float32)
  low = np.asarray(attend(*(x.astype(jnp.bfloat16) for x in (q, k, v))).astype(jnp.float32))
  error = float(np.max(np.abs(low - exact)) / np.max(np.abs(exact)))
  print(f"bf16 chunked causal (C={rfa_jax.DEFAULT_CHUNK_SIZE}) L={args.bf16_length}: "
        f"max relative error {error:.3%}", flush=True)
  return dict(length=args.bf16_length, chunk_size=rfa_jax.DEFAULT_CHUNK_SIZE,
              max_relative_error=error)


def matmul_peak(size: int, repeats: int, dtype=jnp.float32, warmup_s: float = 0.0) -> dict:
  """FLOP/s of a jitted size^3 matmul in `dtype` (median of `repeats`, after calls for at least
  `warmup_s` seconds: an idle GPU's clocks rise only under load). Default precision, so a GPU
  may use TF32 for float32, unless the caller sets jax.default_matmul_precision (recorded)."""
  a, b = jax.random.normal(jax.random.PRNGKey(0), (2, size, size), jnp.float32).astype(dtype)
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  start = time.perf_counter()
  while time.perf_counter() - start < warmup_s:
    jax.block_until_ready(compiled(a, b))
  warmed_s = time.perf_counter() - start
  timing = median_time(compiled, (a, b), repeats, max_seconds=60.0)
  flops_per_s = 2.0 * size**3 / timing["median_s"]
  print(f"{jnp.dtype(dtype).name} matmul {size}^3: {flops_per_s / 1e9:.1f} GFLOP/s", flush=True)
  return dict(size=size, dtype=jnp.dtype(dtype).name, flops_per_s=flops_per_s,
              precision=str(jax.config.jax_default_matmul_precision or "default"),
              warmed_s=warmed_s, **timing)


def best_chunked(rows, form: str, length: int) -> dict | None:
  """The chunk size of `form` with the fastest forward+backward at `length` (or the least memory
  when none ran)."""
  candidates = [r for r in rows if r["form"] == form and r["length"] == length
                and r["mode"] == "fwd_bwd"]
  timed = [r for r in candidates if "median_s" in r]
  if timed:
    return min(timed, key=lambda r: r["median_s"])
  return min(candidates, key=lambda r: r.get("memory_bytes", float("inf")), default=None)


def fwd_bwd_row(rows, form: str, length: int) -> dict | None:
  """The forward+backward measurement of `form` at `length` (chunked forms: the best chunk size)."""
  if form in ("rfa_causal_chunked", "rfa_gated_chunked"):
    return best_chunked(rows, form, length)
  return next((r for r in rows if r["form"] == form and r["length"] == length
               and r["mode"] == "fwd_bwd"), None)


def nearest_length(lengths, target: int) -> int:
  """`target` when measured, else the largest measured length."""
  return target if target in lengths else max(lengths)


def ratio(numerator: dict | None, denominator: dict | None, field: str) -> float | None:
  if numerator is None or denominator is None or field not in numerator or field not in denominator:
    return None
  return numerator[field] / denominator[field]


def target_checks(rows, decode, bf16, lengths) -> list[dict]:
  """The side-by-side ratios and their targets."""
  a = nearest_length(lengths, TARGET_LENGTHS["noncausal"])
  b = nearest_length(lengths, TARGET_LENGTHS["causal"])
  c = nearest_length(lengths, TARGET_LENGTHS["long"])
  row = lambda form, length: fwd_bwd_row(rows, form, length)
  decoders = {r["form"]: r for r in decode}
  checks = [
      ("a", f"non-causal fwd+bwd time at L={a}: softmax / rfa",
       ratio(row("softmax", a), row("rfa", a), "median_s"), ">=", 15.0),
      ("b", f"causal fwd+bwd time at L={b}: softmax causal / rfa chunked",
       ratio(row("softmax_causal", b), row("rfa_causal_chunked", b), "median_s"), ">=", 30.0),
      ("b", f"causal fwd+bwd memory at L={c}: rfa chunked / rfa token scan",
       ratio(row("rfa_causal_chunked", c), row("rfa_causal_scan", c), "memory_bytes"), "<=", 0.3),
      ("b", f"fwd+bwd time at L={c}: rfa causal chunked / rfa non-causal",
       ratio(row("rfa_causal_chunked", c), row("rfa", c), "median_s"), "<=", 2.5),
      ("c", f"decode time per token ({decode[0]['tokens']} tokens): softmax KV cache / rfa",
       ratio(decoders["softmax_decode"], decoders["rfa_decode"], "per_token_s"), ">=", 20.0),
      ("d", f"bf16 max relative error, chunked causal at L={bf16['length']}",
       bf16["max_relative_error"], "<=", 0.03),
  ]
  return [dict(item=item, description=text, value=value, op=op, target=target,
               status=status(value, op, target)) for item, text, value, op, target in checks]


def status(value, op: str, target: float) -> str:
  if value is None:
    return "N/A"
  return "PASS" if (value >= target if op == ">=" else value <= target) else "MISS"


def format_check(check: dict) -> str:
  value = check["value"]
  shown = "n/a" if value is None else (f"{value:.2%}" if check["item"] == "d" else f"{value:.2f}x")
  target = f"{check['target']:.0%}" if check["item"] == "d" else f"{check['target']:g}x"
  return f"({check['item']}) {check['description']}: {shown} (target {check['op']} {target}) " \
         f"{check['status']}"


def cell(row: dict | None, field: str, scale: float, fmt: str) -> str:
  if row is None:
    return "-"
  if field not in row:
    if "skipped" not in row:
      return "-"
    if "memory_bytes" in row:
      return f"not run ({row['memory_bytes'] / 2**30:.1f} GiB)"
    return "OOM" if row["skipped"].startswith("out of memory") else "not run"
  return format(row[field] * scale, fmt)


def length_section(title: str, lengths, rows) -> str:
  """A `### title` section: a table with one column per length, `rows` [form, *cells]."""
  return "\n".join([f"### {title}", "", *markdown_table(["form", *(f"L={n}" for n in lengths)],
                                                         rows)]) + "\n"


def length_table(rows, lengths, title: str, mode: str, field: str, scale: float, fmt: str) -> str:
  """One line per form, one column per length: `field * scale` of the `mode` measurements."""
  lines = []
  for label in dict.fromkeys(r["label"] for r in rows):
    by_length = {r["length"]: r for r in rows if r["label"] == label and r["mode"] == mode}
    lines.append([label, *(cell(by_length.get(n), field, scale, fmt) for n in lengths)])
  return length_section(title, lengths, lines)


def best_chunk_table(rows, lengths) -> str:
  lines = []
  for form in ("rfa_causal_chunked", "rfa_gated_chunked"):
    best = [best_chunked(rows, form, n) for n in lengths]
    lines.append([form, *(str(r["chunk_size"]) if r else "-" for r in best)])
  return length_section("Best chunk size (fastest fwd+bwd)", lengths, lines)


# Forms measured against another form (same chunk size): {title: {form: the form it is compared to}}.
PAIRED_FORMS = {
    f"Packed ({PACKED_SEQUENCES} sequences a row) / unpacked, fwd+bwd": {
        "rfa_packed": "rfa", "rfa_causal_packed": "rfa_causal_chunked",
        "rfa_gated_packed": "rfa_gated_chunked"},
    "Parallel / scanned state across chunks (inter_chunk), fwd+bwd": {
        "rfa_causal_parallel": "rfa_causal_chunked", "rfa_gated_parallel": "rfa_gated_chunked"},
    "Bidirectional gating / one-way gated chunked, fwd+bwd": {
        "rfa_bidirectional": "rfa_gated_chunked"},
}


def paired_tables(rows, lengths) -> list[str]:
  """For each PAIRED_FORMS title: the forward+backward time and memory of each form over the form it
  is compared to, at the same chunk size."""
  sections = []
  for title, pairs in PAIRED_FORMS.items():
    lines = []
    for form, other_form in pairs.items():
      for field, name in (("median_s", "time"), ("memory_bytes", "memory")):
        cells = []
        for n in lengths:
          mine = fwd_bwd_row(rows, form, n)
          other = next((r for r in rows if r["form"] == other_form and r["length"] == n
                        and r["mode"] == "fwd_bwd" and r.get("chunk_size") ==
                        (mine or {}).get("chunk_size")), None)
          value = ratio(mine, other, field)
          cells.append("-" if value is None else f"{value:.2f}")
        lines.append([f"{form} / {other_form}: {name}", *cells])
    sections.append(length_section(title, lengths, lines))
  return sections


def redraw_rows(args, sizes: Sizes, on_row=None) -> list[dict]:
  """Time of one orthogonal projection draw [heads, num_features, head_dim] per method (the
  training redraw of every layer and step); `on_row(row)` after each."""
  rows = []
  for method in rfa_jax.ORTHOGONAL_METHODS:
    draw = jax.jit(lambda key, method=method: rfa_jax.random_projection(
        key, sizes.heads, sizes.num_features, sizes.head_dim, orthogonal_method=method))
    row = dict(form=f"redraw_{method}", **measure(draw, (jax.random.PRNGKey(args.seed),), 0.0, args))
    progress(f"projection redraw {method:<14}", row)
    rows.append(row)
    if on_row is not None:
      on_row(row)
  return rows


def redraw_table(rows) -> str:
  return "\n".join(["### Projection redraw", "", *markdown_table(
      ["method", "time (ms)", "compiled memory (MiB)"],
      [[r["form"], cell(r, "median_s", 1e3, ".3f"), cell(r, "memory_bytes", 2**-20, ".2f")]
       for r in rows])]) + "\n"


def markdown(results: dict) -> str:
  rows, lengths, args = results["rows"], results["args"]["lengths"], results["args"]
  machine, sizes, peak = results["machine"], results["sizes"], results["matmul_peak"]
  tables = [
      ("Forward+backward time (ms)", "fwd_bwd", "median_s", 1e3, ".2f"),
      ("Forward time (ms)", "fwd", "median_s", 1e3, ".2f"),
      ("Forward+backward compiled memory (MiB)", "fwd_bwd", "memory_bytes", 2**-20, ".1f"),
      ("Forward compiled memory (MiB)", "fwd", "memory_bytes", 2**-20, ".1f"),
      ("Forward+backward fraction of the fp32 matmul peak (%)", "fwd_bwd", "peak_fraction", 100,
       ".1f"),
      ("Forward fraction of the fp32 matmul peak (%)", "fwd", "peak_fraction", 100, ".1f"),
      ("Forward+backward kernel (system) share of CPU time (%)", "fwd_bwd", "system_cpu_fraction",
       100, ".0f"),
  ]
  sections = [
      "# Attention benchmark", "",
      f"jax {machine['jax_version']} on {machine['device_kind']} ({machine['cpu_count']} CPUs), "
      f"commit {results.get('commit')}; "
      f"batch {sizes['batch']}, {sizes['heads']} heads, head_dim {sizes['head_dim']}, "
      f"{sizes['feature_dim']} features, {args['dtype']} inputs. Medians of up to "
      f"{args['repeats']} runs after a warm-up. fp32 matmul peak ({args['matmul_size']}^3) "
      f"{results['peak_flops_per_s'] / 1e9:.1f} GFLOP/s (start of run "
      f"{peak['start']['flops_per_s'] / 1e9:.1f}, end "
      f"{peak['end']['flops_per_s'] / 1e9:.1f}). 'not run': compiled memory over the "
      f"{args['memory_budget_gib']:g} GiB budget (that memory is shown). Process max RSS "
      f"{results['max_rss_bytes'] / 2**30:.2f} GiB.", "",
      "## Targets", "", *(f"- {format_check(c)}" for c in results["checks"]), "",
      *(length_table(rows, lengths, *table) for table in tables),
      best_chunk_table(rows, lengths),
      *paired_tables(rows, lengths),
      redraw_table(results["redraw"]),
      "### Decoding", "",
      *markdown_table(
          ["form", "tokens", "time per token (us)", "compiled memory (MiB)",
           "fraction of peak (%)"],
          [[r["form"], str(r["tokens"]), cell(r, "per_token_s", 1e6, ".2f"),
            f"{r['memory_bytes'] / 2**20:.1f}", cell(r, "peak_fraction", 100, ".1f")]
           for r in results["decode"]]),
  ]
  return "\n".join(sections) + "\n"


def machine_info() -> dict:
  device = jax.devices()[0]
  return dict(jax_version=jax.__version__, jaxlib_version=jax.lib.__version__,
              platform=device.platform, device_kind=device.device_kind,
              device_count=jax.device_count(), cpu_count=os.cpu_count(),
              usable_cpus=len(os.sched_getaffinity(0)), processor=platform.processor(),
              machine=platform.machine(), python=platform.python_version())


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 4096, 8192, 16384])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--head-dim", type=int, default=64)
  parser.add_argument("--num-features", type=int, default=64,
                      help="random projections; the gaussian map has twice as many features")
  parser.add_argument("--chunk-sizes", nargs="+", type=int, default=[32, 64, 128])
  parser.add_argument("--window", type=int, default=32, help="positions of the window option's band")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up run")
  parser.add_argument("--max-seconds", type=float, default=60.0,
                      help="fewer timed runs when the warm-up run shows they would take longer")
  parser.add_argument("--decode-tokens", type=int, default=2048)
  parser.add_argument("--bf16-length", type=int, default=4096)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="dtype of q, k, v in the timed computations")
  parser.add_argument("--memory-budget-gib", type=float, default=8.0,
                      help="computations whose compiled memory exceeds this are not run")
  parser.add_argument("--scan-max-length", type=int, default=None,
                      help="the token scan (chunk_size=1) runs only up to this length")
  parser.add_argument("--matmul-size", type=int, default=2048)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="benchmarks/results/attention")
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes for CI: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  sizes = Sizes(args.batch, args.heads, args.head_dim, args.num_features,
                rfa_jax.feature_dim(args.num_features))
  peak_start = matmul_peak(args.matmul_size, args.repeats)
  rows = attention_rows(args, sizes)
  decode = decode_rows(args, sizes)
  redraw = redraw_rows(args, sizes)
  bf16 = bf16_error(args, sizes)
  peak_end = matmul_peak(args.matmul_size, args.repeats)
  peak = max(peak_start["flops_per_s"], peak_end["flops_per_s"])
  for row in rows + decode:
    if "flops_per_s" in row:
      row["peak_fraction"] = row["flops_per_s"] / peak
  results = dict(args=vars(args), sizes=sizes._asdict(), machine=machine_info(),
                 commit=git_commit(),
                 matmul_peak=dict(start=peak_start, end=peak_end), peak_flops_per_s=peak,
                 rows=rows, decode=decode, redraw=redraw, bf16=bf16, max_rss_bytes=max_rss_bytes())
  results["checks"] = target_checks(rows, decode, bf16, args.lengths)
  write_results(args.out, results, markdown(results))
  return results


if __name__ == "__main__":
  main()
