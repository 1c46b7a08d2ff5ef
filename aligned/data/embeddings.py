"""Object embeddings on disk: `.npy` float arrays (or whitespace text, like SPoSE), one row per object;
and thingsvision's output (`features.npy` + `file_names.txt`, one row per image).

A file does not say which object order its rows follow; the caller does (`order="sorted"` or
`"raw"` for THINGS), and `load_embeddings` always returns rows in sorted order.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
from etils import epath

from aligned.artifacts import save_npy
from aligned.data import things
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.paths import as_path, load_npy, open_text

Order = Literal["sorted", "raw"]


def _read_array(path: epath.Path) -> np.ndarray:
  if path.suffix == ".npy":
    try:
      return load_npy(path)
    except ValueError as e:  # object arrays need pickle: refuse them
      raise DataError(path, f"cannot read as a plain numeric .npy ({e})") from None
    except EOFError:  # an empty file, or one cut before its header ends
      raise DataError(path, "empty or truncated .npy (no complete header)") from None
  if path.suffix in (".txt", ".tsv", ".csv"):
    rows = []
    with open_text(path, encoding="utf-8") as f:
      for row, line in enumerate(f, start=1):
        fields = line.replace(",", " ").split()
        if not fields:
          continue
        try:
          rows.append([float(v) for v in fields])
        except ValueError:
          raise DataError(path, "not a row of numbers", row=row) from None
        if len(rows[-1]) != len(rows[0]):
          raise DataError(path, f"{len(rows[-1])} values, but the first row has {len(rows[0])}", row=row)
    return np.asarray(rows)
  raise DataError(path, f"unknown embedding file type {path.suffix!r}; expected .npy or .txt")


def validate_embeddings(array: np.ndarray, path: str | os.PathLike = "<embeddings>") -> np.ndarray:
  """Checks a [n, d] finite float array; returns it as float32 (the row named on failure)."""
  if array.ndim != 2:
    raise DataError(path, f"embeddings must be 2-D [objects, features], got shape {array.shape}")
  if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
    raise DataError(path, f"embeddings must be real numbers, got dtype {array.dtype}")
  finite = np.isfinite(array)
  if not finite.all():
    r = int(np.argmax(~finite.all(axis=1)))
    c = int(np.argmax(~finite[r]))
    raise DataError(path, f"non-finite value {array[r, c]} in object {r} (0-based), feature {c}")
  return array.astype(np.float32)


def load_embeddings(
  path: str | os.PathLike, order: Order = "sorted", sortindex: np.ndarray | None = None
) -> np.ndarray:
  """Loads [n, d] float32 embeddings and returns them in sorted THINGS order.

  Args:
    path: `.npy` (no pickles), whitespace-separated text, or an embedding store folder (its rows in
      item order, e.g. a store of the items a triplet file indexes).
    order: the order of the file's rows: "sorted" (unique_id.txt order) or "raw" (THINGS
      data-collection order; requires exactly 1,854 rows).
    sortindex: the raw -> sorted permutation; read from the data folder when None.
  """
  path = as_path(path)
  if path.is_dir():
    if not (path / "metadata.json").exists():
      raise DataError(path, "a folder, but not an embedding store (no metadata.json)")
    array = validate_embeddings(EmbeddingStore(path).read()[1], path)
  else:
    array = validate_embeddings(_read_array(path), path)
  if order == "sorted":
    return array
  if order != "raw":
    raise ValueError(f"unknown order {order!r}; expected 'sorted' or 'raw'")
  if len(array) != things.N_OBJECTS:
    raise DataError(path, f"raw THINGS order needs {things.N_OBJECTS} rows, found {len(array)}")
  s = things.load_sortindex() if sortindex is None else sortindex
  return array[s]  # E_sorted = E_raw[s]


def save_embeddings(path: str | os.PathLike, embeddings: np.ndarray) -> None:
  """Writes validated [n, d] embeddings as float32 `.npy`, atomically."""
  save_npy(path, validate_embeddings(np.asarray(embeddings), path))


def read_thingsvision(
  features: str | os.PathLike, file_names: str | os.PathLike
) -> tuple[list[str], np.ndarray]:
  """(image paths, [n, d] float32) of a thingsvision extraction: `features.npy` (row i is the image
  on line i of `file_names.txt`; a `.txt` features file is read as text)."""
  features, file_names = as_path(features), as_path(file_names)
  for path in (features, file_names):
    if not path.is_file():
      raise DataError(path, "not found" if not path.exists() else "not a file")
  array = validate_embeddings(_read_array(features), features)
  with open_text(file_names, encoding="utf-8") as f:
    names = [line.strip() for line in f]
  while names and not names[-1]:
    names.pop()
  if "" in names:
    raise DataError(file_names, "empty line", row=names.index("") + 1)
  if len(names) != len(array):
    raise DataError(file_names, f"{len(names)} file names but {features.name} has {len(array)} rows")
  return names, array
