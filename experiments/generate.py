"""`python -m experiments.generate` in a checkout: the command `aligned-generate` (aligned/cli/generate.py)."""

from aligned.cli.generate import run

if __name__ == "__main__":
  run()
