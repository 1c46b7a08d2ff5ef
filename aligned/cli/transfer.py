"""Few-shot probes and distribution shift: `aligned-transfer --config=transfer --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.transfer import format_results, transfer

_CONFIG = config_flags.DEFINE_config_file("config", config_file("transfer"), "transfer config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/transfer", "where config.json and results.json go")


def main(argv):
  del argv
  run_job(transfer, format_results, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
