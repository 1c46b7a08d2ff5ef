"""Tests of the human triplet readers (aligned/data/triplets.py) on real THINGS files and synthetic ones."""

from __future__ import annotations

import os
import pathlib
import random

import numpy as np
import pytest

from aligned import paths
from aligned.data import things
from aligned.data.triplets import (
  HumanTriplets,
  aggregate_responses,
  read_noise_ceiling_format,
  read_odd_last,
  read_triplets,
  write_odd_last,
)
from aligned.errors import DataError


def _data_file(relative: str) -> pathlib.Path:
  return pathlib.Path(os.environ["ALIGNED_DATA"]) / relative


def _plain_sortindex() -> list[int]:
  """The THINGS sortindex read with plain Python, independently of the library."""
  text = _data_file("things/sortindex").read_text()
  return [int(line) for line in text.splitlines() if line.strip()]


def _pair_counts(triplets: np.ndarray, counts: np.ndarray) -> list[dict[frozenset, int]]:
  """Per triplet, {unordered pair of items: count}, i.e. counts keyed by item identity, not position."""
  result = []
  for t, c in zip(triplets.tolist(), counts.tolist(), strict=True):
    result.append(
      {frozenset((t[0], t[1])): c[0], frozenset((t[0], t[2])): c[1], frozenset((t[1], t[2])): c[2]}
    )
  return result


def _write(path: pathlib.Path, rows: list[list[int]], sep: str) -> pathlib.Path:
  path.write_text("".join(sep.join(str(v) for v in row) + "\n" for row in rows))
  return path


# ------------------------------------------------------------------------------------------------
# 1. The real 2,171 human triplets (odd_last format)
# ------------------------------------------------------------------------------------------------


def test_real_2171_file():
  path = _data_file("things/2171trials_humans.txt")
  rows = [tuple(int(v) for v in line.split()) for line in path.read_text().splitlines() if line.strip()]
  assert len(rows) == 2171
  n_unique = len({frozenset(row) for row in rows})

  ht = read_odd_last(path)
  assert isinstance(ht, HumanTriplets)
  assert ht.n_triplets == n_unique == 2171
  assert ht.n_responses == 2171
  assert ht.triplets.shape == (2171, 3) and ht.counts.shape == (2171, 3)
  assert ht.source == os.fspath(path)
  # One response per triplet, choosing the pair of the first two items.
  np.testing.assert_array_equal(ht.counts, np.tile([1, 0, 0], (2171, 1)))
  np.testing.assert_array_equal(ht.responses_per_triplet, np.ones(2171))
  assert not ht.is_multi_response
  # Unique triplets in order of first appearance: here, the file order.
  for triplet, row in zip(ht.triplets.tolist(), rows, strict=True):
    assert set(triplet) == set(row)
    assert triplet[2] == row[2]  # the odd-one-out stays last

  # read_triplets with the default format is the same reader.
  again = read_triplets(path)
  np.testing.assert_array_equal(again.triplets, ht.triplets)
  np.testing.assert_array_equal(again.counts, ht.counts)


def test_real_sortindex_moves_21_objects():
  s = _plain_sortindex()
  assert sorted(s) == list(range(things.N_OBJECTS))
  moved = [i for i, v in enumerate(s) if v != i]
  assert len(moved) == 21
  np.testing.assert_array_equal(things.moved_objects(things.load_sortindex()), moved)


# ------------------------------------------------------------------------------------------------
# 2. The noise-ceiling format (1-based, raw order, choice = position of the odd-one-out)
# ------------------------------------------------------------------------------------------------

# Sorted-order triplets with per-pair counts keyed by item identity. Several touch objects that move
# between the raw and the sorted order (246-248, 322-324, 453-455, 801-804, 816-820, 1149-1151).
_TRUTH = [
  ((246, 500, 1000), {(246, 500): 5, (246, 1000): 2, (500, 1000): 1}),
  ((10, 20, 30), {(10, 20): 0, (10, 30): 1, (20, 30): 4}),
  ((322, 803, 1151), {(322, 803): 1, (322, 1151): 6, (803, 1151): 2}),
  ((817, 818, 5), {(817, 818): 2, (817, 5): 0, (818, 5): 3}),
  ((1853, 0, 454), {(1853, 0): 1, (1853, 454): 1, (0, 454): 3}),
  ((820, 816, 1149), {(820, 816): 0, (820, 1149): 0, (816, 1149): 4}),
]


