"""THINGS concepts (Hebart et al., 1,854 objects) and their two object orders.

THINGS files come in two orders. The **sorted** order is the alphabetical order of `unique_id.txt`
and is the one this project uses everywhere. The **raw** order is the order of data collection,
used by the multi-response (noise-ceiling) triplet files. `sortindex` is a permutation `s` with
`E_sorted = E_raw[s]`; so raw index `i` is sorted index `argsort(s)[i]`. Only 21 objects move, which
is why mixing the orders costs a little accuracy rather than all of it, and is easy to miss.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import pathlib
import re

import numpy as np

from aligned.data.cache import data_path
from aligned.errors import DataError
from aligned.paths import as_path, open_text

N_OBJECTS = 1854


@dataclasses.dataclass(frozen=True)
class ThingsConcepts:
  """The 1,854 THINGS concepts, all arrays in sorted order."""

  ids: tuple[str, ...]  # uniqueID, e.g. "camera1"
  words: tuple[str, ...]  # e.g. "camera"
  definitions: tuple[str, ...]
  wordnet_ids: tuple[str, ...]  # e.g. "n02942699" ("" where THINGS has none)
  category_names: tuple[str, ...]  # the 27 high-level categories of category_mat_manual.tsv
  categories: np.ndarray  # [1854, 27] bool membership (an object may be in none or several)

  def __len__(self) -> int:
    return len(self.ids)

  def index(self, concept_id: str) -> int:
    """Sorted index of a concept id; a KeyError naming the id if it is unknown."""
    try:
      return self._positions[concept_id]
    except KeyError:
      raise KeyError(f"unknown THINGS concept id {concept_id!r}") from None

  @functools.cached_property
  def _positions(self) -> dict[str, int]:
    return {concept_id: i for i, concept_id in enumerate(self.ids)}

  def category_members(self, name: str) -> np.ndarray:
    """Sorted indices of the objects in one high-level category (e.g. "animal")."""
    if name not in self.category_names:
      raise KeyError(f"unknown category {name!r}; known: {', '.join(self.category_names)}")
    return np.flatnonzero(self.categories[:, self.category_names.index(name)])


def _read_lines(path: os.PathLike) -> list[str]:
  with open_text(path, encoding="utf-8") as f:
    return [line.rstrip("\r\n") for line in f]


def load_unique_ids(path: str | os.PathLike | None = None) -> tuple[str, ...]:
  """The 1,854 concept ids in sorted order (`things/unique_id.txt`)."""
  path = path or data_path("things/unique_id.txt")
  ids = tuple(line.strip() for line in _read_lines(path) if line.strip())
  if len(ids) != N_OBJECTS or len(set(ids)) != N_OBJECTS:
    raise DataError(path, f"expected {N_OBJECTS} distinct ids, found {len(set(ids))} in {len(ids)} lines")
  return ids


def load_sortindex(path: str | os.PathLike | None = None) -> np.ndarray:
  """The permutation `s` (raw -> sorted order): `E_sorted = E_raw[s]`."""
  path = path or data_path("things/sortindex")
  values = []
  for row, line in enumerate(_read_lines(path), start=1):
    if not line.strip():
      continue
    try:
      values.append(int(line))
    except ValueError:
      raise DataError(path, f"{line!r} is not an integer", row=row) from None
  s = np.asarray(values, dtype=np.int64)
  if len(s) != N_OBJECTS or not np.array_equal(np.sort(s), np.arange(N_OBJECTS)):
    raise DataError(path, f"not a permutation of 0..{N_OBJECTS - 1} ({len(s)} values)")
  return s


def raw_to_sorted(raw_indices: np.ndarray, sortindex: np.ndarray | None = None) -> np.ndarray:
  """Maps raw-order object indices (0-based) to sorted-order indices."""
  s = load_sortindex() if sortindex is None else sortindex
  return np.argsort(s)[np.asarray(raw_indices)]


def sorted_to_raw(sorted_indices: np.ndarray, sortindex: np.ndarray | None = None) -> np.ndarray:
  """Maps sorted-order object indices to raw-order indices."""
  s = load_sortindex() if sortindex is None else sortindex
  return s[np.asarray(sorted_indices)]


def moved_objects(sortindex: np.ndarray | None = None) -> np.ndarray:
  """Sorted indices of the objects whose position differs between the two orders (21 in THINGS)."""
  s = load_sortindex() if sortindex is None else sortindex
  return np.flatnonzero(s != np.arange(len(s)))


def load_concepts(root: str | os.PathLike | None = None) -> ThingsConcepts:
  """Reads ids, words, definitions, WordNet ids and the 27 categories, all checked to be in sorted order."""
  folder = (lambda rel: as_path(root) / rel) if root else (lambda rel: data_path(rel))
  ids = load_unique_ids(folder("things/unique_id.txt"))

  concepts_path = folder("things/things_concepts.tsv")
  with open_text(concepts_path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t"))
  header, body = rows[0], [r for r in rows[1:] if r]
  columns = {name: i for i, name in enumerate(header)}
  definition_column = next((c for c in header if c.startswith("Definition")), None)
  for needed in ("Word", "uniqueID", "WordNet ID", definition_column):
    if needed not in columns:
      raise DataError(concepts_path, f"missing column {needed!r}", row=1)
  if len(body) != N_OBJECTS:
    raise DataError(concepts_path, f"expected {N_OBJECTS} concept rows, found {len(body)}")
  for row, fields in enumerate(body, start=2):
    if fields[columns["uniqueID"]] != ids[row - 2]:
      raise DataError(
        concepts_path,
        f"uniqueID {fields[columns['uniqueID']]!r} differs from unique_id.txt ({ids[row - 2]!r}): "
        "not in sorted order",
        row=row,
      )

  category_path = folder("things/category_mat_manual.tsv")
  lines = [line for line in _read_lines(category_path) if line.strip()]
  category_names = tuple(lines[0].split("\t"))
  matrix = []
  for row, line in enumerate(lines[1:], start=2):
    fields = line.split("\t")
    if len(fields) != len(category_names) or any(v not in ("0", "1") for v in fields):
      raise DataError(category_path, f"expected {len(category_names)} values of 0 or 1", row=row)
    matrix.append([v == "1" for v in fields])
  categories = np.asarray(matrix, dtype=bool)
  if categories.shape[0] != N_OBJECTS:
    raise DataError(category_path, f"expected {N_OBJECTS} rows, found {categories.shape[0]}")

  return ThingsConcepts(
    ids=ids,
    words=tuple(r[columns["Word"]] for r in body),
    definitions=tuple(r[columns[definition_column]] for r in body),
    wordnet_ids=tuple(r[columns["WordNet ID"]] for r in body),
    category_names=category_names,
    categories=categories,
  )


# -- Images of concepts -----------------------------------------------------------------------------

_IMAGE_NUMBER = re.compile(r"_\d+[a-z]?$")  # "aardvark_01b" -> "aardvark"


def concept_of_image(path: str, ids: tuple[str, ...]) -> str | None:
  """The THINGS concept an image path shows, or None.

  The THINGS image database keeps a concept's images in a folder named by its id
  (`object_images/aardvark/aardvark_01b.jpg`): the nearest parent folder that is a concept id names
  it. Flat folders (one image per concept, as the triplet task's 1,854 images) name it by the file
  stem, the id itself or the id plus an image number (`aardvark_01b.jpg`).
  """
  known = set(ids) if not isinstance(ids, set) else ids
  parts = pathlib.PurePosixPath(str(path).replace("\\", "/")).parts
  for folder in reversed(parts[:-1]):
    if folder in known:
      return folder
  stem = pathlib.PurePosixPath(parts[-1]).stem if parts else ""
  for candidate in (stem, _IMAGE_NUMBER.sub("", stem)):
    if candidate in known:
      return candidate
  return None


def image_concepts(
  paths, ids: tuple[str, ...] | None = None, where: str | os.PathLike = "<images>"
) -> tuple[np.ndarray, np.ndarray]:
  """([n] sorted concept index of each image path, [1854] images per concept).

  Every image must show a concept (`concept_of_image`), no image may come twice (the same file stem
  under the same concept, e.g. as .jpg and .png), and every concept must have an image; otherwise a
  DataError names the first offending path (its row) or the missing concepts.
  """
  ids = load_unique_ids() if ids is None else ids
  position = {concept_id: i for i, concept_id in enumerate(ids)}
  known = set(ids)
  rows = np.empty(len(paths), np.int64)
  seen: dict[tuple[str, str], str] = {}  # (concept, file stem) -> the first path
  for row, path in enumerate(paths):
    concept = concept_of_image(str(path), known)
    if concept is None:
      raise DataError(
        where,
        f"image {str(path)!r} is not of a THINGS concept (expected a folder or file stem named by a "
        "concept id, e.g. aardvark/aardvark_01b.jpg)",
        row=row + 1,
      )
    key = (concept, pathlib.PurePosixPath(str(path).replace("\\", "/")).stem)
    if key in seen:  # the same image twice (another extension, or a copy elsewhere): it would count double
      raise DataError(
        where, f"image {str(path)!r} is {seen[key]!r} again (concept {concept}, image {key[1]})", row=row + 1
      )
    seen[key] = str(path)
    rows[row] = position[concept]
  counts = np.bincount(rows, minlength=len(ids))
  if (counts == 0).any():
    missing = [ids[i] for i in np.flatnonzero(counts == 0)]
    raise DataError(where, f"{len(missing)} THINGS concepts have no image, e.g. {', '.join(missing[:5])}")
  return rows, counts


def one_image_per_concept(
  paths, ids: tuple[str, ...] | None = None, where: str | os.PathLike = "<images>"
) -> np.ndarray:
  """[1854] the position in `paths` of each concept's one image, in sorted THINGS order.

  For a set of exactly one image per concept (the triplet task's images, a student's human
  evaluation): the concept of a path is `concept_of_image`'s, whatever the order of the paths (sorted
  file names are not the sorted THINGS order: `camera_lens` comes before `camera1` there). A DataError
  names an image of no concept (its row), a concept's second image (both files), or the concepts
  without one.
  """
  ids = load_unique_ids() if ids is None else ids
  rows, _ = image_concepts(paths, ids, where)
  order = np.full(len(ids), -1, np.int64)
  for row, concept in enumerate(rows):
    if order[concept] >= 0:
      raise DataError(
        where,
        f"image {str(paths[row])!r} is a second image of concept {ids[concept]} (after "
        f"{str(paths[order[concept]])!r}): one image per concept expected",
        row=row + 1,
      )
    order[concept] = row
  return order


def concept_means(
  paths, embeddings: np.ndarray, ids: tuple[str, ...] | None = None, where: str | os.PathLike = "<images>"
) -> tuple[np.ndarray, np.ndarray]:
  """([1854, d] mean embedding of each concept's images in sorted order, [1854] images per concept);
  the images are checked as in `image_concepts`."""
  if len(paths) != len(embeddings):
    raise DataError(where, f"{len(paths)} image paths but {len(embeddings)} embeddings")
  rows, counts = image_concepts(paths, ids, where)
  sums = np.zeros((len(counts), np.shape(embeddings)[1]))
  np.add.at(sums, rows, np.asarray(embeddings, np.float64))
  return (sums / counts[:, None]).astype(np.float32), counts
