"""One run per workdir: `WORKDIR/.aligned.lock` says which process is writing there.

A relaunch by hand or a scheduler's retry while the first run still lives would have two processes
writing checkpoints and metrics into the same folders. Every command takes this lock on its workdir
around its job (`aligned.cli.launch.run_job`; in a multi-process run only process 0 takes it).

The lock file is JSON: `pid`, `host`, `started` (UTC, ISO 8601), `heartbeat` (Unix time, refreshed
every `stale_after_s / 4` by a thread while the lock is held) and `token` (random, this holder's).

- Taking it: the file is created exclusively. On a local disk that is `O_CREAT | O_EXCL`, atomic; every
  later change of an existing lock (a takeover, a heartbeat, the release) happens while holding
  `.aligned.lock.busy`, a second file created the same way for the milliseconds a change takes, and
  checks the token first, so exactly one of several processes takes over a stale lock, and the lock
  file never disappears under a takeover. In a bucket it is best effort: the lock is written if absent
  (or stale), read back and held only if it still has our token, so two processes starting within the
  same second could both believe they hold it (object stores have no exclusive create that
  `etils.epath` exposes).
- A lock that exists is stale, and taken over with one line naming the old pid, when its host is this
  host and its pid is not running, or when its heartbeat is older than `stale_after_s` (600 s): that
  covers other hosts, bucket workdirs and a reused pid. A file that is not a lock record is stale only
  once its modification time is older than `stale_after_s` (a bucket that reports none: never).
  Otherwise the lock is refused with a `DataError` naming the file, the pid, the host and the heartbeat.
- Releasing deletes the file only if it still holds our token: a run that was taken over (it stopped
  for longer than `stale_after_s`) leaves the new holder's lock alone, and says so.

Hosts are told apart by `socket.gethostname()`: containers sharing a host name and a disk, but not a
process table, see each other's live pids as dead.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

from aligned.errors import DataError
from aligned.paths import PathLike, as_path, is_local

LOCK_NAME = ".aligned.lock"
STALE_AFTER_S = 600.0
BUSY_WAIT_S = 10.0  # the longest wait for another process's change of the lock (milliseconds, normally)
_BUSY_STALE_S = 60.0  # a `.busy` file this old was left by a process killed in the middle of a change
_FIELDS = {"pid": int, "host": str, "started": str, "heartbeat": (int, float), "token": str}


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def _pid_running(pid: int) -> bool:
  """Whether a process `pid` exists on this host (another user's counts)."""
  if pid <= 0:  # os.kill(0, ...) would signal our own process group
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  except OverflowError:
    return False
  return True


def _is(found: dict | None, problem: str | None, token: str | None) -> bool:
  """Whether a file read as (found, problem) is the lock with `token` (None: a file that is no record)."""
  if token is None:
    return found is None and problem is not None
  return found is not None and found["token"] == token


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds `workdir/.aligned.lock` for the block (or `acquire()` /
  `release()`); refused with a `DataError` while another live run holds it (module docstring)."""

  def __init__(
    self,
    workdir: PathLike,
    stale_after_s: float = STALE_AFTER_S,
    log: Callable[[str], None] = _stderr,
  ):
    self.workdir = as_path(workdir)
    self.path = self.workdir / LOCK_NAME
    self.stale_after_s = float(stale_after_s)
    self.log = log
    self.record: dict | None = None  # ours, while held
    self.lost = False  # another process took the lock over while we held it
    self._local = is_local(self.workdir)
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  @property
  def held(self) -> bool:
    return self.record is not None

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  # -- taking and giving back -----------------------------------------------------------------------

  def acquire(self) -> WorkdirLock:
    if self.held:
      raise RuntimeError(f"{self.path}: already held by this WorkdirLock")
    self.workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # another process may create, replace or delete the file between our steps
      record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "heartbeat": time.time(),
        "token": secrets.token_hex(16),
      }
      if self._create(record):
        return self._hold(record)
      found, problem = self._read(self.path)
      if found is None and problem is None:  # released meanwhile: try again
        continue
      why = self._stale(found, problem)
      if why is None:
        raise self._refusal(found, problem)
      if self._replace_if(found["token"] if found else None, record):
        old = f"pid {found['pid']} on host {found['host']}" if found else "an unreadable lock file"
        self.log(f"{self.path}: taking over a stale lock from {old} ({why})")
        return self._hold(record)
    raise DataError(self.path, "could not be taken: other processes keep changing it; rerun later")

  def release(self) -> None:
    """Stops the heartbeat and deletes the lock if it is still ours; never raises (it runs in
    `finally` blocks, where it must not hide the error that ended the run)."""
    if not self.held:
      return
    self._stop.set()
    if self._thread is not None and self._thread is not threading.current_thread():
      self._thread.join(timeout=30)
    token, self.record, self._thread = self.record["token"], None, None
    try:
      with self._busy():
        found, problem = self._read(self.path)
        if _is(found, problem, token):
          self.path.unlink(missing_ok=True)
        elif found is not None:
          self.log(
            f"{self.path}: left in place: it was taken over by pid {found['pid']} on host {found['host']} "
            "while this run held it"
          )
    except (OSError, DataError) as e:
      self.log(f"{self.path}: could not be released ({e}); delete it if no run uses this workdir")

  def _hold(self, record: dict) -> WorkdirLock:
    self.record, self.lost = record, False
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name="aligned-workdir-lock", daemon=True)
    self._thread.start()
    return self

  # -- the rules ------------------------------------------------------------------------------------

  def _stale(self, found: dict | None, problem: str | None) -> str | None:
    """Why a lock found on the workdir may be taken over, or None while it counts as live."""
    now = time.time()
    if found is None:
      mtime = _mtime(self.path)
      if mtime and now - mtime > self.stale_after_s:
        return f"{problem}, last written {now - mtime:.0f} s ago"
      return None
    if found["host"] == socket.gethostname() and not _pid_running(found["pid"]):
      return f"pid {found['pid']} is not running"
    if now - found["heartbeat"] > self.stale_after_s:
      return f"no heartbeat for {now - found['heartbeat']:.0f} s"
    return None

  def _refusal(self, found: dict | None, problem: str | None) -> DataError:
    if found is None:
      mtime = _mtime(self.path)
      age = f"last written {max(0.0, time.time() - mtime):.0f} s ago" if mtime else "age unknown"
      return DataError(
        self.path,
        f"not a lock record ({problem}; {age}); if no run uses this workdir, delete this file",
      )
    age = max(0.0, time.time() - found["heartbeat"])
    return DataError(
      self.path,
      f"in use by pid {found['pid']} on host {found['host']} since {found['started']} "
      f"(heartbeat {age:.0f} s ago); wait for it, or if that run is dead delete this file",
    )

  # -- the file -------------------------------------------------------------------------------------

  def _create(self, record: dict) -> bool:
    """Writes `record` as the lock if there is none; whether we now hold it."""
    if self._local:
      return _create_exclusive(self.path, json.dumps(record) + "\n", record["token"][:8])
    if self.path.exists():  # a bucket: best effort (module docstring)
      return False
    return self._write_and_check(record)

  def _replace_if(self, token: str | None, record: dict) -> bool:
    """Replaces the lock by `record` if it still is the lock with `token` (None: still no record)."""
    with self._busy():
      if not _is(*self._read(self.path), token):
        return False
      if not self._local:
        return self._write_and_check(record)
      fresh = self.workdir / f"{LOCK_NAME}.{record['token'][:8]}.new"
      fresh.write_text(json.dumps(record) + "\n")
      os.replace(fresh, self.path)  # local: a whole file in one rename; the lock never disappears
      return True

  def _write_and_check(self, record: dict) -> bool:
    """A bucket: one upload, read back; ours unless another process wrote after us."""
    self.path.write_text(json.dumps(record) + "\n")
    found, _ = self._read(self.path)
    return found is not None and found["token"] == record["token"]

  @contextlib.contextmanager
  def _busy(self) -> Iterator[None]:
    """On a disk, `.aligned.lock.busy` held while the block changes the lock (nothing in a bucket)."""
    if not self._local:
      yield
      return
    busy = self.workdir / f"{LOCK_NAME}.busy"
    deadline = time.monotonic() + BUSY_WAIT_S
    while not _create_exclusive(busy):
      mtime = _mtime(busy)
      if mtime and time.time() - mtime > _BUSY_STALE_S:  # its process died in the middle of a change
        busy.unlink(missing_ok=True)
      elif time.monotonic() > deadline:
        raise DataError(
          busy, f"held for over {BUSY_WAIT_S:.0f} s; if no command uses this workdir, delete it"
        )
      else:
        time.sleep(0.005)
    try:
      yield
    finally:
      busy.unlink(missing_ok=True)

  def _read(self, path) -> tuple[dict | None, str | None]:
    """(the lock record, None), (None, what is wrong with the file), or (None, None) if it is gone."""
    problem = None
    for attempt in range(3):  # a local lock is empty between its exclusive create and its write
      if attempt:
        time.sleep(0.1)
      try:
        text = as_path(path).read_text()
      except FileNotFoundError:
        return None, None
      except (OSError, UnicodeDecodeError) as e:
        problem = f"unreadable: {e}"
        continue
      try:
        found = json.loads(text)
      except json.JSONDecodeError:
        problem = "not JSON" if text.strip() else "empty"
        continue
      wrong = [
        k for k, kind in _FIELDS.items() if not isinstance(found, dict) or not isinstance(found.get(k), kind)
      ]
      if not wrong:
        return found, None
      problem = f"missing or wrong fields: {', '.join(wrong)}"
    return None, problem

  def _beat(self) -> None:
    """The heartbeat thread: refreshes `heartbeat` every stale_after_s / 4 while the lock is ours."""
    while not self._stop.wait(self.stale_after_s / 4):
      record = self.record
      if record is None:
        return
      try:
        fresh = {**record, "heartbeat": time.time()}
        if not self._replace_if(record["token"], fresh):
          if not self.path.exists() and self._create(fresh):  # deleted by hand while held: written again
            continue
          found, _ = self._read(self.path)
          holder = f"pid {found['pid']} on host {found['host']}" if found else "an unreadable file"
          self.log(
            f"warning: {self.path} was taken over by {holder}; two runs may now write into this workdir"
          )
          self.lost = True
          return
        if self.record is not None:
          self.record = fresh
      except (OSError, DataError) as e:  # a flaky filesystem, a stuck .busy file: try at the next beat
        self.log(f"warning: {self.path}: heartbeat not written ({e})")


def _create_exclusive(path, text: str = "", tag: str = "") -> bool:
  """Creates the local file `path` holding `text` unless it exists; whether this call created it.

  The text is written to a file of its own, then hard-linked to `path` (which fails if `path` exists),
  so the lock never exists empty: a kill between creating and writing cannot leave an empty lock, which
  would read as a live one until its heartbeat times out. Where hard links are not supported, an
  exclusive create and then the write (readers retry an empty file briefly)."""
  if text:
    fresh = path.parent / f"{path.name}.{tag}.new"  # `tag`: unique to the caller
    fresh.write_text(text)
    try:
      os.link(fresh, path)  # local: atomic, and refused if the lock exists
      return True
    except FileExistsError:
      return False
    except OSError:  # no hard links on this filesystem: the exclusive create below
      pass
    finally:
      fresh.unlink(missing_ok=True)
  try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # local: exclusive create (disk only)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:  # local: the file just created
    f.write(text)
  return True


def _mtime(path) -> float:
  try:
    return float(as_path(path).stat().mtime)  # 0 where a bucket reports none
  except OSError:
    return 0.0
