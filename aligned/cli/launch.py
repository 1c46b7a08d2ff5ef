"""What every command does around its job: packaged configs by name, quiet logs, one-line errors with
exit code 2, a summary line.

`--config` takes a config file (`path/to/my_config.py[:VARIANT]`) or the name of a config shipped in
`aligned.configs` (`extract`, `demo:images`, `finetune.py:smoke`; the checkout spelling
`configs/NAME.py[:VARIANT]` still works). A name that is neither is refused with the list of names.

The job runs holding the workdir's lock (`aligned.workdir_lock`): a second command on a workdir that a
live run uses is refused with exit code 2 before its job starts. In a multi-process run only process 0
takes it; with `distributed.auto` no process knows its index before JAX starts, so none takes it.
The export takes none (`lock=False`): it replaces its folder whole.
"""

import contextlib
import os
import pathlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

from absl import app, logging

from aligned import configs
from aligned.errors import DataError
from aligned.paths import as_path, check_urls
from aligned.workdir_lock import WorkdirLock

# Bad input and bad settings end the run with `error: ...` and exit code 2, never a traceback.
USER_ERRORS = (DataError, FileNotFoundError, ValueError, FloatingPointError)

CONFIG_DIR = pathlib.Path(configs.__file__).parent  # local: the package's own files
_NOT_CONFIGS = ("__init__", "common")


def packaged_configs() -> list[str]:
  """Names of the configs shipped with the package (`extract`, `finetune`, ...)."""
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in _NOT_CONFIGS)


def config_file(name: str) -> str:
  """The packaged config `name` as a file path (a command's default `--config`)."""
  path = CONFIG_DIR / f"{name}.py"
  if name in _NOT_CONFIGS or not path.is_file():
    raise ValueError(f"no packaged config {name!r}; the packaged configs are {', '.join(packaged_configs())}")
  return str(path)


def resolve_config(value: str) -> str:
  """`--config` value -> a config file path with its `:VARIANT` (an existing file is kept as given)."""
  path, colon, variant = value.partition(":")
  if pathlib.Path(path).expanduser().is_file():  # local: a config is a Python file, imported from a disk
    return value
  name = path.removesuffix(".py")
  for prefix in ("aligned/configs/", "configs/"):
    name = name.removeprefix(prefix)
  try:
    return config_file(name) + colon + variant
  except ValueError:
    raise ValueError(
      f"--config={value}: {path} is not a file, nor a packaged config "
      f"(one of {', '.join(packaged_configs())}, e.g. --config=extract:things_images)"
    ) from None


def resolve_config_argv(argv: Sequence[str]) -> list[str]:
  """argv with every `--config=VALUE` / `--config VALUE` resolved (`--config.key=...` untouched)."""
  out, i = list(argv), 1
  while i < len(out):
    if out[i].startswith("--config="):
      out[i] = "--config=" + resolve_config(out[i].removeprefix("--config="))
    elif out[i] == "--config" and i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1])
      i += 1
    i += 1
  return out


def start(main: Callable) -> None:
  """Run `main` as a command (`python -m aligned.cli.X`, the `aligned-X` scripts, `experiments.X`)."""
  try:
    argv = resolve_config_argv(sys.argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  app.run(main, argv=argv)


# `distributed.auto`: the variables a launcher sets, from which JAX finds this process's index
# (SLURM, Open MPI, a TPU slice on GKE or with its worker id exported; a multislice run adds the slice)
RANK_VARIABLES = ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "TPU_WORKER_ID")


def _auto_process_is_first() -> bool | None:
  """Whether this is process 0 by the launcher's variables; None when none is set (a Cloud TPU VM
  reads its worker id from the metadata server once jax.distributed starts)."""
  for name in RANK_VARIABLES:
    if os.environ.get(name, "").strip().isdigit():
      first = int(os.environ[name]) == 0
      if name == "TPU_WORKER_ID":
        first = first and os.environ.get("MEGASCALE_SLICE_ID", "0").strip() in ("", "0")
      return first
  return None


def takes_workdir_lock(config) -> bool:
  """Whether this process takes the workdir lock: yes, unless it is not process 0 of a multi-process
  run (`distributed.num_processes` > 1, or generation's `process_count` > 1). With `distributed.auto`
  process 0 is found from the launcher's variables (`RANK_VARIABLES`); where none is set, no process
  takes it (the index is known only after `jax.distributed` starts)."""
  get = getattr(config, "get", None)
  if get is None:
    return True
  distributed = get("distributed") or {}
  if distributed.get("auto", False):
    return bool(_auto_process_is_first())
  if distributed.get("num_processes", 1) > 1:
    return distributed.get("process_id", 0) == 0
  if (get("process_count") or 0) > 1:
    return (get("process_index") or 0) == 0
  return True


@contextlib.contextmanager
def _released_on_sigterm(lock: WorkdirLock) -> Iterator[None]:
  """While the block runs, SIGTERM releases the lock, then ends the process as SIGTERM would have (a job
  with its own handler, the student's checkpointing one, replaces this one while it runs)."""

  def handle(signum, frame):
    lock.release()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

  previous = None
  if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # someone else's handler: left alone
    try:
      previous = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread (some notebook runners): no handler
      pass
  try:
    yield
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def workdir_lock(config, workdir: str, lock: bool = True) -> Iterator[None]:
  """The job's workdir lock for the block (none when `lock` is False or on processes other than 0)."""
  if not lock or not takes_workdir_lock(config):
    yield
    return
  lock = WorkdirLock(workdir)
  with _released_on_sigterm(lock), lock:  # the handler first: a SIGTERM right after the lock releases it
    yield


def run_job(job: Callable, summarize: Callable[[dict], str], config, workdir: str, lock: bool = True) -> dict:
  """Runs `job(config, workdir)` as a command: URLs checked, the workdir locked (unless `lock` is False:
  a job that replaces its workdir whole, as the export does, would move or delete a lock file inside
  it), bad input as one line and exit code 2, then the summary."""
  logging.set_verbosity(logging.WARNING)  # keep the output readable (no backend-probing chatter)
  try:
    check_urls(config.to_dict() if hasattr(config, "to_dict") else config, workdir)
    with workdir_lock(config, workdir, lock):
      results = job(config, workdir)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(summarize(results))
  if (as_path(workdir) / "results.json").exists():
    print(f"results: {workdir}/results.json")
  return results
