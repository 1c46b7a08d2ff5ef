"""Extract embeddings: `aligned-extract --config=extract:VARIANT --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.extract import extract, format_results

_CONFIG = config_flags.DEFINE_config_file("config", config_file("extract"), "extraction config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/extract", "where the store and embeddings.npy go")


def main(argv):
  del argv
  run_job(extract, format_results, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
