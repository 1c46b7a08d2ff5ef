"""The Levels human evaluation set (AligNet): odd-one-out choices on ImageNet-train images at three
abstraction levels.

Two CSV files (comma-separated, one header row):

- the **stimulus list** (`levels/triplets_experiment_first_20_participants.csv`): columns `id`
  (participant), `image1`, `image2`, `image3`, `trial` and `triplet_class`;
- the **responses**, in the released jsPsych format of `levels/Variable_codebook_Levels.pdf`: one row
  per event with (among many others) `rt` (milliseconds), `image1Path`, `image2Path`, `image3Path`
  (left, middle, right), `selected_image` (the path chosen as the odd one out), `exp_trial_type` in
  {training_trial, exp_trial, break, catch_trial}, `subject_id`, and `test_part` (`timeout_message`
  when no choice came within 15 s). Only `exp_trial` rows are responses; an `exp_trial` row with an
  empty (or `null`/`NA`) `selected_image` is a timeout, counted and left out. The triplet type comes
  from a `triplet_type` (or `triplet_class`, `level`) column when the file has one, otherwise from the
  stimulus list, matched by the unordered set of the three image file names.

Levels (`triplet_class`): `between_class` = global (coarse), `within_class` = local (fine),
`class_boundary` = two images of one class and one of another.

Images are named by their ImageNet-2012 **train** file name (`n04536866_6609.JPEG`); a model's
embeddings are matched through an id list (an embedding store's ids, which are the file names of
`tfds.data_source("imagenet2012", split="train")`, so row i is train record i).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter

import numpy as np

from aligned.data import embeddings as embeddings_io
from aligned.data.triplets import HumanTriplets, aggregate_responses
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.paths import as_path, open_text

LEVELS = ("between_class", "within_class", "class_boundary")
LEVEL_NAMES = {"between_class": "global", "within_class": "local", "class_boundary": "class boundary"}
TRIAL_TYPES = ("training_trial", "exp_trial", "break", "catch_trial")
RESPONSE_COLUMNS = ("image1Path", "image2Path", "image3Path", "selected_image", "exp_trial_type", "rt")
STIMULUS_COLUMNS = ("id", "image1", "image2", "image3", "trial", "triplet_class")
_LEVEL_COLUMNS = ("triplet_type", "triplet_class", "level")
_NO_CHOICE = ("", "null", "na", "nan", "none", "undefined")


def file_name(path: str) -> str:
  """`stimuli/.../n04536866_6609.JPEG` -> `n04536866_6609.JPEG` (either slash)."""
  return path.strip().replace("\\", "/").rsplit("/", 1)[-1]


def _read_csv(path: str | os.PathLike, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
  with open_text(path, encoding="utf-8-sig", newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise DataError(path, "empty file")
  header = [h.strip() for h in rows[0]]
  missing = [c for c in required if c not in header]
  if missing:
    raise DataError(path, f"missing column(s) {', '.join(missing)}; header is {', '.join(header)}", row=1)
  return header, rows[1:]


def _check_level(path, level: str, row: int) -> str:
  if level not in LEVELS:
    raise DataError(path, f"triplet type {level!r} is not one of {', '.join(LEVELS)}", row=row)
  return level


def _check_triplet(path, files: list[str], row: int) -> None:
  if any(not f for f in files):
    raise DataError(path, "an image path is empty", row=row)
  if len(set(files)) != 3:
    raise DataError(path, f"image repeated inside the triplet {files}", row=row)


# ------------------------------------------------------------------------------------------------
# Stimulus list
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LevelsStimuli:
  """The triplets shown to each participant (no responses)."""

  participants: np.ndarray  # [n] str
  trials: np.ndarray  # [n] int
  files: np.ndarray  # [n, 3] str image file names (left, middle, right)
  levels: np.ndarray  # [n] str, one of LEVELS
  source: str = ""

  def level_of(self) -> dict[frozenset, str]:
    """Unordered set of the three file names -> triplet type."""
    return {frozenset(f): lv for f, lv in zip(self.files.tolist(), self.levels.tolist(), strict=True)}


def read_levels_stimuli(path: str | os.PathLike) -> LevelsStimuli:
  """Reads the stimulus list (`id, image1, image2, image3, trial, triplet_class`)."""
  header, rows = _read_csv(path, STIMULUS_COLUMNS)
  col = {name: header.index(name) for name in STIMULUS_COLUMNS}
  participants, trials, files, levels = [], [], [], []
  seen: dict[frozenset, tuple[str, int]] = {}
  for row, fields in enumerate(rows, start=2):
    if not any(v.strip() for v in fields):
      continue
    if len(fields) != len(header):
      raise DataError(path, f"expected {len(header)} fields, found {len(fields)}", row=row)
    names = [file_name(fields[col[c]]) for c in ("image1", "image2", "image3")]
    _check_triplet(path, names, row)
    level = _check_level(path, fields[col["triplet_class"]].strip(), row)
    try:
      trial = int(fields[col["trial"]])
    except ValueError:
      raise DataError(path, f"trial {fields[col['trial']]!r} is not an integer", row=row) from None
    key = frozenset(names)
    if key in seen and seen[key][0] != level:
      raise DataError(
        path, f"triplet {names} is {level} here but {seen[key][0]} in row {seen[key][1]}", row=row
      )
    seen.setdefault(key, (level, row))
    participants.append(fields[col["id"]].strip())
    trials.append(trial)
    files.append(names)
    levels.append(level)
  if not files:
    raise DataError(path, "no triplets")
  return LevelsStimuli(
    np.asarray(participants), np.asarray(trials), np.asarray(files), np.asarray(levels), os.fspath(path)
  )


# ------------------------------------------------------------------------------------------------
# Responses (codebook format)
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LevelsResponses:
  """The `exp_trial` responses of a Levels response file, one entry per answered trial."""

  participants: np.ndarray  # [m] str ("" when the file has no subject_id column)
  files: np.ndarray  # [m, 3] str image file names (left, middle, right)
  odd_position: np.ndarray  # [m] int, position (0, 1, 2) of the image chosen as the odd one out
  rt: np.ndarray  # [m] float reaction time in ms
  levels: np.ndarray  # [m] str, one of LEVELS
  rows: np.ndarray  # [m] 1-based file line of each response
  n_timeouts: int  # exp_trial rows without a choice
  trial_types: dict  # rows per exp_trial_type (all rows of the file)
  source: str = ""

  def __len__(self) -> int:
    return len(self.odd_position)


def read_levels_responses(path: str | os.PathLike, stimuli: LevelsStimuli | None = None) -> LevelsResponses:
  """Reads a response file in the codebook's format; bad rows raise DataError(path, problem, row).

  Args:
    path: the CSV (see the module docstring for the columns used).
    stimuli: the stimulus list, needed only when the file has no triplet-type column.
  """
  header, rows = _read_csv(path, RESPONSE_COLUMNS)
  col = {name: i for i, name in enumerate(header)}
  level_column = next((c for c in _LEVEL_COLUMNS if c in col), None)
  if level_column is None and stimuli is None:
    raise DataError(
      path, f"no triplet-type column ({', '.join(_LEVEL_COLUMNS)}); give the stimulus list as well", row=1
    )
  level_of = stimuli.level_of() if level_column is None else None
  participants, files, odd, rts, levels, lines = [], [], [], [], [], []
  trial_types: Counter = Counter()
  timeouts = 0
  for row, fields in enumerate(rows, start=2):
    if not any(v.strip() for v in fields):
      continue
    if len(fields) != len(header):
      raise DataError(path, f"expected {len(header)} fields, found {len(fields)}", row=row)
    trial_type = fields[col["exp_trial_type"]].strip()
    if trial_type and trial_type not in TRIAL_TYPES:
      raise DataError(path, f"exp_trial_type {trial_type!r} is not one of {', '.join(TRIAL_TYPES)}", row=row)
    trial_types[trial_type or "(none)"] += 1
    if trial_type != "exp_trial":
      continue
    paths = [fields[col[c]].strip() for c in ("image1Path", "image2Path", "image3Path")]
    names = [file_name(p) for p in paths]
    _check_triplet(path, names, row)
    selected = fields[col["selected_image"]].strip()
    if selected.lower() in _NO_CHOICE:
      timeouts += 1
      continue
    if selected in paths:
      position = paths.index(selected)
    elif file_name(selected) in names:
      position = names.index(file_name(selected))
    else:
      raise DataError(path, f"selected_image {selected!r} is none of the three images", row=row)
    try:
      rt = float(fields[col["rt"]])
    except ValueError:
      raise DataError(path, f"rt {fields[col['rt']]!r} is not a number (milliseconds)", row=row) from None
    if not np.isfinite(rt) or rt < 0:
      raise DataError(path, f"rt {rt} is not a non-negative number of milliseconds", row=row)
    if level_column is not None:
      level = _check_level(path, fields[col[level_column]].strip(), row)
    else:
      level = level_of.get(frozenset(names))
      if level is None:
        raise DataError(path, f"triplet {names} is not in the stimulus list {stimuli.source}", row=row)
    participants.append(fields[col["subject_id"]].strip() if "subject_id" in col else "")
    files.append(names)
    odd.append(position)
    rts.append(rt)
    levels.append(level)
    lines.append(row)
  if not files:
    raise DataError(path, f"no answered exp_trial rows (rows by exp_trial_type: {dict(trial_types)})")
  return LevelsResponses(
    participants=np.asarray(participants),
    files=np.asarray(files),
    odd_position=np.asarray(odd, np.int64),
    rt=np.asarray(rts, np.float64),
    levels=np.asarray(levels),
    rows=np.asarray(lines, np.int64),
    n_timeouts=timeouts,
    trial_types=dict(trial_types),
    source=os.fspath(path),
  )


# ------------------------------------------------------------------------------------------------
# Triplets over a model's images
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LevelsTriplets:
  """Unique Levels triplets as indices into an id list, with per-pair counts, level and mean RT."""

  human: HumanTriplets  # triplets index the id list; counts per pair [01, 02, 12]
  levels: np.ndarray  # [n] str
  mean_rt: np.ndarray  # [n] mean reaction time (ms) of the triplet's responses

  def select(self, mask: np.ndarray) -> LevelsTriplets:
    return LevelsTriplets(self.human.select(mask), self.levels[mask], self.mean_rt[mask])


def index_responses(responses: LevelsResponses, ids, ids_source: str = "<ids>") -> np.ndarray:
  """[m, 3] row of each response's images in `ids` (paths or file names, matched by file name)."""
  position: dict[str, int] = {}
  for i, name in enumerate(ids):
    position.setdefault(file_name(str(name)), i)
  flat = responses.files.reshape(-1)
  found = np.fromiter((position.get(f, -1) for f in flat), np.int64, len(flat)).reshape(-1, 3)
  if (found < 0).any():
    r = int(np.argmax((found < 0).any(axis=1)))
    missing = [f for f, i in zip(responses.files[r], found[r], strict=True) if i < 0]
    raise DataError(
      responses.source,
      f"image {missing[0]} has no embedding in {ids_source} ({int((found < 0).sum())} image references missing)",
      row=int(responses.rows[r]),
    )
  return found


