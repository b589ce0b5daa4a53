"""Data parallelism over a device mesh, with JAX's own sharding machinery.

A data-parallel run uses a one-axis mesh named ``"data"`` over ``n`` devices
(:func:`data_mesh`).  The training and test sets are sharded along their
records when ``n`` divides their size (otherwise they are replicated), each
batch is constrained to be sharded along its records inside the compiled
step, and the parameters and optimizer state are replicated: XLA inserts the
all-reduce that sums the per-device gradients.  Every optimizer works this
way, line searches included, since their extra evaluations run on the same
sharded batch.

Rules per regime:

* ``full_batch``: the whole training set is the batch: ``n`` must divide the
  number of training records;
* ``minibatch``: ``n`` must divide ``batch_size``;
* ``sgd``: a batch of one record cannot be split; it is replicated, and every
  device computes the same update (data parallelism gains nothing there, but
  the run works unchanged).

On a CPU-only machine, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
(set before JAX starts) gives ``N`` host devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: int | None = None) -> Mesh:
  """A one-axis ``"data"`` mesh over the first ``devices`` devices (all)."""
  available = jax.devices()
  n = len(available) if devices is None else devices
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"devices: expected a positive integer; got {n!r}.")
  if n > len(available):
    hint = (" On CPU, set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{n} before JAX starts." if available[0].platform == "cpu"
            else "")
    raise ValueError(
        f"devices: asked for {n} devices; {len(available)} "
        f"{available[0].platform} device(s) are available.{hint}")
  return Mesh(np.array(available[:n]), (DATA_AXIS,))


def _size(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def batch_constraint(mesh: Mesh | None, regime, batch_size: int):
  """A function that shards a batch's records over the mesh (inside jit)."""
  if mesh is None or _size(mesh) == 1:
    return lambda batch: batch
  n = _size(mesh)
  if regime.kind == "sgd":
    spec = PartitionSpec()
  else:
    if batch_size % n:
      what = ("training records" if regime.kind == "full_batch"
              else "batch_size")
      raise ValueError(
          f"devices: a batch of {batch_size} records ({what}) cannot be split "
          f"evenly over {n} devices; choose a device count that divides "
          f"{batch_size}, or a batch size that is a multiple of {n}.")
    spec = PartitionSpec(DATA_AXIS)
  sharding = NamedSharding(mesh, spec)
  return lambda batch: jax.tree_util.tree_map(
      lambda a: jax.lax.with_sharding_constraint(a, sharding), batch)


def _global(a, sharding: NamedSharding):
  """A global array from a host array that every process holds whole.

  Each process only places (and keeps) the parts that live on its own
  devices, so a sharded array costs each process its shard alone.
  """
  host = np.asarray(a)
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def shard_data(data, mesh: Mesh | None, regime=None):
  """Places a ``loop.Data`` on the mesh: records sharded where they divide."""
  del regime
  if mesh is None:
    return data
  n = _size(mesh)

  def place(a):
    if a is None:
      return None
    spec = PartitionSpec(DATA_AXIS) if a.shape[0] % n == 0 else \
        PartitionSpec()
    sharding = NamedSharding(mesh, spec)
    if jax.process_count() == 1:
      return jax.device_put(a, sharding)
    return _global(a, sharding)
  return type(data)(*(place(a) for a in data))


def replicate(tree, mesh: Mesh | None):
  """Replicates a pytree of arrays over the mesh (parameters, state)."""
  if mesh is None:
    return tree
  sharding = NamedSharding(mesh, PartitionSpec())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree_util.tree_map(
      lambda a: _global(jax.device_get(a), sharding), tree)


def to_host(tree):
  """NumPy copies of a pytree of arrays, also of arrays spread over processes.

  An array that is not fully addressable from this process must be
  replicated (as parameters, optimizer state and logged metrics are in a
  data-parallel run): its local copy is the whole value.  Arrays that are
  all addressable here come back in one transfer.
  """
  leaves = jax.tree_util.tree_leaves(tree)
  if all(not isinstance(a, jax.Array) or a.is_fully_addressable
         for a in leaves):
    return jax.device_get(tree)

  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      if not a.sharding.is_fully_replicated:
        raise ValueError("to_host: an array sharded over several processes "
                         "has no whole copy on this one.")
      return np.asarray(a.addressable_data(0))
    return jax.device_get(a)
  return jax.tree_util.tree_map(get, tree)
