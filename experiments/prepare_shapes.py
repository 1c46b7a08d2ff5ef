"""`python -m experiments.prepare_shapes` in a checkout: the command `aligned-prepare-shapes` (aligned/cli/prepare_shapes.py)."""

from aligned.cli.prepare_shapes import run

if __name__ == "__main__":
  run()
