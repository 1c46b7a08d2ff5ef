"""Human odd-one-out triplet files, read into one representation.

Two on-disk formats (THINGS conventions):

- `odd_last`: `i j k` per line, whitespace-separated, 0-based object indices in **sorted** order, the
  odd-one-out last (i and j were judged most similar). One response per line (`trainset.txt`,
  `testset*.txt`, `2171trials_humans.txt`). A 1-based file is read with `index_base=1`; unstated,
  the smallest index must be 0 (a 1-based file is refused, not read shifted by one object).
- `things_noise_ceiling`: 5 tab-separated integer columns `obj1 obj2 obj3 choice subject`, objects
  **1-based in raw order**, `choice` in {1, 2, 3} the position of the object chosen as odd-one-out;
  one row per person, so a triplet appears many times.

Both become a `HumanTriplets`: the unique unordered triplets (in order of first appearance), their
items in sorted THINGS order arranged so that the most chosen pair is first (the modal odd-one-out
last; ties go to the earlier pair of the ascending-sorted items), and per-triplet counts of responses
choosing each pair, in pair order [01, 02, 12].
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Literal

import numpy as np

from aligned.data import things
from aligned.errors import DataError
from aligned.odd_one_out import permute_triplets
from aligned.paths import as_path, atomic_path

TripletFormat = Literal["odd_last", "things_noise_ceiling"]
FORMATS = ("odd_last", "things_noise_ceiling")


@dataclasses.dataclass(frozen=True)
class HumanTriplets:
  """Unique triplets with per-pair response counts.

  Attributes:
    triplets: [n, 3] int object indices (sorted THINGS order), modal odd-one-out last.
    counts: [n, 3] int responses choosing pair [01, 02, 12] as most similar; counts[:, 0] is maximal.
    source: the file it was read from.
  """

  triplets: np.ndarray
  counts: np.ndarray
  source: str = ""

  @property
  def n_triplets(self) -> int:
    return len(self.triplets)

  @property
  def n_responses(self) -> int:
    return int(self.counts.sum())

  @property
  def responses_per_triplet(self) -> np.ndarray:
    return self.counts.sum(axis=1)

  @property
  def is_multi_response(self) -> bool:
    """True when some triplet has more than one response (a noise ceiling can be computed)."""
    return bool((self.responses_per_triplet > 1).any())

  def choice_distribution(self) -> np.ndarray:
    """[n, 3] proportion of responses choosing each pair (the human choice distribution)."""
    return self.counts / self.responses_per_triplet[:, None]

  def select(self, mask: np.ndarray) -> HumanTriplets:
    return HumanTriplets(self.triplets[mask], self.counts[mask], self.source)


# ------------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------------


def aggregate_responses(items: np.ndarray, odd_position: np.ndarray, source: str = "") -> HumanTriplets:
  """Groups single responses by unordered triplet and counts the chosen pairs.

  Args:
    items: [m, 3] object indices of each response, any order, distinct within a row.
    odd_position: [m] position (0, 1, 2) in `items` of the object chosen as the odd-one-out.
    source: a name for error messages and provenance.
  """
  items = np.asarray(items, dtype=np.int64)
  odd_item = items[np.arange(len(items)), np.asarray(odd_position)]
  keys = np.sort(items, axis=1)
  # Pair k of the ascending-sorted triple leaves out item 2 - k, so the chosen pair is 2 - (odd pos).
  chosen_pair = 2 - np.argmax(keys == odd_item[:, None], axis=1)

  n = int(keys.max()) + 1 if len(keys) else 1
  if n < 2**21:  # one int64 per triple: much faster than np.unique(axis=0)
    flat = (keys[:, 0] * n + keys[:, 1]) * n + keys[:, 2]
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
  else:
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  # Order unique triplets by first appearance in the file, not by index value.
  order = np.argsort(first, kind="stable")
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  unique_keys = keys[first[order]]
  counts = np.zeros((len(order), 3), dtype=np.int64)
  np.add.at(counts, (rank[inverse], chosen_pair), 1)

  modal = np.argmax(counts, axis=1)
  perm_by_modal = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])  # chosen pair's items first
  triplets, counts = permute_triplets(unique_keys, counts, perm_by_modal[modal])
  return HumanTriplets(triplets.astype(np.int32), counts.astype(np.int32), source)


# ------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IntTable:
  """Rows of an integer text table with the 1-based file line of each row (for error messages)."""

  values: np.ndarray  # [rows, columns] int64
  lines: np.ndarray  # [rows] 1-based line numbers


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_INTEGER_CHARS = _WHITESPACE.copy()
_INTEGER_CHARS[[ord(c) for c in "0123456789+-"]] = True


def read_int_table(path: str | os.PathLike, n_columns: int) -> IntTable:
  """Reads a whitespace/tab-separated integer table; a DataError names the first bad line.

  Vectorised over bytes (a 4.7 M-line file takes 2-3 s here): every line is checked to have
  exactly `n_columns` fields, so a short line followed by a long one cannot re-split silently.
  """
  with as_path(path).open("rb") as f:
    text = f.read().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
  chars = np.frombuffer(text, dtype=np.uint8)
  space = _WHITESPACE[chars]
  field_start = ~space & np.concatenate([[True], space[:-1]])
  line_starts = np.concatenate([[0], np.flatnonzero(chars == ord("\n")) + 1])
  line_starts = line_starts[line_starts < len(chars)]  # no empty last line after the final newline
  fields_per_line = np.add.reduceat(field_start, line_starts, dtype=np.int64) if len(chars) else np.zeros(0)
  data_lines = np.flatnonzero(fields_per_line)
  if len(data_lines) == 0:
    raise DataError(path, "no rows")

  def line_text(i: int) -> str:
    return text.split(b"\n")[i].strip()[:80].decode(errors="replace")

  wrong = fields_per_line[data_lines] != n_columns
  if wrong.any():
    i = int(data_lines[np.argmax(wrong)])
    raise DataError(
      path, f"expected {n_columns} integer columns, found {fields_per_line[i]}: {line_text(i)!r}", row=i + 1
    )
  values = np.fromstring(text, dtype=np.int64, sep=" ") if _INTEGER_CHARS[chars].all() else None
  if values is None or len(values) != len(data_lines) * n_columns:
    lines = text.split(b"\n")
    for i in data_lines:  # slow path, only to name the bad token
      for token in lines[i].split():
        if not re.fullmatch(rb"[+-]?[0-9]+", token):
          raise DataError(path, f"{token.decode(errors='replace')!r} is not an integer", row=int(i) + 1)
    raise DataError(path, "unparseable integer table")
  return IntTable(values.reshape(len(data_lines), n_columns), data_lines + 1)


def _check_distinct(path, items: np.ndarray, lines: np.ndarray) -> None:
  repeated = (items[:, 0] == items[:, 1]) | (items[:, 0] == items[:, 2]) | (items[:, 1] == items[:, 2])
  if repeated.any():
    r = int(np.argmax(repeated))
    raise DataError(path, f"object repeated inside triplet {items[r].tolist()}", row=int(lines[r]))


INDEX_BASES = (None, 0, 1)


def read_odd_last(
  path: str | os.PathLike, n_objects: int = things.N_OBJECTS, index_base: int | None = None
) -> HumanTriplets:
  """Reads an `i j k` file (sorted order, odd-one-out last), 0-based or, with `index_base=1`, 1-based
  (converted to 0-based).

  Left unstated (None), the base is 0 and checked: the file's smallest index must be 0, since a 1-based
  file whose largest index stays below `n_objects` would otherwise be read shifted by one object. A
  0-based file without object 0 (a subset of triplets) states `index_base=0`.
  """
  if index_base not in INDEX_BASES:
    raise ValueError(f"index_base {index_base!r} is not 0 or 1 (or None: 0, checked)")
  base = index_base or 0
  table = read_int_table(path, 3)
  items, lines = table.values, table.lines
  bad = (items < base) | (items >= n_objects + base)
  if bad.any():
    r = int(np.argmax(bad.any(axis=1)))
    hint = ""
    if base == 0 and items.min() >= 1 and items.max() == n_objects:
      hint = (
        f"; the file looks 1-based (indices run {items.min()}..{items.max()}), but odd_last files are "
        "0-based unless index_base=1"
      )
    raise DataError(
      path,
      f"object index {items[r][bad[r]][0]} out of range [{base}, {n_objects + base}){hint}",
      row=int(lines[r]),
    )
  _check_distinct(path, items, lines)
  smallest = int(items.min())
  if index_base is None and smallest == 1:
    raise DataError(
      path,
      "smallest index is 1, not 0: a 1-based file? set index_base=1 (index_base=0 if it is 0-based "
      "and holds no object 0)",
    )
  if index_base is None and smallest > 1:
    raise DataError(
      path,
      f"smallest index is {smallest}, not 0: state the file's base, index_base=0 (0-based, without "
      f"objects 0..{smallest - 1}) or index_base=1",
    )
  return aggregate_responses(items - base, np.full(len(items), 2), source=os.fspath(path))


def read_noise_ceiling_format(
  path: str | os.PathLike,
  n_objects: int = things.N_OBJECTS,
  sortindex: np.ndarray | None = None,
) -> HumanTriplets:
  """Reads `obj1 obj2 obj3 choice subject` rows (1-based raw-order objects, 1-based choice)."""
  table = read_int_table(path, 5)
  objects, choice, lines = table.values[:, :3], table.values[:, 3], table.lines
  if (objects == 0).any():
    r = int(np.argmax((objects == 0).any(axis=1)))
    raise DataError(
      path,
      "object index 0 in a 1-based column: objects of the noise-ceiling format are 1-based "
      "(was a 0-based file given as things_noise_ceiling?)",
      row=int(lines[r]),
    )
  bad = (objects < 1) | (objects > n_objects)
  if bad.any():
    r = int(np.argmax(bad.any(axis=1)))
    raise DataError(
      path,
      f"object index {objects[r][bad[r]][0]} out of range [1, {n_objects}]",
      row=int(lines[r]),
    )
  bad_choice = (choice < 1) | (choice > 3)
  if bad_choice.any():
    r = int(np.argmax(bad_choice))
    raise DataError(
      path,
      f"choice {choice[r]} is not a position 1, 2 or 3 of the odd-one-out",
      row=int(lines[r]),
    )
  _check_distinct(path, objects, lines)
  raw = objects - 1
  if n_objects == things.N_OBJECTS:
    sorted_items = things.raw_to_sorted(raw, sortindex)
  elif sortindex is not None:
    sorted_items = np.argsort(sortindex)[raw]
  else:
    raise ValueError(f"{path}: raw-order objects need a sortindex for a set of {n_objects} objects")
  return aggregate_responses(sorted_items, choice - 1, source=os.fspath(path))


def read_triplets(
  path: str | os.PathLike,
  format: TripletFormat = "odd_last",
  n_objects: int = things.N_OBJECTS,
  sortindex: np.ndarray | None = None,
  index_base: int | None = None,
) -> HumanTriplets:
  """Reads a human triplet file of either format into a `HumanTriplets`. `index_base`: that of an
  `odd_last` file (see `read_odd_last`); the noise-ceiling format is 1-based by definition (None or 1)."""
  if format == "odd_last":
    return read_odd_last(path, n_objects, index_base)
  if format == "things_noise_ceiling":
    if index_base not in (None, 1):
      raise ValueError(f"index_base {index_base!r}: things_noise_ceiling files are 1-based by definition")
    return read_noise_ceiling_format(path, n_objects, sortindex)
  raise ValueError(f"unknown triplet format {format!r}; expected one of {FORMATS}")


def write_odd_last(path: str | os.PathLike, triplets: np.ndarray) -> None:
  """Writes `i j k` lines (0-based, odd-one-out last), atomically."""
  with atomic_path(path) as tmp:
    np.savetxt(tmp, np.asarray(triplets, dtype=np.int64), fmt="%d")
