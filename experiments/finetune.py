"""`python -m experiments.finetune` in a checkout: the command `aligned-finetune` (aligned/cli/finetune.py)."""

from aligned.cli.finetune import run

if __name__ == "__main__":
  run()
