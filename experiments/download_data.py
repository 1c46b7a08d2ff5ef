"""`python -m experiments.download_data` in a checkout: the command `aligned-download-data` (aligned/cli/download_data.py)."""

from aligned.cli.download_data import run

if __name__ == "__main__":
  run()
