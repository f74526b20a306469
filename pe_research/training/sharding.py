"""Spreading training over devices with JAX's own sharding (`jax.sharding.Mesh`).

`config.train.shard` picks the mesh axis:
  'seeds'  models of different seeds are independent, so the leading seed axis of the
           training state is split over a 1-D mesh of gcd(D, S) devices named 'seeds'
           (S / gcd(D, S) models per device); no communication at all.
  'batch'  data parallelism: the state is replicated on a mesh named 'batch' over the
           devices, and every generated batch is split along its examples; the compiler
           all-reduces the gradients. For one large model, or fewer seeds than devices.
`jax.jit` runs every compiled call where its inputs live, so the training code is the same
on one device and many; with one device (the CPU default) nothing is moved.

Within a device, `config.train.vmap_seeds` (`over_seeds`) sets how many seeds are
vectorized together (`jax.vmap`); groups of that many run one after another inside the same
compiled call (`lax.map`). 0 (the default) vmaps them all. On a CPU that pays off for small
models but hardly for the :paper one, whose steps already fill the cores; on a GPU it pays
off most (scripts/benchmark.py measures both; docs/performance.md has the numbers).

Several hosts (a TPU pod slice, several GPU nodes) run the same command on every host with
`--distributed`, which calls `jax.distributed.initialize()` first (see README); every
process then sees the global mesh, the state is placed on it from every process (`place`),
results are gathered with `fetch`, and only process 0 writes the result files
(`pe_research.io`; checkpoints are saved by all, `pe_research.checkpointing`).
tests/test_multihost.py runs two processes on one machine this way.
"""

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

SHARD_AXES = ('seeds', 'batch')


def _mesh(axis: str, devices: int) -> jax.sharding.Mesh:
  # Auto axes: the compiler propagates the placement through the vmapped step.
  return jax.make_mesh((devices,), (axis,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:devices])


def state_sharding(config) -> NamedSharding | None:
  """The placement of the training state and data keys (leading seed axis), or None on a
  single device."""
  if config.train.shard == 'batch':
    devices = jax.device_count()
    return None if devices == 1 else NamedSharding(_mesh('batch', devices), PartitionSpec())
  devices = math.gcd(jax.device_count(), config.num_seeds)
  return None if devices == 1 else NamedSharding(_mesh('seeds', devices), PartitionSpec('seeds'))


def batch_constraint(config):
  """x -> x split along its leading (example) axis over the 'batch' mesh; the identity
  unless config.train.shard == 'batch' on several devices. Used inside the train step."""
  devices = jax.device_count()
  if config.train.shard != 'batch' or devices == 1:
    return lambda x: x
  sharding = NamedSharding(_mesh('batch', devices), PartitionSpec('batch'))
  return lambda x: jax.lax.with_sharding_constraint(x, sharding)


def seeds_vectorized(config) -> int:
  """How many seeds one vmap holds: config.train.vmap_seeds, all of them if 0."""
  return min(config.train.vmap_seeds or config.num_seeds, config.num_seeds)


def over_seeds(fn, width: int):
  """fn mapped over the leading seed axis of every argument: `width` seeds vmapped at a
  time, the groups in a loop (all in one vmap when width covers them). Width 1 is a plain
  loop: a vmap of one seed made the trace of a :paper training step 1.6x longer and the
  step 2-3% slower (a size-1 axis on every operation)."""
  return lambda *args: jax.lax.map(lambda group: fn(*group), args, batch_size=width if width > 1 else None)


def place(tree, sharding: NamedSharding | None):
  """Places every leaf with `sharding`; unchanged when None.

  With several processes, each holds the whole value (every process initializes the same
  seeds from the same keys) but may address only its own devices, where `jax.device_put`
  refuses a global sharding: each process then hands over the slices its devices hold."""
  if sharding is None:
    return tree
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: _from_every_process(x, sharding), tree)


def _from_every_process(x: jax.Array, sharding: NamedSharding) -> jax.Array:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # Typed keys: placed as their raw data.
    data = _from_every_process(jax.random.key_data(x), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def fetch(tree):
  """The values of (possibly sharded, possibly multi-host) arrays as NumPy arrays."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)
