"""Cache resized images: `aligned-cache-images --config=cache_images --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.data.image_cache import cache_images, format_results

_CONFIG = config_flags.DEFINE_config_file("config", config_file("cache_images"), "image cache config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/image_cache", "where cache/ and results.json go")


def main(argv):
  del argv
  run_job(cache_images, format_results, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
