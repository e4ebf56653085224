"""How a train step runs on many devices: one jit over a (data, fsdp) mesh, or pmap.

`parallel.mode = "jit"` (the default) compiles the family's `train_step` once with
`jax.jit` over a `Mesh` with axes `data` and `fsdp`. Every batch is split over all
devices (both axes). State leaves are replicated, except with `parallel.fsdp = N > 1`:
then each leaf of at least `parallel.fsdp_min_size` elements (params, their EMA and the
optimizer moments alike) is split over the `fsdp` axis along its largest dimension
divisible by N, so a model N times larger than one device's memory trains; XLA inserts
the all-gathers and reduce-scatters.

`parallel.mode = "pmap"` runs the same step under `jax.pmap` over this process's devices,
with the state stacked per device. `TrainState.apply_gradients` averages gradients with
`lax.pmean` (see `mean_over_devices`), the core averages the metrics, and each device
folds its index into the step's random key, so devices draw different noise. Batch
statistics (batch norm) stay per device.

Multi-host: `initialize_distributed` calls `jax.distributed.initialize` (automatic on TPU
VMs and under SLURM, or with an explicit coordinator); each process then feeds its own
rows of every global batch (see `gen.core.data`), and the same mesh spans all devices.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger("gen")

AXES = ("data", "fsdp")
MODES = ("jit", "pmap")
_PMAP_AXIS: list[str] = []  # Set while a pmap step is traced.


def initialize_distributed(coordinator: str = "", num_processes: int = 0, process_id: int = -1,
                           bind_address: str = "") -> None:
  """`jax.distributed.initialize`: auto-detected (TPU VM, SLURM) when `coordinator` is
  "auto", else from an explicit `host:port` coordinator, process count and id."""
  if coordinator == "auto":
    jax.distributed.initialize()
  else:
    if num_processes <= 0 or not 0 <= process_id < num_processes:
      raise ValueError(f"--coordinator={coordinator} needs --num_processes > 0 and "
                       f"0 <= --process_id < num_processes (got {num_processes}, {process_id})")
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               coordinator_bind_address=bind_address or None)
  for handler in log.handlers:  # Tell the processes' log lines apart.
    fmt = handler.formatter._fmt if handler.formatter else "%(message)s"
    handler.setFormatter(logging.Formatter(
        fmt.replace("gen:", f"gen[{jax.process_index()}]:"), "%H:%M:%S"))
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(fsdp: int = 1) -> Mesh:
  """A (data, fsdp) mesh over every device of every process."""
  n = jax.device_count()
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"parallel.fsdp={fsdp} must divide the number of devices ({n})")
  # Auto axes: XLA propagates shardings through family code that never mentions them.
  return jax.make_mesh((n // fsdp, fsdp), AXES, axis_types=(AxisType.Auto,) * 2)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXES))


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  """Split the largest dimension divisible by `fsdp` (leaves of `min_size` or more)."""
  if fsdp == 1 or math.prod(shape) < min_size:
    return P()
  dims = sorted((d for d in range(len(shape)) if shape[d] % fsdp == 0),
                key=lambda d: (-shape[d], d))
  if not dims:
    return P()
  spec = [None] * len(shape)
  spec[dims[0]] = "fsdp"
  return P(*spec)


def state_shardings(abstract_state, mesh: Mesh, min_size: int):
  """A NamedSharding per leaf of `abstract_state` (see `fsdp_spec`)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, fsdp, min_size)),
                      abstract_state)


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "data.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{what}={batch_size} must be divisible by the number of devices ({n})")


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles this process's rows into global arrays sharded over the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def barrier(name: str, timeout_s: int = 3600) -> None:
  """Waits until every process gets here (multi-host; no-op on one process).

  Called after compiling and before running a program with collectives: processes compile
  at different speeds, and CPU collectives (gloo) give up after 30 s of waiting.
  """
  if jax.process_count() > 1:
    from jax._src import distributed

    _BARRIERS[name] = _BARRIERS.get(name, 0) + 1
    distributed.global_state.client.wait_at_barrier(f"gen_{name}_{_BARRIERS[name]}",
                                                    timeout_s * 1000)


_BARRIERS: dict[str, int] = {}


