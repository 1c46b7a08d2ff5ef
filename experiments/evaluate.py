"""Evaluate embeddings on human triplets: `python -m experiments.evaluate --config=configs/evaluate.py --workdir=W`."""

from absl import app, flags
from ml_collections import config_flags

from aligned.evaluate import evaluate, format_results
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/evaluate.py", "evaluation config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/evaluate", "where config.json and results.json go")


def main(argv):
  del argv
  run_job(evaluate, format_results, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
