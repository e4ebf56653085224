"""Device mesh and shardings: a 1-D `data` mesh over all devices, state replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  # Auto axes: XLA propagates shardings through family code that never mentions them.
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "data.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{what}={batch_size} must be divisible by the number of devices ({n})")


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles this process's rows into global arrays sharded over `data`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)
