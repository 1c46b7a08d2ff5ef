"""Fit the teacher: `python -m experiments.teacher --config=configs/teacher.py --config.embeddings=E --workdir=W`."""

from absl import app, flags
from ml_collections import config_flags

from aligned.teacher.train import fit_teacher, format_results
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/teacher.py", "teacher config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/teacher", "where transform.npz, results.json, ... go")


def main(argv):
  del argv
  run_job(fit_teacher, format_results, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
