"""Fault tests at real settings: kill -9 at random points, rerun, compare with an uninterrupted run.

  python -m benchmarks.faults --stage student|teacher|generate|demo|all --kills 10 --seed 0 \
      [--workdir DIR] [--chain 1] [--by time|progress] [--keep]

For each stage: one uninterrupted reference run (its wall time T from launch to exit, and L, when its
workdir lock appeared: before that the command has not touched its workdir, a kill tests nothing), then
`--kills` trials. A trial launches the stage's command in a fresh workdir and SIGKILLs its whole process
group after a delay drawn uniformly from (L, T) (numpy `default_rng([seed, stage])`, drawn before any
trial, so a seed gives the same delays anywhere; `--chain K` kills K successive launches of the same
workdir, each at its own delay); then it reruns the same command to completion and compares the final
outputs with the reference. A launch that ends before its delay is not killed (the tally says
"finished"): on a loaded machine a launch can run faster than the reference. `--by progress` draws
kill points from the stage's own progress instead, so every kill lands inside the work whatever the
load: the student's at a training step (uniform over 10, 20, ..., steps - 10, killed once metrics.jsonl
logs it), the teacher's after k metrics lines (k uniform below the reference's count: CV folds, the
fit), generation's after k complete files (k uniform below the count; 0: after k-means); the demo's
stay random times. Where a kill landed
is read from the workdir right after it (checkpoints, files, the stage being run).

Stages (the smallest configs of each command, at the settings that matter):
  student   `experiments.finetune` smoke variant with the release's settings: asynchronous orbax
            checkpoints, decay to init 1.0, bfloat16 compute; 600 steps, a checkpoint every 50.
            Compared: every parameter of the last checkpoint (`restore_params`), the final evaluation
            and every line of metrics.jsonl (training logs and evaluations).
  teacher   `experiments.teacher` smoke variant on distorted SPoSE embeddings (32-d). Compared: every
            array of transform.npz and the numbers of results.json.
  generate  `experiments.generate` smoke variant on a 1,600-item store, 120 k triplets in 4,096-triplet
            chunks. Compared: sha256 of every output file (JSON files by their values).
  demo      `experiments.demo --config=demo:images`, shrunk as tests/test_demo.py shrinks it (every stage:
            shapes, extract, teacher, generate, two students, embeddings, evaluate, transfer, report).
            Compared: the numbers of results.json and results.csv, and both students' parameters.

Every comparison is bit-for-bit (tolerance 0): numbers are compared as read, timings and paths left
out. Each rerun must exit 0, and where the kill left the workdir lock (`.aligned.lock`, the dead pid),
must say it took over that pid's lock and leave no lock behind. Prints one tally table per stage
(kills, where they landed, reruns that ended OK, outputs identical, max |difference|, wall times) and
exits 1 if any rerun failed, differed, or did not take over a stale lock.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from aligned import artifacts
from aligned.backbones.student import restore_params
from aligned.data.cache import data_dir
from aligned.embedding_store import EmbeddingStore

REPO = Path(__file__).resolve().parent.parent
STAGES = ("student", "teacher", "generate", "demo")
LOCK = ".aligned.lock"
TAKEOVER = "taking over a stale lock from pid {pid} "
_VOLATILE = re.compile(r"per_s|seconds|timing|_time|time_|wall|resumed_from|started|elapsed|duration")


def _env() -> dict:
  flags = "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false"
  return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


# -- what a stage is -------------------------------------------------------------------------------


@dataclasses.dataclass
class StageSpec:
  name: str
  prepare: Callable[[Path], None]  # writes the inputs under root/inputs (once)
  command: Callable[[Path, Path], list[str]]  # (root, workdir) -> argv
  fingerprint: Callable[[Path], dict]  # workdir -> {name: array or value}, the outputs compared
  landed: Callable[[Path, str], str]  # (workdir, the killed launch's output) -> where the kill landed
  resumed: Callable[[Path, str], str] = lambda workdir, output: ""  # what the rerun reused, in words
  # --by progress: (generator, the reference's workdir) -> a random kill condition (workdir, log) -> bool
  progress: Callable[[np.random.Generator, Path], Callable[[Path, Path], bool]] | None = None
  tolerance: float = 0.0
  timeout_s: float = 900.0


def _python(module: str, *args: str) -> list[str]:
  return [sys.executable, "-m", module, *args]


def json_numbers(path: Path, workdir: Path) -> dict:
  """The leaves of a JSON file by key path, timings and the like left out, the workdir's path written
  as W (reruns run in other folders)."""
  out = {}

  def walk(value, key):
    if isinstance(value, dict):
      for k, v in value.items():
        if not _VOLATILE.search(str(k)):
          walk(v, f"{key}/{k}")
    elif isinstance(value, list):
      for i, v in enumerate(value):
        walk(v, f"{key}[{i}]")
    elif isinstance(value, str):
      out[key] = value.replace(str(workdir), "W")
    else:
      out[key] = value

  walk(json.loads(path.read_text()), path.name)
  return out


def sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


# student ------------------------------------------------------------------------------------------


# The smoke variant's 100 steps take 3 s of a 30 s run (start-up and compilation take the rest): 600 steps
# and a checkpoint every 50 put most kill points inside training.
STUDENT_STEPS, STUDENT_EVERY = 600, 50


def _student_command(root: Path, workdir: Path) -> list[str]:
  return _python(
    "experiments.finetune",
    "--config=configs/finetune.py:smoke",
    f"--workdir={workdir}",
    "--config.optimizer.decay_to_init=1.0",
    "--config.checkpointing.use_async=True",
    "--config.dtype=bfloat16",
    f"--config.steps={STUDENT_STEPS}",
    f"--config.checkpointing.every={STUDENT_EVERY}",
  )


def _student_fingerprint(workdir: Path) -> dict:
  params = restore_params(workdir)
  out = {
    f"params{jax.tree_util.keystr(k)}": np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)
  }
  # results.json's final evaluation; its `evaluations` list only those of the last launch (a resumed run
  # lacks the ones before the kill), so every evaluation and training log line comes from metrics.jsonl
  numbers = json_numbers(workdir / "results.json", workdir)
  out.update({k: v for k, v in numbers.items() if k.startswith("results.json/final")})
  for i, line in enumerate((workdir / "metrics.jsonl").read_text().splitlines()):
    out.update({f"metrics.jsonl[{i}]/{k}": v for k, v in json.loads(line).items() if not _VOLATILE.search(k)})
  return out


def _steps(folder: Path) -> list[int]:
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _student_landed(workdir: Path, output: str) -> str:
  if (workdir / "results.json").exists():
    return "after the end"
  saved = _steps(workdir / "checkpoints")
  if saved:
    return f"after checkpoint {saved[-1]}"
  return "before the first checkpoint" if (workdir / "config.json").exists() else "at start-up"


def _student_at_step(rng: np.random.Generator, reference: Path) -> Callable[[Path, Path], bool]:
  """Kill once metrics.jsonl logs a training step drawn uniformly from 10, 20, ..., steps - 10."""
  target = int(rng.integers(1, STUDENT_STEPS // 10)) * 10

  def reached(workdir: Path, log: Path) -> bool:
    metrics = workdir / "metrics.jsonl"
    return metrics.exists() and f'{{"step": {target}, "accuracy"' in metrics.read_text()

  return reached


def _student_resumed(workdir: Path, output: str) -> str:
  step = json.loads((workdir / "results.json").read_text()).get("resumed_from_step", 0)
  return f"from step {step}" if step else "from scratch"


# teacher ------------------------------------------------------------------------------------------


def _teacher_prepare(inputs: Path) -> None:
  spose = np.loadtxt(data_dir() / "things" / "spose_embedding_49d_sorted.txt")
  distortion = np.random.default_rng(0).normal(size=(49, 32)) * np.linspace(0.1, 2.0, 32)
  np.save(inputs / "distorted.npy", (spose @ distortion).astype(np.float32))


def _teacher_command(root: Path, workdir: Path) -> list[str]:
  return _python(
    "experiments.teacher",
    "--config=configs/teacher.py:smoke",
    f"--config.embeddings={root / 'inputs' / 'distorted.npy'}",
    f"--workdir={workdir}",
  )


def _teacher_fingerprint(workdir: Path) -> dict:
  with np.load(workdir / "transform.npz") as z:
    out = {f"transform.npz/{k}": np.asarray(z[k]) for k in z.files}
  out.update(json_numbers(workdir / "results.json", workdir))
  return out


def _teacher_at_line(rng: np.random.Generator, reference: Path) -> Callable[[Path, Path], bool]:
  """Kill once metrics.jsonl has k lines, k uniform over 1 .. the reference's count - 1 (CV, fit)."""
  target = int(rng.integers(1, len((reference / "metrics.jsonl").read_text().splitlines())))

  def reached(workdir: Path, log: Path) -> bool:
    metrics = workdir / "metrics.jsonl"
    return metrics.exists() and metrics.read_text().count("\n") >= target

  return reached


