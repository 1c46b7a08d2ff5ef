"""A stand-in for the 4.7 M THINGS triplets (which cannot be downloaded here).

Triplets over the 1,854 THINGS objects are sampled uniformly (distinct items, each unordered triple at
most once, none that occurs in a given evaluation file) and labelled by the SPoSE 49-d model, a model
fit to 1.46 M human triplets: p(pair ab most similar) = softmax of the three pair dot products. Labels
are either that choice distribution itself (`responses=0`, soft labels) or `responses` simulated
people choosing from it (counts, like real multi-response data; `responses=1` is like the real
single-response training set).
"""

from __future__ import annotations

import numpy as np

from aligned import odd_one_out
from aligned.sampling import sample_triplets
from aligned.teacher.model import TripletTargets


def choice_probs(embeddings: np.ndarray, triplets: np.ndarray) -> np.ndarray:
  """[n, 3] p(pair [01, 02, 12] most similar) = softmax of pair dot products (the SPoSE choice model)."""
  sims = odd_one_out.pair_similarities(np.asarray(embeddings, np.float32)[triplets])
  return np.asarray(odd_one_out.choice_probs(sims), np.float64)


def standin_targets(
  embeddings: np.ndarray,
  n: int,
  seed: int,
  responses: int = 0,
  exclude: np.ndarray | None = None,
) -> TripletTargets:
  """Triplets sampled uniformly and labelled by a choice model (soft labels or simulated people)."""
  triplets = sample_triplets("random", n, seed, len(embeddings), exclude=exclude)
  probs = choice_probs(embeddings, triplets)
  if responses <= 0:
    return TripletTargets(triplets, probs.astype(np.float32), np.ones(n, np.float32))
  rng = np.random.default_rng([seed, 1])  # independent of the triplet draw
  probs = probs / probs.sum(axis=1, keepdims=True)  # exact normalisation for multinomial
  counts = rng.multinomial(responses, probs)
  return TripletTargets.from_counts(triplets, counts)


def standin_folds(
  embeddings: np.ndarray,
  n_train: int,
  n_val: int,
  seed: int,
  responses: int = 0,
  exclude: np.ndarray | None = None,
):
  """Fold data for cross-validation (`cross_validate`'s `fold_data`): per fold, `n_train` stand-in
  triplets sampled within the training objects and `n_val` within the held-out ones (object indices
  of the full set; none in `exclude`)."""

  def fold_data(fold: int, fold_of_object: np.ndarray) -> tuple[TripletTargets, TripletTargets]:
    parts = []
    for offset, (objects, n) in enumerate(
      ((np.flatnonzero(fold_of_object != fold), n_train), (np.flatnonzero(fold_of_object == fold), n_val))
    ):
      lookup = np.full(len(embeddings), -1, np.int64)
      lookup[objects] = np.arange(len(objects))
      banned = None
      if exclude is not None and len(exclude):
        inside = (lookup[exclude] >= 0).all(axis=1)
        banned = lookup[exclude[inside]]
      fold_seed = 1000 * (seed + 1) + 2 * fold + offset  # never the final fit's seed
      local = standin_targets(embeddings[objects], n, fold_seed, responses, banned)
      parts.append(TripletTargets(objects[local.triplets].astype(np.int32), local.probs, local.weights))
    return parts[0], parts[1]

  return fold_data
