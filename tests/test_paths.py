"""Paths in a bucket: aligned.paths and aligned.artifacts on the in-memory `gs://` of conftest."""

import hashlib
import json
import os

import numpy as np
import pytest

from aligned import artifacts, paths
from aligned.errors import DataError


def test_artifacts_round_trip_in_a_bucket(bucket):
  run = bucket / "runs" / "a"
  artifacts.write_json(run / "config.json", {"lr": np.float32(0.5), "path": run / "x"})
  assert json.loads((run / "config.json").read_text()) == {"lr": 0.5, "path": "gs://bucket/runs/a/x"}
  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  artifacts.save_npy(run / "x.npy", x)
  artifacts.save_npz(run / "y.npz", compressed=True, x=x, ids=np.array(["a", "b", "c"]))
  np.testing.assert_array_equal(paths.load_npy(run / "x.npy"), x)
  np.testing.assert_array_equal(paths.load_npy(run / "x.npy", mmap=True), x)  # no mmap in a bucket
  loaded = paths.load_npz(run / "y.npz")
  assert sorted(loaded) == ["ids", "x"] and loaded["ids"].tolist() == ["a", "b", "c"]
  with (run / "x.npy").open("rb") as f:
    assert artifacts.sha256_of(run / "x.npy") == hashlib.sha256(f.read()).hexdigest()
  assert [os.fspath(p) for p in paths.files_under(bucket, "*.np?")] == [
    "gs://bucket/runs/a/x.npy",
    "gs://bucket/runs/a/y.npz",
  ]


def test_a_failed_write_leaves_nothing_in_the_bucket(bucket):
  target = bucket / "r" / "out.npy"
  with pytest.raises(RuntimeError), artifacts.atomic_path(target) as tmp:
    tmp.write_bytes(b"partial")
    raise RuntimeError("killed")
  assert not target.exists()


def test_metrics_log_in_a_bucket_uploads_on_close_and_resumes(bucket):
  path = bucket / "run" / "metrics.jsonl"
  with artifacts.MetricsLog(path) as log:  # a bucket refuses appends (conftest), so this must rewrite
    for step in (1, 2, 3):
      log.write({"step": step, "loss": 1.0 / step})
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
  with artifacts.MetricsLog(path, keep_until_step=2) as log:
    log.write({"step": 3, "loss": 0.25})
  assert [json.loads(line)["loss"] for line in path.read_text().splitlines()] == [1.0, 0.5, 0.25]


def test_copy_rmtree_and_local_copy_across_filesystems(bucket, tmp_path):
  local = tmp_path / "a.bin"
  local.write_bytes(b"abc")
  paths.copy_file(local, bucket / "d" / "a.bin")
  paths.copy_file(bucket / "d" / "a.bin", tmp_path / "b.bin")
  assert (tmp_path / "b.bin").read_bytes() == b"abc"
  with paths.local_copy(bucket / "d" / "a.bin") as copy:
    assert copy.read_bytes() == b"abc" and paths.is_local(copy)
  assert not copy.exists()  # the download is removed after the block
  paths.rmtree(bucket / "d")
  assert not (bucket / "d" / "a.bin").exists()
  paths.rmtree(bucket / "never")  # absent: nothing to do


def test_urls_that_cannot_work_are_refused_with_the_reason(bucket):
  with pytest.raises(DataError, match=r"gs://bucket/cache: must be on a local disk: array_record"):
    paths.require_local("gs://bucket/cache", "array_record shards are read by C\\+\\+")
  assert paths.require_local("/tmp/x", "why").as_posix() == "/tmp/x"
  paths.check_scheme("gs://bucket/run")  # the test bucket is installed under gs://
  paths.check_scheme("/local/run")
  with pytest.raises(DataError, match=r"ftp:// is not a filesystem"):
    paths.check_scheme("ftp://host/x", "workdir")


def test_a_url_whose_filesystem_is_missing_stops_a_command_before_its_job(bucket, capsys):
  import ml_collections

  from aligned.cli.launch import run_job

  paths.check_urls({"store": "/mnt/bucket/store", "notes": "see gs docs", "n": 3}, "gs://bucket/run")
  config = ml_collections.ConfigDict({"data": {"root": "gs://bucket/x", "stores": ("a", "s3://b/val")}})
  with pytest.raises(DataError, match=r"s3://b/val: data.stores: s3:// needs s3fs \(pip install s3fs\)"):
    paths.check_urls(config.to_dict(), "gs://bucket/run")
  ran = []
  with pytest.raises(SystemExit) as exit_:
    run_job(lambda c, w: ran.append(w), str, config, "gs://bucket/run")
  assert exit_.value.code == 2 and not ran  # refused before the job starts: nothing written
  assert "s3:// needs s3fs" in capsys.readouterr().err
