"""Two runs' workdirs compared file by file: which outputs are bit-identical, and how far the rest are.

  python -m benchmarks.compare_workdirs runs/demo_a runs/demo_b [--all]

For each file present in both (logs, locks and checkpoints' temporary files left out): identical by
sha256, or the largest absolute difference over its arrays (`.npy`, `.npz`; an orbax checkpoint
folder by its parameters at the latest step, since its files hold timestamps) or over the numbers of
a JSON file (text files with the workdir's own path replaced; keys that hold times left out: `*_s`,
`seconds`, `wall`, `timings`, `time`, `elapsed`). Prints one line per file (identical ones only with
`--all`) and a summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import jax
import numpy as np

from aligned.artifacts import sha256_of
from aligned.backbones.student import restore_params

SKIPPED = (".aligned.lock", ".log", ".png", ".tmp")
TEXT = (".json", ".jsonl", ".md", ".csv", ".txt", ".tsv")
TIME_KEYS = ("seconds", "wall", "timings", "time", "elapsed", "steps_per_s", "items_per_s")


def _is_time(key: str) -> bool:
  return key.endswith("_s") or any(t in key for t in TIME_KEYS)


def _strip(tree):
  """A JSON tree less its time-valued keys."""
  if isinstance(tree, dict):
    return {k: _strip(v) for k, v in tree.items() if not _is_time(str(k))}
  if isinstance(tree, list):
    return [_strip(v) for v in tree]
  return tree


def _numbers(tree, prefix=""):
  """{path: number} of every number in a JSON tree."""
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items() for k, v in _numbers(value, f"{prefix}/{key}").items()}
  if isinstance(tree, list):
    return {k: v for i, value in enumerate(tree) for k, v in _numbers(value, f"{prefix}[{i}]").items()}
  if isinstance(tree, bool) or not isinstance(tree, int | float):
    return {}
  return {prefix: float(tree)}


def _skeleton(tree):
  """A JSON tree with every number replaced by 0 (what must match for numbers to be compared)."""
  if isinstance(tree, dict):
    return {k: _skeleton(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return [_skeleton(v) for v in tree]
  return 0 if isinstance(tree, int | float) and not isinstance(tree, bool) else tree


def _json(text: str):
  """A JSON file, or a JSON-lines file as a list."""
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _json_difference(x: str, y: str) -> float | None:
  """Largest absolute difference over the numbers of two JSON texts, time-valued keys left out (0.0:
  equal but for them; None: text or structure differs)."""
  try:
    x, y = _strip(_json(x)), _strip(_json(y))
  except json.JSONDecodeError:
    return None
  if x == y:
    return 0.0
  nx, ny = _numbers(x), _numbers(y)
  if nx.keys() != ny.keys() or _skeleton(x) != _skeleton(y):  # text or structure differs
    return None
  gaps = [abs(nx[k] - ny[k]) for k in nx if not (math.isnan(nx[k]) and math.isnan(ny[k]))]
  return max(gaps, default=0.0)


def _arrays(path: Path) -> dict[str, np.ndarray] | None:
  try:
    if path.suffix == ".npy":
      return {"": np.load(path, allow_pickle=False)}
    if path.suffix == ".npz":
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
  except ValueError:
    return None
  return None


def _array_difference(a: Path, b: Path) -> float | None:
  x, y = _arrays(a), _arrays(b)
  if x is None or y is None or x.keys() != y.keys():
    return None
  gaps = []
  for k in x:
    if x[k].shape != y[k].shape or x[k].dtype != y[k].dtype:
      return None
    if np.issubdtype(x[k].dtype, np.number):
      gaps.append(float(np.max(np.abs(x[k].astype(np.float64) - y[k].astype(np.float64)), initial=0.0)))
    elif not np.array_equal(x[k], y[k]):
      return None
  return max(gaps, default=0.0)


def _difference(a: Path, b: Path, root_a: Path, root_b: Path) -> float | None:
  """0.0: the same but for times and the workdir's own path; else the largest absolute difference
  of the numbers, or None when the files differ otherwise."""
  if a.suffix in TEXT:
    x = a.read_text(errors="replace").replace(str(root_a), "WORKDIR")
    y = b.read_text(errors="replace").replace(str(root_b), "WORKDIR")
    if x == y:
      return 0.0
    return _json_difference(x, y) if a.suffix in (".json", ".jsonl") else None
  return _array_difference(a, b)


def _params_difference(a: Path, b: Path) -> float | None:
  """Largest absolute difference of two runs' parameters at their last common checkpoint."""
  steps = [{int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()} for run in (a, b)]
  common = steps[0] & steps[1]
  if not common:
    return None
  x, y = restore_params(a, max(common)), restore_params(b, max(common))
  if jax.tree.structure(x) != jax.tree.structure(y):
    return None
  gaps = jax.tree.leaves(jax.tree.map(lambda u, v: float(np.max(np.abs(u - v), initial=0.0)), x, y))
  return max(gaps, default=0.0)


def compare(a: str | Path, b: str | Path) -> list[dict]:
  """One row per file under `a` that `b` has too: path, identical (byte for byte, or for text files
  but for times and the workdir's path), max_abs_difference (None when identical, or when the files
  differ in a way that has no number: text, structure, shapes)."""
  a, b = Path(a).resolve(), Path(b).resolve()
  rows, checkpoints = [], set()
  for path in sorted(p for p in a.rglob("*") if p.is_file()):
    relative = path.relative_to(a)
    other = b / relative
    if any(str(relative).endswith(s) for s in SKIPPED) or not other.is_file():
      continue
    if "checkpoints" in relative.parts:  # orbax files hold timestamps: the parameters are compared
      run = Path(*relative.parts[: relative.parts.index("checkpoints")])
      if relative.name == "_CHECKPOINT_METADATA" and run not in checkpoints:
        checkpoints.add(run)
        gap = _params_difference(a / run, b / run)
        rows.append(
          {"path": str(run / "checkpoints (parameters)"), "identical": gap == 0.0, "max_abs_difference": gap}
        )
      continue
    gap = 0.0 if sha256_of(path) == sha256_of(other) else _difference(path, other, a, b)
    identical = gap == 0.0
    rows.append(
      {"path": str(relative), "identical": identical, "max_abs_difference": None if identical else gap}
    )
  return rows


def format_rows(rows: list[dict], everything: bool = False) -> str:
  lines = []
  for row in rows:
    if row["identical"] and not everything:
      continue
    gap = row["max_abs_difference"]
    what = "identical" if row["identical"] else ("differs" if gap is None else f"max |a - b| {gap:.3g}")
    lines.append(f"{row['path']}: {what}")
  same = sum(row["identical"] for row in rows)
  lines.append(f"{same} of {len(rows)} files identical")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("a")
  parser.add_argument("b")
  parser.add_argument("--all", action="store_true", help="list the identical files too")
  args = parser.parse_args(argv)
  print(format_rows(compare(args.a, args.b), args.all))
  return 0


if __name__ == "__main__":
  sys.exit(main())
