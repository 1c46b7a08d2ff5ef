"""Evaluate embeddings on human triplets: `aligned-evaluate --config=evaluate --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.evaluate import evaluate, format_results

_CONFIG = config_flags.DEFINE_config_file("config", config_file("evaluate"), "evaluation config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/evaluate", "where config.json and results.json go")


def main(argv):
  del argv
  run_job(evaluate, format_results, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
