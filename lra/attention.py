"""Registry of attention mechanisms, so that the model never branches on the mechanism.

Every mechanism is an `nnx.Module` built as

    make(name, *, emb_dim, num_heads, qkv_dim, max_length, rngs, causal=False, dtype="float32",
         **options)

and called as `module(x, mask)` with `x: [batch, length, emb_dim]` and `mask: [batch, length]` bool
(False = padding), returning `[batch, length, emb_dim]`. Values at padded positions must not change the
outputs at valid positions. Rows that pack several sequences add `segment_ids=` ([batch, length] int,
0 = padding, equal ids = one sequence): a query attends only within its sequence. The mechanisms in
`PACKS` take it; the others raise ValueError when given it. `dtype` ("float32" | "bfloat16") is the dtype of activations and matrix
product inputs; parameters stay float32, and logits, softmax weights, feature sums and recurrent states
are float32 in every mechanism.
"""

import functools
import inspect
from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx

from lra import rfa_attention
from lra.baselines import (bigbird, linear, linformer, local, longformer, nystromformer, performer,
                           reformer, sinkhorn, sliding_window, softmax, sparse, synthesizer)

DTYPES = ("float32", "bfloat16")
PACKS = ("rfa_arccos", "rfa_gaussian", "softmax")  # the mechanisms that take segment_ids

_MECHANISMS: dict[str, Callable[..., nnx.Module]] = {
    "softmax": softmax.SoftmaxAttention,
    "rfa_gaussian": rfa_attention.GaussianRFA,
    "rfa_arccos": rfa_attention.ArccosRFA,
    "bigbird": bigbird.BigBirdAttention,
    "linear": linear.LinearAttention,
    "linformer": linformer.LinformerAttention,
    "local": local.LocalAttention,
    "longformer": longformer.LongformerAttention,
    "nystromformer": nystromformer.NystromAttention,
    "performer": performer.PerformerAttention,
    "reformer": reformer.ReformerAttention,
    "sinkhorn": sinkhorn.SinkhornAttention,
    "sliding_window": sliding_window.SlidingWindowAttention,
    "sparse": sparse.SparseAttention,
    "synthesizer": synthesizer.SynthesizerAttention,
}


def names() -> list[str]:
  """Sorted names of every registered attention mechanism."""
  return sorted(_MECHANISMS)


def default_options(name: str) -> dict[str, Any]:
  """The mechanism's own options (beyond the common arguments) with their defaults."""
  _check_name(name)
  common = {"self", "emb_dim", "num_heads", "qkv_dim", "max_length", "rngs", "causal", "dtype"}
  builder, preset = _MECHANISMS[name], {}
  if isinstance(builder, functools.partial):  # a module class with some options preset
    builder, preset = builder.func, builder.keywords
  parameters = inspect.signature(builder.__init__).parameters.values()
  return {p.name: preset.get(p.name, p.default) for p in parameters
          if p.name not in common and p.kind is p.KEYWORD_ONLY and p.default is not p.empty}


def _check_name(name):
  if name not in _MECHANISMS:
    raise ValueError(f"unknown attention {name!r}; registered: {', '.join(names())}")


def _check_defining_options(name, options):
  """A name that presets an option (rfa_arccos: feature_map="arccos") is defined by it: another
  value would run another mechanism under this name."""
  builder = _MECHANISMS[name]
  for key, value in (builder.keywords if isinstance(builder, functools.partial) else {}).items():
    if key in options and options[key] != value:
      raise ValueError(f"attention {name!r} is defined by {key}={value!r}; got {key}="
                       f"{options[key]!r}, which would run another mechanism under its name. Drop "
                       f"the option, or pick the mechanism that takes it (feature_map 'gaussian' or "
                       f"'positive': rfa_gaussian)")


def compute_dtype(dtype) -> jnp.dtype:
  """The dtype of activations and matrix products: "float32" | "bfloat16" (or those jnp dtypes)."""
  try:
    name = jnp.dtype(dtype).name
  except TypeError:
    name = None
  if name not in DTYPES:
    raise ValueError(f"dtype={dtype!r}; expected one of {DTYPES} (parameters, optimiser state and "
                     "losses are float32 either way)")
  return jnp.dtype(name)


def make(name: str, *, emb_dim: int, num_heads: int, qkv_dim: int, max_length: int,
         rngs: nnx.Rngs, causal: bool = False, dtype="float32", **options) -> nnx.Module:
  """Builds the attention module registered under `name` (see the module docstring)."""
  _check_name(name)
  if qkv_dim % num_heads:
    raise ValueError(f"qkv_dim={qkv_dim} must be divisible by num_heads={num_heads}")
  _check_defining_options(name, options)
  return _MECHANISMS[name](emb_dim=emb_dim, num_heads=num_heads, qkv_dim=qkv_dim,
                         max_length=max_length, rngs=rngs, causal=causal,
                         dtype=compute_dtype(dtype), **options)