def _teacher_landed(workdir: Path, output: str) -> str:
  if (workdir / "results.json").exists():
    return "after the end"
  if (workdir / "transform.npz").exists():
    return "after transform.npz"
  metrics = workdir / "metrics.jsonl"
  events = []
  if metrics.exists():
    for line in metrics.read_text().splitlines():
      try:
        events.append(json.loads(line).get("event"))
      except json.JSONDecodeError:  # the line being written when the kill came
        pass
  if "fit" in events or "final" in events:
    return "in the final fit"
  if "cv" in events:
    return "in cross-validation"
  return "before any fit" if (workdir / "config.json").exists() else "at start-up"


# generate -----------------------------------------------------------------------------------------

_GENERATE_CLASSES, _GENERATE_PER_CLASS, _GENERATE_DIM = 4, 400, 32


def _generate_prepare(inputs: Path) -> None:
  rng = np.random.default_rng(0)
  c, per, dim = _GENERATE_CLASSES, _GENERATE_PER_CLASS, _GENERATE_DIM
  ids = np.array([f"n{k:08d}_{i}.JPEG" for k in range(c) for i in range(per)])
  x = (
    rng.normal(size=(c, dim))[np.repeat(np.arange(c), per)] + 0.5 * rng.normal(size=(c * per, dim))
  ).astype(np.float32)
  store = EmbeddingStore(inputs / "store")
  store.open(
    {
      "backbone": "test",
      "dtype": "float32",
      "dim": dim,
      "n_items": c * per,
      "shard_size": 64,
      "source": "test",
    }
  )
  for k in range(store.n_shards):
    store.write_shard(k, ids[64 * k : 64 * k + 64], x[64 * k : 64 * k + 64])
  artifacts.save_npz(
    inputs / "transform.npz",
    weights=rng.normal(size=(dim, dim)).astype(np.float32),
    bias=np.zeros(dim, np.float32),
    mean=np.float32(0.1),
    std=np.float32(2.0),
    temperature=np.float32(0.5),
    base_temperature=np.float32(0.8),
    similarity=np.asarray("dot"),
  )


