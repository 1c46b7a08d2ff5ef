"""Extract embeddings: `python -m experiments.extract --config=configs/extract.py:VARIANT --workdir=W`."""

from absl import app, flags
from ml_collections import config_flags

from aligned.extract import extract, format_results
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/extract.py", "extraction config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/extract", "where the store and embeddings.npy go")


def main(argv):
  del argv
  run_job(extract, format_results, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
