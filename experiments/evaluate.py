"""`python -m experiments.evaluate` in a checkout: the command `aligned-evaluate` (aligned/cli/evaluate.py)."""

from aligned.cli.evaluate import run

if __name__ == "__main__":
  run()
