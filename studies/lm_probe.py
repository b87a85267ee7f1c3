"""What each RFA layer of a trained LM computes, against the kernel attention it estimates.

    python -m studies.lm_probe --workdir=DIR [--batch_size=16] [--out=FILE.json]

Loads DIR's best checkpoint (an `lm` run), feeds the first `batch_size` segments of the validation
split through the evaluation model and, for every `RFAAttention` layer, compares on the same q, k, v:
RFA with the layer's fixed evaluation projection, the exact kernel attention it estimates
(`rfa_jax.kernel_attention`, infinitely many features) and, with a window, the window's softmax term.
It prints one line per layer: sigma per head, the root mean square of v, of RFA's output, of the exact
kernel attention and of their difference, and with a window the RMS of the window term and the
learned `rfa_scale`.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import rfa_jax
from lra import generate
from lra.data import lm
from lra.records import git_commit


def _rms(x) -> float:
  return float(jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)))))


def probe(model, inputs) -> list[dict]:
  """One dict per RFA layer of `model` (evaluation mode) on `inputs` [batch, length] bytes."""
  _, captured = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(
      dict(inputs=inputs))
  outputs = {path: variable.get_value()[0] for path, variable in nnx.to_flat_state(captured)}
  rows = []
  for path, layer in nnx.iter_modules(model):
    if not isinstance(layer, rfa_jax.RFAAttention):
      continue
    q, k, v = (outputs[(*path, name, "__call__")] for name in ("query", "key", "value"))
    sigma = layer.sigma[...]
    gate = None
    if layer.gated:  # the gate reads the attention's input: the block's normalised x
      gate = jax.nn.sigmoid(layer.gate(outputs[(*path[:-2], "attention_norm", "__call__")]))
    options = dict(sigma=sigma, causal=True, gate=gate, feature_map=layer.feature_map,
                   normalizer=layer.normalizer)
    estimate = rfa_jax.rfa(q, k, v, layer.evaluation_projection(), **options)
    exact = rfa_jax.kernel_attention(q, k, v, **options)
    row = dict(layer="/".join(map(str, path)), sigma=np.asarray(sigma, np.float64).round(3).tolist(),
               rms_v=_rms(v), rms_rfa=_rms(estimate), rms_exact=_rms(exact),
               rms_error=_rms(estimate - exact))
    if layer.window is not None:
      row.update(rms_window=_rms(rfa_jax.window_attention(q, k, v, window=layer.window, causal=True)),
                 rfa_scale=np.asarray(layer.rfa_scale[...], np.float64).round(3).tolist())
    rows.append(row)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished or checkpointed lm run")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--out", default=None, help="also write the rows as JSON here")
  args = parser.parse_args(argv)
  config = generate.load_config(args.workdir)  # an lm run's, or a clear error
  model, step = generate.load_model(args.workdir)
  model.eval()
  corpus = lm.read_corpus(config.task_options.source, data_dir=config.data_dir,
                          files=config.task_options.files)
  length = config.max_length
  stream = corpus.splits["validation"][:args.batch_size * length]
  inputs = jnp.asarray(stream.reshape(args.batch_size, length).astype(np.int32))
  rows = probe(model, inputs)
  for row in rows:
    print(json.dumps(row))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(workdir=args.workdir, checkpoint_step=step, commit=git_commit(), rows=rows),
                f, indent=2)
  return rows


if __name__ == "__main__":
  main()
