"""`python -m experiments.prepare_imagenet` in a checkout: the command `aligned-prepare-imagenet` (aligned/cli/prepare_imagenet.py)."""

from aligned.cli.prepare_imagenet import run

if __name__ == "__main__":
  run()
