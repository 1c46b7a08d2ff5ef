"""THINGS concepts and the two object orders, on the real files."""

import numpy as np
import pytest

from aligned import paths
from aligned.data import cache, similarity_matrices, things
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


# -- Images of concepts -----------------------------------------------------------------------------


def test_an_image_is_of_the_concept_its_folder_or_stem_names(data_dir):
  ids = things.load_unique_ids()
  assert things.concept_of_image("object_images/aardvark/aardvark_01b.jpg", ids) == "aardvark"
  assert things.concept_of_image("A-C/camera1/camera_03s.jpg", ids) == "camera1"  # the folder decides
  assert things.concept_of_image("air_conditioner_02n.jpg", ids) == "air_conditioner"
  assert things.concept_of_image("aardvark.png", ids) == "aardvark"
  assert things.concept_of_image("images/unicorn_01b.jpg", ids) is None


def _image_paths(ids, rng):
  """1-3 images per concept in the THINGS database layout, in a shuffled order."""
  paths = [f"object_images/{c}/{c}_{k:02d}b.jpg" for c in ids for k in range(int(rng.integers(1, 4)))]
  return [paths[i] for i in rng.permutation(len(paths))]


def test_concept_means_average_each_concepts_images_in_sorted_order(data_dir):
  ids, rng = things.load_unique_ids(), np.random.default_rng(0)
  paths = _image_paths(ids, rng)
  features = rng.normal(size=(len(paths), 5)).astype(np.float32)
  means, counts = things.concept_means(paths, features)
  for i in (0, 1, 700, 1853):  # a plain reference: the rows whose folder is the concept
    rows = [r for r, p in enumerate(paths) if p.split("/")[1] == ids[i]]
    np.testing.assert_allclose(means[i], features[rows].mean(0), atol=1e-6)
    assert counts[i] == len(rows)
  assert means.shape == (1854, 5) and counts.sum() == len(paths)


def test_an_unknown_image_or_a_concept_without_images_is_refused(data_dir):
  ids, rng = things.load_unique_ids(), np.random.default_rng(1)
  paths = _image_paths(ids, rng)
  features = np.zeros((len(paths) + 1, 2))
  with pytest.raises(DataError, match=r"row 3: image 'object_images/unicorn/unicorn_01b.jpg' is not of a"):
    things.concept_means([*paths[:2], "object_images/unicorn/unicorn_01b.jpg", *paths[2:]], features)
  kept = [p for p in paths if "/aardvark/" not in p and "/zucchini/" not in p]
  with pytest.raises(DataError, match="2 THINGS concepts have no image, e.g. aardvark, zucchini"):
    things.concept_means(kept, np.zeros((len(kept), 2)))
  with pytest.raises(DataError, match="image paths but"):
    things.concept_means(paths, features)


def test_the_same_image_twice_is_refused_naming_both_files(data_dir):
  ids, rng = things.load_unique_ids(), np.random.default_rng(3)
  paths = _image_paths(ids, rng)
  again = paths[5].replace(".jpg", ".png")  # the same image in another format: it would count double
  with pytest.raises(DataError, match=rf"row 7: image '{again}' is '{paths[5]}' again"):
    things.concept_means([*paths[:6], again, *paths[6:]], np.zeros((len(paths) + 1, 2)))


def test_one_image_per_concept_orders_by_concept_not_by_file_name(data_dir):
  ids = things.load_unique_ids()
  # flat and per-concept-folder names mixed, in Python's sorted order of file names, which is not the
  # sorted THINGS order (camera1 < camera_lens as strings; camera_lens is first in THINGS)
  paths = sorted(f"{c}.png" if i % 2 else f"{c}/{c}_01b.jpg" for i, c in enumerate(ids))
  assert paths.index("camera1.png") < paths.index("camera_lens/camera_lens_01b.jpg")
  order = things.one_image_per_concept(paths, where="human")
  assert [things.concept_of_image(paths[k], ids) for k in order] == list(ids)
  with pytest.raises(DataError, match=r"human, row 3: image 'unicorn.png' is not of a THINGS concept"):
    things.one_image_per_concept([*paths[:2], "unicorn.png", *paths[2:]], where="human")
  with pytest.raises(
    DataError, match=r"human, row 3: image 'aardvark_02b.jpg' is a second image of concept aardvark \(after"
  ):
    things.one_image_per_concept([*paths[:2], "aardvark_02b.jpg", *paths[2:]], where="human")
  with pytest.raises(DataError, match="human: 1 THINGS concepts have no image, e.g. zucchini"):
    things.one_image_per_concept([p for p in paths if "zucchini" not in p], where="human")


