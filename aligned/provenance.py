"""What a workdir was made from: `WORKDIR/provenance.json`, compared before a rerun reuses anything.

    {"stage": "generate",
     "config": {"n_train": ..., "a.b": ...},       # the settings, flat, less the `volatile` ones and
                                                   # the inputs' paths (compared by content below)
     "inputs": {"teacher": {"path": ..., "sha256": ...}, "store": {...}}}

A stage calls `check_or_record` before it writes anything. The first run records the file; a rerun
with the same settings and inputs returns (the stage resumes from what it left); anything else is a
DataError naming provenance.json and every setting or input that changed (old -> new), so the files
of two runs never mix silently. Inputs are compared by content, not by path (a store moved to a
bucket is the same store): a file by its sha256; an embedding store folder by the sha256 of its
`metadata.json` and of every `shard_*.json` record (which hold the shards' own sha256s), so a store of
hundreds of gigabytes is fingerprinted by reading kilobytes, and soundly, since a shard is used only
when its bytes match its record; any other folder (model weights, a student's checkpoint) by the
sha256 of every file in it. Inputs named in `listed` (an image folder of a million files, a tfds
split) are fingerprinted by their listing instead: every file's relative name and size, not its
bytes; the record says which.

`start_over(workdir, stage, owned)` is what `--config.restart=True` does: it deletes the files and
folders the stage owns (names relative to the workdir) and the record, only in a workdir whose
provenance.json names that stage; a workdir without one, holding any of those files, is refused
rather than emptied.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping

from aligned import artifacts
from aligned.artifacts import sha256_of
from aligned.errors import DataError
from aligned.paths import as_path, files_under

FILE = "provenance.json"


def fingerprint(path: str | os.PathLike, listing: bool = False) -> str:
  """sha256 of a file; of an embedding store folder, of its metadata.json and shard records; of any
  other folder, of every file's relative name and sha256 (`listing=True`: name and size only)."""
  path = as_path(path)
  if not path.is_dir():
    if not path.exists():
      raise DataError(path, "not found")
    return sha256_of(path)
  digest = hashlib.sha256()
  if listing:
    for file in files_under(path):
      digest.update(f"{_relative(file, path)} {file.stat().length}\n".encode())
    return digest.hexdigest()
  if (path / "metadata.json").exists():  # an embedding store: its records hold the shards' sha256s
    files = [
      p
      for p in path.iterdir()
      if p.name == "metadata.json" or (p.name.startswith("shard_") and p.suffix == ".json")
    ]
  else:
    files = files_under(path)
  if not files:
    raise DataError(path, "an empty folder")
  for file in sorted(files, key=lambda p: _relative(p, path)):
    digest.update(f"{_relative(file, path)} {sha256_of(file)}\n".encode())
  return digest.hexdigest()


def _relative(file, root) -> str:
  return os.fspath(file)[len(os.fspath(root)) :].lstrip("/")


def _fingerprints(inputs: Mapping[str, str | os.PathLike], listed: Iterable[str]) -> dict:
  listed = set(listed)
  return {
    name: {"path": os.fspath(p), "sha256": fingerprint(p, listing=name in listed)}
    | ({"of": "listing (names and sizes)"} if name in listed else {})
    for name, p in sorted(inputs.items())
  }


def _flat(config: Mapping, prefix: str = "") -> dict:
  out = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(_flat(value, f"{name}."))
    else:
      out[name] = value
  return out


def _settings(config: Mapping, inputs: Mapping, volatile: Iterable[str]) -> dict:
  """The settings to compare, flat (`a.b` keys): less the volatile ones and less the input paths, which
  are compared by content under `inputs` (a store moved elsewhere is the same store)."""
  config = json.loads(json.dumps(dict(config), default=str))
  drop = set(volatile) | set(inputs)
  return {k: v for k, v in _flat(config).items() if k not in drop}


