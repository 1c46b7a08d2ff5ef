"""The image cache: the same model inputs as the decode path (bit for bit), resumable, checked on read;
the student reads it, and the grain loader gives the threads loader's batches."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aligned import paths
from aligned.backbones.preprocessing import NORMALIZATIONS, preprocess, scale_and_normalize
from aligned.configs.finetune import get_config
from aligned.data import items as item_sources
from aligned.data.alignet_files import write_alignet
from aligned.data.image_cache import ImageCache, build_image_cache, check_image_cache
from aligned.demo import shapes
from aligned.errors import DataError
from aligned.student import build
from aligned.student import data as student_data
from tests.conftest import REPO

SIZE, SHARD = 24, 3


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
  return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _image_folder(root):
  """Eight images of the kinds a folder holds: RGB JPEGs of several sizes, a grey PNG, an RGBA PNG."""
  rng = np.random.default_rng(0)
  for i, (h, w) in enumerate([(37, 50), (50, 37), (24, 24), (9, 60), (80, 64), (30, 31)]):
    (root / f"class_{i % 2}").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"class_{i % 2}/{i}.jpg")
  Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(root / "grey.png")
  Image.fromarray(rng.integers(0, 256, (16, 20, 4), dtype=np.uint8)).save(root / "rgba.png")
  return item_sources.ImageFolderSource(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """(image folder source, its cache at SIZE in shards of SHARD): 8 images, 3 shards (3, 3, 2)."""
  root = tmp_path_factory.mktemp("image_cache")
  source = _image_folder(root / "images")
  done = build_image_cache(source, root / "cache", SIZE, SHARD, progress=False)
  assert (done["shards_written"], done["images_written"]) == (3, 8)
  return source, ImageCache(root / "cache")


@pytest.mark.parametrize("normalization", ["none", "imagenet"])
def test_cache_path_is_identical_to_the_decode_path(folder, normalization):
  source, cache = folder
  assert len(cache) == len(source) == 8 and cache.size == SIZE
  for i in range(len(source)):
    (item_id, original), (cached_id, cached) = source.record(i), cache.record(i)
    assert cached_id == item_id and cached.dtype == np.uint8 and cached.shape == (SIZE, SIZE, 3)
    assert _identical(scale_and_normalize(cached, normalization), preprocess(original, SIZE, normalization))
  order = np.array([7, 0, 3, 5, 6, 1])  # a batch across shards, in the student's item source
  cached = item_sources.ImageItems(cache, SIZE, normalization, workers=3, resized=True).load(order)
  decoded = item_sources.ImageItems(source, SIZE, normalization, workers=2).load(order)
  assert _identical(cached["image"], decoded["image"])


def test_shapes_tfds_cache_is_identical_to_the_decode_path(tmp_path):
  shapes.build_shapes_dataset(
    tmp_path, n_per_class=2, n_val_per_class=0, image_size=20, kinds=("disc", "square"), colours=("red",)
  )
  source = item_sources.TfdsSource("imagenet2012", "train", str(tmp_path))
  build_image_cache(source, tmp_path / "cache", 32, 3, progress=False)
  cache = ImageCache(tmp_path / "cache")
  check_image_cache(cache, source.description(), 32)
  described = {"kind": "tfds", "name": "imagenet2012", "version": "5.1.0", "split": "train", "n_records": 4}
  assert cache.metadata["source"] == described
  everything = np.arange(4)
  cached = item_sources.ImageItems(cache, 32, "clip", resized=True).load(everything)["image"]
  assert _identical(cached, item_sources.ImageItems(source, 32, "clip").load(everything)["image"])
  assert [cache.record(i)[0] for i in everything] == [source.record(i)[0] for i in everything]


def test_a_killed_build_resumes_to_the_same_cache(folder, tmp_path):
  source, cache = folder
  records = {p.name: p.read_bytes() for p in cache.root.glob("shard_*.json")}
  build_image_cache(source, tmp_path, SIZE, SHARD, progress=False)
  # Killed while writing shard 1: part of its data, no record, a temporary left behind.
  (tmp_path / "shard_00001.json").unlink()
  data = tmp_path / "shard_00001.array_record"
  data.write_bytes(data.read_bytes()[:1000])
  (tmp_path / ".shard_00002.array_record.abc.tmp").write_bytes(b"partial")
  done = build_image_cache(source, tmp_path, SIZE, SHARD, progress=False)
  assert (done["shards_written"], done["shards_skipped"], done["images_written"]) == (1, 2, 3)
  assert {p.name: p.read_bytes() for p in tmp_path.glob("shard_*.json")} == records  # same sha256s
  assert not list(tmp_path.glob(".*"))
  resumed = ImageCache(tmp_path)
  resumed.verify(progress=False)
  assert all(_identical(resumed.record(i)[1], cache.record(i)[1]) for i in range(len(cache)))


def test_other_settings_are_refused_naming_what_changed(folder, tmp_path):
  source, cache = folder
  build_image_cache(source, tmp_path / "cache", SIZE, SHARD, progress=False)
  with pytest.raises(DataError, match=r"other settings \(image_size: 24 -> 32\)"):
    build_image_cache(source, tmp_path / "cache", 32, SHARD, progress=False)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source.root / "late.png")
  try:
    with pytest.raises(DataError, match=r"other settings \(n_records: 8 -> 9; source: "):
      build_image_cache(item_sources.ImageFolderSource(source.root), tmp_path / "cache", SIZE, SHARD)
  finally:
    (source.root / "late.png").unlink()


def test_incomplete_or_corrupt_caches_are_never_read(folder, tmp_path):
  source, _ = folder
  build_image_cache(source, tmp_path, SIZE, SHARD, progress=False)
  data = tmp_path / "shard_00001.array_record"
  flipped = bytearray(data.read_bytes())
  flipped[len(flipped) // 3] ^= 1  # one bit of one pixel
  data.write_bytes(bytes(flipped))
  cache = ImageCache(tmp_path)
  assert cache.record(0)[0] == source.record(0)[0]  # shard 0 is intact
  with pytest.raises(DataError, match=r"shard_00001.array_record: .*the shard is corrupt"):
    cache.record(4)
  with pytest.raises(DataError, match="the shard is corrupt"):
    ImageCache(tmp_path).verify(progress=False)
  (tmp_path / "shard_00002.json").unlink()
  with pytest.raises(DataError, match=r"1 of 3 shards missing \(first: 2\)"):
    ImageCache(tmp_path)
  with pytest.raises(DataError, match="not an image cache"):
    ImageCache(tmp_path / "nothing")


def _student_config(data_dir, cache, image_size=32):
  config = get_config("vit_b16")
  config.data.tfds_data_dir, config.data.image_size, config.data.image_cache = (
    str(data_dir),
    image_size,
    cache,
  )
  config.data.preprocessing, config.data.workers = "backbone", 2
  return config


def test_student_reads_a_matching_cache_and_refuses_others(folder, tmp_path):
  shapes.build_shapes_dataset(
    tmp_path, n_per_class=1, n_val_per_class=0, image_size=20, kinds=("disc", "square"), colours=("red",)
  )
  source = item_sources.TfdsSource("imagenet2012", "train", str(tmp_path))
  build_image_cache(source, tmp_path / "cache32", 32, 4, progress=False)
  items = build.build_items(_student_config(tmp_path, str(tmp_path / "cache32")), None, "image")
  assert items.resized and isinstance(items.source, ImageCache)
  decoded = build.build_items(_student_config(tmp_path, ""), None, "image")
  assert not decoded.resized
  assert _identical(items.load(np.array([1, 0]))["image"], decoded.load(np.array([1, 0]))["image"])
  with pytest.raises(DataError, match=r"metadata.json: its images are 32x32, not 24x24"):
    build.build_items(_student_config(tmp_path, str(tmp_path / "cache32"), image_size=24), None, "image")
  _, folder_cache = folder
  with pytest.raises(
    DataError, match=r"it holds an image folder of 8 images .*, not tfds imagenet2012:5.1.0/train \(2"
  ):
    build.build_items(_student_config(tmp_path, str(folder_cache.root), image_size=SIZE), None, "image")
  # The same dataset name, version and split with other records (here: more of them).
  shapes.build_shapes_dataset(
    tmp_path / "bigger",
    n_per_class=2,
    n_val_per_class=0,
    image_size=20,
    kinds=("disc", "square"),
    colours=("red",),
  )
  bigger = item_sources.TfdsSource("imagenet2012", "train", str(tmp_path / "bigger"))
  build_image_cache(bigger, tmp_path / "bigger_cache", 32, 4, progress=False)
  with pytest.raises(
    DataError, match=r"holds tfds imagenet2012:5.1.0/train \(4 records\), not .*\(2 records\)"
  ):
    build.build_items(_student_config(tmp_path, str(tmp_path / "bigger_cache")), None, "image")


def test_grain_batches_equal_the_threads_batches(folder, tmp_path):
  """Two grain worker processes, steps 2..5, the second of two processes' halves: the same arrays."""
  _, cache = folder
  items = item_sources.ImageItems(cache, SIZE, "siglip", workers=2, resized=True)
  rng = np.random.default_rng(0)
  triplets = np.stack([rng.choice(len(cache), 3, replace=False) for _ in range(20)])
  names = np.asarray([cache.record(i)[0] for i in range(len(cache))])
  write_alignet(tmp_path / "train.npz", names[triplets], rng.normal(size=(20, 3)), triplets, n_images=8)
  rows = student_data.TripletRows([tmp_path / "train.npz"], n_items=len(cache))
  order = student_data.BatchOrder(len(rows), batch_size=6, seed=1)
  threads = student_data.make_prefetcher("threads", rows, items, order, 2, 6, 1, 2)
  grain = student_data.make_prefetcher("grain", rows, items, order, 2, 6, 1, 2, grain_workers=2)
  try:
    for step in range(2, 6):
      (a_step, a), (b_step, b) = threads.next(), grain.next()
      assert a_step == b_step == step
      assert _identical(a["rows"], b["rows"]) and _identical(a["targets"], b["targets"])
      assert _identical(a["inputs"]["image"], b["inputs"]["image"])
      del b  # grain's shared memory is released with its last view
  finally:
    threads.close()
    grain.close()
  with pytest.raises(ValueError, match="unknown data.loader 'torch'"):
    student_data.make_prefetcher("torch", rows, items, order, 0, 1)


