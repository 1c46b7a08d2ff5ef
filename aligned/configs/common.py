"""Settings shared by several configs, the tests and the benchmarks."""

import ml_collections

# The tiny ViT (random weights) of the smoke student, the tests and the benchmarks: 2 blocks of width
# 32, 16 x 16 images in 4 x 4 patches. Seconds on a CPU; it checks plumbing, not learning at scale.
TINY_VIT = dict(
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  image_size=16,
  patch_size=4,
)


def tiny_vit(**overrides) -> dict:
  """`TINY_VIT` with some fields changed (a transformers ViTConfig as a dict)."""
  unknown = set(overrides) - set(TINY_VIT) - {"initializer_range"}
  if unknown:
    raise ValueError(f"not tiny-ViT fields: {sorted(unknown)}")
  return {**TINY_VIT, **overrides}


# WordNet concrete nouns outside THINGS (`aligned.data.items.wordnet_texts`): the item set of the text
# demo's generation and students. The lexicographer files kinds of things THINGS depicts; people
# (noun.person) and places (noun.location, mostly named instances) are left out.
WORDNET_LEXNAMES = (
  "noun.animal",
  "noun.artifact",
  "noun.body",
  "noun.food",
  "noun.object",
  "noun.plant",
  "noun.substance",
)


def wordnet_nouns(n_items: int = 10_000, seed: int = 0) -> ml_collections.ConfigDict:
  """Which WordNet nouns a `wordnet_nouns` text source holds (a random subset, in synset order)."""
  return ml_collections.ConfigDict({"n_items": n_items, "lexnames": WORDNET_LEXNAMES, "seed": seed})
