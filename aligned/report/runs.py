"""The evaluation runs a report gathers: each run's results.json (required) and arrays.npz."""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
from etils import epath

from aligned.errors import DataError
from aligned.paths import as_path, load_npz


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  path: epath.Path
  results: dict
  arrays: dict  # from arrays.npz; empty when the run has none


def load_run(path: str | os.PathLike, name: str = "") -> Run:
  """A finished run: its results.json (required) and arrays.npz (optional)."""
  path = as_path(path)
  results_path = path / "results.json"
  if not results_path.exists():
    raise DataError(results_path, "not found: not a finished run (evaluate writes results.json last)")
  try:
    results = json.loads(results_path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(results_path, f"not valid JSON ({e.msg})", row=e.lineno) from None
  if not isinstance(results, dict):
    raise DataError(results_path, "expected a JSON object")
  arrays = load_npz(path / "arrays.npz") if (path / "arrays.npz").exists() else {}
  return Run(name or path.name, path, results, arrays)


def _split(value: str) -> list[str]:
  return [v.strip() for v in str(value).split(",") if v.strip()]


def _split_keep_empty(value: str) -> list[str]:
  return [v.strip() for v in str(value).split(",")] if str(value).strip() else []


def _with_transfer(run: Run, path: str) -> Run:
  """The run with the `fewshot` and `shift` results of a transfer workdir (`aligned-transfer`)."""
  transfer = load_run(path).results
  merged = {**run.results, **{k: transfer[k] for k in ("fewshot", "shift") if k in transfer}}
  return dataclasses.replace(run, results=merged)


def gather(config: ml_collections.ConfigDict) -> list[Run]:
  """The runs of `config.runs` (comma-separated workdirs), named by `config.names`; `config.transfer`
  (optional, one entry per run, empty for none) adds each run's transfer workdir's results."""
  paths, names = _split(config.runs), _split(config.names)
  if not paths:
    raise ValueError("set --config.runs to a comma-separated list of run workdirs")
  if names and len(names) != len(paths):
    raise ValueError(f"{len(names)} names for {len(paths)} runs")
  runs = [load_run(p, names[i] if names else "") for i, p in enumerate(paths)]
  transfer = _split_keep_empty(config.get("transfer", ""))
  if transfer:
    if len(transfer) != len(runs):
      raise ValueError(
        f"{len(transfer)} transfer workdirs for {len(runs)} runs (leave an entry empty for none)"
      )
    runs = [_with_transfer(run, path) if path else run for run, path in zip(runs, transfer, strict=True)]
  seen = [r.name for r in runs]
  if len(set(seen)) != len(seen):
    raise ValueError(f"run names repeat ({', '.join(seen)}); give --config.names")
  return runs