def levels_triplets(responses: LevelsResponses, ids, ids_source: str = "<ids>") -> LevelsTriplets:
  """Groups the responses by unordered triplet (as `aggregate_responses`), with level and mean RT."""
  items = index_responses(responses, ids, ids_source)
  human = aggregate_responses(items, responses.odd_position, source=responses.source)
  n = max(int(items.max()) + 1, 1)

  def encode(rows):
    rows = np.sort(rows, axis=1).astype(np.int64)
    return (rows[:, 0] * n + rows[:, 1]) * n + rows[:, 2]

  unique_keys = encode(human.triplets)
  order = np.argsort(unique_keys)
  which = order[np.searchsorted(unique_keys[order], encode(items))]  # response -> unique triplet
  level_index = np.array([LEVELS.index(level) for level in responses.levels.tolist()], np.int64)
  per_triplet = np.full(len(unique_keys), -1)
  per_triplet[which] = level_index
  conflict = level_index != per_triplet[which]
  if conflict.any():
    r = int(np.argmax(conflict))
    raise DataError(
      responses.source,
      f"triplet {responses.files[r].tolist()} is {responses.levels[r]} here but "
      f"{LEVELS[per_triplet[which[r]]]} elsewhere",
      row=int(responses.rows[r]),
    )
  rt_sum = np.bincount(which, weights=responses.rt, minlength=len(unique_keys))
  rt_count = np.bincount(which, minlength=len(unique_keys))
  return LevelsTriplets(human, np.asarray(LEVELS)[per_triplet], rt_sum / rt_count)


