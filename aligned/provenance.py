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
when its bytes match its record.

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
from aligned.paths import as_path

FILE = "provenance.json"


def fingerprint(path: str | os.PathLike) -> str:
  """sha256 of a file; of an embedding store folder, the sha256 of its metadata.json and shard records."""
  path = as_path(path)
  if not path.is_dir():
    if not path.exists():
      raise DataError(path, "not found")
    return sha256_of(path)
  records = sorted(
    (
      p
      for p in path.iterdir()
      if p.name == "metadata.json" or (p.name.startswith("shard_") and p.suffix == ".json")
    ),
    key=lambda p: p.name,
  )
  if not any(p.name == "metadata.json" for p in records):
    raise DataError(path, "a folder without metadata.json: not an embedding store")
  digest = hashlib.sha256()
  for record in records:
    digest.update(f"{record.name} {sha256_of(record)}\n".encode())
  return digest.hexdigest()


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
) -> str:
  """Records provenance.json in a new workdir ("recorded"), or checks a rerun against it ("same").

  `config` is the stage's settings (a dict; nested dicts compared key by key, as `a.b`), `inputs`
  {name: path} of the files or stores it reads (a setting of the same name is compared by content
  only), `volatile` the keys that may change on a resume (e.g. `restart`, a process index). Raises
  DataError(provenance.json, ...) naming what changed.
  """
  config = _settings(config, inputs, volatile)
  current = {
    "stage": stage,
    "config": config,
    "inputs": {name: {"path": os.fspath(p), "sha256": fingerprint(p)} for name, p in sorted(inputs.items())},
  }
  path = as_path(workdir) / FILE
  if not path.exists():
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
      "this workdir was made with other settings or inputs: "
      + "; ".join(changes)
      + "; use a new workdir or --config.restart=True",
    )
  return "same"


def record(
  workdir: str | os.PathLike,
  stage: str,
  config: Mapping,
  inputs: Mapping[str, str | os.PathLike],
  volatile: Iterable[str] = (),
) -> None:
  """Writes provenance.json whatever it held: for stages that recompute everything on every run
  (evaluate, transfer, report), it says what the results beside it were made from."""
  config = _settings(config, inputs, volatile)
  artifacts.write_json(
    as_path(workdir) / FILE,
    {
      "stage": stage,
      "config": config,
      "inputs": {
        name: {"path": os.fspath(p), "sha256": fingerprint(p)} for name, p in sorted(inputs.items())
      },
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
