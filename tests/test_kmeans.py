"""k-means against a plain NumPy Lloyd reference, on blobs with a known answer, and on edge cases."""

import jax
import numpy as np
import pytest

from aligned.generation.kmeans import kmeans, kmeans_plus_plus


def _numpy_lloyd(x, centroids, max_iters=100):
  assignments = None
  for iteration in range(1, max_iters + 1):
    distance = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    new_assignments = distance.argmin(1)
    if assignments is not None and np.array_equal(new_assignments, assignments):
      return centroids, assignments, iteration
    assignments = new_assignments
    centroids = np.stack([x[assignments == j].mean(0) for j in range(len(centroids))])
  return centroids, assignments, max_iters


def test_matches_numpy_lloyd_from_the_same_seeding():
  x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
  init = np.asarray(kmeans_plus_plus(jax.numpy.asarray(x), 7, jax.random.key(3)), np.float64)
  ref_centroids, ref_assignments, ref_iterations = _numpy_lloyd(x.astype(np.float64), init)
  result = kmeans(x, 7, seed=3, chunk=64)
  np.testing.assert_array_equal(result.assignments, ref_assignments)
  np.testing.assert_allclose(result.centroids, ref_centroids, rtol=1e-4, atol=1e-5)
  assert result.iterations == ref_iterations and result.reseeded == 0
  inertia = ((x - result.centroids[result.assignments]) ** 2).sum()
  assert result.inertia == pytest.approx(inertia, rel=1e-4)


def test_recovers_separated_blobs_and_is_deterministic():
  rng = np.random.default_rng(1)
  centers = (
    rng.normal(size=(5, 8)) * 100
  )  # far apart: k-means++ seeds each blob (a 2nd seed in one blob ~1e-4)
  truth = np.repeat(np.arange(5), 100)
  x = (centers[truth] + rng.normal(size=(500, 8))).astype(np.float32)
  result = kmeans(x, 5, seed=0, chunk=128)
  # One cluster per blob, and one blob per cluster.
  assert all(len(set(result.assignments[truth == b])) == 1 for b in range(5))
  assert len(set(result.assignments)) == 5
  again = kmeans(x, 5, seed=0, chunk=512)  # another chunk size: the same clustering
  np.testing.assert_array_equal(again.assignments, result.assignments)


def test_empty_clusters_are_reseeded():
  x = np.repeat(np.eye(3, dtype=np.float32), 20, axis=0)  # only three distinct points
  result = kmeans(x, 5, seed=0, max_iters=5, chunk=16)
  assert result.reseeded > 0 and np.isfinite(result.centroids).all()
  assert set(np.unique(result.assignments)) <= set(range(5))
  with pytest.raises(ValueError, match="between 1 and"):
    kmeans(x, 61)


@pytest.mark.slow
def test_eight_simulated_devices_give_the_same_clustering(tmp_path):
  import os
  import subprocess
  import sys

  from tests.conftest import REPO

  script = (
    f"import sys, jax, numpy as np; sys.path.insert(0, {str(REPO)!r})\n"
    "from aligned.generation.kmeans import kmeans\n"
    "from aligned.distributed import data_mesh\n"
    "assert len(jax.devices()) == 8\n"
    "x = np.random.default_rng(0).normal(size=(1000, 6)).astype(np.float32)\n"
    "one = kmeans(x, 9, seed=2, chunk=32, mesh=data_mesh(jax.devices()[:1]))\n"
    "eight = kmeans(x, 9, seed=2, chunk=32)\n"
    "assert np.array_equal(one.assignments, eight.assignments), 'assignments differ'\n"
    "np.testing.assert_allclose(one.centroids, eight.centroids, rtol=1e-5, atol=1e-6)\n"
    "print('same on 1 and 8 devices', one.iterations)\n"
  )
  flags = "--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  done = subprocess.run(
    [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "same on 1 and 8 devices" in done.stdout