def rt_summary(rt: np.ndarray) -> dict:
  """Reaction-time summary (ms): n, mean, median, 25th and 75th percentiles."""
  rt = np.asarray(rt, np.float64)
  if len(rt) == 0:
    return {"n": 0, "mean": None, "median": None, "q25": None, "q75": None}
  q25, median, q75 = np.percentile(rt, [25, 50, 75])
  return {
    "n": int(len(rt)),
    "mean": float(rt.mean()),
    "median": float(median),
    "q25": float(q25),
    "q75": float(q75),
  }


# ------------------------------------------------------------------------------------------------
# Image embeddings with ids
# ------------------------------------------------------------------------------------------------


def load_image_embeddings(
  path: str | os.PathLike, ids_path: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """(ids [n], embeddings [n, d]) from an embedding store folder, or a .npy/.txt plus an id list.

  The id list is a text file with one image file name (or path) per line, line i naming row i.
  """
  path = as_path(path)
  if path.is_dir():
    ids, values = EmbeddingStore(path).read()
    return np.asarray(ids).astype(str), embeddings_io.validate_embeddings(values, path)
  if not ids_path:
    raise ValueError(f"{path} is not an embedding store: give its id list (one image file name per line)")
  values = embeddings_io.load_embeddings(path)
  ids = [line.strip() for line in as_path(ids_path).read_text().splitlines() if line.strip()]
  if len(ids) != len(values):
    raise DataError(ids_path, f"{len(ids)} ids for the {len(values)} rows of {path}")
  return np.asarray(ids), values
