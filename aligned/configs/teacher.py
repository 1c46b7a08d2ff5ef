"""Fit the human-aligned teacher transform on THINGS embeddings.

  aligned-teacher --config=teacher --config.embeddings=E.npy --workdir=W

E.npy: [1854, d] embeddings of the THINGS objects (sorted order, or --config.embeddings_order=raw).
Default: uncertainty distillation (KL to soft choice distributions; W, b fit at T = 1, then T alone)
on the SPoSE stand-in (200 k uniform triplets labelled by the SPoSE 49-d choice model, none of the evaluation
triplets), lambda chosen by 3-fold object-disjoint CV, evaluated on the 2,171 real human triplets.
Writes W/transform.npz (gLocal keys + temperature), W/results.json, W/metrics.jsonl, W/plots/.

Variants (`--config=teacher:VARIANT`):
  distill (default)  as above.
  hard               hard-label cross-entropy on one simulated response per triplet, T fixed at 1.
  smoke              tiny and fast (tests, CI): 20 k triplets, 2 lambdas, 2 folds, 60 steps.
Train on a real file instead: --config.triplets=trainset.txt [--config.triplets_format=...].
"""

import ml_collections
from ml_collections import config_dict

from aligned.data.cache import data_dir


def get_config(variant: str = "distill") -> ml_collections.ConfigDict:
  things = data_dir() / "things"
  config = ml_collections.ConfigDict()
  config.embeddings = ""  # [objects, features] .npy or text
  config.embeddings_order = "sorted"  # sorted | raw (THINGS)

  config.triplets = ""  # a human triplet file to train on; empty: the SPoSE stand-in
  config.triplets_format = "odd_last"  # odd_last | things_noise_ceiling
  # odd_last: the file's index base; unset: 0, checked (its smallest index must be 0, else refused);
  # 0: 0-based (object 0 may be absent); 1: 1-based, converted
  config.index_base = config_dict.placeholder(int)
  # real files: replace one-hot responses by a choice model's probabilities ([objects, k] embedding,
  # e.g. SPoSE or VICE): distillation of soft targets; empty: the responses themselves
  config.soft_targets = ""
  config.standin = ml_collections.ConfigDict()
  config.standin.spose = str(things / "spose_embedding_49d_sorted.txt")
  config.standin.n_triplets = 200_000  # the final fit's and each CV fold's training set
  config.standin.n_val = 20_000  # each CV fold's held-out triplets (within its held-out objects)
  config.standin.responses = 0  # 0: soft labels; k: k simulated people per triplet
  config.standin.seed = 0
  config.standin.exclude_eval = True  # never train on a triplet of an evaluation file

  config.objective = "distill"  # distill (KL to choice distributions) | hard (CE of the responses)
  config.regularizer = "identity"  # identity: lambda ||W - mean(diag W) I||^2 | l2
  config.similarity = "dot"  # dot | cosine
  config.lambdas = (1e-3, 1e-2, 1e-1, 1.0)
  config.learning_rates = (3e-2,)
  config.folds = 3
  config.steps = 300  # Adam steps (full batch: one step = one epoch)
  config.batch_size = 0  # 0: full batch
  config.path = "auto"  # auto | matrix (few objects) | chunked (many objects)
  config.chunk = 16384
  config.init_scale = 0.0  # W = init_scale * I; 0: 1 / sqrt(d)
  config.log_every = 25
  config.seed = 0
  # True: delete this workdir's teacher files (only where provenance.json shows the teacher wrote them)
  # and start over; a rerun with other settings or inputs is refused without it
  config.restart = False

  config.eval_triplets = (str(things / "2171trials_humans.txt"),)
  config.eval_formats = ("odd_last",)
  config.eval_index_bases = ()  # as index_base, per eval file (one value: every file); empty: unset

  if variant == "hard":
    config.objective = "hard"
    config.standin.responses = 1
  elif variant == "smoke":
    config.standin.n_triplets = 20_000
    config.lambdas = (1e-2, 1.0)
    config.folds = 2
    config.steps = 60
  elif variant != "distill":
    raise ValueError(f"unknown variant {variant!r}; expected distill, hard or smoke")
  return config
