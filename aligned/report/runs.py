"""The evaluation runs a report gathers: each run's results.json (required) and arrays.npz."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import ml_collections
import numpy as np

from aligned.errors import DataError


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  path: pathlib.Path
  results: dict
  arrays: dict  # from arrays.npz; empty when the run has none


def load_run(path: str | os.PathLike, name: str = "") -> Run:
  """A finished run: its results.json (required) and arrays.npz (optional)."""
  path = pathlib.Path(path)
  results_path = path / "results.json"
  if not results_path.exists():
    raise DataError(results_path, "not found: not a finished run (evaluate writes results.json last)")
  try:
    results = json.loads(results_path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(results_path, f"not valid JSON ({e.msg})", row=e.lineno) from None
  if not isinstance(results, dict):
    raise DataError(results_path, "expected a JSON object")
  arrays = {}
  if (path / "arrays.npz").exists():
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  return Run(name or path.name, path, results, arrays)


def _split(value: str) -> list[str]:
  return [v.strip() for v in str(value).split(",") if v.strip()]


def gather(config: ml_collections.ConfigDict) -> list[Run]:
  paths, names = _split(config.runs), _split(config.names)
  if not paths:
    raise ValueError("set --config.runs to a comma-separated list of run workdirs")
  if names and len(names) != len(paths):
    raise ValueError(f"{len(names)} names for {len(paths)} runs")
  runs = [load_run(p, names[i] if names else "") for i, p in enumerate(paths)]
  seen = [r.name for r in runs]
  if len(set(seen)) != len(seen):
    raise ValueError(f"run names repeat ({', '.join(seen)}); give --config.names")
  return runs
