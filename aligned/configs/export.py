"""Export a trained student as a transformers model folder (backbone + triplet head).

  aligned-export --config=export --config.run=runs/vit_b16 --workdir=exports/vit_b16

Writes W/config.json, model.safetensors (transformers' PyTorch names and layouts), triplet_head.safetensors,
aligned_student.json (the pooled output, head, preprocessing, source run and step) and, for image
students, preprocessor_config.json; text students also get their tokenizer. Definitions: aligned/export.py.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant:
    raise ValueError(f"unknown variant {variant!r}; export has none")
  config = ml_collections.ConfigDict()
  config.run = ""  # a finetune workdir (config.json + checkpoints/)
  config.step = -1  # the checkpoint step; -1: the latest
  config.overwrite = False  # replace an earlier export in the workdir (never another folder)
  return config
