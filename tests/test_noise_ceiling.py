"""Tests of the human noise ceiling and leave-one-out agreement (aligned/metrics.py)."""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np
import pytest

from aligned.data.triplets import read_noise_ceiling_format, read_odd_last
from aligned.metrics import noise_ceiling

_Z95 = 1.959964


def _reference(counts, min_responses: int = 2) -> dict:
  """Plain-Python noise ceiling, 95 % CI and leave-one-out agreement."""
  kept = [[int(v) for v in row] for row in counts if sum(int(v) for v in row) >= min_responses]
  if not kept:
    return {"noise_ceiling": None, "noise_ceiling_ci95": None, "loo_agreement": None, "n_triplets": 0}
  props = [max(row) / sum(row) for row in kept]
  n = len(props)
  mean = sum(props) / n
  half = _Z95 * math.sqrt(sum((p - mean) ** 2 for p in props) / (n - 1)) / math.sqrt(n) if n > 1 else 0.0

  credit, n_responses = 0.0, 0
  for row in kept:
    for pair in range(3):
      for _ in range(row[pair]):  # every response choosing this pair
        n_responses += 1
        others = list(row)
        others[pair] -= 1
        best = max(others)
        modes = [k for k in range(3) if others[k] == best]
        if pair in modes:
          credit += 1 / len(modes)
  return {
    "noise_ceiling": mean,
    "noise_ceiling_ci95": [mean - half, mean + half],
    "loo_agreement": credit / n_responses,
    "n_triplets": n,
    "n_responses": n_responses,
  }


def _assert_matches(result: dict, expected: dict) -> None:
  assert result["n_triplets"] == expected["n_triplets"]
  if expected["noise_ceiling"] is None:
    assert result["noise_ceiling"] is None
    assert result["noise_ceiling_ci95"] is None
    assert result["loo_agreement"] is None
    assert result["n_responses"] == 0
    return
  assert result["n_responses"] == expected["n_responses"]
  assert result["noise_ceiling"] == pytest.approx(expected["noise_ceiling"], abs=1e-12)
  assert result["noise_ceiling_ci95"] == pytest.approx(expected["noise_ceiling_ci95"], abs=1e-6)
  assert result["loo_agreement"] == pytest.approx(expected["loo_agreement"], abs=1e-12)


# ------------------------------------------------------------------------------------------------
# Hand-checkable cases
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  ("counts", "ceiling", "loo"),
  [
    ([[3, 0, 0]], 1.0, 1.0),
    ([[0, 0, 5]], 1.0, 1.0),
    ([[1, 1, 0]], 0.5, 0.0),  # each response's single other response disagrees
    ([[2, 1, 0]], 2 / 3, 1 / 3),  # pair-0 responses see a tie [1, 1, 0] (1/2 each); pair 1 sees [2, 0, 0]
    ([[1, 1, 1]], 1 / 3, 0.0),  # each response sees the other two pairs tied, not its own
    ([[2, 2, 0]], 0.5, 0.0),  # each response sees the other pair ahead ([1, 2, 0] or [2, 1, 0])
    ([[3, 1, 1]], 0.6, 0.6),  # pair-0 responses see [2, 1, 1] (credit 1 each); the others see [3, 0, 1]
  ],
)
def test_hand_checked(counts, ceiling, loo):
  result = noise_ceiling(np.array(counts))
  assert result["noise_ceiling"] == pytest.approx(ceiling)
  assert result["loo_agreement"] == pytest.approx(loo)
  assert result["noise_ceiling_ci95"] == pytest.approx([ceiling, ceiling])  # one triplet: no spread
  assert result["n_triplets"] == 1
  assert result["n_responses"] == sum(counts[0])
  _assert_matches(result, _reference(counts))


def test_two_triplets_by_hand():
  # [3,0,0]: ceiling 1, loo 3/3; [2,1,0]: ceiling 2/3, loo 1/3 of 3 responses -> 1 credit.
  result = noise_ceiling([[3, 0, 0], [2, 1, 0], [0, 1, 0]])  # the lone response is left out
  assert result["n_triplets"] == 2
  assert result["n_responses"] == 6
  assert result["noise_ceiling"] == pytest.approx((1 + 2 / 3) / 2)
  assert result["loo_agreement"] == pytest.approx((3 + 1) / 6)
  std = math.sqrt(((1 - 5 / 6) ** 2 + (2 / 3 - 5 / 6) ** 2) / 1)
  half = _Z95 * std / math.sqrt(2)
  assert result["noise_ceiling_ci95"] == pytest.approx([5 / 6 - half, 5 / 6 + half], abs=1e-6)


@pytest.mark.parametrize("counts", [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 0]], np.zeros((0, 3), int)])
def test_no_multi_response_triplet(counts):
  result = noise_ceiling(counts)
  assert result == {
    "noise_ceiling": None,
    "noise_ceiling_ci95": None,
    "loo_agreement": None,
    "n_triplets": 0,
    "n_responses": 0,
  }


def test_real_single_response_file_has_no_ceiling():
  ht = read_odd_last(pathlib.Path(os.environ["ALIGNED_DATA"]) / "things/2171trials_humans.txt")
  result = noise_ceiling(ht.counts)
  assert result["noise_ceiling"] is None and result["n_triplets"] == 0


