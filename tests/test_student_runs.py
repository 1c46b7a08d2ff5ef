"""The fine-tuning entry point end to end (real subprocesses): the smoke model learns, resumes after
kill -9 and SIGTERM with the parameters of an uninterrupted run, gives the same loss curve on 8
simulated devices (with parameters sharded over `fsdp`) and in two processes, and stops on NaN."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from aligned.backbones.student import restore_params
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # subprocesses / whole pipelines: `make test-fast` skips them

STEPS = 100  # the smoke variant's length


def _command(workdir, *overrides):
  return [
    sys.executable,
    "-m",
    "experiments.finetune",
    "--config=configs/finetune.py:smoke",
    f"--workdir={workdir}",
    *overrides,
  ]


def _env(devices: int = 1) -> dict:
  flags = f"--xla_force_host_platform_device_count={devices} --xla_cpu_multi_thread_eigen=false"
  return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")


def _run(workdir, *overrides, devices: int = 1, check: bool = True) -> subprocess.CompletedProcess:
  done = subprocess.run(
    _command(workdir, *overrides), cwd=REPO, env=_env(devices), capture_output=True, text=True, timeout=600
  )
  if check and done.returncode != 0:
    raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}")
  return done


def _metrics(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _losses(workdir) -> np.ndarray:
  return np.array([r["loss"] for r in _metrics(workdir) if "loss" in r])


def _assert_same_params(a, b, atol=1e-6):
  leaves_a, leaves_b = [np.asarray(x) for x in _leaves(a)], [np.asarray(x) for x in _leaves(b)]
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)


def _leaves(tree):
  import jax

  return jax.tree.leaves(tree)


def _wait_for(predicate, process, timeout=300):
  start = time.time()
  while not predicate():
    if process.poll() is not None:
      raise AssertionError(f"the run ended before the condition (exit {process.returncode})")
    if time.time() - start > timeout:
      process.kill()
      raise AssertionError("timed out")
    time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  _run(workdir)
  return workdir


def test_smoke_variant_learns_the_synthetic_task(reference):
  results = json.loads((reference / "results.json").read_text())
  assert results["status"] == "completed" and results["steps"] == STEPS
  evals = [r for r in _metrics(reference) if "val/synthetic/loss" in r]
  assert [r["step"] for r in evals] == [0, 50, STEPS]
  first, last = evals[0], evals[-1]
  assert last["val/synthetic/loss"] < 0.85 * first["val/synthetic/loss"]
  assert last["val/synthetic/accuracy"] > first["val/synthetic/accuracy"] + 0.05
  assert results["final"]["val/synthetic/loss"] == last["val/synthetic/loss"]
  assert (reference / "plots" / "training.png").stat().st_size > 10_000
  saved = sorted(int(p.name) for p in (reference / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [60, 80, 100]  # every 20 steps, the last 3 kept


def test_kill_9_then_the_same_command_resumes_to_the_same_parameters(reference, tmp_path):
  process = subprocess.Popen(
    _command(tmp_path), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  _wait_for(lambda: (tmp_path / "checkpoints" / "40").is_dir(), process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (tmp_path / "results.json").exists()
  _run(tmp_path)
  results = json.loads((tmp_path / "results.json").read_text())
  assert 40 <= results["resumed_from_step"] < STEPS
  _assert_same_params(restore_params(tmp_path), restore_params(reference))
  steps = [r["step"] for r in _metrics(tmp_path) if "loss" in r]
  assert steps == list(range(10, STEPS + 1, 10))  # no duplicated or missing lines after the resume
  evaluations = [r["step"] for r in _metrics(tmp_path) if "learning_rate" not in r]
  assert evaluations == [0, 50, STEPS]
  reference_results = json.loads((reference / "results.json").read_text())
  assert [r["step"] for r in results["evaluations"]] == [r["step"] for r in reference_results["evaluations"]]
  # the same command on the finished run: evaluates again, writes no second final line
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  _run(tmp_path)
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(lines)
  assert [r["step"] for r in _metrics(tmp_path) if "learning_rate" not in r] == [0, 50, STEPS]


def test_sigterm_checkpoints_and_exits_then_resumes(reference, tmp_path):
  process = subprocess.Popen(
    _command(tmp_path), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  _wait_for(lambda: (tmp_path / "checkpoints" / "20").is_dir(), process)
  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 143, out
  assert "preempted at step" in out
  saved = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert 20 <= saved < STEPS and f"step {saved}:" in out
  _run(tmp_path)
  _assert_same_params(restore_params(tmp_path), restore_params(reference))


def test_eight_devices_with_fsdp_give_the_same_loss_curve(reference, tmp_path):
  # a low threshold splits 17 of the small model's 42 arrays over 4 devices: every kernel, the position
  # embeddings, the head's bias (the default threshold, 16,384 elements, splits only the head's kernel);
  # the other biases, the norms and the class token stay replicated
  _run(tmp_path, "--config.mesh.fsdp=4", "--config.mesh.fsdp_min_size=256", devices=8)
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["devices"] == 8
  sharded, total = results["fsdp_sharded_params"]
  assert sharded >= 10 and total > sharded, results["fsdp_sharded_params"]
  np.testing.assert_allclose(_losses(tmp_path), _losses(reference), rtol=2e-3)
  _assert_same_params(restore_params(tmp_path), restore_params(reference), atol=2e-3)


def test_two_processes_train_together_and_checkpoint(reference, tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  processes = [
    subprocess.Popen(
      _command(
        tmp_path,
        f"--config.distributed.coordinator=localhost:{port}",
        "--config.distributed.num_processes=2",
        f"--config.distributed.process_id={i}",
      ),
      cwd=REPO,
      env=_env(devices=2),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs, strict=True):
    assert p.returncode == 0, err[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["processes"] == 2 and results["devices"] == 4
  np.testing.assert_allclose(_losses(tmp_path), _losses(reference), rtol=2e-3)
  _assert_same_params(restore_params(tmp_path), restore_params(reference), atol=2e-3)


def test_nan_loss_stops_with_the_step_and_keeps_the_good_checkpoint(tmp_path):
  done = _run(
    tmp_path, "--config.optimizer.learning_rate=1e30", "--config.checkpointing.every=1", check=False
  )
  assert done.returncode == 2, done.stderr[-2000:]
  message = done.stderr.strip().splitlines()[-1]
  assert message.startswith("error: non-finite loss or gradient at step ")
  bad = int(message.split("at step ")[1].split()[0])
  assert "train_synthetic.npz row" in message
  saved = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved <= bad
  params = restore_params(tmp_path)
  assert all(np.isfinite(x).all() for x in _leaves(params))
  assert not (tmp_path / "results.json").exists()


def test_resuming_with_other_settings_is_refused_and_restart_trains_anew(reference, tmp_path):
  done = _run(reference, "--config.seed=1", check=False)
  assert done.returncode == 2 and "other settings (seed)" in done.stderr
  assert "--config.restart=True" in done.stderr
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  (workdir / "plots" / "stale.png").write_bytes(b"left by the old run")
  _run(workdir, "--config.seed=1", "--config.restart=True")
  results = json.loads((workdir / "results.json").read_text())
  assert results["resumed_from_step"] == 0 and json.loads((workdir / "config.json").read_text())["seed"] == 1
  assert not (workdir / "plots" / "stale.png").exists()
  steps = [r["step"] for r in _metrics(workdir) if "loss" in r]
  assert steps == list(range(10, STEPS + 1, 10))  # the new run's lines only
  other = restore_params(workdir)
  assert any(
    not np.array_equal(a, b) for a, b in zip(_leaves(other), _leaves(restore_params(reference)), strict=True)
  )