def _generate_command(root: Path, workdir: Path) -> list[str]:
  return _python(
    "experiments.generate",
    "--config=configs/generate.py:smoke",
    f"--config.store={root / 'inputs' / 'store'}",
    f"--config.teacher={root / 'inputs' / 'transform.npz'}",
    "--config.n_train=120000",
    "--config.chunk=4096",
    f"--workdir={workdir}",
  )


def _generate_fingerprint(workdir: Path) -> dict:
  files = sorted(p for p in workdir.rglob("*") if p.is_file() and not p.name.startswith("."))
  out = {}
  for path in files:
    relative = str(path.relative_to(workdir))
    if path.suffix == ".json":
      out.update({f"{relative}:{k}": v for k, v in json_numbers(path, workdir).items()})
    else:
      out[relative] = sha256(path)
  return out


def _generate_at_file(rng: np.random.Generator, reference: Path) -> Callable[[Path, Path], bool]:
  """Kill once k files are complete (0: once k-means is saved), k uniform over 0 .. files - 1."""
  target = int(rng.integers(0, len(json.loads((reference / "manifest.json").read_text())["files"])))

  def reached(workdir: Path, log: Path) -> bool:
    if target == 0:
      return (workdir / "clusters").is_dir() and any((workdir / "clusters").glob("*.npz"))
    manifest = workdir / "manifest.json"
    try:
      return manifest.exists() and len(json.loads(manifest.read_text())["files"]) >= target
    except json.JSONDecodeError:  # being replaced (atomic on a disk: not expected)
      return False

  return reached


