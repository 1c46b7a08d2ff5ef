"""`python -m experiments.import_release` in a checkout: the command `aligned-import-release` (aligned/cli/import_release.py)."""

from aligned.cli.import_release import run

if __name__ == "__main__":
  run()