@pytest.mark.slow
def test_command_builds_the_cache_with_worker_processes(folder, tmp_path):
  source, cache = folder
  command = [
    sys.executable,
    "-m",
    "experiments.cache_images",
    "--config=configs/cache_images.py:image_folder",
    f"--config.root={source.root}",
    f"--config.image_size={SIZE}",
    f"--config.shard_size={SHARD}",
    "--config.workers=1",
    f"--workdir={tmp_path}",
  ]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "3 shards written (8 images" in done.stdout and "8/8 images" in done.stderr
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["workers"] == 1 and results["shards_skipped"] == 0
  built = ImageCache(tmp_path / "cache")  # decoded in a worker process, the same bytes as in-process
  assert all(_identical(built.record(i)[1], cache.record(i)[1]) for i in range(len(cache)))


@pytest.mark.parametrize("normalization", ["none", "clip"])
def test_scale_and_normalize_is_the_plain_formula(normalization):
  """The tiled fast path against `(x / 255 - mean) / std` broadcast per channel: the same bits."""
  images = np.random.default_rng(1).integers(0, 256, (2, 7, 5, 3), dtype=np.uint8)
  mean, std = (np.asarray(v, np.float32) for v in NORMALIZATIONS[normalization])
  assert _identical(
    scale_and_normalize(images, normalization), (images.astype(np.float32) / 255.0 - mean) / std
  )