def _generate_landed(workdir: Path, output: str) -> str:
  manifest = workdir / "manifest.json"
  if manifest.exists():
    data = json.loads(manifest.read_text())
    if data.get("complete") or (workdir / "results.json").exists():
      return "after the end"
    return f"after {len(data.get('files', []))} files"
  if list((workdir / "clusters").glob("*.npz")) if (workdir / "clusters").is_dir() else []:
    return "after k-means"
  return "before k-means" if (workdir / "config.json").exists() else "at start-up"


# demo ---------------------------------------------------------------------------------------------

DEMO_OVERRIDES = (  # tests/test_demo.py's shrunk image demo
  "--config.shapes.n_per_class=8",
  "--config.shapes.n_val_per_class=1",
  "--config.shapes.image_size=32",
  "--config.n_teacher_triplets=3000",
  "--config.n_eval_triplets=300",
  "--config.n_levels_triplets=40",
  "--config.teacher.steps=100",
  "--config.teacher.lambdas=(0.01,)",
  "--config.generate.n_train=600",
  "--config.generate.n_val=64",
  "--config.generate.samplings=('cluster_border_4','class_border')",
  "--config.student.steps=12",
  "--config.student.batch_size=16",
  "--config.student.optimizer.warmup_steps=2",
  "--config.student.checkpointing.every=6",
  "--config.student.eval.every=0",
  "--config.student.log_every=6",
  "--config.evaluate.bootstrap=20",
  "--config.evaluate.uncertainty_folds=2",
  "--config.transfer.shots=(1,2)",
  "--config.transfer.seeds=(0,)",
  "--config.transfer.methods=('ridge',)",
)


def _demo_command(root: Path, workdir: Path) -> list[str]:
  return _python("experiments.demo", "--config=demo:images", *DEMO_OVERRIDES, f"--workdir={workdir}")


def _demo_fingerprint(workdir: Path) -> dict:
  out = json_numbers(workdir / "results.json", workdir)
  for student in ("alignet_student", "unalignet_student"):
    params = restore_params(workdir / student)
    out.update(
      {
        f"{student}{jax.tree_util.keystr(k)}": np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(params)
      }
    )
  with open(workdir / "results.csv", newline="") as f:
    for i, row in enumerate(csv.DictReader(f)):
      for k, v in row.items():
        if not _VOLATILE.search(k):
          out[f"results.csv[{i}]/{k}"] = v
  return out


def _demo_landed(workdir: Path, output: str) -> str:
  if (workdir / "results.json").exists():
    return "after the end"
  started = re.findall(r"^\[([^\]]+)\] \.\.\.$", output, re.MULTILINE)
  return f"in {started[-1]}" if started else "before the first stage"


def _demo_resumed(workdir: Path, output: str) -> str:
  skipped = len(re.findall(r"^\[[^\]]+\] done before", output, re.MULTILINE))
  return f"{skipped} stages skipped"


SPECS = {
  "student": StageSpec(
    "student",
    lambda inputs: None,
    _student_command,
    _student_fingerprint,
    _student_landed,
    _student_resumed,
    progress=_student_at_step,
  ),
  "teacher": StageSpec(
    "teacher",
    _teacher_prepare,
    _teacher_command,
    _teacher_fingerprint,
    _teacher_landed,
    progress=_teacher_at_line,
  ),
  "generate": StageSpec(
    "generate",
    _generate_prepare,
    _generate_command,
    _generate_fingerprint,
    _generate_landed,
    progress=_generate_at_file,
  ),
  "demo": StageSpec(
    "demo", lambda inputs: None, _demo_command, _demo_fingerprint, _demo_landed, _demo_resumed, timeout_s=1800
  ),
}


# -- running, killing, comparing -------------------------------------------------------------------


