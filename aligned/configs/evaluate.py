"""Evaluate embeddings on human odd-one-out triplets (and a human similarity matrix).

Your embeddings:
  aligned-evaluate --config=evaluate --config.embeddings=E.npy \
    --config.triplets=FILE [--config.triplets_format=things_noise_ceiling] [--config.rsm=RDM.mat \
    --config.rsm_objects=objects.csv] --workdir=W

Variant `spose` (the README's main job): the SPoSE 49-d embedding, a model fit to human triplets, on
the 2,171 real human THINGS triplets and the human RDM48:
  aligned-evaluate --config=evaluate:spose --workdir=runs/demo
Expected: accuracy 65.73 %, 2,171 triplets and responses, no noise ceiling (one response each),
RSA Spearman 0.87.
Any field can be overridden, e.g. --config.similarity=cosine --config.embeddings_order=raw.

Also computed: accuracy per THINGS category (and mixed triplets), uncertainty alignment (temperature
by 5-fold CV over triplets, KL, entropy correlation, ECE; --config.uncertainty_folds=0 turns it off),
bootstrap intervals of the RSA (--config.rsm_similarity=triplet_softmax for the SPoSE-style matrix).
Levels (AligNet's human set) with image embeddings of its ImageNet-train images:
  --config.levels=responses.csv [--config.levels_stimuli=stimulus_list.csv] \
  --config.levels_embeddings=STORE_DIR (or E.npy --config.levels_ids=file_names.txt)
"""

import ml_collections
from ml_collections import config_dict

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
  # odd_last: the file's index base; unset: 0, checked (its smallest index must be 0, else refused);
  # 0: 0-based (object 0 may be absent); 1: 1-based, converted
  config.index_base = config_dict.placeholder(int)
  config.temperature = 1.0  # for mean_human_choice_prob
  config.rsm = ""  # optional human (dis)similarity matrix (.mat or .npy)
  config.rsm_objects = ""  # its object list in row order (.csv with image_name, or ids per line)
  config.rsm_kind = "auto"  # auto | similarity | dissimilarity
  config.rsm_similarity = ""  # the model's matrix: dot | cosine | triplet_softmax ("": as `similarity`)
  config.rsm_temperature = 0.0  # triplet_softmax temperature; 0: the fitted one (else `temperature`)
  config.bootstrap = 1000  # resamples of objects for the RSA intervals
  config.categories = True  # accuracy per THINGS high-level category (1,854-object embeddings only)
  config.uncertainty_folds = 5  # folds over triplets for the temperature; 0 skips uncertainty metrics
  config.ece_bins = 10  # reliability-diagram bins over confidence [1/3, 1]
  config.seed = 0  # folds and bootstrap
  config.levels = ""  # optional Levels response file (codebook format)
  config.levels_stimuli = ""  # its stimulus list, when the responses have no triplet-type column
  config.levels_embeddings = ""  # embedding store folder, or .npy/.txt with `levels_ids`
  config.levels_ids = ""  # one image file name per line, line i = row i of levels_embeddings

  if variant == "spose":
    things = data_dir() / "things"
    config.embeddings = str(things / "spose_embedding_49d_sorted.txt")
    config.triplets = str(things / "2171trials_humans.txt")
    config.rsm = str(things / "RDM48_triplet.mat")
    config.rsm_objects = str(things / "spose_embedding66d_rescaled_48val_reordered.csv")
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected spose or none")
  return config
