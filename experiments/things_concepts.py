"""`python -m experiments.things_concepts` in a checkout: the command `aligned-things-concepts` (aligned/cli/things_concepts.py)."""

from aligned.cli.things_concepts import run

if __name__ == "__main__":
  run()
