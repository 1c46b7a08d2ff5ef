"""Devices and processes, in one place: meshes, FSDP rules, per-process batch slices, agreement.

Every stage builds its mesh here. Meshes use Auto axis types: transformers' Flax models do not run
under Explicit sharding (`jax.make_mesh`'s default in this jax). Multi-process runs (GPU hosts, a TPU
pod slice, or several CPU processes in tests) start with `initialize`; afterwards
`jax.process_index()` / `jax.process_count()` say which part of the work is this process's.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")  # a training batch is split over every device of a (data, fsdp) mesh


def initialize(
  coordinator: str = "", num_processes: int = 1, process_id: int = 0, auto: bool = False
) -> None:
  """`jax.distributed.initialize` for multi-process runs; nothing for a single process.

  Args:
    coordinator: `host:port` of process 0 (explicit start-up, e.g. several CPU processes).
    num_processes, process_id: with `coordinator`.
    auto: let JAX detect everything (TPU pod slices, SLURM, ...).
  """
  if coordinator:
    # CPU devices of several processes talk through gloo (no effect on GPU/TPU devices). Nothing may
    # touch the backend before `initialize`.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
  elif auto:
    jax.distributed.initialize()


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices with the axis `data`."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
  """A (data, fsdp) mesh over all devices; -1 takes what the other axis leaves."""
  n = jax.device_count()
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"fsdp={fsdp} does not divide the {n} devices")
  data = n // fsdp if data == -1 else data
  if data * fsdp != n:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} != {n} devices")
  devices = np.asarray(jax.devices()).reshape(data, fsdp)
  return Mesh(devices, ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = 1 << 14) -> P:
  """Shards the largest dimension divisible by `fsdp` over `fsdp` (arrays of >= min_size elements)."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      return P(*([None] * dim + ["fsdp"]))
  return P()


def state_shardings(abstract_state, mesh: Mesh, min_size: int = 1 << 14):
  """A NamedSharding per leaf of a (possibly abstract) pytree: FSDP over `fsdp` (leaves of >= min_size
  elements with a dimension it divides), else replicated."""
  fsdp = mesh.shape.get("fsdp", 1)
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape, fsdp, min_size)), abstract_state)


def process_slice(n: int) -> slice:
  """This process's rows of a global batch of n rows (n divisible by the process count)."""
  per = n // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def put_global(sharding: NamedSharding, local):
  """This process's rows (an array or a tree of them) -> global arrays with `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def agree(flag: bool) -> bool:
  """True on every process when it is True on any (e.g. a preemption must be acted on together)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing for one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
