"""Fine-tune a student: `aligned-finetune --config=finetune:VARIANT --workdir=W`.

Rerun the same command to resume. Exit code 143 after a SIGTERM (checkpoint written), 2 on bad input.
"""

import sys

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.student.train import finetune, format_results

_CONFIG = config_flags.DEFINE_config_file("config", config_file("finetune"), "student config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/finetune", "checkpoints, metrics.jsonl, results.json, ...")


def main(argv):
  del argv
  results = run_job(finetune, format_results, _CONFIG.value, _WORKDIR.value)
  if results["status"] == "preempted":
    sys.exit(143)


def run():
  start(main)


if __name__ == "__main__":
  run()
