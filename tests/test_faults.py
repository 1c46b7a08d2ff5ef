"""Fault tests at real settings (`benchmarks/faults.py`, a few kill points of its tally): kill -9 of a
student run (asynchronous checkpoints, decay to init, bfloat16), of a teacher fit, of generation and of
the image demo (3 minutes on 2 idle cores), then the same command again: the rerun takes over the dead run's workdir lock, resumes
where the stage resumes, and ends with the outputs of an uninterrupted run, bit for bit. Kill points are
conditions on the workdir (a checkpoint, a file), so where they land does not depend on the machine."""

import json

import pytest

from benchmarks import faults

pytestmark = pytest.mark.slow  # subprocesses / whole pipelines: `make test-fast` skips them


def _exists(relative):
  return lambda workdir, log: (workdir / relative).exists()


def _run(stage, tmp_path, points, extra=()):
  tally = faults.run_stage(stage, tmp_path / stage, 0, 0, points=points, extra=extra, log=print, keep=True)
  table = faults.format_tally(tally)
  print(table)
  assert len(tally.trials) == len(points), table
  for trial in tally.trials:
    for kill in trial.kills:
      assert kill.returncode is None and kill.landed not in ("finished", "after the end"), table
      assert kill.lock_pid == kill.killed_pid, table  # killed while holding the lock: a stale lock left
    assert trial.rerun.returncode == 0, trial.note
    assert faults.TAKEOVER.format(pid=trial.kills[-1].killed_pid) in trial.rerun.output, table
    assert trial.lock_ok and trial.identical and trial.max_diff == 0.0, (trial.differ, table)
  assert tally.ok and table.endswith("PASS")
  return tally


def test_student_killed_with_async_checkpoints_bf16_and_decay_resumes_bit_for_bit(tmp_path):
  steps = 100  # the smoke variant's length (the tally's runs are longer)
  extra = (f"--config.steps={steps}", "--config.checkpointing.every=20")
  tally = _run("student", tmp_path, [[_exists("checkpoints/40")]], extra)
  (trial,) = tally.trials
  workdir = tmp_path / "student" / "trial00"
  landed = trial.kills[0].landed  # "after checkpoint N": the newest whole checkpoint when killed
  assert landed.startswith("after checkpoint ") and 40 <= int(landed.split()[-1]) < steps
  results = json.loads((workdir / "results.json").read_text())
  assert results["resumed_from_step"] == int(landed.split()[-1]) and results["steps"] == steps
  assert trial.resumed == f"from step {results['resumed_from_step']}"
  config = json.loads((workdir / "config.json").read_text())
  assert config["dtype"] == "bfloat16" and config["checkpointing"]["use_async"]
  assert config["optimizer"]["decay_to_init"] == 1.0
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines if "loss" in r] == list(range(10, steps + 1, 10))  # none lost or doubled


def test_teacher_killed_in_cross_validation_refits_to_the_same_transform(tmp_path):
  def cross_validating(workdir, log):
    metrics = workdir / "metrics.jsonl"
    return metrics.exists() and '"cv"' in metrics.read_text()

  tally = _run("teacher", tmp_path, [[cross_validating]])
  assert tally.trials[0].kills[0].landed in ("in cross-validation", "in the final fit")


def test_generation_killed_after_k_means_and_after_two_files_gives_the_same_files(tmp_path):
  def files(n):
    def written(workdir, log):
      manifest = workdir / "manifest.json"
      return manifest.exists() and len(json.loads(manifest.read_text())["files"]) >= n

    return written

  tally = _run("generate", tmp_path, [[_exists("clusters/kmeans_3.npz")], [files(2)]])
  assert tally.trials[0].kills[0].landed in ("after k-means", "after 0 files", "after 1 files")
  assert (
    tally.trials[1].kills[0].landed.startswith("after ") and "k-means" not in tally.trials[1].kills[0].landed
  )


def test_demo_killed_in_a_student_resumes_it_and_skips_finished_stages(tmp_path):
  tally = _run("demo", tmp_path, [[_exists("alignet_student/checkpoints/6")]])
  (trial,) = tally.trials
  assert trial.kills[0].landed == "in alignet_student"
  assert int(trial.resumed.split()[0]) >= 4  # extract, extract validation, teacher, generate at least
  student = json.loads((tmp_path / "demo" / "trial00" / "alignet_student" / "results.json").read_text())
  assert student["resumed_from_step"] >= 6
