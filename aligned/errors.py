"""The one exception type for bad input: it names the file, the row and what is wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping


class DataError(ValueError):
  """Bad input data. `str(e)` reads `FILE, row N: PROBLEM` (rows are 1-based line numbers)."""

  def __init__(self, path: str | os.PathLike | None, problem: str, row: int | None = None):
    self.path = None if path is None else os.fspath(path)
    self.row = row
    self.problem = problem
    where = self.path or "<input>"
    if row is not None:
      where += f", row {row}"
    super().__init__(f"{where}: {problem}")

  def __reduce__(self):  # pickled whole, so a worker process's error arrives with its file and row
    return type(self), (self.path, self.problem, self.row)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_local_paths(config: Mapping | None, workdir: str | os.PathLike | None = None) -> None:
  """Refuses URLs (`gs://...`, `s3://...`) as the workdir or any string setting of a config.

  Paths here are local paths (`pathlib`, `open`): `gs://b/x` would silently become a local folder
  `./gs:/b/x`, and on a pod every host would write its own copy. A bucket must be mounted (e.g.
  gcsfuse) and given by its mount point until the stages read and write through `etils.epath`.
  """
  found = []
  if workdir is not None and _URL.match(os.fspath(workdir)):
    found.append(("workdir", os.fspath(workdir)))

  def walk(node, prefix):
    if isinstance(node, Mapping):
      for key, value in node.items():
        walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple):
      for value in node:
        walk(value, prefix)
    elif isinstance(node, str) and _URL.match(node):
      found.append((prefix, node))

  walk(config or {}, "")
  if found:
    key, value = found[0]
    raise DataError(
      value,
      f"{key} is a URL, but paths must be local: {len(found)} such setting(s); mount the bucket "
      "(e.g. gcsfuse) and give its mount point",
    )
