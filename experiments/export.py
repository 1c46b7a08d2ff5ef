"""`python -m experiments.export` in a checkout: the command `aligned-export` (aligned/cli/export.py)."""

from aligned.cli.export import run

if __name__ == "__main__":
  run()
