"""Fine-tune a student: `python -m experiments.finetune --config=configs/finetune.py:VARIANT --workdir=W`.

Rerun the same command to resume. Exit code 143 after a SIGTERM (checkpoint written), 2 on bad input.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from aligned.student.train import finetune, format_results
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/finetune.py", "student config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/finetune", "checkpoints, metrics.jsonl, results.json, ...")


def main(argv):
  del argv
  results = run_job(finetune, format_results, _CONFIG.value, _WORKDIR.value)
  if results["status"] == "preempted":
    sys.exit(143)


if __name__ == "__main__":
  app.run(main)
