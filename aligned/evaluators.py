"""Evaluators: one contract for scoring a model during and after a run, in the spirit of big_vision.

An evaluator is built once from its inputs (a config, data, a way to embed) and then called as
`run(params) -> dict` of metrics, as often as needed. `params` is whatever the model's embedding
function takes: a student's parameters, a teacher's transform, or nothing for fixed embeddings.

`HumanTripletEvaluator` is the one code path that scores embeddings on human odd-one-out triplets;
the teacher's reports, the student's evaluations and the evaluation stage all use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from aligned import metrics, odd_one_out
from aligned.data.triplets import HumanTriplets
from aligned.errors import DataError
from aligned.triplet_similarities import triplet_similarities


class Evaluator(Protocol):
  def run(self, params: Any) -> dict: ...


def fixed(embeddings: np.ndarray) -> Callable[[Any], np.ndarray]:
  """An embedding function for embeddings that do not depend on parameters."""
  return lambda _: embeddings


@dataclasses.dataclass
class HumanTripletEvaluator:
  """Accuracy and p(human choice) of object embeddings on human triplets (`aligned.metrics`).

  Attributes:
    human: the triplets, items in the embeddings' row order.
    embed: params -> [n_objects, d] embeddings.
    similarity: how pairs are compared (`dot` or `cosine`).
    temperature: of the model's choice probabilities `softmax(s / temperature)`.
    kl: also report `kl_to_humans`, KL(human choice distribution || model) averaged over responses
      (multi-response files only).
  """

  human: HumanTriplets
  embed: Callable[[Any], np.ndarray]
  similarity: odd_one_out.Similarity = "dot"
  temperature: float = 1.0
  kl: bool = False

  def similarities(self, embeddings: np.ndarray) -> np.ndarray:
    """[t, 3] pair similarities [s01, s02, s12] of the human triplets."""
    if self.human.n_triplets and self.human.triplets.max() >= len(embeddings):
      raise DataError(
        self.human.source or None,
        f"a triplet uses object {self.human.triplets.max()}, but there are {len(embeddings)} embeddings",
      )
    return triplet_similarities(embeddings, self.human.triplets, self.similarity)

  def scores(self, sims: np.ndarray) -> dict:
    """The metrics of [t, 3] similarities of the human triplets (what `run` computes after embedding)."""
    result = metrics.triplet_metrics(sims, self.human.counts, self.temperature)
    if self.kl and self.human.is_multi_response:
      kl = odd_one_out.kl_divergence(
        sims,
        target_probs=np.asarray(self.human.choice_distribution(), np.float32),
        temperature=self.temperature,
      )
      result["kl_to_humans"] = float(np.average(np.asarray(kl), weights=self.human.responses_per_triplet))
    return result

  def run(self, params: Any = None) -> dict:
    return self.scores(self.similarities(self.embed(params)))
