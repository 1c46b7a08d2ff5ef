"""Generate AligNet files: `python -m experiments.generate --config=configs/generate.py:VARIANT --workdir=W`."""

from absl import app, flags
from ml_collections import config_flags

from aligned.generation.generate import format_results, generate
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/generate.py", "generation config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/alignet", "where the AligNet files and manifest.json go")


def main(argv):
  del argv
  run_job(generate, format_results, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
