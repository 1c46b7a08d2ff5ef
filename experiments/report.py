"""Gather runs into a report: `python -m experiments.report --config=configs/report.py --config.runs=W1,W2 --workdir=R`."""

from absl import app, flags
from ml_collections import config_flags

from aligned.report import format_summary, write_report
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/report.py", "report config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/report", "where report.md, results.csv and plots/ go")


def main(argv):
  del argv
  run_job(write_report, format_summary, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