def _truth_responses(seed: int) -> tuple[list[tuple[list[int], int]], list[frozenset]]:
  """Responses (sorted-order items in shuffled positions, 0-based odd position), shuffled across triplets.

  Returns the responses and the expected order of first appearance of the unordered triplets.
  """
  rng = random.Random(seed)
  responses = []
  for items, pair_counts in _TRUTH:
    for pair, count in pair_counts.items():
      (odd,) = set(items) - set(pair)
      for _ in range(count):
        order = list(items)
        rng.shuffle(order)
        responses.append((order, order.index(odd)))
  rng.shuffle(responses)
  first_seen = []
  for order, _ in responses:
    if frozenset(order) not in first_seen:
      first_seen.append(frozenset(order))
  # The shuffle must exercise every odd-one-out position.
  assert {odd for _, odd in responses} == {0, 1, 2}
  return responses, first_seen


def _write_noise_ceiling_file(path: pathlib.Path, responses, sortindex) -> pathlib.Path:
  rows = []
  for subject, (order, odd) in enumerate(responses, start=101):
    raw_1_based = [int(sortindex[i]) + 1 for i in order]  # raw = s[sorted], then 1-based
    rows.append([*raw_1_based, odd + 1, subject])
  return _write(path, rows, "\t")


def _check_against_truth(ht: HumanTriplets, first_seen: list[frozenset]) -> None:
  truth = {frozenset(items): {frozenset(p): c for p, c in pc.items()} for items, pc in _TRUTH}
  assert ht.n_triplets == len(_TRUTH)
  assert ht.n_responses == sum(sum(pc.values()) for _, pc in _TRUTH)
  assert [frozenset(t) for t in ht.triplets.tolist()] == first_seen
  for triplet, by_pair, counts in zip(
    ht.triplets.tolist(), _pair_counts(ht.triplets, ht.counts), ht.counts.tolist(), strict=True
  ):
    assert by_pair == truth[frozenset(triplet)]
    # Modal pair first: counts[0] is the (here unique) maximum.
    assert counts[0] == max(counts) and counts.count(counts[0]) == 1


def test_noise_ceiling_format_round_trip(tmp_path):
  s = _plain_sortindex()
  moved = {i for i, v in enumerate(s) if v != i}
  touched = {i for items, _ in _TRUTH for i in items}
  assert len(touched & moved) >= 8  # the conversion is exercised
  responses, first_seen = _truth_responses(seed=0)
  path = _write_noise_ceiling_file(tmp_path / "nc.tsv", responses, s)

  ht = read_noise_ceiling_format(path)  # the default sortindex is the real one in $ALIGNED_DATA
  _check_against_truth(ht, first_seen)
  assert ht.is_multi_response
  assert ht.source == os.fspath(path)

  for sortindex in (None, np.asarray(s)):
    again = read_triplets(path, format="things_noise_ceiling", sortindex=sortindex)
    np.testing.assert_array_equal(again.triplets, ht.triplets)
    np.testing.assert_array_equal(again.counts, ht.counts)


def test_noise_ceiling_format_ignores_subject_and_order_of_items(tmp_path):
  s = _plain_sortindex()
  responses, first_seen = _truth_responses(seed=1)
  a = read_noise_ceiling_format(_write_noise_ceiling_file(tmp_path / "a.tsv", responses, s))
  _check_against_truth(a, first_seen)
  # Same responses with all subjects equal and the items rotated (choice follows the odd item).
  rotated = [(order[1:] + order[:1], (odd - 1) % 3) for order, odd in responses]
  rows = [[s[i] + 1 for i in order] + [odd + 1, 7] for order, odd in rotated]
  b = read_noise_ceiling_format(_write(tmp_path / "b.tsv", rows, "\t"))
  np.testing.assert_array_equal(a.triplets, b.triplets)
  np.testing.assert_array_equal(a.counts, b.counts)


# ------------------------------------------------------------------------------------------------
# 3. Mixing orders: reading raw-order objects as if they were sorted-order ones
# ------------------------------------------------------------------------------------------------


