"""Fit the teacher: `python -m experiments.teacher --config=configs/teacher.py --config.embeddings=E --workdir=W`."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from aligned.errors import DataError
from aligned.teacher.train import fit_teacher, format_results

_CONFIG = config_flags.DEFINE_config_file("config", "configs/teacher.py", "teacher config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/teacher", "where transform.npz, results.json, ... go")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    results = fit_teacher(_CONFIG.value, _WORKDIR.value)
  except (DataError, FileNotFoundError, ValueError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_results(results))
  print(f"results: {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  app.run(main)
