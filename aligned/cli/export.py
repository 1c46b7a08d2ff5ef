"""Export a trained student for transformers: `aligned-export --config=export --config.run=RUN --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.export import export_student, format_results

_CONFIG = config_flags.DEFINE_config_file("config", config_file("export"), "export config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/export", "the export folder (written whole, or not at all)")


def main(argv):
  del argv
  # no workdir lock: the export replaces its folder whole (a lock file inside would go with it)
  run_job(export_student, format_results, _CONFIG.value, _WORKDIR.value, lock=False)


def run():
  start(main)


if __name__ == "__main__":
  run()
