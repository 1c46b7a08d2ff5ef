"""What every entry point does around its job: quiet logs, one-line errors with exit code 2, a summary."""

import pathlib
import sys
from collections.abc import Callable

from absl import logging

from aligned.errors import DataError, check_local_paths

# Bad input and bad settings end the run with `error: ...` and exit code 2, never a traceback.
USER_ERRORS = (DataError, FileNotFoundError, ValueError, FloatingPointError)


def run_job(job: Callable, summarize: Callable[[dict], str], config, workdir: str) -> dict:
  logging.set_verbosity(logging.WARNING)  # keep the output readable (no backend-probing chatter)
  try:
    check_local_paths(config.to_dict() if hasattr(config, "to_dict") else config, workdir)
    results = job(config, workdir)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(summarize(results))
  if (pathlib.Path(workdir) / "results.json").exists():
    print(f"results: {workdir}/results.json")
  return results
