"""Meshes and shardings, in one place."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices with the axis `data`.

  Auto axis types: transformers' Flax models do not run under Explicit sharding (jax.make_mesh's
  default in this jax).
  """
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