def test_raw_to_sorted_conversion_matters(tmp_path):
  s = _plain_sortindex()
  moved = {i for i, v in enumerate(s) if v != i}
  responses, _ = _truth_responses(seed=2)
  path = _write_noise_ceiling_file(tmp_path / "nc.tsv", responses, s)

  right = read_noise_ceiling_format(path, sortindex=np.asarray(s))
  wrong = read_triplets(path, format="things_noise_ceiling", sortindex=np.arange(things.N_OBJECTS))
  assert right.n_triplets == wrong.n_triplets
  # Treating raw as sorted leaves the items in raw order: raw = s[sorted] (the modal pair is the same
  # one, though its two items may swap places where the two orders disagree).
  as_raw = np.asarray(s)[right.triplets]
  for w, r in zip(wrong.triplets.tolist(), as_raw.tolist(), strict=True):
    assert set(w[:2]) == set(r[:2]) and w[2] == r[2]
  np.testing.assert_array_equal(wrong.counts, right.counts)
  n_touching = 0
  for r, w in zip(right.triplets.tolist(), wrong.triplets.tolist(), strict=True):
    if set(r) & moved:
      n_touching += 1
      assert set(r) != set(w)
    else:
      assert r == w
  assert 0 < n_touching < right.n_triplets


def test_explicit_sortindex_needed_for_other_object_sets(tmp_path):
  path = _write(tmp_path / "small.tsv", [[1, 2, 3, 3, 1], [3, 2, 1, 1, 2]], "\t")
  with pytest.raises(ValueError, match="sortindex"):
    read_noise_ceiling_format(path, n_objects=5)
  # With a permutation s of 5 objects: raw i -> sorted argsort(s)[i].
  s = np.array([2, 0, 1, 4, 3])
  ht = read_noise_ceiling_format(path, n_objects=5, sortindex=s)
  inv = np.argsort(s)
  assert set(ht.triplets[0].tolist()) == {int(inv[0]), int(inv[1]), int(inv[2])}
  # Both responses chose raw objects 1, 2 (0-based 0, 1) as the pair: their sorted indices come first.
  assert set(ht.triplets[0, :2].tolist()) == {int(inv[0]), int(inv[1])}
  np.testing.assert_array_equal(ht.counts, [[2, 0, 0]])


# ------------------------------------------------------------------------------------------------
# 4. Aggregation of repeated triplets
# ------------------------------------------------------------------------------------------------


def test_duplicates_merge_with_summed_counts(tmp_path):
  rows = [
    [7, 5, 9],  # pair {5, 7}
    [100, 300, 200],  # tie triplet: pair {100, 300}
    [5, 7, 9],  # pair {5, 7} again, other item order
    [9, 5, 7],  # pair {5, 9}
    [1, 2, 3],  # single response
    [300, 200, 100],  # tie triplet: pair {200, 300}
    [9, 7, 5],  # pair {7, 9}
    [5, 7, 9],  # pair {5, 7}
  ]
  ht = read_odd_last(_write(tmp_path / "dups.txt", rows, " "), index_base=0)  # no object 0: stated
  assert ht.n_triplets == 3
  assert ht.n_responses == len(rows)
  assert [frozenset(t) for t in ht.triplets.tolist()] == [
    frozenset({5, 7, 9}),
    frozenset({100, 200, 300}),
    frozenset({1, 2, 3}),
  ]
  by_pair = _pair_counts(ht.triplets, ht.counts)
  assert by_pair[0] == {frozenset({5, 7}): 3, frozenset({5, 9}): 1, frozenset({7, 9}): 1}
  assert sorted(ht.triplets[0, :2].tolist()) == [5, 7] and ht.triplets[0, 2] == 9
  np.testing.assert_array_equal(ht.counts[0], [3, 1, 1])
  assert by_pair[1] == {frozenset({100, 300}): 1, frozenset({200, 300}): 1, frozenset({100, 200}): 0}
  np.testing.assert_array_equal(ht.counts[2], [1, 0, 0])
  assert ht.triplets[2, 2] == 3
  np.testing.assert_array_equal(ht.responses_per_triplet, [5, 2, 1])
  assert ht.is_multi_response

  dist = ht.choice_distribution()
  assert dist.shape == (3, 3)
  np.testing.assert_allclose(dist.sum(axis=1), 1.0)
  np.testing.assert_allclose(dist[0], [3 / 5, 1 / 5, 1 / 5])
  np.testing.assert_allclose(dist[1], [1 / 2, 0, 1 / 2])


