"""Embed the items of a source with a backbone into an embedding store (resumable).

  aligned-extract --config=extract:things_minilm_word --workdir=W
  aligned-extract --config=extract:image_folder --config.root=IMAGES \\
    --config.backbone=vit --config.checkpoint=CKPT --workdir=W
  aligned-extract --config=extract:things_images --config.root=THINGS/object_images \\
    --config.backbone=siglip --config.checkpoint=CKPT --workdir=W      # + W/embeddings.npy [1854, d]
  aligned-extract --config=extract:imagenet --config.student=runs/vit_b16 \\
    --config.student_output=pooled --workdir=W                          # a trained student as the backbone

Writes W/store/ (shards + metadata); for THINGS words also W/embeddings.npy ([1854, 384], sorted).
Variants: things_minilm_word (template "{word}"; 42.10 % on the 2,171 human triplets),
things_minilm_definition ("{word}: {definition}"; 50.21 %), wordnet_minilm_definition (10,000
concrete WordNet nouns outside THINGS, "{word}: {definition}" from lemma and gloss), image_folder (every image under root),
things_images (THINGS images under root, one folder per concept or one image per concept; embeddings.npy
= per-concept means, sorted order), imagenet (tfds imagenet2012 --config.split=train|validation; ids = file names, item i = record i).
"""

import ml_collections

from aligned.configs.common import wordnet_nouns


def get_config(variant: str = "things_minilm_word") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.source = "things_words"  # things_words | wordnet_nouns | image_folder | things_images | tfds
  config.backbone = "minilm"  # text: minilm; images: vit | clip | dinov2 | siglip
  config.checkpoint = ""  # a local folder (config.json + model.safetensors); empty: the default
  config.random_backbone = ml_collections.ConfigDict()  # image backbones: a transformers config dict ->
  config.seed = 0  # random weights with this seed instead of a checkpoint (smoke runs, the image demo)
  config.student = ""  # a finetune workdir: the trained student is the backbone (backbone/checkpoint unused)
  config.student_output = "head"  # head (the triplet head's output) | pooled (the fine-tuned backbone's)
  config.student_step = -1  # the checkpoint step; -1: the latest
  config.template = "{word}"  # text sources: fields {word}, {id}, {definition}
  config.wordnet = wordnet_nouns()  # wordnet_nouns: which concrete nouns (outside THINGS)
  config.root = ""  # image_folder: the folder to walk
  config.tfds_name = "imagenet2012"  # tfds: a dataset prepared as array_record (see prepare_imagenet)
  config.split = "train"
  config.data_dir = ""  # tfds data_dir; empty: tfds' default
  config.tfds_ids = "file_name"  # tfds ids: file_name (none: refused) | index ("0", "1", ...)
  config.image_size = 0  # 0: the backbone's own (224 for AligNet students)
  config.normalization = "none"  # none (AligNet, [0, 1]) | imagenet | clip | siglip
  config.compute_dtype = "float32"  # float32 | bfloat16
  config.store_dtype = "float32"  # float32 | bfloat16 (half the disk; read back as float32)
  config.image_cache = ""  # images: a cache of this source at this size (aligned-cache-images)
  config.decode_threads = 4  # host threads decoding the next batches
  config.batch_size = 128  # a multiple of the number of devices
  config.shard_size = 256
  # True: delete this workdir's store and embeddings first (only where provenance.json shows extract
  # wrote them) and start over; a rerun with other settings or inputs is refused otherwise
  config.restart = False
  if variant == "things_minilm_definition":
    config.template = "{word}: {definition}"
  elif variant == "wordnet_minilm_definition":
    config.source, config.template = "wordnet_nouns", "{word}: {definition}"
  elif variant == "image_folder":
    config.source, config.backbone, config.batch_size, config.shard_size = "image_folder", "vit", 64, 1024
  elif variant == "things_images":
    config.source, config.backbone, config.batch_size, config.shard_size = "things_images", "vit", 64, 1024
  elif variant == "imagenet":
    config.source, config.backbone, config.batch_size, config.shard_size = "tfds", "vit", 64, 16384
  elif variant != "things_minilm_word":
    raise ValueError(
      f"unknown variant {variant!r}; expected things_minilm_word, things_minilm_definition, "
      "wordnet_minilm_definition, image_folder, things_images or imagenet"
    )
  return config
