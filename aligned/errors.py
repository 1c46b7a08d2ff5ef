"""The one exception type for bad input: it names the file, the row and what is wrong."""

from __future__ import annotations

import os


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