def tfds_without_file_names(data_dir, n: int = 5):
  """Builds tfds `no_file_names` (train: n 8x8 PNG images and labels, no `file_name` feature) in data_dir."""
  import io

  import tensorflow_datasets as tfds

  class NoFileNames(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      image = tfds.features.Image(shape=(None, None, 3), encoding_format="png")
      features = {"image": image, "label": tfds.features.ClassLabel(num_classes=2)}
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(n):
        png = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(png, format="PNG")
        png.seek(0)  # encoded bytes: tfds encodes arrays with TensorFlow, which is not installed
        yield i, {"image": png, "label": i % 2}

  NoFileNames(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return data_dir


def test_a_tfds_dataset_without_file_names_is_refused_unless_index_ids_are_asked_for(tmp_path):
  from aligned.configs import cache_images as cache_config
  from aligned.data.image_cache import open_source

  data_dir = tfds_without_file_names(tmp_path / "tfds")
  refused = rf"{data_dir}: tfds no_file_names/train has no file_name feature, so its records have no ids"
  with pytest.raises(DataError, match=rf"{refused}; name them by record index with tfds_ids=index"):
    item_sources.TfdsSource("no_file_names", "train", str(data_dir))
  source = item_sources.TfdsSource("no_file_names", "train", str(data_dir), ids="index")
  assert [source.record(i)[0] for i in range(len(source))] == ["0", "1", "2", "3", "4"]
  # id i is record i (tfds's shuffled order, not the generator's keys): every image once
  assert sorted(int(source.record(i)[1][0, 0, 0]) for i in range(5)) == [0, 10, 20, 30, 40]
  assert source.description()["ids"] == "index"  # a cache of file-name ids is not a cache of these
  with pytest.raises(ValueError, match="tfds ids 'name'"):
    item_sources.TfdsSource("no_file_names", "train", str(data_dir), ids="name")
  # the cache command: its tfds_ids setting
  config = cache_config.get_config("imagenet")
  config.tfds_name, config.data_dir = "no_file_names", str(data_dir)
  with pytest.raises(DataError, match=refused):
    open_source(config)
  config.tfds_ids = "index"
  build_image_cache(open_source(config), tmp_path / "cache", 8, 2, progress=False)
  assert [ImageCache(tmp_path / "cache").record(i)[0] for i in range(5)] == ["0", "1", "2", "3", "4"]
  # a student: data.tfds_ids
  student = get_config("vit_b16")
  student.data.tfds_name, student.data.tfds_data_dir, student.data.image_size = (
    "no_file_names",
    str(data_dir),
    8,
  )
  with pytest.raises(DataError, match=refused):
    build.build_items(student, None, "image")
  student.data.tfds_ids = "index"
  assert len(build.build_items(student, None, "image")) == 5


def test_images_in_a_bucket_are_read_but_a_cache_or_tfds_folder_there_is_refused(folder, bucket, tmp_path):
  source, cache = folder
  for item in source.ids:
    paths.copy_file(source.root / item, bucket / "images" / item)
  remote = item_sources.ImageFolderSource("gs://bucket/images")
  assert list(remote.ids) == list(source.ids)
  for i in (0, 6, 7):  # a JPEG, the grey and the RGBA PNG
    assert _identical(remote.record(i)[1], source.record(i)[1])
  # A local cache of a bucket's images is the cache of the same images on disk.
  build_image_cache(remote, tmp_path / "cache", SIZE, SHARD, progress=False)
  assert _identical(ImageCache(tmp_path / "cache").record(7)[1], cache.record(7)[1])
  local_disk = r"must be on a local disk: an image cache's array_record shards are read by C\+\+"
  with pytest.raises(DataError, match=rf"gs://bucket/cache: {local_disk}"):
    build_image_cache(remote, bucket / "cache", SIZE, SHARD, progress=False)
  with pytest.raises(DataError, match=rf"gs://bucket/cache: {local_disk}"):
    ImageCache("gs://bucket/cache")
  with pytest.raises(DataError, match=r"gs://bucket/tfds: must be on a local disk: tfds.data_source"):
    item_sources.TfdsSource("shapes", "train", "gs://bucket/tfds")
  with pytest.raises(DataError, match=r"gs://bucket/images/none.png: cannot decode image"):
    item_sources.load_image(bucket / "images" / "none.png")
