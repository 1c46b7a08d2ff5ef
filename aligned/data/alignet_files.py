"""AligNet triplet files in the exact format of the official release.

`ROOT/{transform}/{split}_{sampling}.npz` (numpy, no pickles) with three [n, 3] arrays:
- `filenames`: str, ImageNet-2012 train file names, odd-one-out last;
- `similarities`: float `[s01, s02, s12]`, the labelling model's pair similarities;
- `indices`: int, rows of `tfds.data_source("imagenet2012", split="train")`.

Order invariant. The release's code scores a triplet correct when (0, 1) is the most similar pair and
its contrastive loss treats pair 0 as the positive, so a valid file has `s01 >= s02` and `s01 >= s12`:
that is what `read_alignet` enforces. The release README also says `s12 < s01` and `s12 < s02`; the
two statements differ in general, and `write_alignet` satisfies both by sorting each row to
`s01 >= s02 >= s12` (swapping items 0 and 1 keeps s01 and exchanges s02 and s12).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from aligned.artifacts import save_npz
from aligned.errors import DataError
from aligned.odd_one_out import permute_triplets, sort_odd_one_out_last

TRANSFORMS = ("uncertainty_distillation", "untransformed")
SPLITS = ("train", "val")
KEYS = ("filenames", "similarities", "indices")


@dataclasses.dataclass(frozen=True)
class AligNetTriplets:
  filenames: np.ndarray | None  # [n, 3] str (None when read without names)
  similarities: np.ndarray  # [n, 3] float32, [s01, s02, s12], s01 largest
  indices: np.ndarray  # [n, 3] int64

  def __len__(self) -> int:
    return len(self.indices)


def alignet_path(root: str | os.PathLike, transform: str, split: str, sampling: str) -> pathlib.Path:
  """`root/{transform}/{split}_{sampling}.npz`, with the names checked."""
  if transform not in TRANSFORMS:
    raise ValueError(f"transform {transform!r} is not one of {TRANSFORMS}")
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {SPLITS}")
  if not sampling or "/" in sampling:
    raise ValueError(f"bad sampling name {sampling!r}")
  return pathlib.Path(root) / transform / f"{split}_{sampling}.npz"


def validate_alignet(
  filenames: np.ndarray | None,
  similarities: np.ndarray,
  indices: np.ndarray,
  path: str | os.PathLike = "<alignet>",
  n_images: int | None = None,
) -> AligNetTriplets:
  """Checks shapes, dtypes, finiteness, the order invariant and the index range."""
  similarities, indices = np.asarray(similarities), np.asarray(indices)
  n = len(indices)
  with_names = filenames is not None
  filenames = np.asarray(filenames) if with_names else None
  for name, array in zip(KEYS, (filenames, similarities, indices), strict=True):
    if array is not None and (array.ndim != 2 or array.shape != (n, 3)):
      raise DataError(path, f"{name!r} has shape {array.shape}; expected ({n}, 3)")
  if with_names and filenames.dtype.kind not in "US":
    raise DataError(path, f"'filenames' must be strings, got dtype {filenames.dtype}")
  if similarities.dtype.kind != "f":
    raise DataError(path, f"'similarities' must be floats, got dtype {similarities.dtype}")
  if indices.dtype.kind not in "iu":
    raise DataError(path, f"'indices' must be integers, got dtype {indices.dtype}")

  def first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))

  finite = np.isfinite(similarities).all(axis=1)
  if not finite.all():
    r = first(~finite)
    raise DataError(path, f"triplet {r} (0-based): non-finite similarities {similarities[r].tolist()}")
  s01, s02, s12 = similarities[:, 0], similarities[:, 1], similarities[:, 2]
  unordered = (s01 < s02) | (s01 < s12)
  if unordered.any():
    r = first(unordered)
    raise DataError(
      path,
      f"triplet {r} (0-based): similarities {similarities[r].tolist()} are not in odd-one-out-last "
      f"order (s01 must be the largest of [s01, s02, s12]); {int(unordered.sum())} of {n} rows",
    )
  if n and (indices.min() < 0 or (n_images is not None and indices.max() >= n_images)):
    bad = (indices < 0) | (indices >= (n_images if n_images is not None else np.iinfo(np.int64).max))
    r = first(bad.any(axis=1))
    raise DataError(
      path, f"triplet {r} (0-based): image index {indices[r].tolist()} out of range [0, {n_images})"
    )
  repeated = (indices[:, 0] == indices[:, 1]) | (indices[:, 0] == indices[:, 2])
  repeated |= indices[:, 1] == indices[:, 2]
  if repeated.any():
    r = first(repeated)
    raise DataError(path, f"triplet {r} (0-based): image repeated inside the triplet {indices[r].tolist()}")
  return AligNetTriplets(
    filenames.astype(str) if with_names else None, similarities.astype(np.float32), indices.astype(np.int64)
  )


def read_alignet(
  path: str | os.PathLike, n_images: int | None = None, filenames: bool = True
) -> AligNetTriplets:
  """Reads and validates an AligNet `.npz` (never unpickles).

  `filenames=False` skips the file names (training needs only indices and similarities, and the
  names of 10 M triplets take gigabytes); the result's `filenames` is then None.
  """
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [k for k in KEYS if k not in data.files]
      if missing:
        raise DataError(path, f"missing arrays {missing}; found {data.files}")
      arrays = {k: data[k] if (filenames or k != "filenames") else None for k in KEYS}
  except ValueError as e:
    if isinstance(e, DataError):
      raise
    raise DataError(path, f"not a plain-array .npz ({e})") from None
  return validate_alignet(**arrays, path=path, n_images=n_images)


def write_alignet(
  path: str | os.PathLike,
  filenames: np.ndarray,
  similarities: np.ndarray,
  indices: np.ndarray,
  n_images: int | None = None,
  compressed: bool = True,
) -> AligNetTriplets:
  """Sorts each triplet to s01 >= s02 >= s12 (items permuted with their similarities), validates
  and writes atomically. Returns what was written."""
  filenames, indices = np.asarray(filenames), np.asarray(indices)
  similarities = np.asarray(similarities)
  order_perm = _sorting_permutation(similarities)
  filenames, _ = permute_triplets(filenames, similarities, order_perm)
  indices, similarities = permute_triplets(indices, similarities, order_perm)
  triplets = validate_alignet(filenames, similarities, indices, path, n_images)
  save_npz(
    path,
    compressed=compressed,
    filenames=triplets.filenames,
    similarities=triplets.similarities,
    indices=triplets.indices,
  )
  return triplets


def _sorting_permutation(similarities: np.ndarray) -> np.ndarray:
  """The per-row item permutation that `sort_odd_one_out_last` applies."""
  positions = np.broadcast_to(np.arange(3), similarities.shape)
  perm, _ = sort_odd_one_out_last(positions, similarities)
  return perm