def to_host(tree):
  """Device arrays as numpy, whole on every process (multi-host: gathered)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(tree, tiled=True)


# ---------------------------------------------------------------------------------- pmap


@contextlib.contextmanager
def pmap_axis(name: str):
  """While active, `mean_over_devices` averages over the pmap axis `name`."""
  _PMAP_AXIS.append(name)
  try:
    yield
  finally:
    _PMAP_AXIS.pop()


def mean_over_devices(tree):
  """`lax.pmean` over the pmap axis being traced; the identity under jit (XLA reduces)."""
  if not _PMAP_AXIS:
    return tree
  return jax.lax.pmean(tree, _PMAP_AXIS[-1])


def stack(tree):
  """A state as a pmap state: one copy per local device along a new leading axis (each
  device receives its own copy; none is built whole on one device)."""
  devices = jax.local_devices()  # pmap's order.
  sharding = NamedSharding(Mesh(np.array(devices), ("d",)), P("d"))

  def put(x):
    shards = [jax.device_put(x[None], d) for d in devices]
    return jax.make_array_from_single_device_arrays((len(devices),) + x.shape, sharding, shards)
  return jax.tree.map(put, tree)


def unstack(tree, mesh: Mesh):
  """A pmap state as a replicated state (device 0's copy; all copies are equal)."""
  return jax.device_put(jax.tree.map(lambda x: x[0], tree), replicated(mesh))


def split_batch(batch: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
  """[B, ...] -> [n, B / n, ...] for pmap."""
  return jax.tree.map(lambda x: np.asarray(x).reshape((n, -1) + x.shape[1:]), batch)


# ----------------------------------------------------------------------------- preemption


class StopSync:
  """Brings every process to the same step boundary when any of them is told to stop.

  A signal may reach the processes of a multi-host run at different steps (or reach only
  one). The first process that has one announces it in the coordinator's key-value
  store; each process, seeing an announcement, posts the step it is at and waits for
  everyone's, and all stop at the largest. Each process checks once per step, right after
  dispatching it, so no process can run ahead: the next step's collectives need everyone.
  With one process this is just the local flag.
  """

  def __init__(self, timeout_s: int = 600):
    from jax._src import distributed  # The client of jax.distributed.initialize.

    self.client = distributed.global_state.client if jax.process_count() > 1 else None
    self.timeout_ms = timeout_s * 1000
    self.announced = False
    self.target: int | None = None

  def should_stop(self, step: int, signalled: bool) -> bool:
    if self.client is None:
      return signalled
    pid, n = jax.process_index(), jax.process_count()
    if signalled and not self.announced:
      self.client.key_value_set(f"gen_stop/{pid}", str(step))
      self.announced = True
    if self.target is None and self.client.key_value_dir_get("gen_stop/"):
      self.client.key_value_set(f"gen_stop_step/{pid}", str(step))
      self.target = max(int(self.client.blocking_key_value_get(f"gen_stop_step/{i}",
                                                               self.timeout_ms))
                        for i in range(n))
      log.info("a process was told to stop: every process stops at step %d", self.target)
    return self.target is not None and step >= self.target


# ---------------------------------------------------------------------------------- memory


def _bytes_per_device(tree) -> int:
  total = 0
  for x in jax.tree.leaves(tree):
    shard = x.sharding.shard_shape(x.shape) if hasattr(x, "sharding") else x.shape
    total += math.prod(shard) * jnp.dtype(x.dtype).itemsize
  return total


def memory_report(state, compiled=None, params: Any = None) -> str:
  """Params / optimizer / step temporaries per device, in MiB (temporaries: XLA's estimate
  for the compiled step, covering activations and gradients)."""
  mib = lambda b: f"{b / 2**20:,.1f} MiB"
  parts = []
  if params is not None:
    parts.append(f"params {mib(_bytes_per_device(params))}")
  opt = getattr(state, "opt_state", None)
  if opt is not None:
    parts.append(f"optimizer {mib(_bytes_per_device(opt))}")
  parts.append(f"state total {mib(_bytes_per_device(state))}")
  analysis = None
  if compiled is not None:
    with contextlib.suppress(Exception):  # Not every backend implements it.
      analysis = compiled.memory_analysis()
  if analysis is not None:
    parts.append(f"step temporaries {mib(analysis.temp_size_in_bytes)}")
  return "memory per device: " + ", ".join(parts)

