"""The workdir lock: one live run per workdir, stale locks taken over, commands refused with exit 2."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import ml_collections
import pytest

from aligned.cli.launch import run_job, takes_workdir_lock
from aligned.errors import DataError
from aligned.workdir_lock import LOCK_NAME, WorkdirLock
from tests.conftest import REPO

HOST = socket.gethostname()


def _dead_pid() -> int:
  """The pid of a process that has ended (and been reaped), so nothing runs under it."""
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def _write_lock(workdir, pid, host=HOST, heartbeat_age_s=0.0, token="theirs") -> dict:
  record = {
    "pid": pid,
    "host": host,
    "started": "2025-01-01T00:00:00+00:00",
    "heartbeat": time.time() - heartbeat_age_s,
    "token": token,
  }
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / LOCK_NAME).write_text(json.dumps(record))
  return record


def _read_lock(workdir) -> dict:
  return json.loads((workdir / LOCK_NAME).read_text())


def test_the_lock_file_records_the_holder_and_is_deleted_on_release(tmp_path):
  with WorkdirLock(tmp_path / "run") as lock:
    record = _read_lock(tmp_path / "run")
    assert record["pid"] == os.getpid() and record["host"] == HOST
    assert record["token"] == lock.record["token"] and len(record["token"]) == 32
    assert abs(record["heartbeat"] - time.time()) < 5 and record["started"].endswith("+00:00")
  assert not (tmp_path / "run" / LOCK_NAME).exists()
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # nothing else left behind


def test_a_second_acquire_on_a_live_lock_is_refused_with_pid_and_host(tmp_path):
  with WorkdirLock(tmp_path):
    with pytest.raises(DataError) as refused:
      WorkdirLock(tmp_path).acquire()
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / LOCK_NAME}: in use by pid {os.getpid()} on host {HOST} since ")
    assert "heartbeat 0 s ago" in message and "delete this file" in message
    assert (tmp_path / LOCK_NAME).exists()  # the refusal left the holder's lock alone


def test_a_lock_of_a_dead_pid_on_this_host_is_taken_over(tmp_path):
  dead = _dead_pid()
  _write_lock(tmp_path, dead)  # a fresh heartbeat: only the pid says it is stale
  said = []
  with WorkdirLock(tmp_path, log=said.append) as lock:
    assert _read_lock(tmp_path)["token"] == lock.record["token"] != "theirs"
  assert said == [
    f"{tmp_path / LOCK_NAME}: taking over a stale lock from pid {dead} on host {HOST} (pid {dead} is not running)"
  ]


def test_a_lock_with_an_old_heartbeat_from_another_host_is_taken_over(tmp_path):
  _write_lock(tmp_path, os.getpid(), host="elsewhere.example", heartbeat_age_s=700)
  said = []
  with WorkdirLock(tmp_path, log=said.append):
    assert _read_lock(tmp_path)["host"] == HOST
  assert (
    len(said) == 1 and "from pid" in said[0] and "host elsewhere.example (no heartbeat for 700 s)" in said[0]
  )


def test_a_fresh_lock_from_another_host_is_refused_even_if_its_pid_is_dead_here(tmp_path):
  dead = _dead_pid()  # the pid means nothing on this host: only the heartbeat counts
  _write_lock(tmp_path, dead, host="elsewhere.example", heartbeat_age_s=30)
  with pytest.raises(DataError, match=f"in use by pid {dead} on host elsewhere.example .*heartbeat 30 s ago"):
    WorkdirLock(tmp_path).acquire()
  assert _read_lock(tmp_path)["token"] == "theirs"


def test_exactly_one_of_several_takes_over_a_stale_lock(tmp_path):
  dead = _dead_pid()
  for round_ in range(30):
    workdir = tmp_path / str(round_)
    _write_lock(workdir, dead)
    start, won, refused = threading.Barrier(8), [], []

    def take(start=start, won=won, refused=refused, workdir=workdir):
      lock = WorkdirLock(workdir, log=lambda line: None)
      start.wait()
      try:
        won.append(lock.acquire())
      except DataError as e:
        refused.append(str(e))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    assert len(won) == 1 and len(refused) == 7, (round_, len(won), refused)
    assert _read_lock(workdir)["token"] == won[0].record["token"]
    assert all(f"in use by pid {os.getpid()}" in message for message in refused)
    won[0].release()
    assert list(workdir.iterdir()) == []


def test_release_leaves_a_lock_that_another_process_took_over(tmp_path):
  said = []
  lock = WorkdirLock(tmp_path, log=said.append).acquire()
  _write_lock(tmp_path, 12345, host="elsewhere.example", token="new holder")  # a takeover meanwhile
  lock.release()
  assert _read_lock(tmp_path)["token"] == "new holder"
  assert said == [
    f"{tmp_path / LOCK_NAME}: left in place: it was taken over by pid 12345 on host elsewhere.example "
    "while this run held it"
  ]
  assert not lock.held
  lock.release()  # twice: nothing


def test_the_heartbeat_is_refreshed_while_held_and_stops_on_release(tmp_path):
  lock = WorkdirLock(tmp_path, stale_after_s=0.8).acquire()  # a beat every 0.2 s
  first = _read_lock(tmp_path)["heartbeat"]
  time.sleep(0.7)
  later = _read_lock(tmp_path)
  assert later["heartbeat"] > first and later["token"] == lock.record["token"]
  thread = lock._thread
  lock.release()
  assert not thread.is_alive() and not (tmp_path / LOCK_NAME).exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == []  # no heartbeat temporaries left


def test_a_lock_that_is_not_a_record_is_refused_while_recent_and_taken_over_when_old(tmp_path):
  (tmp_path / LOCK_NAME).write_text("{not json")
  with pytest.raises(
    DataError, match=r"\.aligned\.lock: not a lock record \(not JSON; last written [0-2] s ago\)"
  ):
    WorkdirLock(tmp_path).acquire()
  old = time.time() - 700
  os.utime(tmp_path / LOCK_NAME, (old, old))
  said = []
  with WorkdirLock(tmp_path, log=said.append) as lock:
    assert _read_lock(tmp_path)["token"] == lock.record["token"]
  assert len(said) == 1 and "from an unreadable lock file (not JSON, last written 70" in said[0]


def test_the_lock_in_a_bucket(bucket):
  run = bucket / "runs" / "a"
  with WorkdirLock(run) as lock:
    assert _read_lock(run)["token"] == lock.record["token"]
    with pytest.raises(
      DataError, match=f"gs://bucket/runs/a/.aligned.lock: in use by pid {os.getpid()} on host"
    ):
      WorkdirLock(run).acquire()
  assert not (run / LOCK_NAME).exists()
  _write_lock(run, os.getpid(), host="elsewhere.example", heartbeat_age_s=700)
  said = []
  with WorkdirLock(run, log=said.append) as lock:
    assert _read_lock(run)["token"] == lock.record["token"]
    _write_lock(run, 7, host="elsewhere.example", token="new holder")
  assert _read_lock(run)["token"] == "new holder"  # release kept the other holder's lock
  assert "no heartbeat for 700 s" in said[0] and "taken over by pid 7" in said[1]


# -- commands ---------------------------------------------------------------------------------------


def test_a_command_on_a_workdir_a_live_run_holds_exits_2_before_its_job(tmp_path, capsys):
  _write_lock(tmp_path, os.getpid(), heartbeat_age_s=12)  # this very process: alive
  ran = []
  with pytest.raises(SystemExit) as exit_:
    run_job(lambda c, w: ran.append(w), str, ml_collections.ConfigDict({"x": 1}), str(tmp_path))
  assert exit_.value.code == 2 and not ran
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [
    f"error: {tmp_path / LOCK_NAME}: in use by pid {os.getpid()} on host {HOST} since 2025-01-01T00:00:00+00:00 "
    "(heartbeat 12 s ago); wait for it, or if that run is dead delete this file"
  ]
  assert _read_lock(tmp_path)["token"] == "theirs"


def test_a_command_holds_the_lock_while_its_job_runs_and_releases_it_however_it_ends(tmp_path, capsys):
  seen = []

  def job(config, workdir):
    seen.append(_read_lock(tmp_path)["pid"])
    if config.end == "bad input":
      raise DataError("x.npz", "bad")
    if config.end == "interrupt":
      raise KeyboardInterrupt
    return {"ok": 1}

  assert run_job(job, str, ml_collections.ConfigDict({"end": "ok"}), str(tmp_path)) == {"ok": 1}
  assert not (tmp_path / LOCK_NAME).exists()
  with pytest.raises(SystemExit) as exit_:
    run_job(job, str, ml_collections.ConfigDict({"end": "bad input"}), str(tmp_path))
  assert exit_.value.code == 2 and not (tmp_path / LOCK_NAME).exists()
  with pytest.raises(KeyboardInterrupt):
    run_job(job, str, ml_collections.ConfigDict({"end": "interrupt"}), str(tmp_path))
  assert not (tmp_path / LOCK_NAME).exists()
  assert seen == [os.getpid()] * 3
  assert "error: x.npz: bad" in capsys.readouterr().err
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's SIGTERM handler is gone
  theirs = signal.signal(signal.SIGTERM, lambda *_: None)  # a handler of the caller's: kept
  try:
    with pytest.raises(SystemExit) as exit_:
      run_job(job, str, ml_collections.ConfigDict({"end": "bad input"}), str(tmp_path))
    assert exit_.value.code == 2 and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
  finally:
    signal.signal(signal.SIGTERM, theirs)
  assert not (tmp_path / LOCK_NAME).exists()


def test_only_process_0_of_a_multi_process_run_takes_the_lock(tmp_path):
  def config(**distributed):
    return ml_collections.ConfigDict(
      {"distributed": {"coordinator": "", "num_processes": 1, "process_id": 0, "auto": False, **distributed}}
    )

  assert takes_workdir_lock(config()) and takes_workdir_lock(config(num_processes=2))
  assert not takes_workdir_lock(config(num_processes=2, process_id=1))
  assert not takes_workdir_lock(config(auto=True))  # no launcher variables: the index is unknown

  assert not takes_workdir_lock(ml_collections.ConfigDict({"process_count": 4, "process_index": 3}))
  assert takes_workdir_lock(ml_collections.ConfigDict({"process_count": 4, "process_index": 0}))
  assert takes_workdir_lock(ml_collections.ConfigDict({"process_count": 0, "process_index": 0}))
  _write_lock(tmp_path, os.getpid())  # process 0 holds it; process 1 runs beside it
  ran = []
  run_job(lambda c, w: ran.append(w) or {}, str, config(num_processes=2, process_id=1), str(tmp_path))
  assert ran == [str(tmp_path)] and _read_lock(tmp_path)["token"] == "theirs"
  with pytest.raises(SystemExit):
    run_job(lambda c, w: ran.append(w) or {}, str, config(num_processes=2, process_id=0), str(tmp_path))
  assert len(ran) == 1


def test_a_job_that_replaces_its_workdir_runs_without_a_lock_inside_it(tmp_path):
  def export_student(config, workdir):  # as aligned-export runs it (tests/test_export.py runs the command)
    assert not (tmp_path / LOCK_NAME).exists()
    return {}

  run_job(export_student, str, ml_collections.ConfigDict(), str(tmp_path), lock=False)


# -- real processes ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_live_process_holds_the_lock_until_killed_then_it_is_taken_over(tmp_path):
  holder = textwrap.dedent(f"""
    import time
    from aligned.workdir_lock import WorkdirLock
    WorkdirLock({str(tmp_path)!r}).acquire()
    print("held", flush=True)
    time.sleep(120)
  """)
  child = subprocess.Popen([sys.executable, "-c", holder], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(DataError, match=f"in use by pid {child.pid} on host {HOST} "):
      WorkdirLock(tmp_path).acquire()
  finally:
    child.kill()  # kill -9: no release
    child.wait()
  assert _read_lock(tmp_path)["pid"] == child.pid
  said = []
  with WorkdirLock(tmp_path, log=said.append):
    assert _read_lock(tmp_path)["pid"] == os.getpid()
  assert said == [
    f"{tmp_path / LOCK_NAME}: taking over a stale lock from pid {child.pid} on host {HOST} "
    f"(pid {child.pid} is not running)"
  ]


@pytest.mark.slow
def test_sigterm_releases_the_lock_and_ends_the_command_as_sigterm_does(tmp_path):
  command = textwrap.dedent(f"""
    import time
    from aligned.cli.launch import run_job
    run_job(lambda c, w: time.sleep(120), str, {{}}, {str(tmp_path)!r})
  """)
  child = subprocess.Popen([sys.executable, "-c", command], cwd=REPO)
  try:
    deadline = time.time() + 60
    while not (tmp_path / LOCK_NAME).exists() or not (tmp_path / LOCK_NAME).read_text():
      assert time.time() < deadline and child.poll() is None
      time.sleep(0.05)
    assert _read_lock(tmp_path)["pid"] == child.pid
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == -signal.SIGTERM
  finally:
    child.kill()
  assert not (tmp_path / LOCK_NAME).exists()


def test_with_jax_finding_the_processes_process_0_is_found_from_the_launchers_variables(monkeypatch):
  config = ml_collections.ConfigDict({"distributed": {"num_processes": 1, "process_id": 0, "auto": True}})
  for name in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "TPU_WORKER_ID", "MEGASCALE_SLICE_ID"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("SLURM_PROCID", "0")
  assert takes_workdir_lock(config)
  monkeypatch.setenv("SLURM_PROCID", "3")
  assert not takes_workdir_lock(config)
  monkeypatch.delenv("SLURM_PROCID")
  monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
  assert not takes_workdir_lock(config)
  monkeypatch.delenv("OMPI_COMM_WORLD_RANK")
  monkeypatch.setenv("TPU_WORKER_ID", "0")
  assert takes_workdir_lock(config)
  monkeypatch.setenv("MEGASCALE_SLICE_ID", "1")  # worker 0 of the second slice
  assert not takes_workdir_lock(config)
  monkeypatch.setenv("MEGASCALE_SLICE_ID", "0")
  assert takes_workdir_lock(config)


def test_the_lock_file_appears_with_its_record_hard_link_or_not(tmp_path, monkeypatch):
  created = []
  link = os.link

  def watched_link(src, dst):  # the lock appears by a hard link of a file already holding the record
    created.append(json.loads(open(src).read()))
    link(src, dst)

  monkeypatch.setattr(os, "link", watched_link)
  with WorkdirLock(tmp_path):
    assert created and created[0]["pid"] == os.getpid() == _read_lock(tmp_path)["pid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # no temporary left
  assert not (tmp_path / LOCK_NAME).exists()

  def no_links(src, dst):  # a filesystem without hard links: exclusive create, then the record
    raise OSError(95, "Operation not supported")

  monkeypatch.setattr(os, "link", no_links)
  with WorkdirLock(tmp_path):
    assert _read_lock(tmp_path)["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]
    with pytest.raises(DataError, match=f"in use by pid {os.getpid()}"):
      WorkdirLock(tmp_path).__enter__()
