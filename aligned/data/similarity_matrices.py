"""Human similarity matrices over THINGS objects (e.g. `RDM48_triplet.mat`) and their object lists.

A matrix file has no object names, so it is read together with an object list in the matrix's row
order: a CSV with an `image_name` column (`pizza_01b.jpg` -> concept `pizza`), or a text file with
one THINGS concept id per line. Dissimilarities (RDMs) become similarities as `1 - d`, which keeps
every rank correlation and Pearson correlation up to sign and makes "higher = more similar" hold
everywhere in the code.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Literal

import numpy as np
import scipy.io
from etils import epath

from aligned.data import things
from aligned.errors import DataError
from aligned.paths import as_path, load_npy, open_text

Kind = Literal["auto", "similarity", "dissimilarity"]
_IMAGE_SUFFIX = re.compile(r"_\d+[a-z]?\.(jpe?g|png)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class HumanSimilarityMatrix:
  similarity: np.ndarray  # [m, m], higher = more similar
  object_ids: tuple[str, ...]  # THINGS concept ids in matrix row order
  object_indices: np.ndarray  # [m] sorted THINGS indices of the rows
  source: str


def _read_matrix(path: epath.Path, kind: Kind) -> tuple[np.ndarray, str]:
  if path.suffix == ".mat":
    with path.open("rb") as f:  # loadmat reads a file object: on a disk or in a bucket
      contents = {k: v for k, v in scipy.io.loadmat(f).items() if not k.startswith("__")}
    if len(contents) != 1:
      raise DataError(path, f"expected one matrix variable, found {sorted(contents)}")
    ((name, matrix),) = contents.items()
    if kind == "auto":
      kind = "dissimilarity" if "rdm" in name.lower() else "similarity"
  elif path.suffix == ".npy":
    matrix = load_npy(path)
    if kind == "auto":
      kind = "dissimilarity" if "rdm" in path.name.lower() else "similarity"
  else:
    raise DataError(path, f"unknown matrix file type {path.suffix!r}; expected .mat or .npy")
  return np.asarray(matrix, dtype=np.float64), kind


def read_object_ids(path: str | os.PathLike) -> tuple[str, ...]:
  """THINGS concept ids in file order, from an `image_name` CSV column or one id per line."""
  path = as_path(path)
  if path.suffix == ".csv":
    with open_text(path, encoding="utf-8", newline="") as f:
      rows = list(csv.DictReader(f))
    if not rows or "image_name" not in rows[0]:
      raise DataError(path, "expected an 'image_name' column", row=1)
    return tuple(_IMAGE_SUFFIX.sub("", r["image_name"]) for r in rows)
  return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def load_human_rsm(
  path: str | os.PathLike,
  objects_path: str | os.PathLike,
  kind: Kind = "auto",
  concept_ids: tuple[str, ...] | None = None,
) -> HumanSimilarityMatrix:
  """Loads a square human (dis)similarity matrix and maps its rows to sorted THINGS indices.

  Args:
    path: `.mat` with one matrix variable (a name containing "RDM" means dissimilarity) or `.npy`.
    objects_path: the row order (see module docstring).
    kind: "similarity", "dissimilarity" or "auto" (from the variable or file name).
    concept_ids: the THINGS ids in sorted order; read from the data folder when None.
  """
  path = as_path(path)
  matrix, kind = _read_matrix(path, kind)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise DataError(path, f"expected a square matrix, got shape {matrix.shape}")
  if not np.isfinite(matrix).all():
    r = int(np.argmax(~np.isfinite(matrix).all(axis=1)))
    raise DataError(path, f"non-finite value in matrix row {r} (0-based)")
  if not np.allclose(matrix, matrix.T, atol=1e-8):
    raise DataError(path, "matrix is not symmetric")
  ids = read_object_ids(objects_path)
  if len(ids) != len(matrix):
    raise DataError(objects_path, f"{len(ids)} objects listed for a {len(matrix)} x {len(matrix)} matrix")
  concept_ids = concept_ids or things.load_unique_ids()
  position = {c: i for i, c in enumerate(concept_ids)}
  unknown = [c for c in ids if c not in position]
  if unknown:
    raise DataError(objects_path, f"unknown THINGS concept ids {unknown[:5]}")
  similarity = 1.0 - matrix if kind == "dissimilarity" else matrix
  indices = np.array([position[c] for c in ids], dtype=np.int64)
  return HumanSimilarityMatrix(similarity, ids, indices, str(path))
