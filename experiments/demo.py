"""The main job: `python -m experiments.demo --config=configs/demo.py[:images] --workdir=runs/demo`.

Rerun the same command to continue a killed demo (finished stages are skipped).
"""

from absl import app, flags
from ml_collections import config_flags

from aligned.demo import format_results, run_demo
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "demo config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "where every stage writes")


def main(argv):
  del argv
  run_job(run_demo, format_results, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
