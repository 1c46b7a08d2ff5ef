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

Files of the official release. `read_release` reads a file on the README's statement alone, with
ties for the smallest accepted: a row is valid when s12 is the smallest, `s12 <= s01 and s12 <= s02`
(the README says strictly; a tie is one float equality, which real float32 files can hold, and refusing
it would stop the import of a whole 10 M-row file). Each row is re-ordered to ours with
`sort_odd_one_out_last`: a row with `s01 >= s02` is kept as it is (bit for bit), a row with
`s02 > s01` has items 1 and 2 swapped, which exchanges s01 and s02 and keeps s12 (swapping items 0
and 1 would keep s01 and exchange s02 and s12, leaving s02 > s01 in place). So the tie rows end in
our order too: `s12 == s02 < s01` is already ours and stays bit for bit, `s12 == s01 < s02` gets items
1 and 2 swapped (to `[s02, s01, s12]`, s01 == s12), and a row of three equal values stays as it is.
Tie rows (`s12 == min(s01, s02)`, in the file's precision) are counted: `rows_tied` in
`import_release`'s manifest. Refused, as a DataError naming the file, the 0-based row and its values:
a missing array, a shape other than [n, 3], an object array (it would need pickle), a
non-string/float/integer dtype, a non-finite similarity, a row where s12 is strictly larger than s01
or s02 (the file is not in the published order; a file in ours is read by `read_alignet`), a negative
or (given the image count) too large index, an image repeated inside a triplet, file names that are
not ASCII, a similarity beyond float32's range. Accepted dtypes: file names bytes or str, integer
indices of any width, float16/32/64 similarities; the result is ours (str, int64, float32). The order
is decided in the file's precision; rounding to float32 keeps s01 >= s02 >= s12, though it may turn
s12 < s02 into a tie (not counted in `rows_tied`), which `read_alignet` accepts.
`import_release` converts whole release folders (streamed, see there).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Iterator

import numpy as np
from etils import epath

from aligned.artifacts import remove_stale_temporaries, save_npz, sha256_of, write_json
from aligned.errors import DataError
from aligned.npz_stream import NpzReader, NpzStreamWriter
from aligned.odd_one_out import permute_triplets, sort_odd_one_out_last
from aligned.paths import as_path, files_under, is_local
from aligned.progress import Progress

TRANSFORMS = ("uncertainty_distillation", "untransformed")
SPLITS = ("train", "val")
KEYS = ("filenames", "similarities", "indices")
RELEASE_N_IMAGES = 1_281_167  # ImageNet-2012 train, the images the release's indices address
CHUNK_ROWS = 1 << 16  # rows per chunk of a streamed release file: ~0.25 GB peak with 30-character names


@dataclasses.dataclass(frozen=True)
class AligNetTriplets:
  filenames: np.ndarray | None  # [n, 3] str (None when read without names)
  similarities: np.ndarray  # [n, 3] float32, [s01, s02, s12], s01 largest
  indices: np.ndarray  # [n, 3] int64

  def __len__(self) -> int:
    return len(self.indices)


def alignet_path(root: str | os.PathLike, transform: str, split: str, sampling: str) -> epath.Path:
  """`root/{transform}/{split}_{sampling}.npz`, with the names checked."""
  if transform not in TRANSFORMS:
    raise ValueError(f"transform {transform!r} is not one of {TRANSFORMS}")
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {SPLITS}")
  if not sampling or "/" in sampling:
    raise ValueError(f"bad sampling name {sampling!r}")
  return as_path(root) / transform / f"{split}_{sampling}.npz"


def validate_alignet(
  filenames: np.ndarray | None,
  similarities: np.ndarray,
  indices: np.ndarray,
  path: str | os.PathLike = "<alignet>",
  n_images: int | None = None,
  row_offset: int = 0,
) -> AligNetTriplets:
  """Checks shapes, dtypes, finiteness, the order invariant and the index range.

  `row_offset`: the arrays are rows `row_offset...` of the file (a chunk), as error messages count them.
  """
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

  def at(r: int) -> str:
    return f"triplet {r + row_offset} (0-based)"

  finite = np.isfinite(similarities).all(axis=1)
  if not finite.all():
    r = first(~finite)
    raise DataError(path, f"{at(r)}: non-finite similarities {similarities[r].tolist()}")
  s01, s02, s12 = similarities[:, 0], similarities[:, 1], similarities[:, 2]
  unordered = (s01 < s02) | (s01 < s12)
  if unordered.any():
    r = first(unordered)
    raise DataError(
      path,
      f"{at(r)}: similarities {similarities[r].tolist()} are not in odd-one-out-last "
      f"order (s01 must be the largest of [s01, s02, s12]); {int(unordered.sum())} of {n} rows"
      + (f" from triplet {row_offset}" if row_offset else ""),
    )
  if n and (indices.min() < 0 or (n_images is not None and indices.max() >= n_images)):
    bad = (indices < 0) | (indices >= (n_images if n_images is not None else np.iinfo(np.int64).max))
    r = first(bad.any(axis=1))
    raise DataError(path, f"{at(r)}: image index {indices[r].tolist()} out of range [0, {n_images})")
  repeated = (indices[:, 0] == indices[:, 1]) | (indices[:, 0] == indices[:, 2])
  repeated |= indices[:, 1] == indices[:, 2]
  if repeated.any():
    r = first(repeated)
    raise DataError(path, f"{at(r)}: image repeated inside the triplet {indices[r].tolist()}")
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
  with NpzReader(path) as npz:  # array by array: the names are never read when not asked for
    missing = [k for k in KEYS if k not in npz.names]
    if missing:
      raise DataError(path, f"missing arrays {missing}; found {npz.names}")
    try:
      arrays = {k: _whole_array(npz, k) if (filenames or k != "filenames") else None for k in KEYS}
    except DataError as e:  # an object array (it would need pickle), a truncated member
      raise DataError(path, f"not a plain-array .npz: {e.problem}") from None
  return validate_alignet(**arrays, path=path, n_images=n_images)


def _whole_array(npz: NpzReader, name: str) -> np.ndarray:
  """Array `name` of an open `.npz`, read whole (one chunk of all its rows)."""
  shape, dtype = npz.shape(name), npz.dtype(name)
  parts = list(npz.chunks(name, rows=max(1, shape[0] if shape else 1)))
  return parts[0] if parts else np.zeros(shape, dtype)


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


# ------------------------------------------------------------------------------------------------
# The official release's files
# ------------------------------------------------------------------------------------------------


def _release_layout(npz: NpzReader, path) -> tuple[int, int, list[str]]:
  """(rows, characters per file name, ignored array names) of a release file, from its headers alone."""
  missing = [k for k in KEYS if k not in npz.names]
  if missing:
    raise DataError(
      path, f"missing arrays {missing}; found {npz.names} (the release's files hold {list(KEYS)})"
    )
  shapes = {k: npz.shape(k) for k in KEYS}  # refuses an object array before reading it
  n = shapes["indices"][0] if len(shapes["indices"]) == 2 else -1
  for k in KEYS:
    if shapes[k] != (n, 3):
      raise DataError(path, f"{k!r} has shape {shapes[k]}; expected (n, 3) for all three arrays {shapes}")
  kinds = {"filenames": ("US", "strings"), "similarities": ("f", "floats"), "indices": ("iu", "integers")}
  for k, (allowed, what) in kinds.items():
    if npz.dtype(k).kind not in allowed:
      raise DataError(path, f"{k!r} must be {what}, got dtype {npz.dtype(k)}")
  names = npz.dtype("filenames")
  width = names.itemsize // (4 if names.kind == "U" else 1)
  return n, max(width, 1), [name for name in npz.names if name not in KEYS]


def _release_rows(
  path, start: int, similarities: np.ndarray, indices: np.ndarray, filenames: np.ndarray | None, n_images
) -> tuple[AligNetTriplets, np.ndarray, np.ndarray]:
  """Rows `start...` of a release file, validated and re-ordered to ours; which rows moved; and which
  rows' smallest similarity is tied (s12 == min(s01, s02), in the file's precision)."""
  stop = start + len(similarities)

  def refuse(mask: np.ndarray, problem) -> None:
    r = int(np.argmax(mask))
    raise DataError(
      path,
      f"triplet {start + r} (0-based): {problem(r)}; {int(mask.sum())} such row(s) among rows [{start}, {stop})",
    )

  finite = np.isfinite(similarities).all(axis=1)
  if not finite.all():
    refuse(~finite, lambda r: f"non-finite similarities {similarities[r].tolist()}")
  with np.errstate(over="ignore"):
    overflow = ~np.isfinite(similarities.astype(np.float32)).all(axis=1)
  if overflow.any():
    refuse(overflow, lambda r: f"similarities {similarities[r].tolist()} do not fit float32")
  s01, s02, s12 = similarities[:, 0], similarities[:, 1], similarities[:, 2]
  lowest = np.minimum(s01, s02)
  above = s12 > lowest
  if above.any():
    refuse(
      above,
      lambda r: (
        f"similarities [s01, s02, s12] = {similarities[r].tolist()}: s12 is not the smallest (it is "
        "larger than s01 or s02), against the release's order (s12 < s01 and s12 < s02; ties are accepted); "
        "a file in this project's order (s01 largest) is read by read_alignet"
      ),
    )
  tied = s12 == lowest  # valid, re-ordered by the same sort below; counted apart
  # Indices as the file holds them (validate_alignet below checks again, on our order).
  limit = np.iinfo(np.int64).max if n_images is None else n_images - 1
  outside = ((indices < 0) | (indices > limit)).any(axis=1)
  if outside.any():
    refuse(outside, lambda r: f"image index {indices[r].tolist()} out of range [0, {limit + 1})")
  repeated = (
    (indices[:, 0] == indices[:, 1]) | (indices[:, 0] == indices[:, 2]) | (indices[:, 1] == indices[:, 2])
  )
  if repeated.any():
    refuse(repeated, lambda r: f"image repeated inside the triplet {indices[r].tolist()}")
  if filenames is not None and filenames.dtype.kind == "S":
    try:
      filenames = filenames.astype(f"<U{filenames.dtype.itemsize}")
    except UnicodeDecodeError:
      ascii_ = np.array([all(name.isascii() for name in row) for row in filenames.tolist()])
      refuse(~ascii_, lambda r: f"file names {filenames[r].tolist()} are not ASCII")

  # Identity where s01 >= s02 (ties for the smallest included); items 1 <-> 2 where s02 > s01.
  perm = _sorting_permutation(similarities)
  reordered = (perm != np.arange(3)).any(axis=1)
  if filenames is not None:
    filenames, _ = permute_triplets(filenames, similarities, perm)
  indices, similarities = permute_triplets(indices, similarities, perm)
  triplets = validate_alignet(
    filenames, similarities.astype(np.float32), indices.astype(np.int64), path, n_images, row_offset=start
  )
  return triplets, reordered, tied


def release_chunks(
  path: str | os.PathLike, n_images: int | None = None, filenames: bool = True, chunk_rows: int = CHUNK_ROWS
) -> Iterator[tuple[int, AligNetTriplets, np.ndarray, np.ndarray]]:
  """(first row, triplets in our order, which rows were re-ordered, which rows' smallest similarity is
  tied) per block of `chunk_rows` rows of a release file: `read_release` in bounded memory."""
  with NpzReader(path) as npz:
    _release_layout(npz, path)
    columns = [npz.chunks("similarities", chunk_rows), npz.chunks("indices", chunk_rows)]
    if filenames:
      columns.append(npz.chunks("filenames", chunk_rows))
    start = 0
    for arrays in zip(*columns, strict=True):
      names = arrays[2] if filenames else None
      triplets, reordered, tied = _release_rows(path, start, arrays[0], arrays[1], names, n_images)
      yield start, triplets, reordered, tied
      start += len(reordered)


def read_release(
  path: str | os.PathLike, n_images: int | None = None, filenames: bool = True, chunk_rows: int = CHUNK_ROWS
) -> tuple[AligNetTriplets, np.ndarray]:
  """Reads a file of the official release (published layout, see the module docstring) into ours.

  Returns (triplets, reordered): the triplets in this project's order and dtypes (what `read_alignet`
  returns for the converted file), and a [n] bool mask of the rows whose items were re-ordered
  (`reordered.sum()` of them; the tie rows `s12 == s01 < s02` are among them, see the module
  docstring; `release_chunks` also yields which rows are tie rows, `import_release` counts them). The
  file is read chunk by chunk, but the result is whole: 10 M rows take ~360 MB of indices and
  similarities and ~2.4 GB of 20-character names as str (`filenames=False` skips them);
  `import_release` converts a file without holding it.
  """
  parts = list(release_chunks(path, n_images, filenames, chunk_rows))
  if not parts:
    with NpzReader(path) as npz:
      width = _release_layout(npz, path)[1]
    empty = np.zeros((0, 3))
    names = empty.astype(f"<U{width}") if filenames else None
    return AligNetTriplets(names, empty.astype(np.float32), empty.astype(np.int64)), np.zeros(0, bool)
  triplets = AligNetTriplets(
    np.concatenate([t.filenames for _, t, _, _ in parts]) if filenames else None,
    np.concatenate([t.similarities for _, t, _, _ in parts]),
    np.concatenate([t.indices for _, t, _, _ in parts]),
  )
  return triplets, np.concatenate([r for _, _, r, _ in parts])


_RELEASE_NAME = re.compile(r"^(train|val)_([^/]+)\.npz$")


def _release_relpath(root: epath.Path, file: str | os.PathLike) -> pathlib.PurePosixPath | None:
  """`{transform}/{split}_{sampling}.npz` relative to root, or None for a file of another layout."""
  path = as_path(file)
  try:
    rel = path.relative_to(root) if path.is_absolute() else path
  except ValueError:
    return None
  parts = rel.parts
  if len(parts) != 2 or parts[0] not in TRANSFORMS or not _RELEASE_NAME.match(parts[1]):
    return None
  return pathlib.PurePosixPath(*parts)


def import_release(config, workdir: str | os.PathLike) -> dict:
  """Converts files of the official release to this project's layout: `workdir/{same relative path}`.

  Config: `root` (the release folder: `{transform}/{split}_{sampling}.npz` beneath it), `files` (relative
  paths under root; empty: every file of that layout under root, other `.npz` files are listed as
  skipped), `n_images` (indices must be below it; 0 = unchecked), `chunk_rows` (optional).

  Each file is validated and re-ordered as `read_release` does (the first bad row stops the import
  with a DataError naming file, row and values; a row whose s12 ties for the smallest is valid and
  re-ordered by the same sort, one whose s12 is strictly larger than s01 or s02 is refused) and
  streamed into a compressed `.npz` under a temporary name, renamed when complete: memory stays at a
  few chunks whatever the file's size (the release's train files hold 10 M rows; measured here: 2 M
  rows in 35 s and 0.4 GB peak, most of the time in deflate). The source is read three times, once per
  output array.
  `manifest.json` (written last; an earlier one is removed first, so it exists only after a complete
  import) lists per file: `rows`, `reordered` (rows whose items were re-ordered), `rows_tied` (rows
  whose smallest similarity is tied in the source, s12 == min(s01, s02): accepted, and counted in
  `reordered` too when s12 == s01 < s02 moved them), sha256 of source and output, source dtypes, arrays
  ignored; and the totals of rows, reordered and rows_tied. Returns those totals (and the skipped files).
  """
  root, workdir = as_path(config.get("root") or ""), as_path(workdir)
  if not config.get("root") or not root.is_dir():
    raise DataError(root, "the release folder (config root) is not a directory")
  if _same_folder(workdir, root):
    raise ValueError(f"workdir {workdir} is the release folder itself; give another folder")
  n_images = config.get("n_images", RELEASE_N_IMAGES) or None
  chunk_rows = config.get("chunk_rows", CHUNK_ROWS)
  skipped, files = [], config.get("files")
  if files:
    relpaths = []
    for file in files:
      rel = _release_relpath(root, file)
      if rel is None:
        raise ValueError(
          f"{file}: not a release file path {{transform}}/{{split}}_{{sampling}}.npz under {root} "
          f"(transform one of {TRANSFORMS}, split one of {SPLITS})"
        )
      if not (root / rel).is_file():
        raise DataError(root / rel, "no such file")
      relpaths.append(rel)
  else:
    relpaths = []
    for path in files_under(root, "*.npz"):
      rel = _release_relpath(root, path)
      if rel is None:
        skipped.append(str(path.relative_to(root)))
      else:
        relpaths.append(rel)
    if not relpaths:
      raise DataError(
        root, f"no {{transform}}/{{split}}_{{sampling}}.npz files (transform one of {TRANSFORMS})"
      )

  workdir.mkdir(parents=True, exist_ok=True)
  remove_stale_temporaries(workdir)
  manifest_path = workdir / "manifest.json"
  manifest_path.unlink(missing_ok=True)
  files, progress = {}, Progress(len(relpaths), "files", every_s=0.0)
  for done, rel in enumerate(relpaths, start=1):
    (workdir / rel).unlink(missing_ok=True)  # an earlier import's output must not outlive a refusal
    files[str(rel)] = _import_file(root / rel, workdir / rel, n_images, chunk_rows)
    record = files[str(rel)]
    progress.update(done, rows=record["rows"], reordered=record["reordered"], rows_tied=record["rows_tied"])
  manifest = {
    "root": str(root),
    "n_images": n_images,
    "files": files,
    "skipped": skipped,
    "rows": sum(f["rows"] for f in files.values()),
    "reordered": sum(f["reordered"] for f in files.values()),
    "rows_tied": sum(f["rows_tied"] for f in files.values()),
  }
  write_json(manifest_path, manifest)
  return {
    "workdir": str(workdir),
    "manifest": str(manifest_path),
    **{k: manifest[k] for k in ("rows", "reordered", "rows_tied", "skipped")},
    "files": len(files),
  }


def _same_folder(a: epath.Path, b: epath.Path) -> bool:
  """Whether two folders are one (symbolic links resolved on a disk; a URL is compared as written)."""
  if is_local(a) and is_local(b):
    return a.resolve() == b.resolve()
  return os.fspath(a).rstrip("/") == os.fspath(b).rstrip("/")


def _import_file(source: epath.Path, out: epath.Path, n_images: int | None, chunk_rows: int) -> dict:
  with NpzReader(source) as npz:
    n, width, ignored = _release_layout(npz, source)
    dtypes = {k: str(npz.dtype(k)) for k in KEYS}
  counts = {"reordered": 0, "rows_tied": 0}

  def chunks(key: str):
    for _, triplets, moved, tied in release_chunks(source, n_images, key == "filenames", chunk_rows):
      if key == "similarities":
        counts["reordered"] += int(moved.sum())
        counts["rows_tied"] += int(tied.sum())
      yield getattr(triplets, key)

  with NpzStreamWriter(out, compress=True) as npz:
    npz.add("similarities", (n, 3), np.float32, chunks("similarities"))
    npz.add("indices", (n, 3), np.int64, chunks("indices"))
    npz.add(
      "filenames", (n, 3), f"<U{width}", (f.astype(f"<U{width}", copy=False) for f in chunks("filenames"))
    )
  return {
    "rows": n,
    "reordered": counts["reordered"],
    "rows_tied": counts["rows_tied"],
    "source_sha256": sha256_of(source),
    "sha256": sha256_of(out),
    "source_dtypes": dtypes,
    "ignored_arrays": ignored,
  }


def format_import(results: dict) -> str:
  skipped = f"; {len(results['skipped'])} other .npz files skipped" if results["skipped"] else ""
  return (
    f"{results['files']} release files -> {results['workdir']}: {results['rows']} rows, "
    f"{results['reordered']} re-ordered, {results['rows_tied']} with a tie for the smallest similarity "
    f"(manifest: {results['manifest']}){skipped}"
  )
