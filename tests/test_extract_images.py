"""Image extraction: image folder -> preprocessing -> sharded backbone -> store, on 1 and 8 devices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aligned import paths
from aligned.backbones import load_image_backbone
from aligned.backbones.preprocessing import preprocess
from aligned.configs import extract as extract_config
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.extract import extract
from tests.conftest import REPO, save_tiny_vit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return save_tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for i in range(21):
    folder = root / f"object{i % 4}"
    folder.mkdir(exist_ok=True)
    shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)), 3)
    suffix = ".png" if i % 3 else ".jpg"
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(
      folder / f"object{i % 4}_{i:02d}{suffix}"
    )
  (root / "notes.txt").write_text("not an image")
  return root


def _config(images, checkpoint, **overrides):
  config = extract_config.get_config("image_folder")
  config.update(root=str(images), checkpoint=str(checkpoint), batch_size=8, shard_size=8, **overrides)
  return config


def test_store_holds_the_backbone_embedding_of_each_preprocessed_image(tmp_path, images, checkpoint):
  results = extract(_config(images, checkpoint), tmp_path)
  assert results["n_items"] == 21 and results["shards_total"] == 3
  ids, embeddings = EmbeddingStore(tmp_path / "store").read()
  assert list(ids) == sorted(p.relative_to(images).as_posix() for p in images.rglob("*_*.*"))
  encoder = load_image_backbone("vit", str(checkpoint))
  batch = np.stack([preprocess(np.asarray(Image.open(images / i).convert("RGB")), 32) for i in ids[:5]])
  np.testing.assert_allclose(embeddings[:5], np.asarray(encoder.apply(encoder.params, batch)), atol=1e-5)
  metadata = json.loads((tmp_path / "store" / "metadata.json").read_text())
  assert metadata["preprocessing"]["size"] == 32 and metadata["backbone"] == "vit"

  bf16 = extract(_config(images, checkpoint, compute_dtype="bfloat16"), tmp_path / "bf16")
  _, low = EmbeddingStore(bf16["store"]).read()
  assert 0 < np.abs(low - embeddings).max() < 0.1  # bfloat16 really used, and close


@pytest.mark.slow
def test_eight_simulated_devices_give_the_same_embeddings(tmp_path, images, checkpoint):
  script = (
    "import sys, jax; sys.path.insert(0, {repo!r})\n"
    "from tests.test_extract_images import _config\n"
    "from aligned.extract import extract\n"
    "assert len(jax.devices()) == 8\n"
    "extract(_config({images!r}, {checkpoint!r}), {workdir!r})\n"
  ).format(repo=str(REPO), images=str(images), checkpoint=str(checkpoint), workdir=str(tmp_path / "eight"))
  flags = "--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  done = subprocess.run(
    [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stderr[-3000:]
  extract(_config(images, checkpoint), tmp_path / "one")
  ids8, eight = EmbeddingStore(tmp_path / "eight" / "store").read()
  ids1, one = EmbeddingStore(tmp_path / "one" / "store").read()
  np.testing.assert_array_equal(ids8, ids1)
  np.testing.assert_allclose(eight, one, atol=1e-5)


def test_bad_images_and_sources(tmp_path, images, checkpoint):
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "a_01.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(DataError, match="a_01.jpg.*cannot decode"):
    extract(_config(broken, checkpoint), tmp_path / "w1")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError, match="no images"):
    extract(_config(empty, checkpoint), tmp_path / "w2")


def test_tfds_records_without_file_names_are_extracted_only_with_index_ids(tmp_path, checkpoint):
  from tests.test_image_cache import tfds_without_file_names

  data_dir = tfds_without_file_names(tmp_path / "tfds")
  config = _config(tmp_path, checkpoint, source="tfds", tfds_name="no_file_names", data_dir=str(data_dir))
  with pytest.raises(DataError, match=r"tfds no_file_names/train has no file_name feature"):
    extract(config, tmp_path / "refused")
  assert not (tmp_path / "refused" / "store").exists()
  config.tfds_ids = "index"
  assert extract(config, tmp_path / "run")["n_items"] == 5
  ids, _ = EmbeddingStore(tmp_path / "run" / "store").read()
  assert list(ids) == ["0", "1", "2", "3", "4"]


def test_things_images_give_the_mean_embedding_of_each_concept(tmp_path, checkpoint, data_dir):
  from aligned.data import things

  ids, rng = things.load_unique_ids(), np.random.default_rng(0)
  root = tmp_path / "object_images"
  for i, concept in enumerate(ids):
    (root / concept).mkdir(parents=True)
    for k in range(1 + (i % 700 == 0)):  # three concepts have two images
      image = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
      Image.fromarray(image).save(root / concept / f"{concept}_{k + 1:02d}b.png")
  config = _config(root, checkpoint, source="things_images")
  config.batch_size, config.shard_size = 64, 1024
  results = extract(config, tmp_path / "run")
  assert results["n_items"] == 1857 and results["images_per_concept"] == {"min": 1, "max": 2}
  store_ids, rows = EmbeddingStore(tmp_path / "run" / "store").read()
  means = np.load(tmp_path / "run" / "embeddings.npy")
  assert means.shape == (1854, rows.shape[1])
  for i in (0, 1, 700, 1853):  # the rows under the concept's folder, averaged
    mine = [r for r, path in enumerate(store_ids) if path.split("/")[0] == ids[i]]
    assert len(mine) == 1 + (i % 700 == 0)
    np.testing.assert_allclose(means[i], rows[mine].mean(0), atol=1e-6)

  for path in (root / "zebra").iterdir():  # a concept without images: refused before any work
    path.unlink()
  with pytest.raises(DataError, match="1 THINGS concepts have no image, e.g. zebra"):
    extract(config, tmp_path / "missing")
  assert not (tmp_path / "missing" / "store").exists()


def test_a_cache_of_resized_images_gives_the_same_store_bit_for_bit(tmp_path, images, checkpoint):
  from aligned.data.image_cache import build_image_cache
  from aligned.data.items import ImageFolderSource

  build_image_cache(
    ImageFolderSource(images), tmp_path / "cache", image_size=32, shard_size=8, progress=False
  )
  decoded = extract(_config(images, checkpoint), tmp_path / "decoded")
  cached = extract(_config(images, checkpoint, image_cache=str(tmp_path / "cache")), tmp_path / "cached")
  ids, a = EmbeddingStore(decoded["store"]).read()
  cached_ids, b = EmbeddingStore(cached["store"]).read()
  np.testing.assert_array_equal(ids, cached_ids)
  np.testing.assert_array_equal(a, b)
  build_image_cache(
    ImageFolderSource(images), tmp_path / "cache16", image_size=16, shard_size=8, progress=False
  )
  with pytest.raises(DataError, match="its images are 16x16, not 32x32"):
    extract(_config(images, checkpoint, image_cache=str(tmp_path / "cache16")), tmp_path / "wrong")


def test_images_and_workdir_in_a_bucket_give_the_same_store(tmp_path, images, checkpoint, bucket):
  """`extract` from and into `gs://` (conftest's in-memory bucket): the store, config and results of the
  same run on disk; a rerun finds every shard complete."""
  for path in images.rglob("*"):
    if path.is_file():
      paths.copy_file(path, bucket / "images" / path.relative_to(images).as_posix())
  local = extract(_config(images, checkpoint), tmp_path / "local")
  remote = extract(_config(bucket / "images", checkpoint), bucket / "run")
  assert remote == {**local, "store": "gs://bucket/run/store"}
  ids, embeddings = EmbeddingStore(bucket / "run" / "store").read()
  local_ids, local_embeddings = EmbeddingStore(tmp_path / "local" / "store").read()
  np.testing.assert_array_equal(ids, local_ids)
  np.testing.assert_allclose(embeddings, local_embeddings, atol=1e-6)
  assert json.loads((bucket / "run" / "results.json").read_text()) == remote
  config = json.loads((bucket / "run" / "config.json").read_text())
  assert config == {
    **json.loads((tmp_path / "local" / "config.json").read_text()),
    "root": "gs://bucket/images",
  }
  assert extract(_config(bucket / "images", checkpoint), bucket / "run")["shards_written"] == 0


def test_a_rerun_on_other_weights_or_another_folder_at_the_same_paths_is_refused(
  tmp_path, images, checkpoint
):
  weights, folder = tmp_path / "vit", tmp_path / "images"
  paths.copy_file(checkpoint / "config.json", weights / "config.json")
  paths.copy_file(checkpoint / "model.safetensors", weights / "model.safetensors")
  for image in images.rglob("*_*.*"):
    paths.copy_file(image, folder / image.relative_to(images))
  config = _config(folder, weights)
  extract(config, tmp_path / "w")
  recorded = json.loads((tmp_path / "w" / "provenance.json").read_text())
  assert set(recorded["inputs"]) == {"checkpoint"}
  assert recorded["config"]["source_records.n_records"] == 21
  faster = _config(folder, weights, decode_threads=1)
  faster.batch_size = 4
  extract(faster, tmp_path / "w")  # read another way: the same run
  store = sorted((tmp_path / "w" / "store").iterdir())
  before = {p.name: p.read_bytes() for p in store}

  data = bytearray((weights / "model.safetensors").read_bytes())
  data[-4:] = bytes(4)  # other weights, the same size, at the same path
  (weights / "model.safetensors").write_bytes(bytes(data))
  with pytest.raises(DataError, match=r"provenance.json: .*checkpoint .*vit \(sha256 .*\) -> "):
    extract(config, tmp_path / "w")
  paths.copy_file(checkpoint / "model.safetensors", weights / "model.safetensors")
  Image.new("RGB", (30, 30)).save(folder / "object0" / "object0_99.png")  # one more image
  with pytest.raises(DataError, match=r"provenance.json: .*source_records.n_records 21 -> 22"):
    extract(config, tmp_path / "w")
  assert {p.name: p.read_bytes() for p in sorted((tmp_path / "w" / "store").iterdir())} == before


def test_an_image_that_cannot_be_read_is_refused_before_any_shard_is_written(tmp_path, images, checkpoint):
  folder = tmp_path / "images"
  for image in images.rglob("*_*.*"):
    paths.copy_file(image, folder / image.relative_to(images))
  ids = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*_*.*"))
  bad = folder / ids[19]  # in the last shard (8 images a shard)
  good = bad.read_bytes()
  bad.write_bytes(b"not an image")
  with pytest.raises(DataError, match=rf"{ids[19]}: cannot decode image"):
    extract(_config(folder, checkpoint), tmp_path / "w")
  assert not (tmp_path / "w" / "store").exists()  # refused before the first shard, not after two
  bad.write_bytes(good)
  extract(_config(folder, checkpoint), tmp_path / "w")
  # a resumed run checks only the images still to embed: a complete shard's files are not read again
  (folder / ids[0]).write_bytes(b"not an image")
  assert extract(_config(folder, checkpoint), tmp_path / "w")["shards_written"] == 0