def _short(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 80 else text[:77] + "..."


def check_or_record(
  workdir: str | os.PathLike,
  stage: str,
  config: Mapping,
  inputs: Mapping[str, str | os.PathLike],
  volatile: Iterable[str] = (),
  listed: Iterable[str] = (),
  write: bool = True,
  remedy: str = "use a new workdir or --config.restart=True",
) -> str:
  """Records provenance.json in a new workdir ("recorded"), or checks a rerun against it ("same").

  `config` is the stage's settings (a dict; nested dicts compared key by key, as `a.b`), `inputs`
  {name: path} of the files or stores it reads (a setting of the same name is compared by content
  only), `volatile` the keys that may change on a resume (e.g. `restart`, a process index), `listed`
  the inputs fingerprinted by their listing (see the module docstring); `write=False` checks without
  recording (every process of a multi-process run checks, process 0 records). Raises
  DataError(provenance.json, ...) naming what changed.
  """
  config = _settings(config, inputs, volatile)
  current = {
    "stage": stage,
    "config": config,
    "inputs": _fingerprints(inputs, listed),
  }
  path = as_path(workdir) / FILE
  if not path.exists():
    if write:
      artifacts.write_json(path, current)
    return "recorded"
  try:
    recorded = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(path, f"not JSON ({e}); use a new workdir") from None
  changes = []
  if recorded.get("stage") != stage:
    raise DataError(
      path, f"this workdir belongs to stage {recorded.get('stage')!r}, not {stage!r}; use a new workdir"
    )
  old, new = _flat(recorded.get("config", {})), _flat(config)
  for key in sorted(set(old) | set(new)):
    if old.get(key, "<unset>") != new.get(key, "<unset>"):
      changes.append(f"{key} {_short(old.get(key, '<unset>'))} -> {_short(new.get(key, '<unset>'))}")
  old_inputs, new_inputs = recorded.get("inputs", {}), current["inputs"]
  for name in sorted(set(old_inputs) | set(new_inputs)):
    before, after = old_inputs.get(name), new_inputs.get(name)
    if (before or {}).get("sha256") != (after or {}).get("sha256"):
      describe = lambda r: "<none>" if r is None else f"{r['path']} (sha256 {r['sha256'][:12]})"  # noqa: E731
      changes.append(f"{name} {describe(before)} -> {describe(after)}")
  if changes:
    raise DataError(
      path,
      "this workdir was made with other settings or inputs: " + "; ".join(changes) + f"; {remedy}",
    )
  return "same"


def record(
  workdir: str | os.PathLike,
  stage: str,
  config: Mapping,
  inputs: Mapping[str, str | os.PathLike],
  volatile: Iterable[str] = (),
  listed: Iterable[str] = (),
) -> None:
  """Writes provenance.json whatever it held: for stages that recompute everything on every run
  (evaluate, transfer, report), it says what the results beside it were made from."""
  config = _settings(config, inputs, volatile)
  artifacts.write_json(
    as_path(workdir) / FILE,
    {
      "stage": stage,
      "config": config,
      "inputs": _fingerprints(inputs, listed),
    },
  )


def start_over(workdir: str | os.PathLike, stage: str, owned: Iterable[str]) -> list[str]:
  """Deletes what `stage` wrote in `workdir` (`owned`: file and folder names relative to it) and its
  provenance.json, so the stage starts over; returns the names deleted. Only in a workdir whose
  provenance.json names `stage`: one without that record but with any owned file is refused."""
  workdir = as_path(workdir)
  record = workdir / FILE
  present = [name for name in owned if (workdir / name).exists()]
  if not record.exists():
    if present:
      raise DataError(
        workdir,
        f"restart: no {FILE} here, so nothing shows that {', '.join(present)} were written by {stage}; "
        "delete them yourself or use a new workdir",
      )
    return []
  try:
    recorded_stage = json.loads(record.read_text()).get("stage")
  except json.JSONDecodeError:
    recorded_stage = None
  if recorded_stage != stage:
    raise DataError(record, f"restart: this workdir belongs to stage {recorded_stage!r}, not {stage!r}")
  for name in present:
    target = workdir / name
    if target.is_dir():
      target.rmtree()
    else:
      target.unlink()
  record.unlink()
  return present
