"""Gather runs into a report: `aligned-report --config=report --config.runs=W1,W2 --workdir=R`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.report import format_summary, write_report

_CONFIG = config_flags.DEFINE_config_file("config", config_file("report"), "report config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/report", "where report.md, results.csv and plots/ go")


def main(argv):
  del argv
  run_job(write_report, format_summary, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
