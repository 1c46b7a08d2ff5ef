"""Uncertainty alignment (aligned/uncertainty.py): known answers and plain-NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from aligned import uncertainty


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _human_counts(n=300, people=20, seed=0):
  """Triplets with a random human choice distribution (every pair chosen at least once) and counts."""
  rng = np.random.default_rng(seed)
  p = rng.dirichlet([1.0, 1.0, 1.0], size=n)
  counts = rng.multinomial(people - 3, p) + 1
  return counts


def test_fit_temperature_recovers_the_generating_temperature():
  rng = np.random.default_rng(0)
  sims = rng.normal(size=(2000, 3)) * 3.0
  counts = 1000 * _softmax(sims / 0.4)  # expected (fractional) counts at T = 0.4
  assert uncertainty.fit_temperature(sims, counts) == pytest.approx(0.4, rel=2e-3)
  # Scale invariance: similarities 100x larger need a 100x larger temperature.
  assert uncertainty.fit_temperature(100 * sims, counts) == pytest.approx(40.0, rel=2e-3)
  # The NLL at the fitted T is below its neighbours'.
  t = uncertainty.fit_temperature(sims, counts)
  at = uncertainty.choice_nll(sims, counts, t)
  assert at < uncertainty.choice_nll(sims, counts, 1.1 * t) and at < uncertainty.choice_nll(
    sims, counts, t / 1.1
  )


def test_model_equal_to_the_human_distribution():
  counts = _human_counts()
  human = counts / counts.sum(-1, keepdims=True)
  sims = np.log(human)  # softmax(sims / 1) is the human distribution
  results, arrays = uncertainty.uncertainty_alignment(sims, counts, folds=5)
  assert results["temperature"] == pytest.approx(1.0, abs=1e-3)
  assert all(t == pytest.approx(1.0, abs=2e-3) for t in results["fold_temperatures"])
  assert results["mean_kl"] == pytest.approx(0.0, abs=1e-5)
  assert results["entropy_spearman"] > 0.999  # 1 up to float32 noise among tied human entropies
  assert results["ece"] == pytest.approx(0.0, abs=2e-3)
  # float32 NLL pins T to about 1e-3 (the NLL is flat at its minimum), hence the tolerance.
  np.testing.assert_allclose(arrays["model_entropy"], arrays["human_entropy"], atol=3e-3)


def test_perfect_and_constant_models():
  counts = np.zeros((100, 3), np.int64)
  counts[:, 0] = 7  # everyone chooses pair 0
  perfect = np.tile([5.0, 0.0, 0.0], (100, 1))
  results, _ = uncertainty.uncertainty_alignment(perfect, counts, folds=4)
  assert results["mean_kl"] < 1e-3 and results["ece"] < 1e-3 and results["cv_nll"] < 1e-3
  assert results["entropy_spearman"] is None  # human entropy is 0 everywhere: undefined

  counts = _human_counts(seed=1)
  human = counts / counts.sum(-1, keepdims=True)
  results, arrays = uncertainty.uncertainty_alignment(np.zeros((len(counts), 3)), counts, folds=3)
  entropy = -(human * np.log(human)).sum(-1)
  assert results["mean_kl"] == pytest.approx(np.mean(np.log(3) - entropy), abs=1e-5)  # KL(p || uniform)
  assert results["ece"] == pytest.approx(0.0, abs=1e-7)  # confident 1/3, right 1/3 (random tie-break)
  assert results["entropy_spearman"] is None  # a constant model entropy: undefined
  assert results["cv_nll"] == pytest.approx(np.log(3), abs=1e-6)


def test_kl_and_entropy_match_numpy():
  rng = np.random.default_rng(3)
  p = rng.dirichlet([0.5, 0.5, 0.5], size=50)
  p[:5, 1] = 0.0  # exact zeros in the human distribution
  p /= p.sum(-1, keepdims=True)
  q = rng.dirichlet([1, 1, 1], size=50)
  with np.errstate(divide="ignore", invalid="ignore"):
    reference = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(-1)
    reference_h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
  np.testing.assert_allclose(uncertainty.kl_per_triplet(p, np.log(q)), reference, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(uncertainty.entropy(p), reference_h, rtol=1e-5, atol=1e-6)


def test_ece_matches_a_loop_over_responses():
  rng = np.random.default_rng(4)
  counts = rng.integers(0, 4, size=(400, 3))
  counts[counts.sum(-1) == 0, 0] = 1
  probs = _softmax(rng.normal(size=(400, 3)) * 2)
  probs[:10] = [0.45, 0.45, 0.1]  # ties at the top share the credit
  got = uncertainty.expected_calibration_error(probs, counts, n_bins=10)
  edges = np.linspace(1 / 3, 1, 11)
  conf_sum, hit_sum, n = np.zeros(10), np.zeros(10), np.zeros(10)
  for q, c in zip(probs, counts, strict=True):
    top = np.flatnonzero(q == q.max())
    b = min(int(np.searchsorted(edges, q.max(), side="right")) - 1, 9)
    for pair in range(3):
      for _ in range(c[pair]):  # one prediction per response
        conf_sum[b] += q.max()
        hit_sum[b] += (pair in top) / len(top)
        n[b] += 1
  keep = n > 0
  reference = np.sum(n[keep] / n.sum() * np.abs(hit_sum[keep] / n[keep] - conf_sum[keep] / n[keep]))
  assert got["ece"] == pytest.approx(reference, abs=1e-12)
  assert [b["n_responses"] for b in got["bins"]] == n.astype(int).tolist()
  # An overconfident model: 90 % sure, people split evenly between two pairs -> ECE 0.4.
  over = uncertainty.expected_calibration_error(
    np.tile([0.9, 0.05, 0.05], (5, 1)), np.tile([3, 3, 0], (5, 1))
  )
  assert over["ece"] == pytest.approx(0.4)


def test_temperature_of_a_fold_never_sees_its_own_responses():
  rng = np.random.default_rng(5)
  sims = rng.normal(size=(200, 3))
  counts = rng.multinomial(10, _softmax(sims / 0.5))
  base = uncertainty.cross_validated_probs(sims, counts, folds=4, seed=0)
  fold = uncertainty.fold_ids(200, 4, seed=0)
  changed = counts.copy()
  changed[fold == 0] = changed[fold == 0][:, ::-1]  # fold 0's people now disagree with the model
  other = uncertainty.cross_validated_probs(sims, changed, folds=4, seed=0)
  np.testing.assert_allclose(other["probs"][fold == 0], base["probs"][fold == 0], rtol=1e-6)
  assert not np.allclose(other["probs"][fold == 1], base["probs"][fold == 1])
  assert other["fold_temperatures"][0] == base["fold_temperatures"][0]
  assert other["cv_nll"] > base["cv_nll"]


def test_reaction_time_correlations():
  counts = _human_counts(n=200, seed=6)
  human = counts / counts.sum(-1, keepdims=True)
  rt = 800 + 1000 * uncertainty.entropy(human).astype(np.float64)  # people slower where they disagree
  rt[:3] = np.nan  # unknown reaction times are left out
  results, _ = uncertainty.uncertainty_alignment(np.log(human), counts, folds=5, mean_rt=rt)
  assert results["rt_human_entropy_spearman"] == pytest.approx(1.0)
  assert results["rt_spearman"] > 0.999
  results, _ = uncertainty.uncertainty_alignment(-np.log(human), counts, folds=5, mean_rt=rt)
  assert results["rt_spearman"] < 0.9


def test_bad_folds():
  with pytest.raises(ValueError, match="2 folds"):
    uncertainty.fold_ids(10, 1)
  with pytest.raises(ValueError, match="cannot be split"):
    uncertainty.fold_ids(3, 5)