@pytest.mark.slow
def test_things_concepts_command_writes_means_or_nothing(tmp_path, data_dir):
  import os
  import subprocess
  import sys

  from tests.conftest import REPO

  ids, rng = things.load_unique_ids(), np.random.default_rng(2)
  paths = [f"/data/THINGS/object_images/{p}" for p in _image_paths(ids, rng)]
  features = rng.normal(size=(len(paths), 4)).astype(np.float32)
  np.save(tmp_path / "features.npy", features)
  (tmp_path / "file_names.txt").write_text("\n".join(paths) + "\n")

  def command(file_names, out):
    flags = [f"--features={tmp_path / 'features.npy'}", f"--file_names={file_names}", f"--out={out}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = [sys.executable, "-m", "experiments.things_concepts", *flags]
    return subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

  done = command(tmp_path / "file_names.txt", tmp_path / "E.npy")
  assert done.returncode == 0, done.stderr
  np.testing.assert_allclose(np.load(tmp_path / "E.npy"), things.concept_means(paths, features)[0], atol=1e-6)
  wrong = [p.replace("aardvark", "unicorn") for p in paths]  # folder and file: of no concept
  (tmp_path / "wrong.txt").write_text("\n".join(wrong) + "\n")
  done = command(tmp_path / "wrong.txt", tmp_path / "W.npy")
  row = wrong.index(next(p for p in wrong if "/unicorn/" in p)) + 1
  assert done.returncode == 2 and f"wrong.txt, row {row}: image" in done.stderr
  assert not (tmp_path / "W.npy").exists()


def test_things_files_in_a_bucket_read_as_from_disk(bucket, data_dir, monkeypatch):
  names = ("unique_id.txt", "things_concepts.tsv", "category_mat_manual.tsv", "sortindex")
  for name in (*names, "RDM48_triplet.mat", "spose_embedding66d_rescaled_48val_reordered.csv"):
    paths.copy_file(data_dir / "things" / name, bucket / "data" / "things" / name)
  disk, sortindex = things.load_concepts(), things.load_sortindex()
  rsm = ("RDM48_triplet.mat", "spose_embedding66d_rescaled_48val_reordered.csv")
  disk_rsm = similarity_matrices.load_human_rsm(*(data_dir / "things" / name for name in rsm))
  from_root = things.load_concepts(bucket / "data")
  monkeypatch.setenv("ALIGNED_DATA", "gs://bucket/data")  # the data folder itself in a bucket
  assert str(cache.data_path("things/unique_id.txt")) == "gs://bucket/data/things/unique_id.txt"
  for got in (from_root, things.load_concepts()):
    assert len(got) == 1854 and got.ids == disk.ids and got.definitions == disk.definitions
    np.testing.assert_array_equal(got.categories, disk.categories)
  np.testing.assert_array_equal(things.load_sortindex(), sortindex)
  human = similarity_matrices.load_human_rsm(*(bucket / "data" / "things" / name for name in rsm))
  np.testing.assert_array_equal(human.similarity, disk_rsm.similarity)
  assert (
    human.object_ids == disk_rsm.object_ids and human.source == "gs://bucket/data/things/RDM48_triplet.mat"
  )
  (bucket / "bad").write_text("0\n1\nx\n")
  with pytest.raises(DataError, match=r"gs://bucket/bad, row 3: 'x' is not an integer"):
    things.load_sortindex(bucket / "bad")