@dataclasses.dataclass
class Launch:
  returncode: int | None  # None: killed
  seconds: float
  output: str
  killed_pid: int | None = None  # the pid SIGKILLed
  lock_pid: int | None = None  # the pid the workdir lock named right after the kill (None: no lock)
  landed: str = ""
  locked_at: float | None = None  # seconds from launch to the workdir lock's appearance (a fresh workdir)


def launch(
  spec: StageSpec,
  root: Path,
  workdir: Path,
  kill_after: float | None = None,
  kill_when: Callable[[Path, Path], bool] | None = None,
  extra: tuple[str, ...] = (),
) -> Launch:
  """Runs the stage's command (+ `extra` arguments) on `workdir` to completion, or SIGKILLs its process
  group after `kill_after` seconds or once `kill_when(workdir, log file)` is true (if it is still
  running then). Records when the workdir lock first appeared."""
  log = root / "logs" / f"{workdir.name}.{time.time_ns()}.log"
  log.parent.mkdir(parents=True, exist_ok=True)
  lock = workdir / LOCK
  had_lock = lock.exists()
  limit = spec.timeout_s if kill_after is None else kill_after
  planned = kill_after is not None or kill_when is not None
  locked_at = None
  start = time.perf_counter()
  with open(log, "w") as out:
    process = subprocess.Popen(
      [*spec.command(root, workdir), *extra],
      cwd=REPO,
      env=_env(),
      stdout=out,
      stderr=subprocess.STDOUT,
      start_new_session=True,
    )
    while process.poll() is None and time.perf_counter() - start < limit:
      if locked_at is None and not had_lock and lock.exists():
        locked_at = time.perf_counter() - start
      if kill_when is not None and kill_when(workdir, log):
        break
      time.sleep(0.01)
    killed = process.poll() is None
    if killed:
      os.killpg(process.pid, signal.SIGKILL)  # the command and anything it started
      process.wait()
      if not planned:
        raise AssertionError(f"{spec.name}: timed out after {spec.timeout_s} s; log {log}")
  result = Launch(None if killed else process.returncode, time.perf_counter() - start, log.read_text())
  result.locked_at = locked_at
  if killed:
    result.killed_pid = process.pid
    if lock.exists():
      try:
        result.lock_pid = int(json.loads(lock.read_text())["pid"])
      except (ValueError, KeyError, json.JSONDecodeError):
        result.lock_pid = -1  # a lock file being written when the kill came
    result.landed = spec.landed(workdir, result.output)
  else:
    result.landed = "finished"
  return result


def compare(reference: dict, other: dict, tolerance: float = 0.0) -> tuple[bool, float, list[str]]:
  """(identical within tolerance, max |difference| over numeric arrays and numbers, names that differ)."""
  differ, worst = [], 0.0
  for key in sorted(set(reference) | set(other)):
    if key not in reference or key not in other:
      differ.append(f"{key} (only in {'the rerun' if key in other else 'the reference'})")
      continue
    a, b = reference[key], other[key]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
      a, b = np.asarray(a), np.asarray(b)
      if a.shape != b.shape or a.dtype != b.dtype:
        differ.append(f"{key} (shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype})")
        continue
      if np.issubdtype(a.dtype, np.number):
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
        worst = max(worst, diff if math.isfinite(diff) else math.inf)
        same = np.array_equal(a, b, equal_nan=True) or diff <= tolerance
      else:
        same = np.array_equal(a, b)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
      diff = abs(float(a) - float(b)) if a != b else 0.0
      worst = max(worst, diff if math.isfinite(diff) else 0.0)
      same = a == b or (math.isnan(a) and math.isnan(b)) or diff <= tolerance
    else:
      same = a == b
    if not same:
      differ.append(key)
  return not differ, worst, differ


@dataclasses.dataclass
class Trial:
  kills: list[Launch]
  rerun: Launch
  identical: bool
  max_diff: float
  differ: list[str]
  lock_ok: bool
  note: str = ""
  resumed: str = ""

  @property
  def ok(self) -> bool:
    return self.rerun.returncode == 0 and self.identical and self.lock_ok


