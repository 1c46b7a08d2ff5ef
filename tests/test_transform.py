"""gLocal-format affine transforms: read the real files, apply, write, refuse bad ones."""

import jax
import numpy as np
import pytest

from aligned import paths, transform
from aligned.errors import DataError


@pytest.mark.parametrize("model", ["resnet18/avgpool", "clip_ViT-L/14/visual"])
def test_real_glocal_transforms_apply_as_documented(data_dir, model):
  path = data_dir / "glocal" / model / "transform.npz"
  t = transform.load_transform(path)
  with np.load(path) as raw:
    weights, mean, std = raw["weights"], float(raw["mean"]), float(raw["std"])
    bias = raw["bias"] if "bias" in raw.files else np.zeros(weights.shape[1])
  x = np.random.default_rng(0).normal(size=(5, weights.shape[0])).astype(np.float32)
  expected = ((x.astype(np.float64) - mean) / std) @ weights + bias
  np.testing.assert_allclose(np.asarray(t(x)), expected, rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(
    np.asarray(jax.jit(transform.apply_affine)(t.params(), x)), expected, rtol=2e-4, atol=2e-4
  )


def test_round_trip_and_dimension_mismatch(tmp_path, data_dir):
  t = transform.load_transform(data_dir / "glocal" / "resnet18" / "avgpool" / "transform.npz")
  transform.Teacher(t, temperature=0.5, similarity="cosine", objective="distill").save(tmp_path / "t.npz")
  again = transform.load_transform(tmp_path / "t.npz")  # a teacher file is a gLocal file
  teacher = transform.load_teacher(tmp_path / "t.npz")
  assert (teacher.temperature, teacher.similarity, teacher.objective) == (0.5, "cosine", "distill")
  np.testing.assert_array_equal(teacher.transform.weights, t.weights)
  np.testing.assert_array_equal(again.weights, t.weights)
  np.testing.assert_array_equal(again.bias, t.bias)
  assert again.mean == pytest.approx(t.mean) and again.std == pytest.approx(t.std)
  with pytest.raises(DataError, match="has 49 features but the transform expects 512|49 features"):
    t(np.ones((3, 49), np.float32), source="spose.txt")


def test_bad_transforms(tmp_path):
  cases = {
    "no_std": dict(weights=np.eye(3), mean=np.float32(0)),
    "bias_shape": dict(weights=np.eye(3), bias=np.zeros(4), mean=0.0, std=1.0),
    "std_zero": dict(weights=np.eye(3), mean=0.0, std=0.0),
    "nan": dict(weights=np.full((3, 3), np.nan), mean=0.0, std=1.0),
    "vector_mean": dict(weights=np.eye(3), mean=np.zeros(3), std=1.0),
  }
  for name, arrays in cases.items():
    np.savez(tmp_path / f"{name}.npz", **arrays)
    with pytest.raises(DataError):
      transform.load_transform(tmp_path / f"{name}.npz")
  t = transform.load_transform(_save(tmp_path / "nobias.npz", weights=np.eye(3), mean=1.0, std=2.0))
  np.testing.assert_allclose(np.asarray(t(np.array([[3.0, 1.0, 5.0]], np.float32))), [[1.0, 0.0, 2.0]])


def _save(path, **arrays):
  np.savez(path, **arrays)
  return path


def test_glocal_file_reads_as_a_teacher_with_temperature_one(data_dir, tmp_path):
  teacher = transform.load_teacher(data_dir / "glocal" / "resnet18" / "avgpool" / "transform.npz")
  assert (teacher.temperature, teacher.similarity, teacher.objective) == (1.0, "dot", "")
  _save(tmp_path / "bad.npz", weights=np.eye(3), mean=0.0, std=1.0, similarity=np.asarray("euclid"))
  with pytest.raises(DataError, match="similarity"):
    transform.load_teacher(tmp_path / "bad.npz")


def test_transforms_and_teachers_in_a_bucket(bucket, data_dir):
  disk = data_dir / "glocal" / "resnet18" / "avgpool" / "transform.npz"
  paths.copy_file(disk, bucket / "glocal.npz")
  t = transform.load_transform(disk)
  remote = transform.load_transform(bucket / "glocal.npz")
  np.testing.assert_array_equal(remote.weights, t.weights)
  assert (remote.mean, remote.std) == (t.mean, t.std)
  transform.Teacher(t, temperature=0.25, similarity="cosine", objective="hard").save(
    bucket / "run" / "teacher.npz"
  )
  teacher = transform.load_teacher("gs://bucket/run/teacher.npz")
  assert (teacher.temperature, teacher.similarity, teacher.objective) == (0.25, "cosine", "hard")
  np.testing.assert_array_equal(teacher.transform.bias, t.bias)
  with (bucket / "pickled.npz").open("wb") as f:
    np.savez(f, weights=np.array([{"w": 1}], dtype=object), mean=0.0, std=1.0)
  with pytest.raises(DataError, match=r"gs://bucket/pickled.npz: not a plain-array .npz"):
    transform.load_transform(bucket / "pickled.npz")
