"""Embed the THINGS concepts with a text backbone into an embedding store (resumable).

  python -m experiments.extract --config=configs/extract.py:things_minilm_word --workdir=W

Writes W/store/ (shards + metadata) and W/embeddings.npy ([1854, 384], sorted THINGS order).
Variants: things_minilm_word (template "{word}"; 42.10 % on the 2,171 human triplets),
things_minilm_definition ("{word}: {definition}"; 50.21 %).
"""

import ml_collections


def get_config(variant: str = "things_minilm_word") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.source = "things_words"
  config.backbone = "minilm"
  config.checkpoint = ""  # a local folder; empty: the backbone's default
  config.template = "{word}"  # fields: {word}, {id}, {definition}
  config.batch_size = 128
  config.shard_size = 256
  if variant == "things_minilm_definition":
    config.template = "{word}: {definition}"
  elif variant != "things_minilm_word":
    raise ValueError(f"unknown variant {variant!r}; expected things_minilm_word or things_minilm_definition")
  return config
