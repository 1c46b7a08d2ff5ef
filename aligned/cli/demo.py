"""The main job: `aligned-demo --config=demo[:images] --workdir=runs/demo`.

Rerun the same command to continue a killed demo (finished stages are skipped).
"""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.demo import format_results, run_demo

_CONFIG = config_flags.DEFINE_config_file("config", config_file("demo"), "demo config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "where every stage writes")


def main(argv):
  del argv
  run_job(run_demo, format_results, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
