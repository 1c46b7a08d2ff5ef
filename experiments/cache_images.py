"""`python -m experiments.cache_images` in a checkout: the command `aligned-cache-images` (aligned/cli/cache_images.py)."""

from aligned.cli.cache_images import run

if __name__ == "__main__":
  run()
