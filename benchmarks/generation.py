"""Benchmark: one k-means iteration and triplet labelling against this machine's floors.

  python -m benchmarks.generation [--n 1281167] [--d 1152] [--k 500] [--triplets 10000000]

k-means: one Lloyd iteration on a synthetic [n, d] float32 table, beside the floor = the time of the
[n, d] x [d, k] distance product (a jitted matmul timed here). Labelling: triplets/s of the pair
similarities of random triplets (chunked gathers, as `aligned.generation.generate` does), beside
the memory-bandwidth floor (three d-float rows read per triplet, at the bandwidth a large reduction
reaches here). Defaults fit 24 GB; the ImageNet-scale table is 1.28 M x 1152 (5.9 GB). Prints only.
"""

from __future__ import annotations

import argparse
import resource

import jax
import jax.numpy as jnp
import numpy as np

from aligned.distributed import data_mesh
from aligned.generation.kmeans import _Lloyd
from aligned.triplet_similarities import iter_pair_similarities
from benchmarks.floors import bandwidth, seconds_per_call


def kmeans_iteration_seconds(x: jax.Array, weights: jax.Array, k: int, chunk: int) -> float:
  """Best seconds of one sharded Lloyd iteration (`aligned.generation.kmeans`) on [n, d] points, n a
  multiple of `chunk` (zero weights mark padding), from the first k points as centroids."""
  lloyd = _Lloyd(data_mesh(), chunk)
  centroids = x[:k]
  return seconds_per_call(lambda: lloyd.step(centroids, x, weights))


def labelling_seconds(table: jax.Array, triplets: np.ndarray, chunk: int = 1 << 18, rounds: int = 2) -> float:
  """Best seconds to label `triplets` as generation does: `iter_pair_similarities` chunk by chunk, each
  chunk's [chunk, 3] similarities brought back to the host."""
  return seconds_per_call(
    lambda: sum(len(c) for c in iter_pair_similarities(table, triplets, 1.0, chunk=chunk)), rounds=rounds
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=400_000)
  parser.add_argument("--d", type=int, default=1152)
  parser.add_argument("--k", type=int, default=500)
  parser.add_argument("--triplets", type=int, default=2_000_000)
  parser.add_argument("--chunk", type=int, default=8192)
  args = parser.parse_args()
  print(f"devices: {jax.devices()}")
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.normal(size=(args.n // args.chunk * args.chunk, args.d)).astype(np.float32))
  n = x.shape[0]
  iteration = kmeans_iteration_seconds(x, jnp.ones(n, jnp.float32), args.k, args.chunk)
  product = jax.jit(lambda x, c: x @ c.T)
  floor = seconds_per_call(lambda: product(x, x[: args.k]))
  print(
    f"\nk-means, {n:,} x {args.d}, k = {args.k}: one iteration {iteration:.2f} s, matmul floor {floor:.2f} s, {iteration / floor:.2f}x"
  )
  print(
    f"  (ImageNet-train, 1,281,167 points: about {iteration * 1_281_167 / n:.1f} s an iteration, extrapolated linearly)"
  )

  triplets = rng.integers(0, n, size=(args.triplets, 3))
  labelling = labelling_seconds(x, triplets)
  bytes_per_s = bandwidth()
  floor = args.triplets * 3 * args.d * 4 / bytes_per_s
  rate = args.triplets / labelling
  print(f"\nlabelling {args.triplets:,} triplets: {labelling:.2f} s = {rate:.3g} triplets/s")
  print(
    f"  bandwidth {bytes_per_s / 1e9:.1f} GB/s: floor {floor:.2f} s ({labelling / floor:.2f}x); 10 M triplets: about {1e7 / rate:.0f} s"
  )
  print(f"peak host memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
  main()
