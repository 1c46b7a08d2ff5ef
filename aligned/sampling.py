"""Triplet sampling strategies for AligNet data (one sentence each; items within a triplet distinct,
each unordered triple at most once, deterministic given the seed):

- `random`: three items uniformly at random.
- `between_class`: three items with three different labels.
- `within_class`: three items with one label.
- `class_border`: two items with one label and one item with another.
- `cluster_border_K` / `within_cluster_K`: `class_border` / `within_class` with the labels of the
  k-means clustering at level K instead of the dataset's classes.

Labels are any integer array over items (dataset classes or cluster assignments). Items of a
label-based draw are chosen so that every item is about equally likely (a label is picked with
probability proportional to its size).
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("random", "between_class", "within_class", "class_border")


def parse_strategy(name: str) -> tuple[str, int | None]:
  """'cluster_border_500' -> ('class_border', 500); 'within_cluster_50' -> ('within_class', 50);
  the class strategies -> (name, None)."""
  for prefix, base in (("cluster_border_", "class_border"), ("within_cluster_", "within_class")):
    if name.startswith(prefix):
      level = name[len(prefix) :]
      if not level.isdigit() or int(level) < 2:
        raise ValueError(f"bad clustering level in {name!r}: expected e.g. {prefix}500")
      return base, int(level)
  if name not in STRATEGIES:
    raise ValueError(
      f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}, cluster_border_K, within_cluster_K"
    )
  return name, None


def _keys(triplets: np.ndarray, n_items: int) -> np.ndarray:
  s = np.sort(triplets.astype(np.int64), axis=1)
  return (s[:, 0] * n_items + s[:, 1]) * n_items + s[:, 2]


class _Groups:
  """Items grouped by label: members of label j are `order[start[j]:start[j] + size[j]]`."""

  def __init__(self, labels: np.ndarray):
    self.labels = labels
    self.order = np.argsort(labels, kind="stable")
    self.values, self.start, self.size = np.unique(labels[self.order], return_index=True, return_counts=True)
    self.index_of_item = np.searchsorted(self.values, labels)

  def pick_labels(self, rng, n: int, min_size: int) -> np.ndarray:
    """Label positions drawn with probability proportional to size, among labels with >= min_size items."""
    weights = np.where(self.size >= min_size, self.size, 0).astype(np.float64)
    if weights.sum() == 0:
      raise ValueError(f"no label has {min_size} or more items")
    return rng.choice(len(self.size), size=n, p=weights / weights.sum())

  def distinct_members(self, rng, groups: np.ndarray, count: int) -> np.ndarray:
    """[n, count] distinct members of each given label position (rejection on repeats)."""
    out = np.empty((len(groups), count), np.int64)
    todo = np.arange(len(groups))
    while len(todo):
      offsets = (rng.random((len(todo), count)) * self.size[groups[todo], None]).astype(np.int64)
      out[todo] = self.order[self.start[groups[todo], None] + offsets]
      sorted_rows = np.sort(out[todo], axis=1)
      repeated = (np.diff(sorted_rows, axis=1) == 0).any(axis=1)
      todo = todo[repeated]
    return out


def _draw(
  strategy: str, labels: np.ndarray | None, groups: _Groups | None, rng, n: int, n_items: int
) -> np.ndarray:
  """About `n` candidate triplets (before de-duplication) satisfying the strategy."""
  if strategy == "random":
    draw = rng.integers(0, n_items, size=(n, 3))
    return draw[(draw[:, 0] != draw[:, 1]) & (draw[:, 0] != draw[:, 2]) & (draw[:, 1] != draw[:, 2])]
  if strategy == "within_class":
    return groups.distinct_members(rng, groups.pick_labels(rng, n, 3), 3)
  if strategy == "class_border":
    pairs = groups.distinct_members(rng, groups.pick_labels(rng, n, 2), 2)
    odd = rng.integers(0, n_items, size=n)
    keep = labels[odd] != labels[pairs[:, 0]]
    return np.concatenate([pairs, odd[:, None]], axis=1)[keep]
  if strategy == "between_class":
    draw = rng.integers(0, n_items, size=(n, 3))
    a, b, c = labels[draw[:, 0]], labels[draw[:, 1]], labels[draw[:, 2]]
    return draw[(a != b) & (a != c) & (b != c)]
  raise ValueError(f"unknown strategy {strategy!r}")


def count_distinct(strategy: str, n_items: int, labels: np.ndarray | None = None) -> int:
  """How many distinct unordered triplets a strategy can produce (exact, in integers)."""
  if strategy == "random":
    return n_items * (n_items - 1) * (n_items - 2) // 6
  sizes = [int(c) for c in np.unique(labels, return_counts=True)[1]]
  if strategy == "within_class":
    return sum(c * (c - 1) * (c - 2) // 6 for c in sizes)
  if strategy == "class_border":
    return sum(c * (c - 1) // 2 * (n_items - c) for c in sizes)
  if strategy == "between_class":  # e3 of the sizes: (p1^3 - 3 p1 p2 + 2 p3) / 6
    p1, p2, p3 = (sum(c**k for c in sizes) for k in (1, 2, 3))
    return (p1**3 - 3 * p1 * p2 + 2 * p3) // 6
  raise ValueError(f"unknown strategy {strategy!r}")


def sample_triplets(
  strategy: str,
  n: int,
  seed: int,
  n_items: int,
  labels: np.ndarray | None = None,
  exclude: np.ndarray | None = None,
) -> np.ndarray:
  """`n` distinct unordered triplets [n, 3] of item indices for a base strategy (see `parse_strategy`).

  Args:
    strategy: random | between_class | within_class | class_border.
    n: how many triplets.
    seed: the same seed (and inputs) gives the same triplets in the same order.
    n_items: items are 0..n_items - 1.
    labels: [n_items] integer labels (classes or clusters); needed by all but `random`.
    exclude: [m, 3] triplets (any order) that must not be drawn (e.g. another split).
  """
  if strategy != "random":
    if labels is None or len(labels) != n_items:
      raise ValueError(f"strategy {strategy!r} needs one label per item ({n_items})")
    n_labels = len(np.unique(labels))
    need = {"between_class": 3, "class_border": 2, "within_class": 1}[strategy]
    if n_labels < need:
      raise ValueError(f"strategy {strategy!r} needs at least {need} distinct labels, found {n_labels}")
  labels = None if labels is None else np.asarray(labels)
  available = count_distinct(strategy, n_items, labels)
  if n > available:
    raise ValueError(f"asked for {n:,} {strategy} triplets but only {available:,} distinct ones exist")
  groups = _Groups(labels) if strategy in ("within_class", "class_border") else None
  banned = (
    np.unique(_keys(exclude, n_items)) if exclude is not None and len(exclude) else np.zeros(0, np.int64)
  )
  rng = np.random.default_rng(seed)
  chosen = np.zeros((0, 3), np.int64)
  stalls = 0
  while len(chosen) < n:
    before = len(chosen)
    chosen = np.concatenate(
      [chosen, _draw(strategy, labels, groups, rng, int(1.2 * (n - len(chosen))) + 64, n_items)]
    )
    keys = _keys(chosen, n_items)
    _, first = np.unique(keys, return_index=True)
    keep = np.zeros(len(chosen), bool)
    keep[first] = True  # the first occurrence of each unordered triple, in draw order
    keep &= ~np.isin(keys, banned)
    chosen = chosen[keep]
    stalls = stalls + 1 if len(chosen) == before else 0
    if stalls >= 20:
      raise ValueError(f"could only find {len(chosen)} distinct {strategy} triplets of the {n} requested")
  return chosen[:n].astype(np.int64)
