"""Benchmark: seconds per teacher epoch against the machine's floor, measured in the same run.

  python -m benchmarks.teacher_epoch [--triplets 4700000] [--dims 1152,768] [--chunked_objects 1281167]

Matrix path (1,854 objects): one full-batch Adam step over all triplets (an epoch), against the floor
= the time of the two matrix products of the forward pass, X @ W [n, d] x [d, d] and Z @ Z^T, timed
here with the same jit. Chunked path (ImageNet-scale tables): triplets/s of a full step against its floor: the
transform of all objects once (X @ W, timed here) plus the memory traffic of the row gathers (three
d-float rows per triplet forward and backward) at the bandwidth of a large reduction measured here. Prints a table; asserts nothing (timings are noisy).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from aligned.distributed import data_mesh
from aligned.teacher import model
from aligned.teacher.model import Hyperparams, TripletTargets
from aligned.teacher.optimize import FitOptions, Fitter
from benchmarks.floors import bandwidth, seconds_per_call


def _time(fn, *args, repeats=3) -> float:
  return seconds_per_call(lambda: fn(*args), rounds=repeats)


def random_targets(n_objects: int, n_triplets: int, seed: int = 0) -> TripletTargets:
  """Random triplets (repeats allowed) with Dirichlet choice probabilities and unit weights."""
  rng = np.random.default_rng(seed)
  triplets = rng.integers(0, n_objects, size=(n_triplets, 3)).astype(np.int32)  # repeats are fine here
  probs = rng.dirichlet(np.ones(3), size=n_triplets).astype(np.float32)
  return TripletTargets(triplets, probs, np.ones(n_triplets, np.float32))


def step_seconds(x, data, path, chunk=16384, repeats=3) -> float:
  """Best seconds of one jitted Adam step of the teacher's own `Fitter` over `data` (the whole batch)."""
  mean, std = model.standardization(x[:10000])
  fitter = Fitter(
    x, mean, std, Hyperparams(lam=1e-3, learning_rate=1e-3), FitOptions(path=path, chunk=chunk), data_mesh()
  )
  params = jax.device_put(model.init_params(x.shape[1]), fitter.replicated)
  opt_state = fitter.optimizer.init(params)
  batch = fitter.place(data)
  step = jax.jit(fitter._step_fn)  # not donating, so the same state can be reused across repeats
  return _time(step, params, opt_state, fitter.x, batch, repeats=repeats)


def matrix_floor(n: int, d: int) -> float:
  x = jnp.asarray(np.random.default_rng(0).normal(size=(n, d)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(d, d)), jnp.float32)
  return _time(jax.jit(lambda x, w: x @ w), x, w) + _time(jax.jit(lambda z: z @ z.T), x)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--triplets", type=int, default=4_700_000)
  parser.add_argument("--dims", default="1152,768")
  parser.add_argument("--chunked_objects", type=int, default=200_000, help="1281167 for ImageNet-train")
  parser.add_argument("--chunked_triplets", type=int, default=262_144)
  parser.add_argument("--chunked_dim", type=int, default=1152)
  args = parser.parse_args()
  print(f"devices: {jax.devices()}")
  n_objects = 1854
  print(f"\nmatrix path: {n_objects} objects, {args.triplets:,} triplets, full-batch Adam step = one epoch")
  print(f"{'d':>6} {'epoch s':>9} {'floor s':>9} {'ratio':>7} {'triplets/s':>12}")
  for d in (int(v) for v in args.dims.split(",")):
    x = np.random.default_rng(0).normal(size=(n_objects, d)).astype(np.float32)
    data = random_targets(n_objects, args.triplets)
    seconds = step_seconds(x, data, "matrix")
    floor = matrix_floor(n_objects, d)
    print(f"{d:>6} {seconds:>9.3f} {floor:>9.3f} {seconds / floor:>7.1f} {args.triplets / seconds:>12.3g}")

  n, d, t = args.chunked_objects, args.chunked_dim, args.chunked_triplets
  print(f"\nchunked path: {n:,} objects x {d}, {t:,} triplets per step")
  x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
  data = random_targets(n, t)
  seconds = step_seconds(x, data, "chunked")
  bytes_per_s = bandwidth()
  bytes_per_triplet = 2 * 3 * d * 4  # three rows read forward, scattered back in the backward pass
  gather_floor = t * bytes_per_triplet / bytes_per_s
  w = jnp.asarray(np.eye(d), jnp.float32)
  transform_floor = _time(jax.jit(lambda x, w: x @ w), jnp.asarray(x), w)  # Z = X W, once per step
  floor = gather_floor + transform_floor
  print(f"measured bandwidth {bytes_per_s / 1e9:.1f} GB/s: gather floor {gather_floor:.3f} s")
  print(f"transform floor (X @ W once) {transform_floor:.3f} s")
  print(
    f"step {seconds:.3f} s = {t / seconds:.3g} triplets/s, {seconds / floor:.1f}x the floor ({floor:.3f} s)"
  )


if __name__ == "__main__":
  main()
