"""`python -m experiments.extract` in a checkout: the command `aligned-extract` (aligned/cli/extract.py)."""

from aligned.cli.extract import run

if __name__ == "__main__":
  run()
