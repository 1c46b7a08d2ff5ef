"""Evaluate embeddings on human triplets: `python -m experiments.evaluate --config=configs/evaluate.py --workdir=W`."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from aligned.errors import DataError
from aligned.evaluate import evaluate, format_results

_CONFIG = config_flags.DEFINE_config_file("config", "configs/evaluate.py", "evaluation config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/evaluate", "where config.json and results.json go")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # keep the table readable (no backend-probing chatter)
  try:
    results = evaluate(_CONFIG.value, _WORKDIR.value)
  except (DataError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_results(results))
  print(f"results: {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  app.run(main)
