"""Orbax checkpoints of the training state: `checkpoints/latest` (every `checkpoint_every` steps) and
`checkpoints/best` (best validation accuracy). Each holds the state pytree (parameters, optimiser state,
rng streams, random projections, step) and JSON metadata (data-iterator state, best metric).

Orbax writes into a temporary directory and renames it when complete, so a kill during a save leaves
the previous checkpoint intact.
"""

import pathlib

import jax
import orbax.checkpoint as ocp


def _is_key(x):
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _savable(tree):
  """Typed PRNG keys -> their raw uint32 data (what orbax can store)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _restore_keys(tree, template):
  return jax.tree.map(
      lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
      tree, template)


class CheckpointSlot:
  """One named checkpoint directory that keeps only its newest step."""

  def __init__(self, directory):
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state, metadata: dict):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_savable(state)), metadata=ocp.args.JsonSave(metadata)),
        force=True)
    self._manager.wait_until_finished()

  def restore(self, template):
    """Returns (state shaped and sharded like `template`, metadata), or None if there is none."""
    step = self._manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _savable(template))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), metadata=ocp.args.JsonRestore()))
    return _restore_keys(restored["state"], template), restored["metadata"]

  def close(self):
    self._manager.close()


class Checkpoints:
  """`latest` and `best` slots under `<workdir>/checkpoints`."""

  def __init__(self, workdir):
    root = pathlib.Path(workdir) / "checkpoints"
    self.latest = CheckpointSlot(root / "latest")
    self.best = CheckpointSlot(root / "best")

  def close(self):
    self.latest.close()
    self.best.close()
