"""Atomic writes of run artifacts: a file appears under its real name only when complete."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aligned.paths import as_path, atomic_path, is_local


def sha256_of(path: str | os.PathLike) -> str:
  """Hex sha256 of a file, read in 1 MiB blocks (manifests, stores and AligNet files record it)."""
  digest = hashlib.sha256()
  with as_path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _jsonable(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON, atomically (numpy scalars and arrays become plain numbers)."""
  with atomic_path(path) as tmp:
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable, allow_nan=False) + "\n")


def save_npz(path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray) -> None:
  """np.savez(_compressed) to `path`, atomically; object arrays are refused (they would need pickle)."""
  for name, array in arrays.items():
    if np.asarray(array).dtype == object:
      raise TypeError(f"array {name!r} has dtype object; it would need pickle to load")
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:  # local: atomic_path's temporary file
      (np.savez_compressed if compressed else np.savez)(f, **arrays)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
  """np.save to `path`, atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:  # local: atomic_path's temporary file
      np.save(f, np.asarray(array), allow_pickle=False)  # local: into that open file


class MetricsLog:
  """`metrics.jsonl`: one JSON object per line (a step, an evaluation), flushed as written.

  A new run truncates the file, so it never mixes the lines of two runs. A resumed run passes
  `keep_until_step`: lines with a `step` up to it are kept (the rest, written after the checkpoint
  it resumes from, are dropped), less those `rewritten(record)` says the resumed run writes again,
  and new lines are appended; `kept` holds the kept records. In a bucket, where objects cannot be
  appended to, the whole file is uploaded again at most every `upload_every_s` seconds and on close.
  """

  def __init__(
    self,
    path: str | os.PathLike,
    keep_until_step: int | None = None,
    upload_every_s: float = 30.0,
    rewritten: Callable[[dict], bool] | None = None,
  ):
    self.path = as_path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    kept, self.kept = [], []
    if keep_until_step is not None and self.path.exists():
      for line in self.path.read_text().splitlines():
        try:
          record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by kill -9
          continue
        if record.get("step", 0) <= keep_until_step and not (rewritten and rewritten(record)):
          kept.append(line + "\n")
          self.kept.append(record)
    self._local = is_local(self.path)
    self._lines, self._upload_every_s, self._uploaded = kept, upload_every_s, time.monotonic()
    self._upload()
    self._file = open(self.path, "a") if self._local else None  # local: appending on a disk

  def _upload(self) -> None:
    with atomic_path(self.path) as tmp:
      tmp.write_text("".join(self._lines))
    self._uploaded = time.monotonic()

  def write(self, record: dict) -> None:
    line = json.dumps(record, default=_jsonable, allow_nan=False) + "\n"
    if self._local:
      self._file.write(line)
      self._file.flush()
    else:
      self._lines.append(line)
      if time.monotonic() - self._uploaded >= self._upload_every_s:
        self._upload()

  def close(self) -> None:
    if self._local:
      self._file.close()
    else:
      self._upload()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
  """Deletes the `.NAME.*.tmp` files that `atomic_path` leaves when a run is killed (kill -9).

  Call it when a resumable job starts in its own folder; returns how many were removed. A bucket
  never has them (uploads are whole or absent).
  """
  if not is_local(folder) or not as_path(folder).is_dir():
    return 0
  stale = [p for p in pathlib.Path(folder).rglob(".*.tmp") if p.is_file()]  # local: checked above
  for path in stale:
    path.unlink(missing_ok=True)
  return len(stale)
