"""The one code path that scores embeddings on human triplets (teacher, students, evaluation stage)."""

import numpy as np
import pytest

from aligned import evaluators, metrics
from aligned.data import embeddings, triplets
from aligned.data.triplets import HumanTriplets
from aligned.errors import DataError


def test_spose_scores_its_known_accuracy_on_the_real_triplets(data_dir):
  spose = embeddings.load_embeddings(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  human = triplets.read_triplets(data_dir / "things" / "2171trials_humans.txt")
  evaluator = evaluators.HumanTripletEvaluator(human, evaluators.fixed(spose))
  scores = evaluator.run()
  assert scores["accuracy"] == 1427 / 2171  # a known fact about these files, exact (integer hits)
  assert "kl_to_humans" not in scores
  # run(params) embeds with the given parameters: a scaled copy keeps the accuracy, sharpens p(choice)
  scaled = evaluators.HumanTripletEvaluator(human, lambda c: c * spose).run(2.0)
  assert scaled["accuracy"] == scores["accuracy"]
  assert scaled["mean_human_choice_prob"] > scores["mean_human_choice_prob"]


def test_scores_match_a_numpy_reference_on_multi_response_triplets():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 5)).astype(np.float32)
  items = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [0, 5, 9]])
  counts = np.array([[3, 1, 0], [0, 2, 2], [1, 1, 1], [0, 0, 4], [2, 0, 1]])
  human = HumanTriplets(items, counts, "made-up")
  temperature = 0.7
  got = evaluators.HumanTripletEvaluator(human, evaluators.fixed(x), "dot", temperature, kl=True).run()

  a, b, c = x[items[:, 0]].astype(np.float64), x[items[:, 1]], x[items[:, 2]]
  sims = np.stack([(a * b).sum(1), (a * c).sum(1), (b * c).sum(1)], 1)
  q = np.exp(sims / temperature) / np.exp(sims / temperature).sum(1, keepdims=True)
  p = counts / counts.sum(1, keepdims=True)
  kl = np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0), axis=1)
  top = sims == sims.max(1, keepdims=True)
  hits = (top * counts).sum(1) * (top.sum(1) == 1)
  assert got["accuracy"] == pytest.approx(hits.sum() / counts.sum(), abs=1e-12)
  assert got["mean_human_choice_prob"] == pytest.approx((q * counts).sum() / counts.sum(), rel=1e-5)
  assert got["kl_to_humans"] == pytest.approx(np.average(kl, weights=counts.sum(1)), rel=1e-4)
  assert got["accuracy"] == metrics.triplet_metrics(sims.astype(np.float32), counts)["accuracy"]


def test_a_triplet_beyond_the_embeddings_is_refused():
  human = HumanTriplets(np.array([[0, 1, 7]]), np.array([[1, 0, 0]]), "file.txt")
  with pytest.raises(DataError, match="file.txt.*object 7, but there are 5 embeddings"):
    evaluators.HumanTripletEvaluator(human, evaluators.fixed(np.ones((5, 3), np.float32))).run()