def run_trial(
  spec: StageSpec, root: Path, workdir: Path, points: list, reference: dict, extra: tuple[str, ...] = ()
) -> Trial:
  """Kills successive launches on `workdir` at each of `points` (seconds after launch, or a condition
  `(workdir, log file) -> bool`), then reruns the command to completion and compares its outputs with
  `reference` (a fingerprint)."""
  kills, lock_ok, notes = [], True, []
  for point in points:
    before = kills[-1].lock_pid if kills else None
    if callable(point):
      kill = launch(spec, root, workdir, kill_when=point, extra=extra)
    else:
      kill = launch(spec, root, workdir, kill_after=point, extra=extra)
    if before is not None and before != kill.lock_pid and TAKEOVER.format(pid=before) not in kill.output:
      lock_ok = False  # the launch replaced a dead run's lock without saying it took it over
      notes.append(f"no takeover of pid {before}")
    kills.append(kill)
  rerun = launch(spec, root, workdir, extra=extra)
  stale = kills[-1].lock_pid if kills else None
  if stale is not None and TAKEOVER.format(pid=stale) not in rerun.output:
    lock_ok = False
    notes.append(f"the rerun did not take over pid {stale}'s lock")
  if (workdir / LOCK).exists():
    lock_ok = False
    notes.append("a lock was left behind")
  if rerun.returncode != 0:
    return Trial(
      kills,
      rerun,
      False,
      math.nan,
      [],
      lock_ok,
      f"rerun exit {rerun.returncode}: {rerun.output[-2000:]}",
    )
  identical, worst, differ = compare(reference, spec.fingerprint(workdir), spec.tolerance)
  resumed = spec.resumed(workdir, rerun.output)
  return Trial(kills, rerun, identical, worst, differ, lock_ok, "; ".join(notes), resumed)


@dataclasses.dataclass
class StageTally:
  stage: str
  reference_s: float
  locked_at_s: float
  trials: list[Trial]

  @property
  def ok(self) -> bool:
    return all(t.ok for t in self.trials)


def run_stage(
  name: str,
  root: Path,
  kills: int,
  seed: int,
  chain: int = 1,
  log: Callable[[str], None] = print,
  points: list[list] | None = None,
  extra: tuple[str, ...] = (),
  keep: bool = False,
  by: str = "time",
) -> StageTally:
  """The reference run of a stage (its command + `extra` arguments) and `kills` trials, each `chain`
  kills at random points of (L, T), then a rerun to completion. `points` (a list per trial of kill
  points: seconds, fractions of (L, T) written as strings "0.4", or conditions `(workdir, log) -> bool`)
  replaces the random draw. A trial's workdir is deleted once it passed, unless `keep`."""
  spec = SPECS[name]
  root.mkdir(parents=True, exist_ok=True)
  (root / "inputs").mkdir(exist_ok=True)
  spec.prepare(root / "inputs")
  reference_dir = root / "reference"
  if reference_dir.exists():
    shutil.rmtree(reference_dir)
  first = launch(spec, root, reference_dir, extra=extra)
  if first.returncode != 0:
    raise AssertionError(
      f"{name}: the reference run failed (exit {first.returncode})\n{first.output[-3000:]}"
    )
  reference = spec.fingerprint(reference_dir)
  start = first.locked_at or 0.0
  log(
    f"{name}: reference run {first.seconds:.1f} s (lock taken at {start:.1f} s), {len(reference)} outputs compared"
  )
  rng = np.random.default_rng([seed, STAGES.index(name)])
  if points is None and by == "progress" and spec.progress is not None:  # conditions on the run's progress
    points = [[spec.progress(rng, reference_dir) for _ in range(chain)] for _ in range(kills)]
  elif points is None:  # within the run: from the lock's appearance to the reference's end
    points = [[str(f) for f in row] for row in rng.uniform(0.0, 1.0, size=(kills, chain))]
  trials = []
  for i, row in enumerate(points):
    row = [start + float(p) * (first.seconds - start) if isinstance(p, str) else p for p in row]
    workdir = root / f"trial{i:02d}"
    if workdir.exists():
      shutil.rmtree(workdir)
    trial = run_trial(spec, root, workdir, row, reference, extra)
    trials.append(trial)
    if trial.ok and not keep:
      shutil.rmtree(workdir)  # disk: a generation trial writes 60 MB
    landed = ", ".join(f"{k.seconds:.1f} s: {k.landed}" for k in trial.kills)
    verdict = "identical" if trial.identical else f"DIFFERS {trial.differ[:5]}"
    log(
      f"{name} #{i}: killed at {landed}; rerun exit {trial.rerun.returncode} in {trial.rerun.seconds:.1f} s, {verdict}"
      + (f" ({trial.note})" if trial.note else "")
    )
  return StageTally(name, first.seconds, start, trials)