def test_tie_is_deterministic(tmp_path):
  # Pairs {100, 300} and {200, 300} tie; the earlier pair of the ascending items (02 = {100, 300}) wins,
  # whatever order the responses come in.
  rows = [[100, 300, 200], [300, 200, 100]]
  results = []
  for name, ordered in (
    ("a.txt", rows),
    ("b.txt", rows[::-1]),
    ("c.txt", [[300, 100, 200], [200, 300, 100]]),
  ):
    ht = read_odd_last(_write(tmp_path / name, ordered, " "), index_base=0)
    results.append((ht.triplets.tolist(), ht.counts.tolist()))
  assert results[0] == results[1] == results[2] == ([[100, 300, 200]], [[1, 0, 1]])

  # A three-way tie keeps the ascending order (pair 01 first).
  ht = read_odd_last(_write(tmp_path / "three.txt", [[4, 2, 9], [9, 4, 2], [2, 9, 4]], " "), index_base=0)
  assert ht.triplets.tolist() == [[2, 4, 9]]
  assert ht.counts.tolist() == [[1, 1, 1]]


def test_aggregate_responses_counts_max_first_on_random_data():
  rng = np.random.default_rng(0)
  base = np.array([rng.choice(50, size=3, replace=False) for _ in range(20)])
  pick = rng.integers(0, 20, size=400)
  items = np.array([rng.permutation(base[p]) for p in pick])
  odd_position = rng.integers(0, 3, size=400)
  ht = aggregate_responses(items, odd_position, source="random")

  # Reference with plain Python.
  expected: dict[frozenset, dict[frozenset, int]] = {}
  order = []
  for row, odd in zip(items.tolist(), odd_position.tolist(), strict=True):
    key = frozenset(row)
    if key not in expected:
      order.append(key)
      a, b, c = sorted(row)
      expected[key] = {frozenset({a, b}): 0, frozenset({a, c}): 0, frozenset({b, c}): 0}
    expected[key][frozenset(row) - {row[odd]}] += 1
  assert [frozenset(t) for t in ht.triplets.tolist()] == order
  assert _pair_counts(ht.triplets, ht.counts) == [expected[k] for k in order]
  assert (ht.counts[:, 0] == ht.counts.max(axis=1)).all()
  assert ht.n_responses == 400
  assert ht.triplets.dtype == np.int32 and ht.counts.dtype == np.int32
  sub = ht.select(ht.responses_per_triplet > 20)
  assert (sub.responses_per_triplet > 20).all() and sub.n_triplets == (ht.responses_per_triplet > 20).sum()


# ------------------------------------------------------------------------------------------------
# 5. Bad input
# ------------------------------------------------------------------------------------------------

_BAD_FILES = [
  # (format, content, row, fragments of the problem)
  ("odd_last", "0 1 2\n3 4\n", 2, ["expected 3 integer columns, found 2"]),
  ("odd_last", "0 1 2\n\n3 x 5\n6 7 8\n", 3, ["'x' is not an integer"]),
  ("odd_last", "0 1 2\n3 4.5 5\n", 2, ["'4.5' is not an integer"]),
  ("odd_last", "0 1 2\n\n3 1854 5\n", 3, ["1854", "out of range"]),
  ("odd_last", "0 1 2\n3 4 5\n\n\n6 -1 7\n", 5, ["-1", "out of range"]),
  ("odd_last", "0 1 2\n\n5 6 5\n", 3, ["repeated", "[5, 6, 5]"]),
  ("odd_last", "0 1 2\r\n\r\n3 3 5\r\n", 3, ["repeated"]),
  ("odd_last", "1 2 3\n4 5 6\n\n7 1854 9\n", 4, ["1854", "1-based"]),
  ("things_noise_ceiling", "1\t2\t3\t1\t1\n\n0\t2\t3\t1\t1\n", 3, ["index 0", "1-based"]),
  ("things_noise_ceiling", "1\t2\t3\t1\t1\n4\t5\t1855\t2\t1\n", 2, ["1855", "out of range"]),
  ("things_noise_ceiling", "1\t2\t3\t1\t1\n4\t5\t-3\t2\t1\n", 2, ["-3", "out of range"]),
  ("things_noise_ceiling", "1\t2\t3\t1\t1\n\n4\t5\t6\t0\t1\n", 3, ["choice 0"]),
  ("things_noise_ceiling", "1\t2\t3\t1\t1\n4\t5\t6\t3\t1\n7\t8\t9\t4\t1\n", 3, ["choice 4"]),
  ("things_noise_ceiling", "1\t2\t3\n4\t5\t6\n", 1, ["expected 5 integer columns, found 3"]),
  ("things_noise_ceiling", "1\t2\t3\t1\t1\n4\t5\t6\ta\t1\n", 2, ["'a' is not an integer"]),
  ("things_noise_ceiling", "1\t2\t3\t1\t1\n\n4\t5\t4\t1\t1\n", 3, ["repeated"]),
]


