"""Spreading the seed axis over devices with JAX's own sharding.

Models of different seeds are independent, so the leading seed axis of the training state
is the natural axis to shard: with D devices and S seeds, a 1-D mesh of gcd(D, S) devices
named 'seeds' holds S / gcd(D, S) models per device, and `jax.jit` runs every compiled
call where its inputs live. With one device (the CPU default) nothing is moved.
"""

import math

import jax
from jax.sharding import NamedSharding, PartitionSpec


def seed_sharding(num_seeds: int) -> NamedSharding | None:
  """The sharding of arrays with a leading seed axis, or None on a single device."""
  devices = math.gcd(jax.device_count(), num_seeds)
  if devices == 1:
    return None
  # Auto axes: the compiler propagates the seed sharding through the vmapped step.
  mesh = jax.make_mesh(
      (devices,), ('seeds',), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:devices]
  )
  return NamedSharding(mesh, PartitionSpec('seeds'))


def shard_seeds(tree, sharding: NamedSharding | None):
  """Places every leaf (leading seed axis) with `sharding`; unchanged when None."""
  return tree if sharding is None else jax.device_put(tree, sharding)