def format_tally(tally: StageTally) -> str:
  """The table of one stage's trials (a row per kill; a trial's last row carries its rerun) and a
  summary line."""
  header = (
    f"{'#':>3}  {'kill at s':>9}  {'landed':<40}  {'lock':<6}  {'rerun':>5}  {'resumed':<18}  {'rerun s':>7}"
    f"  {'identical':<9}  max|diff|"
  )
  lines = [
    f"== {tally.stage}: reference {tally.reference_s:.1f} s (workdir locked at {tally.locked_at_s:.1f} s), "
    f"{len(tally.trials)} trials ==",
    header,
  ]
  for i, t in enumerate(tally.trials):
    for j, k in enumerate(t.kills):
      lock = "none" if t.kills[j].lock_pid is None else "taken" if t.lock_ok else "NOT OK"
      row = f"{i if j == 0 else '':>3}  {k.seconds:>9.2f}  {k.landed:<40}  {lock:<6}"
      if j == len(t.kills) - 1:
        row += (
          f"  {t.rerun.returncode!s:>5}  {t.resumed:<18}  {t.rerun.seconds:>7.1f}"
          f"  {'yes' if t.identical else 'NO':<9}  {t.max_diff:.3g}"
        )
      lines.append(row)
  kills = [k for t in tally.trials for k in t.kills]
  landed = {}
  for k in kills:
    landed[k.landed] = landed.get(k.landed, 0) + 1
  n = len(tally.trials)
  lines.append(
    f"{tally.stage}: {len(kills)} kills ({sum(k.returncode is None for k in kills)} before the run ended); "
    f"landed: {', '.join(f'{place} {count}' for place, count in sorted(landed.items()))}"
  )
  lines.append(
    f"{tally.stage}: reruns OK {sum(t.rerun.returncode == 0 for t in tally.trials)}/{n}, "
    f"identical {sum(t.identical for t in tally.trials)}/{n}, "
    f"stale locks taken over {sum(k.lock_pid is not None for k in kills)} (all said so: {all(t.lock_ok for t in tally.trials)}), "
    f"max|diff| {max((t.max_diff for t in tally.trials), default=0.0):.3g}, "
    f"rerun {np.mean([t.rerun.seconds for t in tally.trials]):.1f} s mean -> {'PASS' if tally.ok else 'FAIL'}"
  )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--stage", choices=(*STAGES, "all"), default="all")
  parser.add_argument("--kills", type=int, default=10, help="trials per stage")
  parser.add_argument("--chain", type=int, default=1, help="kills per trial before the rerun to completion")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="", help="default: a temporary folder, deleted after")
  parser.add_argument("--keep", action="store_true", help="keep the workdirs of trials that passed")
  parser.add_argument(
    "--by",
    choices=("time", "progress"),
    default="time",
    help="kill points: random times in (L, T); progress: random points of the stage's own progress "
    "(student: training steps, teacher: metrics lines, generate: files; the demo by time)",
  )
  args = parser.parse_args(argv)
  root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="faults-"))
  stages = STAGES if args.stage == "all" else (args.stage,)
  tallies = []
  try:
    for name in stages:
      tally = run_stage(
        name,
        root / name,
        args.kills,
        args.seed,
        args.chain,
        log=lambda line: print(line, flush=True),
        keep=args.keep,
        by=args.by,
      )
      tallies.append(tally)
      print(format_tally(tally), flush=True)
  finally:
    if not args.workdir:
      shutil.rmtree(root, ignore_errors=True)
  print("\n" + "\n\n".join(format_tally(t) for t in tallies))
  return 0 if all(t.ok for t in tallies) else 1


if __name__ == "__main__":
  sys.exit(main())
