"""Few-shot probes and distribution shift: `python -m experiments.transfer --config=configs/transfer.py --workdir=W`."""

from absl import app, flags
from ml_collections import config_flags

from aligned.transfer import format_results, transfer
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/transfer.py", "transfer config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/transfer", "where config.json and results.json go")


def main(argv):
  del argv
  run_job(transfer, format_results, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
