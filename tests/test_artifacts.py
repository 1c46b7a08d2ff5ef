"""Run artifacts: atomic JSON/NPZ writes, metrics.jsonl, the progress line."""

import io
import json

import numpy as np
import pytest

from aligned import artifacts
from aligned.progress import Progress


def test_write_json_is_atomic_and_refuses_nan(tmp_path):
  artifacts.write_json(tmp_path / "r.json", {"a": np.float32(0.5), "b": np.arange(3)})
  assert json.loads((tmp_path / "r.json").read_text()) == {"a": 0.5, "b": [0, 1, 2]}
  with pytest.raises(ValueError):
    artifacts.write_json(tmp_path / "r.json", {"a": float("nan")})
  assert json.loads((tmp_path / "r.json").read_text())["a"] == 0.5  # the old file is untouched
  assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_atomic_files_get_the_mode_a_plain_open_would(tmp_path):
  # mkstemp creates 0600 files; a shared workdir needs what `open(path, "w")` gives (0666 less the umask)
  artifacts.write_json(tmp_path / "r.json", {"a": 1})
  artifacts.save_npz(tmp_path / "a.npz", x=np.arange(3))
  with open(tmp_path / "plain.txt", "w") as f:
    f.write("x")
  plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
  assert plain != 0o600  # the umask here lets group or others read, so the check below can fail
  for name in ("r.json", "a.npz"):
    assert (tmp_path / name).stat().st_mode & 0o777 == plain, name


def test_save_npz_refuses_object_arrays(tmp_path):
  with pytest.raises(TypeError, match="pickle"):
    artifacts.save_npz(tmp_path / "x.npz", a=np.array([{"x": 1}], dtype=object))
  assert not list(tmp_path.iterdir())


def test_metrics_log_truncates_and_appends(tmp_path):
  for run in range(2):
    with artifacts.MetricsLog(tmp_path / "metrics.jsonl") as log:
      log.write({"step": 1, "run": run})
      log.write({"step": 2, "run": run})
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines == [{"step": 1, "run": 1}, {"step": 2, "run": 1}]


def test_progress_reports_rate_and_eta():
  stream = io.StringIO()
  progress = Progress(total=10, what="steps", every_s=0.0, stream=stream)
  progress.update(5, loss=0.25)
  progress.update(10)
  first, last = stream.getvalue().splitlines()
  assert first.startswith("5/10 steps") and "steps/s" in first and "ETA" in first and "loss 0.25" in first
  assert last.startswith("10/10 steps") and "ETA 0s" in last
  quiet = io.StringIO()
  Progress(total=10, stream=quiet, enabled=False).update(3)
  assert quiet.getvalue() == ""
