"""Triplet sampling strategies: each one's defining property, uniqueness, determinism, errors."""

import itertools

import numpy as np
import pytest

from aligned.sampling import count_distinct, parse_strategy, sample_triplets

LABELS = np.repeat(np.arange(6), [5, 9, 3, 12, 2, 9])  # 40 items, uneven classes


@pytest.mark.parametrize("strategy", ["random", "between_class", "within_class", "class_border"])
def test_defining_property_uniqueness_and_determinism(strategy):
  triplets = sample_triplets(strategy, 300, seed=1, n_items=40, labels=LABELS)
  assert triplets.shape == (300, 3)
  assert all(len(set(t)) == 3 for t in triplets.tolist())  # distinct items
  assert len({tuple(sorted(t)) for t in triplets.tolist()}) == 300  # each unordered triple once
  n_labels = np.array([len(set(LABELS[t])) for t in triplets])
  if strategy == "between_class":
    assert (n_labels == 3).all()
  elif strategy == "within_class":
    assert (n_labels == 1).all()
  elif strategy == "class_border":
    assert (n_labels == 2).all()  # exactly two items share a label
    assert (LABELS[triplets[:, 0]] == LABELS[triplets[:, 1]]).all()  # the pair first, the odd item last
  np.testing.assert_array_equal(triplets, sample_triplets(strategy, 300, seed=1, n_items=40, labels=LABELS))
  assert not np.array_equal(triplets, sample_triplets(strategy, 300, seed=2, n_items=40, labels=LABELS))


@pytest.mark.parametrize("strategy", ["random", "between_class", "within_class", "class_border"])
def test_counts_are_exact_and_enforced(strategy):
  brute = sum(
    1
    for t in itertools.combinations(range(40), 3)
    if {
      "random": True,
      "between_class": len(set(LABELS[list(t)])) == 3,
      "within_class": len(set(LABELS[list(t)])) == 1,
      "class_border": len(set(LABELS[list(t)])) == 2,
    }[strategy]
  )
  assert count_distinct(strategy, 40, LABELS) == brute
  if brute <= 2000:  # small sets can be drawn completely
    everything = sample_triplets(strategy, brute, seed=0, n_items=40, labels=LABELS)
    assert len({tuple(sorted(t)) for t in everything.tolist()}) == brute
  with pytest.raises(ValueError, match="only"):
    sample_triplets(strategy, brute + 1, seed=0, n_items=40, labels=LABELS)


def test_items_are_used_about_equally_and_exclusion_holds():
  triplets = sample_triplets("within_class", 300, seed=0, n_items=40, labels=LABELS)
  per_item = np.bincount(triplets.ravel(), minlength=40)
  # Items of a class of 2 can never be in a within-class triplet; all others appear.
  assert (per_item[LABELS == 4] == 0).all() and (per_item[LABELS != 4] > 0).all()
  taken = sample_triplets("random", 500, seed=0, n_items=40)
  others = sample_triplets("random", 500, seed=0, n_items=40, exclude=taken[:, ::-1])
  assert not {tuple(sorted(t)) for t in taken.tolist()} & {tuple(sorted(t)) for t in others.tolist()}


def test_strategy_names_and_bad_labels():
  assert parse_strategy("cluster_border_500") == ("class_border", 500)
  assert parse_strategy("within_cluster_50") == ("within_class", 50)
  assert parse_strategy("between_class") == ("between_class", None)
  for bad in ("cluster_border_", "cluster_border_x", "odd_one", "within_cluster_1"):
    with pytest.raises(ValueError):
      parse_strategy(bad)
  with pytest.raises(ValueError, match="at least 2 distinct labels"):
    sample_triplets("class_border", 5, seed=0, n_items=10, labels=np.zeros(10, int))
  with pytest.raises(ValueError, match="one label per item"):
    sample_triplets("between_class", 5, seed=0, n_items=10)
