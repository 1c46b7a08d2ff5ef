"""Runs a demo given as data: a table of stages, each skipped when done and rerun when it changed.

A `Stage` is a name, a folder, a config, the names of the stages whose outputs it reads, and a
function `fn(config, folder) -> results`. `run_stages` runs the table in order:
- a stage that finished before (its `results.json` exists) with the same config and the same inputs
  is skipped and its results are read back;
- a stage whose config changed, or one of whose inputs changed, starts again from an empty folder
  (its results would be stale). Its inputs are the stages it reads: `stage_config.json` records the
  sha256 of each one's `results.json` when the stage starts, so an upstream stage recomputed in an
  earlier, killed run is noticed too, not only one recomputed in this run;
- an unfinished stage runs again in its folder (the stages themselves resume from what they left);
- `always` stages (cheap, idempotent ones: building a dataset, writing the report) run every time.
After a stage, its `outputs` (paths relative to the workdir) are copied into place, atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import ml_collections
from etils import epath

from aligned import artifacts, paths


@dataclasses.dataclass
class Stage:
  name: str
  folder: str  # relative to the workdir
  config: ml_collections.ConfigDict
  fn: Callable[[ml_collections.ConfigDict, epath.Path], dict]
  deps: tuple[str, ...] = ()
  outputs: dict[str, str] = dataclasses.field(default_factory=dict)  # {from: to}, relative to the workdir
  always: bool = False


@dataclasses.dataclass
class StageRun:
  """What `run_stages` did: every stage's results, its seconds (None when skipped), what ran."""

  results: dict[str, dict] = dataclasses.field(default_factory=dict)
  timings: dict[str, float | None] = dataclasses.field(default_factory=dict)
  ran: set[str] = dataclasses.field(default_factory=set)


def _run_one(stage: Stage, workdir: epath.Path, done: StageRun, folders: dict[str, str], log) -> None:
  folder = workdir / stage.folder
  inputs = {  # what the stage reads: each upstream stage's results, by content
    dep: artifacts.sha256_of(path) if (path := workdir / folders[dep] / "results.json").exists() else None
    for dep in stage.deps
    if dep in folders
  }
  current = {"config": json.loads(json.dumps(stage.config.to_dict())), "inputs": inputs}
  record = folder / "stage_config.json"
  recorded = json.loads(record.read_text()) if record.exists() else None
  changed = recorded is not None and recorded.get("config") != current["config"]
  upstream = sorted(
    d
    for d in stage.deps
    if d in done.ran or (recorded and recorded.get("inputs", {}).get(d) != inputs.get(d))
  )
  if not stage.always and (folder / "results.json").exists() and not changed and not upstream:
    log(f"[{stage.name}] done before: {folder}")
    done.timings[stage.name] = None
    done.results[stage.name] = json.loads((folder / "results.json").read_text())
    return
  if folder.exists() and (changed or upstream) and not stage.always:
    why = "its settings changed" if changed else f"{', '.join(upstream)} recomputed"
    log(f"[{stage.name}] starting again ({why})")
    paths.rmtree(folder)
  folder.mkdir(parents=True, exist_ok=True)
  if not stage.always:
    artifacts.write_json(record, current)
    log(f"[{stage.name}] ...")
  start = time.perf_counter()
  done.results[stage.name] = stage.fn(stage.config, folder)
  done.timings[stage.name] = time.perf_counter() - start
  if not stage.always:
    done.ran.add(stage.name)
    log(f"[{stage.name}] {done.timings[stage.name]:.0f} s")


def run_stages(stages: list[Stage], workdir: str | os.PathLike, log=print) -> StageRun:
  """Runs the table in order (see the module docstring); returns what each stage gave. `workdir` may
  be a local folder or a bucket (`gs://...`)."""
  workdir = paths.absolute(workdir)
  done = StageRun()
  folders = {stage.name: stage.folder for stage in stages}
  for stage in stages:
    _run_one(stage, workdir, done, folders, log)
    for source, target in stage.outputs.items():
      paths.copy_file(workdir / source, workdir / target)
  return done
