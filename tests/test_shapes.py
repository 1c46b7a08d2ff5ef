"""The generated shapes dataset: built as tfds imagenet2012, read back by index, idempotent and atomic."""

import colorsys
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from aligned.data.class_labels import read_superclasses
from aligned.demo import shapes
from aligned.errors import DataError

TINY = dict(
  n_per_class=3, n_val_per_class=2, image_size=24, kinds=("disc", "square"), colours=("red", "green")
)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("shapes")
  return data_dir, shapes.build_shapes_dataset(data_dir, **TINY)


def test_train_split_reads_back_by_index_with_synset_labels(built):
  data_dir, folder = built
  assert folder == data_dir / "imagenet2012"
  source = tfds.data_source("imagenet2012", split="train", data_dir=str(data_dir))
  names = tfds.builder("imagenet2012", data_dir=str(data_dir)).info.features["label"].names
  classes = json.loads((folder / "shapes.json").read_text())["classes"]
  assert len(source) == 4 * 3
  seen = []
  for i in range(len(source)):
    record = source[i]
    name = _text(record["file_name"])
    seen.append(name)
    assert names[record["label"]] == name.split("_")[0]
    assert record["image"].shape == (24, 24, 3) and record["image"].dtype == np.uint8
  assert sorted(seen) == sorted(f"{c['synset']}_{i}.JPEG" for c in classes for i in range(3))


def test_validation_split_agrees_with_the_official_label_file(built):
  data_dir, folder = built
  source = tfds.data_source("imagenet2012", split="validation", data_dir=str(data_dir))
  names = tfds.builder("imagenet2012", data_dir=str(data_dir)).info.features["label"].names
  official = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()
  synsets = [c["synset"] for c in json.loads((folder / "shapes.json").read_text())["classes"]]
  labels = []
  for i in range(len(source)):
    record = source[i]
    number = int(_text(record["file_name"])[len("ILSVRC2012_val_") : -len(".JPEG")])
    labels.append(names[record["label"]])
    assert official[number - 1] == names[record["label"]]
    assert record["image"].shape == (24, 24, 3)
  assert sorted(labels) == sorted(synsets * 2)


def test_hierarchy_files_are_consistent(built):
  _, folder = built
  record = json.loads((folder / "shapes.json").read_text())
  rows = [line.split("\t") for line in (folder / "hierarchy.tsv").read_text().splitlines()]
  assert rows[0] == ["synset", "class", "superclass"]
  assert rows[1:] == [[c["synset"], c["name"], c["superclass"]] for c in record["classes"]]
  assert [r[1] for r in rows[1:]] == ["red_disc", "green_disc", "red_square", "green_square"]
  assert [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])  # label order = class order
  # The mapping file transfer's BREEDS task reads.
  assert read_superclasses(folder / "superclasses.tsv") == {r[0]: r[2] for r in rows[1:]}
  assert record["counts"] == {"train": 12, "validation": 8}


def test_rebuild_is_skipped_and_other_settings_refused(built):
  data_dir, folder = built
  before = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}
  assert shapes.build_shapes_dataset(data_dir, **TINY) == folder
  assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
  assert not list(data_dir.glob(".shapes-build-*"))
  with pytest.raises(DataError, match="n_per_class.*use another data_dir"):
    shapes.build_shapes_dataset(data_dir, **TINY | {"n_per_class": 4})


def test_a_foreign_imagenet_is_never_touched(tmp_path):
  (tmp_path / "imagenet2012" / "5.1.0").mkdir(parents=True)
  with pytest.raises(DataError, match="not built by aligned.demo.shapes"):
    shapes.build_shapes_dataset(tmp_path, **TINY)
  assert os.listdir(tmp_path / "imagenet2012") == ["5.1.0"]


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
  stale = tmp_path / f".shapes-build-{2**22 + 1}-abc"  # above Linux's pid_max: a dead build's folder
  stale.mkdir()

  def killed(*args, **kwargs):
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    patch.setattr(shapes._Builder, "download_and_prepare", killed)
    with pytest.raises(KeyboardInterrupt):
      shapes.build_shapes_dataset(tmp_path, **TINY)
  assert os.listdir(tmp_path) == []  # no imagenet2012, no build folder, the stale one removed
  folder = shapes.build_shapes_dataset(tmp_path, **TINY)
  assert len(tfds.data_source("imagenet2012", split="train", data_dir=str(tmp_path))) == 12
  assert (folder / "shapes.json").exists()