@pytest.mark.parametrize(("fmt", "content", "row", "fragments"), _BAD_FILES)
def test_bad_input_names_row_and_problem(tmp_path, fmt, content, row, fragments):
  path = tmp_path / "bad.txt"
  path.write_bytes(content.encode())
  with pytest.raises(DataError) as info:
    read_triplets(path, format=fmt)
  error = info.value
  assert error.row == row
  assert error.path == os.fspath(path)
  assert str(error) == f"{path}, row {row}: {error.problem}"
  for fragment in fragments:
    assert fragment in error.problem


def test_one_based_hint_only_when_file_looks_one_based(tmp_path):
  # A 0-based file with a stray out-of-range index gets no 1-based hint.
  path = _write(tmp_path / "zero_based.txt", [[0, 1, 2], [3, 1854, 5]], " ")
  with pytest.raises(DataError) as info:
    read_odd_last(path)
  assert info.value.row == 2
  assert "1-based" not in info.value.problem


def test_a_one_based_file_is_refused_unless_its_base_is_stated(tmp_path):
  # The real file shifted to 1-based: every index stays below 1854 but for one, so only the smallest
  # index can tell; the same file without that row is in range and would be read one object off.
  original = read_odd_last(_data_file("things/2171trials_humans.txt"))
  rows = np.loadtxt(_data_file("things/2171trials_humans.txt"), dtype=np.int64)
  kept = rows[(rows < 1853).all(axis=1)]
  path = _write(tmp_path / "one_based.txt", (kept + 1).tolist(), " ")
  with pytest.raises(DataError) as info:
    read_odd_last(path)
  assert str(info.value) == (
    f"{path}: smallest index is 1, not 0: a 1-based file? set index_base=1 (index_base=0 if it is "
    "0-based and holds no object 0)"
  )
  with pytest.raises(DataError, match="smallest index is 1, not 0"):
    read_triplets(path, "odd_last")
  ht = read_triplets(path, "odd_last", index_base=1)  # stated: converted to 0-based
  zero_based = read_odd_last(_write(tmp_path / "zero_based.txt", kept.tolist(), " "))
  np.testing.assert_array_equal(ht.triplets, zero_based.triplets)
  np.testing.assert_array_equal(ht.counts, zero_based.counts)
  assert ht.n_triplets == len(kept) and set(map(frozenset, ht.triplets.tolist())) <= set(
    map(frozenset, original.triplets.tolist())
  )
  # index 0 in a file stated 1-based, and 1854 in range only there
  with pytest.raises(DataError, match=r"row 1: object index 0 out of range \[1, 1855\)"):
    read_odd_last(_write(tmp_path / "zero.txt", [[0, 1, 2]], " "), index_base=1)
  assert read_odd_last(_write(tmp_path / "top.txt", [[1854, 1, 2]], " "), index_base=1).triplets.max() == 1853
  # a 0-based subset without object 0 states its base; unstated it is refused, naming the smallest
  subset = _write(tmp_path / "subset.txt", [[8, 9, 10], [11, 12, 13]], " ")
  with pytest.raises(DataError, match=r"smallest index is 8, not 0: state the file's base, index_base=0"):
    read_odd_last(subset)
  assert read_odd_last(subset, index_base=0).triplets.min() == 8
  with pytest.raises(ValueError, match="index_base 2 is not 0 or 1"):
    read_odd_last(subset, index_base=2)
  with pytest.raises(ValueError, match="things_noise_ceiling files are 1-based by definition"):
    read_triplets(subset, "things_noise_ceiling", index_base=0)


