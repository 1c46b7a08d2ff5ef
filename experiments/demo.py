"""`python -m experiments.demo` in a checkout: the command `aligned-demo` (aligned/cli/demo.py)."""

from aligned.cli.demo import run

if __name__ == "__main__":
  run()
