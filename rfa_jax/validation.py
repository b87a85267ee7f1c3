"""Argument checks shared by every attention form: each raises ValueError before any computation,
naming the argument, the shape (or value) it got and the one it expects."""

import warnings

import jax
import numpy as np

from rfa_jax.causal import INTER_CHUNK
from rfa_jax.normalizer import check_normalizer
from rfa_jax.random_features import FEATURE_MAPS
from rfa_jax.segments import check_segment_ids


def _fail(name, got, expected):
  raise ValueError(f"{name} has shape {tuple(got)}; expected {expected}")


def check_rank(name, x, rank, layout):
  if np.ndim(x) != rank:
    _fail(name, np.shape(x), f"rank {rank}: {layout}")


def check_feature_map(feature_map):
  if feature_map not in FEATURE_MAPS:
    raise ValueError(f"feature_map={feature_map!r} is not a feature map; expected one of "
                     f"{FEATURE_MAPS}")


def resolve_feature_map(feature_map, kind):
  """The feature map of a call that may use `kind=`, the deprecated name of `feature_map=`."""
  if kind is not None:
    warnings.warn("kind= is deprecated: pass feature_map= (same values)", DeprecationWarning,
                  stacklevel=3)
    if feature_map not in ("gaussian", kind):
      raise ValueError(f"feature_map={feature_map!r} and kind={kind!r} disagree; pass feature_map only")
    feature_map = kind
  check_feature_map(feature_map)
  return feature_map


def check_projection(projection, num_heads, head_dim):
  check_rank("projection", projection, 3, "[heads, num_features, head_dim]")
  heads, _, dim = np.shape(projection)
  if (heads, dim) != (num_heads, head_dim):
    _fail("projection", np.shape(projection),
          f"[heads={num_heads}, num_features, head_dim={head_dim}] to match q and k")


def check_sigma(sigma, num_heads, name="sigma", head_dim=None):
  """A scalar or one value per head (sigma, rfa_scale); with `head_dim` (sigma), also one value per
  head and query/key dimension."""
  shapes = [(), (num_heads,)] + ([(num_heads, head_dim)] if head_dim is not None else [])
  if np.shape(sigma) not in shapes:
    per_dim = f" or [heads={num_heads}, head_dim={head_dim}]" if head_dim is not None else ""
    _fail(name, np.shape(sigma), f"a scalar or [heads={num_heads}]{per_dim}")


def check_gate_values(name, gate):
  """Checks 0 < gate < 1 when the values are known (not traced inside jit)."""
  if isinstance(gate, jax.core.Tracer):
    return
  values = np.asarray(gate, np.float32)
  if not np.all((values > 0) & (values < 1)):
    raise ValueError(f"{name} must lie in the open interval (0, 1); got values in "
                     f"[{values.min()}, {values.max()}]. Pass sigmoid(logits).")


def check_window(window):
  if window is not None and (not isinstance(window, (int, np.integer)) or window < 1):
    raise ValueError(f"window={window!r}; expected None or a positive integer (positions of exact "
                     "local attention)")


def check_attention_args(q, k, v, projection, *, feature_map, sigma, causal=False, key_mask=None,
                         gate=None, chunk_size=None, cross=False, normalizer="floor", window=None,
                         rfa_scale=1.0, segment_ids=None, key_segment_ids=None,
                         inter_chunk="scan", reverse_gate=None):
  """Validates the arguments of `rfa` (cross=False) and `rfa_cross` (cross=True)."""
  layout = "[batch, length, heads, head_dim]"
  check_rank("q", q, 4, layout)
  check_rank("k", k, 4, layout)
  check_rank("v", v, 4, "[batch, length, heads, value_dim]")
  batch, q_len, heads, head_dim = np.shape(q)
  k_len = q_len if not cross else np.shape(k)[1]
  if np.shape(k) != (batch, k_len, heads, head_dim):
    _fail("k", np.shape(k), f"[batch={batch}, length={k_len}, heads={heads}, head_dim={head_dim}]")
  if np.shape(v)[:3] != (batch, k_len, heads):
    _fail("v", np.shape(v), f"[batch={batch}, length={k_len}, heads={heads}, value_dim]")
  check_feature_map(feature_map)
  check_normalizer(normalizer)
  check_window(window)
  check_projection(projection, heads, head_dim)
  check_sigma(sigma, heads, head_dim=head_dim)
  check_sigma(rfa_scale, heads, name="rfa_scale")
  if key_mask is not None and np.shape(key_mask) != (batch, k_len):
    _fail("key_mask", np.shape(key_mask), f"[batch={batch}, length={k_len}] (False = padding)")
  if reverse_gate is not None and (causal or gate is None):
    raise ValueError("reverse_gate is the backward gate of bidirectional gating: pass it with gate= "
                     "(the forward gate) and causal=False")
  if gate is not None and not causal and reverse_gate is None:
    raise ValueError("gate is given with causal=False; the gate is a recency bias of causal "
                     "attention: pass causal=True, add reverse_gate= for bidirectional gating, or "
                     "drop the gate")
  for name, values in (("gate", gate), ("reverse_gate", reverse_gate)):
    if values is None:
      continue
    if np.shape(values) != (batch, q_len, heads):
      _fail(name, np.shape(values), f"[batch={batch}, length={q_len}, heads={heads}]")
    check_gate_values(name, values)
  if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
    raise ValueError(f"chunk_size={chunk_size!r}; expected a positive integer (1 = token recurrence)")
  if inter_chunk not in INTER_CHUNK:
    raise ValueError(f"inter_chunk={inter_chunk!r}; expected one of {INTER_CHUNK} (how the chunked "
                     "forms pass the state across chunks)")
  if cross and (segment_ids is None) != (key_segment_ids is None):
    raise ValueError("cross attention takes segment_ids (the queries') and key_segment_ids (the "
                     "keys') together: pass both, or neither")
  if segment_ids is not None:
    check_segment_ids("segment_ids", segment_ids, batch, q_len,
                      contiguous=causal or reverse_gate is not None)
  if key_segment_ids is not None:
    check_segment_ids("key_segment_ids", key_segment_ids, batch, k_len, contiguous=False)
