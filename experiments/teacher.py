"""`python -m experiments.teacher` in a checkout: the command `aligned-teacher` (aligned/cli/teacher.py)."""

from aligned.cli.teacher import run

if __name__ == "__main__":
  run()
