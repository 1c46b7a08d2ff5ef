"""`python -m experiments.transfer` in a checkout: the command `aligned-transfer` (aligned/cli/transfer.py)."""

from aligned.cli.transfer import run

if __name__ == "__main__":
  run()
