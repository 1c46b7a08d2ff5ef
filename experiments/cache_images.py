"""Cache resized images: `python -m experiments.cache_images --config=configs/cache_images.py --workdir=W`."""

from absl import app, flags
from ml_collections import config_flags

from aligned.data.image_cache import cache_images, format_results
from experiments.launch import run_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cache_images.py", "image cache config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/image_cache", "where cache/ and results.json go")


def main(argv):
  del argv
  run_job(cache_images, format_results, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