@pytest.mark.parametrize("fmt", ["odd_last", "things_noise_ceiling"])
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, fmt, content):
  path = tmp_path / "empty.txt"
  path.write_text(content)
  with pytest.raises(DataError, match="no rows") as info:
    read_triplets(path, format=fmt)
  assert info.value.path == os.fspath(path)


def test_unknown_format(tmp_path):
  path = _write(tmp_path / "ok.txt", [[0, 1, 2]], " ")
  with pytest.raises(ValueError, match="unknown triplet format 'odd_first'") as info:
    read_triplets(path, format="odd_first")
  assert not isinstance(info.value, DataError)


def test_rows_with_compensating_column_counts_are_rejected(tmp_path):
  path = tmp_path / "ragged.txt"
  path.write_text("0 1\n2 3 4 5\n")  # 2 + 4 tokens = 2 rows x 3 columns: must not re-split
  with pytest.raises(DataError, match="found 2") as info:
    read_odd_last(path)
  assert info.value.row == 1


def test_old_mac_line_endings_and_underscored_numbers(tmp_path):
  path = tmp_path / "cr.txt"
  path.write_bytes(b"0 1 2\r3 3 5\r")
  with pytest.raises(DataError, match="repeated") as info:
    read_odd_last(path)
  assert info.value.row == 2
  path.write_text("0 1 2\n1_0 2 3\n")
  with pytest.raises(DataError, match="'1_0' is not an integer") as info:
    read_odd_last(path)
  assert info.value.row == 2


# ------------------------------------------------------------------------------------------------
# 6. Writing
# ------------------------------------------------------------------------------------------------


def test_write_then_read_odd_last(tmp_path):
  rng = np.random.default_rng(3)
  triplets = np.array([rng.choice(things.N_OBJECTS, size=3, replace=False) for _ in range(50)])
  path = tmp_path / "sub" / "written.txt"
  write_odd_last(path, triplets)
  assert [p.name for p in path.parent.iterdir()] == ["written.txt"]  # no temporary file left
  lines = path.read_text().splitlines()
  assert lines == [" ".join(str(v) for v in row) for row in triplets.tolist()]
  ht = read_odd_last(path, index_base=0)
  np.testing.assert_array_equal(ht.counts, np.tile([1, 0, 0], (50, 1)))
  np.testing.assert_array_equal(ht.triplets[:, 2], triplets[:, 2])
  np.testing.assert_array_equal(np.sort(ht.triplets, axis=1), np.sort(triplets, axis=1))


def test_write_then_read_real_triplets(tmp_path):
  original = read_odd_last(_data_file("things/2171trials_humans.txt"))
  path = tmp_path / "copy.txt"
  write_odd_last(path, original.triplets)
  again = read_odd_last(path)
  np.testing.assert_array_equal(again.triplets, original.triplets)
  np.testing.assert_array_equal(again.counts, original.counts)


def test_triplet_files_in_a_bucket_read_and_write_as_on_disk(bucket):
  paths.copy_file(_data_file("things/2171trials_humans.txt"), bucket / "things" / "2171.txt")
  disk = read_odd_last(_data_file("things/2171trials_humans.txt"))
  remote = read_triplets(bucket / "things" / "2171.txt")
  assert remote.n_triplets == remote.n_responses == 2171 and remote.source == "gs://bucket/things/2171.txt"
  np.testing.assert_array_equal(remote.triplets, disk.triplets)
  np.testing.assert_array_equal(remote.counts, disk.counts)
  write_odd_last(bucket / "out" / "written.txt", disk.triplets[:5])
  again = read_odd_last(bucket / "out" / "written.txt", index_base=0)
  np.testing.assert_array_equal(again.triplets, disk.triplets[:5])
  (bucket / "bad.txt").write_text("0 1 2\n3 4\n")
  with pytest.raises(DataError, match=r"gs://bucket/bad.txt, row 2: expected 3 integer columns"):
    read_odd_last(bucket / "bad.txt")
