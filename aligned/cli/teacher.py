"""Fit the teacher: `aligned-teacher --config=teacher --config.embeddings=E --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.teacher.train import fit_teacher, format_results

_CONFIG = config_flags.DEFINE_config_file("config", config_file("teacher"), "teacher config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/teacher", "where transform.npz, results.json, ... go")


def main(argv):
  del argv
  run_job(fit_teacher, format_results, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
