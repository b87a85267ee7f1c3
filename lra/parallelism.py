"""Data parallelism over every device of every host: a 1-D `Mesh` named "data", batches split along it,
parameters and optimiser state replicated, per-row state (the stateful LM's carry) split like the
batch. `jax.jit` with `NamedSharding` does what `pmap` did.

Multi-host (TPU pods, several GPU machines): call `initialize_distributed()` first; each process reads
its own shard of every global batch and `global_batch` assembles the global array.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed():
  """Joins the other processes of a multi-host run; a no-op for a single process.

  Explicit: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID.
  Auto-detected (Cloud TPU pod slices, SLURM, ...): LRA_MULTIHOST=1.
  """
  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif os.environ.get("LRA_MULTIHOST") == "1":
    jax.distributed.initialize()


def data_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, microbatches: int = 1):
  """Each device's rows split evenly into `microbatches`."""
  devices = mesh.devices.size
  if microbatches < 1:
    raise ValueError(f"microbatches={microbatches}; expected 1 (no accumulation) or more")
  if global_batch_size % devices:
    raise ValueError(f"batch_size={global_batch_size} is not divisible by the {devices} devices; "
                     f"set --config.batch_size to a multiple of {devices}")
  if (global_batch_size // devices) % microbatches:
    raise ValueError(
        f"batch_size={global_batch_size} gives {global_batch_size // devices} rows per device, not "
        f"divisible into microbatches={microbatches}; set --config.batch_size to a multiple of "
        f"{devices * microbatches} or --config.microbatches to a divisor of "
        f"{global_batch_size // devices}")


def split_microbatches(tree, count: int, mesh: Mesh):
  """Per-row arrays [B, ...] -> [count, B / count, ...]. Microbatch m holds rows m, m + count,
  m + 2 count, ...: every device keeps its own rows (B / devices a multiple of `count`,
  `check_batch_size`). Scalars are repeated `count` times."""
  sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))

  def split(x):
    if x.ndim == 0:
      return jnp.broadcast_to(x, (count,))
    x = x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, sharding)

  return jax.tree.map(split, tree)


def join_microbatches(tree, like):
  """The inverse of `split_microbatches` for a tree shaped like `like`: [count, B / count, ...] ->
  [B, ...]; a scalar leaf of `like` takes the last microbatch's value."""
  def join(x, reference):
    if reference.ndim == 0:
      return x[-1]
    return x.swapaxes(0, 1).reshape(reference.shape)

  return jax.tree.map(join, tree, like)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This process's rows of a batch -> global arrays sharded along the batch axis."""
  sharding = batch_sharded(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}


def replicate(tree, mesh: Mesh):
  """Copies of a host-identical pytree on every device of every process."""
  sharding = replicated(mesh)

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = jax.make_array_from_process_local_data(sharding, np.asarray(jax.random.key_data(x)))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  return jax.tree.map(put, tree)


def shard_rows(tree, mesh: Mesh):
  """A host-identical pytree of per-row arrays [global_batch, ...] split along the batch axis like
  the batches (each device holds its rows' state, e.g. the carried LM state); scalars replicated."""
  def put(x):
    x = np.asarray(x)
    sharding = batch_sharded(mesh) if x.ndim else replicated(mesh)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def local_sum(x: jax.Array) -> np.float64:
  """Sum of the elements of `x` that this process holds (each distinct shard once), in float64."""
  shards = {str(shard.index): shard.data for shard in x.addressable_shards}
  return sum(np.asarray(data, np.float64).sum() for data in shards.values())


def sum_across_processes(values: dict) -> dict:
  """{name: scalar} summed over all processes (the identity for one process)."""
  if jax.process_count() == 1:
    return dict(values)
  names = sorted(values)
  gathered = multihost_utils.process_allgather(np.asarray([values[n] for n in names], np.float64))
  return dict(zip(names, np.asarray(gathered).reshape(jax.process_count(), -1).sum(0)))
