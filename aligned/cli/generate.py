"""Generate AligNet files: `aligned-generate --config=generate:VARIANT --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.generation.generate import format_results, generate

_CONFIG = config_flags.DEFINE_config_file("config", config_file("generate"), "generation config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/alignet", "where the AligNet files and manifest.json go")


def main(argv):
  del argv
  run_job(generate, format_results, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
