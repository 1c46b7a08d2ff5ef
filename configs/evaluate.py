"""Evaluate embeddings on human odd-one-out triplets (and a human similarity matrix).

Your embeddings:
  python -m experiments.evaluate --config=configs/evaluate.py --config.embeddings=E.npy \
    --config.triplets=FILE [--config.triplets_format=things_noise_ceiling] [--config.rsm=RDM.mat \
    --config.rsm_objects=objects.csv] --workdir=W

Variant `spose` (the README's main job): the SPoSE 49-d embedding, a model fit to human triplets, on
the 2,171 real human THINGS triplets and the human RDM48:
  python -m experiments.evaluate --config=configs/evaluate.py:spose --workdir=runs/demo
Expected: accuracy 65.73 %, 2,171 triplets and responses, no noise ceiling (one response each),
RSA Spearman 0.87.
Any field can be overridden, e.g. --config.similarity=cosine --config.embeddings_order=raw.
"""

import ml_collections

from aligned.data.cache import data_dir


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """variant: "" (inputs from the command line) or "spose"."""
  config = ml_collections.ConfigDict()
  config.embeddings = ""  # [objects, features] .npy (no pickles) or whitespace text
  config.embeddings_order = "sorted"  # the file's row order: sorted | raw (THINGS)
  config.transform = ""  # optional gLocal-format transform .npz applied before scoring
  config.similarity = "dot"  # dot | cosine
  config.triplets = ""  # human triplet file
  config.triplets_format = "odd_last"  # odd_last | things_noise_ceiling
  config.temperature = 1.0  # for mean_human_choice_prob
  config.rsm = ""  # optional human (dis)similarity matrix (.mat or .npy)
  config.rsm_objects = ""  # its object list in row order (.csv with image_name, or ids per line)
  config.rsm_kind = "auto"  # auto | similarity | dissimilarity

  if variant == "spose":
    things = data_dir() / "things"
    config.embeddings = str(things / "spose_embedding_49d_sorted.txt")
    config.triplets = str(things / "2171trials_humans.txt")
    config.rsm = str(things / "RDM48_triplet.mat")
    config.rsm_objects = str(things / "spose_embedding66d_rescaled_48val_reordered.csv")
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected spose or none")
  return config
