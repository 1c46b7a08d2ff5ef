"""`python -m experiments.report` in a checkout: the command `aligned-report` (aligned/cli/report.py)."""

from aligned.cli.report import run

if __name__ == "__main__":
  run()