# ------------------------------------------------------------------------------------------------
# Against the plain-Python reference on random counts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_counts(seed):
  rng = np.random.default_rng(seed)
  counts = rng.integers(0, 5, size=(300, 3))
  counts[:20] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]] * 5  # single responses (and none): left out
  counts[20:40] = [[2, 2, 0], [1, 1, 1], [0, 3, 3], [2, 1, 2], [4, 0, 4]] * 4  # ties
  rng.shuffle(counts)
  totals = counts.sum(axis=1)
  assert (totals < 2).sum() >= 20  # excluded triplets are present

  result = noise_ceiling(counts)
  expected = _reference(counts.tolist())
  _assert_matches(result, expected)
  assert result["n_triplets"] == (totals >= 2).sum()
  assert result["n_responses"] == totals[totals >= 2].sum()
  low, high = result["noise_ceiling_ci95"]
  assert low < result["noise_ceiling"] < high

  # The triplets left out must not change anything.
  _assert_matches(noise_ceiling(counts[totals >= 2]), expected)


@pytest.mark.parametrize("min_responses", [1, 3, 5])
def test_min_responses(min_responses):
  rng = np.random.default_rng(10 + min_responses)
  counts = rng.integers(0, 4, size=(200, 3))
  counts[0] = [1, 0, 0]
  _assert_matches(noise_ceiling(counts, min_responses=min_responses), _reference(counts, min_responses))


def test_invariant_to_pair_order():
  rng = np.random.default_rng(4)
  counts = rng.integers(0, 6, size=(100, 3))
  base = noise_ceiling(counts)
  for perm in ([1, 0, 2], [2, 1, 0], [1, 2, 0]):
    permuted = noise_ceiling(counts[:, perm])
    assert permuted["noise_ceiling"] == pytest.approx(base["noise_ceiling"])
    assert permuted["loo_agreement"] == pytest.approx(base["loo_agreement"])


# ------------------------------------------------------------------------------------------------
# Simulated people with known choice probabilities
# ------------------------------------------------------------------------------------------------


def _simulate(n_triplets: int, n_responses: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet([1.0, 1.0, 1.0], size=n_triplets)
  counts = np.stack([rng.multinomial(n_responses, p) for p in probs])
  return probs, counts


def test_simulated_ceiling_approaches_mean_max_probability():
  probs, counts = _simulate(n_triplets=500, n_responses=200, seed=0)
  result = noise_ceiling(counts)
  truth = probs.max(axis=1).mean()
  assert result["noise_ceiling"] == pytest.approx(truth, abs=0.02)
  # A new person agrees with the crowd's mode about as often as the mode's probability.
  assert result["loo_agreement"] == pytest.approx(truth, abs=0.02)
  assert result["loo_agreement"] <= result["noise_ceiling"]
  low, high = result["noise_ceiling_ci95"]
  assert high - low < 0.05
  _assert_matches(result, _reference(counts))


def test_simulated_responses_through_the_noise_ceiling_file(tmp_path):
  # Simulated people write a noise-ceiling file (raw order, 1-based); the reader and noise_ceiling
  # together recover the ceiling of the generating probabilities.
  sortindex = np.array(
    [int(v) for v in (pathlib.Path(os.environ["ALIGNED_DATA"]) / "things/sortindex").read_text().split()]
  )
  rng = np.random.default_rng(5)
  n_triplets, n_responses = 60, 200
  moved = np.flatnonzero(sortindex != np.arange(len(sortindex)))
  assert len(moved) == 21
  items = np.array([rng.choice(1854, size=3, replace=False) for _ in range(n_triplets)])
  for t, obj in enumerate(moved):  # some triplets touch the objects that move between the orders
    items[t] = [obj, 1200 + 2 * t, 1201 + 2 * t]
  probs = rng.dirichlet([1.0, 1.0, 1.0], size=n_triplets)  # per pair [01, 02, 12] of `items`

  lines = []
  for t in range(n_triplets):
    for subject, pair in enumerate(rng.choice(3, size=n_responses, p=probs[t])):
      odd = 2 - pair  # pair 01 leaves out item 2, pair 02 item 1, pair 12 item 0
      order = rng.permutation(3)
      raw = sortindex[items[t][order]] + 1  # the file holds 1-based raw-order objects: raw = s[sorted]
      choice = int(np.flatnonzero(order == odd)[0]) + 1
      lines.append(f"{raw[0]}\t{raw[1]}\t{raw[2]}\t{choice}\t{subject}\n")
  path = tmp_path / "simulated.tsv"
  path.write_text("".join(lines))

  ht = read_noise_ceiling_format(path)
  assert ht.n_triplets == n_triplets
  np.testing.assert_array_equal(ht.responses_per_triplet, np.full(n_triplets, n_responses))
  np.testing.assert_array_equal(np.sort(ht.triplets, axis=1), np.sort(items, axis=1))
  result = noise_ceiling(ht.counts)
  assert result["n_responses"] == n_triplets * n_responses
  assert result["noise_ceiling"] == pytest.approx(probs.max(axis=1).mean(), abs=0.03)
  # The modal pair found by the reader is the most probable pair wherever it clearly stands out.
  for t in range(n_triplets):
    top = np.sort(probs[t])
    if top[2] - top[1] > 0.2:
      best = int(np.argmax(probs[t]))
      pair_items = {int(items[t][p]) for p in ((0, 1), (0, 2), (1, 2))[best]}
      assert set(ht.triplets[t, :2].tolist()) == pair_items
