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
from aligned.teacher.model import TripletTargets


def _keys(triplets: np.ndarray, n_objects: int) -> np.ndarray:
  """One int64 per unordered triple."""
  s = np.sort(np.asarray(triplets, np.int64), axis=1)
  return (s[:, 0] * n_objects + s[:, 1]) * n_objects + s[:, 2]


def sample_triplets(n_objects: int, n: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
  """`n` uniformly random triplets of distinct objects, unique as unordered triples, deterministic.

  Args:
    n_objects: objects are 0..n_objects-1.
    n: how many triplets.
    seed: the same seed gives the same triplets.
    exclude: [m, 3] triplets (any order) that must not be drawn, e.g. an evaluation file.
  """
  total = n_objects * (n_objects - 1) * (n_objects - 2) // 6
  banned = (
    np.unique(_keys(exclude, n_objects)) if exclude is not None and len(exclude) else np.zeros(0, np.int64)
  )
  if n > total - len(banned):
    raise ValueError(f"asked for {n} triplets but only {total - len(banned)} distinct ones exist")
  rng = np.random.default_rng(seed)
  chosen = np.zeros((0, 3), np.int64)
  while len(chosen) < n:
    draw = rng.integers(0, n_objects, size=(int(1.2 * (n - len(chosen))) + 64, 3))
    draw = draw[(draw[:, 0] != draw[:, 1]) & (draw[:, 0] != draw[:, 2]) & (draw[:, 1] != draw[:, 2])]
    chosen = np.concatenate([chosen, draw])
    keys = _keys(chosen, n_objects)
    _, first = np.unique(keys, return_index=True)
    keep = np.zeros(len(chosen), bool)
    keep[first] = True  # first occurrence of each triple, in draw order
    keep &= ~np.isin(keys, banned)
    chosen = chosen[keep]
  return chosen[:n].astype(np.int32)


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
  triplets = sample_triplets(len(embeddings), n, seed, exclude)
  probs = choice_probs(embeddings, triplets)
  if responses <= 0:
    return TripletTargets(triplets, probs.astype(np.float32), np.ones(n, np.float32))
  rng = np.random.default_rng([seed, 1])  # independent of the triplet draw
  probs = probs / probs.sum(axis=1, keepdims=True)  # exact normalisation for multinomial
  counts = rng.multinomial(responses, probs)
  return TripletTargets.from_counts(triplets, counts)
