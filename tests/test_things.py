"""THINGS concepts and the two object orders, on the real files."""

import numpy as np
import pytest

from aligned.data import things
from aligned.errors import DataError


def test_concepts_are_the_1854_things_objects_in_sorted_order(data_dir):
  concepts = things.load_concepts()
  ids = (data_dir / "things" / "unique_id.txt").read_text().split()
  assert len(concepts) == 1854
  assert list(concepts.ids) == ids
  assert concepts.words[concepts.index("aardvark")] == "aardvark"
  assert "termites" in concepts.definitions[concepts.index("aardvark")]
  assert concepts.wordnet_ids[concepts.index("aardvark")] == "n02082791"


def test_category_matrix_has_177_animals(data_dir):
  concepts = things.load_concepts()
  assert concepts.categories.shape == (1854, 27)
  assert len(concepts.category_names) == 27
  animals = concepts.category_members("animal")
  assert len(animals) == 177
  assert concepts.index("aardvark") in animals
  with pytest.raises(KeyError, match="unknown category"):
    concepts.category_members("spaceship")


def test_sortindex_maps_raw_to_sorted_and_moves_21_objects(data_dir):
  s = things.load_sortindex()
  assert sorted(s.tolist()) == list(range(1854))
  moved = things.moved_objects(s)
  assert len(moved) == 21
  concepts = things.load_concepts()
  prefixes = ("camera", "chicken", "crystal", "hot", "ice", "pepper")
  assert all(concepts.ids[i].startswith(prefixes) for i in moved)
  # Round trip, and the documented relation E_sorted = E_raw[s].
  raw = np.arange(1854)
  assert np.array_equal(things.sorted_to_raw(things.raw_to_sorted(raw, s), s), raw)
  e_raw = np.random.default_rng(0).normal(size=(1854, 4))
  e_sorted = e_raw[s]
  for i in (0, int(s[moved[0]]), 1853):  # a raw index i is sorted index argsort(s)[i]
    assert np.array_equal(e_sorted[things.raw_to_sorted(i, s)], e_raw[i])


def test_bad_sortindex_is_reported(tmp_path):
  path = tmp_path / "sortindex"
  path.write_text("0\n1\nx\n")
  with pytest.raises(DataError, match="not an integer") as e:
    things.load_sortindex(path)
  assert e.value.row == 3
  path.write_text("\n".join(["0"] * 1854))
  with pytest.raises(DataError, match="not a permutation"):
    things.load_sortindex(path)
