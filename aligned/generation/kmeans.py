"""k-means in JAX for large embedding tables (ImageNet-train: 1.28 M x 1152).

- Initialisation: k-means++ on a deterministic random sample of `init_sample` points (all points
  when fewer), run on the device.
- Lloyd iterations: points sharded over the `data` axis of a mesh; on each device a `lax.scan` over
  chunks computes distances as one matrix product per chunk (never an [n, k, d] tensor), the argmin,
  and the per-cluster sums by scatter-add; only [k, d] sums, [k] counts and the inertia are summed
  across devices.
- Empty clusters are re-seeded with points from a seeded random order, so runs are deterministic.
- Stops when no assignment changes, or after `max_iters`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from aligned.distributed import data_mesh


@dataclasses.dataclass(frozen=True)
class KMeansResult:
  centroids: np.ndarray  # [k, d] float32
  assignments: np.ndarray  # [n] int32
  inertia: float  # sum of squared distances to the assigned centroids
  iterations: int
  reseeded: int  # empty clusters re-seeded over the run


def kmeans_plus_plus(x: jax.Array, k: int, key: jax.Array) -> jax.Array:
  """k-means++ seeding on [m, d] points (m >= k): each new centroid drawn proportional to D^2."""
  first = jax.random.randint(key, (), 0, x.shape[0])
  sq_norms = jnp.sum(x * x, axis=1)

  def body(i, state):
    centroids, closest, key = state
    key, sub = jax.random.split(key)
    probs = closest / jnp.maximum(jnp.sum(closest), 1e-30)
    chosen = jax.random.choice(sub, x.shape[0], p=probs)
    c = x[chosen]
    distance = jnp.maximum(sq_norms - 2 * x @ c + jnp.sum(c * c), 0.0)
    return centroids.at[i].set(c), jnp.minimum(closest, distance), key

  c0 = x[first]
  closest = jnp.maximum(sq_norms - 2 * x @ c0 + jnp.sum(c0 * c0), 0.0)
  centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(c0)
  centroids, _, _ = jax.lax.fori_loop(1, k, body, (centroids, closest, key))
  return centroids


def _assign_chunk(centroids, chunk_x, chunk_w):
  """Distances by one matrix product: ||x||^2 - 2 x c^T + ||c||^2 (clipped at 0)."""
  cross = chunk_x @ centroids.T  # [chunk, k]
  distance = (
    jnp.sum(chunk_x * chunk_x, axis=1, keepdims=True) - 2 * cross + jnp.sum(centroids * centroids, axis=1)
  )
  assignment = jnp.argmin(distance, axis=1)
  best = jnp.maximum(jnp.min(distance, axis=1), 0.0) * chunk_w
  k = centroids.shape[0]
  # Cluster sums by scatter-add, O(chunk * d): a one-hot matmul would double the iteration's FLOPs.
  sums = jax.ops.segment_sum(chunk_x * chunk_w[:, None], assignment, num_segments=k)
  counts = jax.ops.segment_sum(chunk_w, assignment, num_segments=k)
  return assignment.astype(jnp.int32), sums, counts, jnp.sum(best)


class _Lloyd:
  def __init__(self, mesh, chunk: int):
    self.mesh, self.chunk = mesh, chunk

    def local(centroids, x, w):
      xs, ws = x.reshape(-1, chunk, x.shape[1]), w.reshape(-1, chunk)

      def body(_, piece):
        return None, _assign_chunk(centroids, *piece)

      _, (assignments, sums, counts, inertia) = jax.lax.scan(body, None, (xs, ws))
      total = (jnp.sum(sums, axis=0), jnp.sum(counts, axis=0), jnp.sum(inertia))
      return assignments.reshape(-1), *jax.lax.psum(total, "data")

    self.step = jax.jit(
      jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P("data"), P(), P(), P())
      )
    )


def kmeans(
  x: np.ndarray,
  k: int,
  seed: int = 0,
  max_iters: int = 50,
  chunk: int = 8192,
  init_sample: int = 262_144,
  mesh=None,
) -> KMeansResult:
  """Clusters [n, d] points into k clusters (see the module docstring)."""
  x = np.asarray(x, np.float32)
  n = len(x)
  if not 1 <= k <= n:
    raise ValueError(f"k = {k} must be between 1 and the number of points ({n})")
  mesh = mesh or data_mesh()
  rng = np.random.default_rng(seed)
  sample = np.sort(rng.choice(n, size=min(n, max(init_sample, k)), replace=False))
  centroids = kmeans_plus_plus(jnp.asarray(x[sample]), k, jax.random.key(seed))
  reseed_order = rng.permutation(n)  # where empty clusters get their new centroid from

  multiple = mesh.devices.size * chunk
  padded = -(-n // multiple) * multiple
  sharded = NamedSharding(mesh, P("data"))
  x_device = jax.device_put(np.pad(x, ((0, padded - n), (0, 0))), sharded)
  w_device = jax.device_put(np.pad(np.ones(n, np.float32), (0, padded - n)), sharded)
  lloyd = _Lloyd(mesh, chunk)

  previous, reseeded, cursor = None, 0, 0
  for iteration in range(1, max_iters + 1):
    assignments, sums, counts, inertia = lloyd.step(centroids, x_device, w_device)
    assignments = np.asarray(assignments)[:n]
    counts = np.asarray(counts)
    new = np.asarray(sums) / np.maximum(counts, 1)[:, None]
    empty = np.flatnonzero(counts == 0)
    for cluster in empty:  # re-seed with the next point of the seeded order
      new[cluster] = x[reseed_order[cursor % n]]
      cursor += 1
    reseeded += len(empty)
    converged = previous is not None and np.array_equal(assignments, previous) and not len(empty)
    previous = assignments
    if converged:
      return KMeansResult(np.asarray(centroids), assignments, float(inertia), iteration, reseeded)
    centroids = jnp.asarray(new, jnp.float32)
  assignments, _, _, inertia = lloyd.step(centroids, x_device, w_device)
  return KMeansResult(np.asarray(centroids), np.asarray(assignments)[:n], float(inertia), max_iters, reseeded)
