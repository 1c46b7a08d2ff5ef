"""Affine transforms of embeddings, `z = ((x - mean) / std) @ W + b`, and the teacher artifact.

On disk: a plain `.npz` with `weights` [d, d'], optional `bias` [d'], scalar `mean` and `std`, the
gLocal format, so other tools can read our teachers and we can read theirs. A `Teacher` adds how the
transform scores triplets: scalar `temperature` (predictions `softmax(s(z) / T)`), `similarity`
(`dot` | `cosine`) and `objective` (`hard` | `distill`) as 0-d string arrays; a gLocal file without
them reads as temperature 1, dot similarity, objective unknown (""). No reader unpickles.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import jax.numpy as jnp
import numpy as np

from aligned.artifacts import save_npz
from aligned.errors import DataError
from aligned.paths import load_npz


@dataclasses.dataclass(frozen=True)
class AffineTransform:
  weights: np.ndarray  # [d, d']
  bias: np.ndarray  # [d']
  mean: float
  std: float

  @property
  def in_features(self) -> int:
    return self.weights.shape[0]

  @property
  def out_features(self) -> int:
    return self.weights.shape[1]

  def params(self) -> dict:
    """As a pytree of arrays, for `apply_affine` under jit."""
    return {"weights": self.weights, "bias": self.bias, "mean": self.mean, "std": self.std}

  def check_features(self, n: int, source: str | os.PathLike = "<embeddings>") -> None:
    """A DataError naming `source` unless its embeddings have the transform's input width."""
    if n != self.in_features:
      raise DataError(
        source, f"embeddings have {n} features but the transform expects {self.in_features} features"
      )

  def __call__(self, x, source: str | os.PathLike = "<embeddings>"):
    """Applies the transform to [..., d] embeddings (a DataError on a feature mismatch)."""
    self.check_features(x.shape[-1], source)
    return apply_affine(self.params(), x)


def apply_affine(params: dict, x: jnp.ndarray) -> jnp.ndarray:
  """((x - mean) / std) @ weights + bias, [..., d] -> [..., d']."""
  return ((x - params["mean"]) / params["std"]) @ params["weights"] + params["bias"]


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every array of an `.npz` on a disk or in a bucket; a DataError for one that would need pickle."""
  try:
    return load_npz(path)
  except ValueError as e:
    raise DataError(path, f"not a plain-array .npz ({e})") from None
  except (zipfile.BadZipFile, EOFError) as e:  # truncated, empty, or not an .npz at all
    raise DataError(path, f"not a readable .npz, truncated or not a zip archive ({e})") from None


def load_transform(path: str | os.PathLike) -> AffineTransform:
  """Reads a gLocal-format transform `.npz` (never unpickles) and checks it."""
  return _transform_from(_read_npz(path), path)


def _transform_from(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> AffineTransform:
  for key in ("weights", "mean", "std"):
    if key not in arrays:
      raise DataError(path, f"missing array {key!r}; found {sorted(arrays)}")
  weights = arrays["weights"]
  if weights.ndim != 2:
    raise DataError(path, f"'weights' must be 2-D, got shape {weights.shape}")
  bias = arrays.get("bias", np.zeros(weights.shape[1], weights.dtype))
  if bias.shape != (weights.shape[1],):
    raise DataError(path, f"'bias' has shape {bias.shape}; expected ({weights.shape[1]},)")
  for key in ("mean", "std"):
    if np.size(arrays[key]) != 1:
      raise DataError(path, f"{key!r} must be a scalar, got shape {np.shape(arrays[key])}")
  mean, std = float(arrays["mean"]), float(arrays["std"])
  for name, value in (("weights", weights), ("bias", bias), ("mean", mean), ("std", std)):
    if not np.isfinite(value).all():
      raise DataError(path, f"{name!r} has non-finite values")
  if std <= 0:
    raise DataError(path, f"'std' must be positive, got {std}")
  return AffineTransform(weights.astype(np.float32), bias.astype(np.float32), mean, std)


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The human-aligned teacher: its transform and how it scores triplets.

  `teacher.similarities(x)` is not provided on purpose: scoring goes through
  `aligned.triplet_similarities` with `teacher.similarity` on `teacher.transform(x)`, scaled by
  `1 / teacher.temperature` where probabilities are meant.
  """

  transform: AffineTransform
  temperature: float = 1.0
  similarity: str = "dot"
  objective: str = ""  # "" when unknown (a gLocal file)
  # the raw embeddings' own temperature, fit by the same objective on the same data with the transform
  # held at identity: it calibrates the untransformed (UnAligNet) labels; 1 when unknown (gLocal)
  base_temperature: float = 1.0
  # which of temperature, similarity, objective, base_temperature the file held (None: not read from a
  # file); a gLocal file holds none, and its defaults above are assumptions, not records
  recorded: frozenset[str] | None = dataclasses.field(default=None, compare=False)

  def save(self, path: str | os.PathLike) -> None:
    """Writes the gLocal arrays plus temperature, similarity and objective, atomically."""
    save_npz(
      path,
      weights=np.asarray(self.transform.weights, np.float32),
      bias=np.asarray(self.transform.bias, np.float32),
      mean=np.float32(self.transform.mean),
      std=np.float32(self.transform.std),
      temperature=np.float32(self.temperature),
      similarity=np.asarray(self.similarity),
      objective=np.asarray(self.objective),
      base_temperature=np.float32(self.base_temperature),
    )


def load_teacher(path: str | os.PathLike) -> Teacher:
  """A teacher `.npz` (ours, or a gLocal transform: temperature 1, dot similarity)."""
  arrays = _read_npz(path)  # one read, also from a bucket
  transform = _transform_from(arrays, path)
  keys = ("temperature", "similarity", "objective", "base_temperature")
  extra = {k: arrays[k] for k in keys if k in arrays}
  temperature, base_temperature = (float(extra.get(k, 1.0)) for k in ("temperature", "base_temperature"))
  for key, value in (("temperature", temperature), ("base_temperature", base_temperature)):
    if not (np.isfinite(value) and value > 0):
      raise DataError(path, f"{key!r} must be positive and finite, got {value}")
  similarity = str(extra.get("similarity", "dot"))
  if similarity not in ("dot", "cosine"):
    raise DataError(path, f"'similarity' must be dot or cosine, got {similarity!r}")
  return Teacher(
    transform, temperature, similarity, str(extra.get("objective", "")), base_temperature, frozenset(extra)
  )