@pytest.mark.parametrize("colour", ["red", "green", "blue"])
def test_a_disc_covers_a_plausible_area_in_its_colour(colour):
  target = shapes.HUES[colour] / 360
  for seed in range(5):
    image = shapes.render_shape("disc", colour, 48, np.random.default_rng(seed))
    hsv = np.asarray([colorsys.rgb_to_hsv(*(p / 255)) for p in image.reshape(-1, 3)])
    hue_distance = np.minimum(abs(hsv[:, 0] - target), 1 - abs(hsv[:, 0] - target))
    in_colour = (hue_distance < 30 / 360) & (hsv[:, 1] > 0.4) & (hsv[:, 2] > 0.45)
    # Circumradius 22-42 % of the side: pi r^2 covers 15-55 % of the image (edges and noise aside).
    assert 0.1 < in_colour.mean() < 0.6, (seed, in_colour.mean())
  np.testing.assert_array_equal(
    shapes.render_shape("star", colour, 16, np.random.default_rng(1)),
    shapes.render_shape("star", colour, 16, np.random.default_rng(1)),
  )


def test_unknown_kinds_and_bad_counts_are_refused(tmp_path):
  with pytest.raises(ValueError, match="unknown shape kinds"):
    shapes.build_shapes_dataset(tmp_path, kinds=("disc", "blob"))
  with pytest.raises(ValueError, match="n_val_per_class"):
    shapes.build_shapes_dataset(tmp_path, n_val_per_class=51)
  assert os.listdir(tmp_path) == []


def test_shape_radius_replays_the_size_a_disc_was_drawn_at():
  settings = {"seed": 3, "image_size": 64}
  radii, areas = [], []
  for i in range(6):
    image = shapes.render_shape("disc", "red", 64, shapes._rng(settings, 0, 2, i))
    hsv = np.asarray([colorsys.rgb_to_hsv(*(p / 255)) for p in image.reshape(-1, 3)])
    red = (np.minimum(hsv[:, 0], 1 - hsv[:, 0]) < 30 / 360) & (hsv[:, 1] > 0.4) & (hsv[:, 2] > 0.45)
    radii.append(shapes.shape_radius(settings, 0, 2, i))
    areas.append(red.mean())
  assert all(0.22 <= r <= 0.42 for r in radii)
  # the disc's area in the image follows pi r^2 (noise and a background of the same hue aside)
  assert np.corrcoef(np.pi * np.square(radii), areas)[0, 1] > 0.9


def test_levels_trials_follow_the_hierarchy_and_the_sizes():
  from aligned.demo import people

  labels = np.repeat(np.arange(4), 6)  # classes 0, 1 of kind "a"; 2, 3 of kind "b"; 6 images each
  kinds = np.where(labels < 2, "a", "b")
  sizes = np.random.default_rng(0).uniform(0.22, 0.42, size=len(labels))
  trials = people.levels_trials(labels, kinds, sizes, 30, seed=0)
  between, boundary, within = trials["between_class"], trials["class_boundary"], trials["within_class"]
  assert len(between) == len(boundary) == 30 and 0 < len(within) <= 30
  assert (kinds[between[:, 0]] == kinds[between[:, 1]]).all() and (
    kinds[between[:, 2]] != kinds[between[:, 0]]
  ).all()
  assert (labels[between[:, 0]] != labels[between[:, 1]]).all()
  assert (labels[boundary[:, 0]] == labels[boundary[:, 1]]).all() and (
    labels[boundary[:, 2]] != labels[boundary[:, 0]]
  ).all()
  assert (kinds[boundary[:, 2]] == kinds[boundary[:, 0]]).all()
  assert (labels[within] == labels[within[:, :1]]).all()
  s = sizes[within]  # the odd one out's size is farther from the pair than the pair from each other
  assert (np.minimum(abs(s[:, 2] - s[:, 0]), abs(s[:, 2] - s[:, 1])) > abs(s[:, 0] - s[:, 1])).all()
  with pytest.raises(ValueError, match=">= 2 colours of each"):
    people.levels_trials(labels, np.where(labels < 3, "a", "b"), sizes, 5, seed=0)
