"""Cache images resized for the model (decode + cubic resize once; students then read bytes).

  aligned-cache-images --config=cache_images --config.split=train --workdir=W
  aligned-cache-images --config=cache_images:image_folder --config.root=IMAGES \\
    --workdir=W

Writes W/cache/ (metadata.json, array_record shards of uint8 [224, 224, 3] images, ids, per-shard
sha256 records) and W/results.json. Rerunning the same command resumes a killed build (complete shards
are skipped); other settings in the same W are refused. A student reads the cache with
--config.data.image_cache=W/cache (aligned/configs/finetune.py). Variants: imagenet (tfds imagenet2012, the
default), image_folder (every image under root, sorted paths).
"""

import ml_collections


def get_config(variant: str = "imagenet") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.source = "tfds"  # tfds | image_folder
  config.tfds_name = "imagenet2012"  # tfds: a dataset prepared as array_record (see prepare_imagenet)
  config.split = "train"
  config.data_dir = ""  # tfds data_dir; empty: tfds' default
  config.tfds_ids = "file_name"  # tfds ids: file_name (none: refused) | index ("0", "1", ...)
  config.root = ""  # image_folder: the folder to walk
  config.image_size = 224  # the student's input size (AligNet: 224)
  config.shard_size = 1024  # images per shard (154 MB at 224): the unit of resumption and of checksums
  config.workers = -1  # decoding processes; -1: one per core, 0: decode in this process
  if variant == "image_folder":
    config.source = "image_folder"
  elif variant != "imagenet":
    raise ValueError(f"unknown variant {variant!r}; expected imagenet or image_folder")
  return config
