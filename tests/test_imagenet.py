"""Preparing imagenet2012 without TensorFlow, on tiny fake tars; read back with tfds.data_source."""

import io
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from aligned.data import imagenet
from aligned.data.imagenet import prepare_imagenet2012
from aligned.errors import DataError


def _jpeg(rng, mode="RGB") -> bytes:
  out = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)).convert(mode).save(
    out, format="JPEG", quality=95
  )
  return out.getvalue()


def _add(archive, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  rng = np.random.default_rng(0)
  manual = tmp_path_factory.mktemp("manual")
  images = {}
  with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as train:
    for synset in ("n01440764", "n01739381"):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as class_tar:
        for i in range(3):
          name = f"{synset}_{i}.JPEG"
          images[name] = _jpeg(rng)
          _add(class_tar, name, images[name])
        cmyk = "n01739381_1309.JPEG"  # one of the official builder's CMYK images
        if synset == "n01739381":
          images[cmyk] = _jpeg(rng, mode="CMYK")
          _add(class_tar, cmyk, images[cmyk])
      _add(train, f"{synset}.tar", inner.getvalue())
  with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as val:
    for i in (2, 1, 3):
      name = f"ILSVRC2012_val_{i:08d}.JPEG"
      images[name] = _jpeg(rng)
      _add(val, name, images[name])
  data_dir = tmp_path_factory.mktemp("tfds")
  prepare_imagenet2012(manual, data_dir)
  return data_dir, images


def test_train_split_reads_back_with_labels_and_pixels(prepared):
  data_dir, images = prepared
  source = tfds.data_source("imagenet2012", split="train", data_dir=str(data_dir))
  assert len(source) == 7
  labels = (tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read_text().split()
  seen = set()
  for record in (source[i] for i in range(len(source))):
    name = record["file_name"].decode() if isinstance(record["file_name"], bytes) else record["file_name"]
    seen.add(name)
    assert labels[record["label"]] == name.split("_")[0]
    assert record["image"].shape == (12, 16, 3)
    if name != "n01739381_1309.JPEG":  # bytes kept as they were: same pixels as decoding the original
      np.testing.assert_array_equal(record["image"], np.asarray(Image.open(io.BytesIO(images[name]))))
  assert seen == {n for n in images if n.startswith("n0")}


def test_validation_split_uses_the_official_label_file(prepared):
  data_dir, _ = prepared
  source = tfds.data_source("imagenet2012", split="validation", data_dir=str(data_dir))
  official = (tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")).read_text().split()
  labels = (tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read_text().split()
  by_name = {}
  for i in range(len(source)):
    name = source[i]["file_name"]
    by_name[name.decode() if isinstance(name, bytes) else name] = labels[source[i]["label"]]
  # Labels are assigned in sorted file-name order, whatever the order inside the tar.
  assert by_name == {f"ILSVRC2012_val_{i:08d}.JPEG": official[k] for k, i in enumerate((1, 2, 3))}


def test_missing_tars_are_reported(tmp_path):
  with pytest.raises(DataError, match="neither"):
    prepare_imagenet2012(tmp_path, tmp_path / "out")


def test_extraction_from_the_prepared_dataset(prepared, tmp_path):
  from aligned.backbones import load_image_backbone
  from aligned.backbones.preprocessing import preprocess
  from aligned.configs import extract as extract_config
  from aligned.embedding_store import EmbeddingStore
  from aligned.extract import extract
  from tests.conftest import save_tiny_vit

  data_dir, _ = prepared
  save_tiny_vit(tmp_path / "vit")
  config = extract_config.get_config("imagenet")
  config.update(checkpoint=str(tmp_path / "vit"), data_dir=str(data_dir), batch_size=4, shard_size=4)
  results = extract(config, tmp_path / "w")
  assert results["n_items"] == 7 and results["shards_total"] == 2
  ids, embeddings = EmbeddingStore(tmp_path / "w" / "store").read()
  source = tfds.data_source("imagenet2012", split="train", data_dir=str(data_dir))
  names = [source[i]["file_name"] for i in range(7)]
  assert list(ids) == [n.decode() if isinstance(n, bytes) else n for n in names]  # item i = record i
  encoder = load_image_backbone("vit", str(tmp_path / "vit"))
  batch = np.stack([preprocess(np.asarray(source[i]["image"]), 32) for i in range(7)])
  np.testing.assert_allclose(embeddings, np.asarray(encoder.apply(encoder.params, batch)), atol=1e-5)


def test_tars_in_a_bucket_are_read_but_the_dataset_folder_must_be_local(bucket):
  rng = np.random.default_rng(1)
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w") as val:
    for i in (2, 1, 3):
      _add(val, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(rng))
  tar = bucket / "manual" / imagenet.VAL_TAR
  tar.write_bytes(buffer.getvalue())
  members = [(name, handle.read()) for name, handle in imagenet._iter_tar(tar)]
  assert [name for name, _ in members] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (2, 1, 3)]
  assert all(data[:2] == b"\xff\xd8" for _, data in members)  # whole JPEGs, streamed from the bucket
  labels = imagenet._validation_labels(tar)
  assert sorted(labels) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
  with pytest.raises(DataError, match=r"gs://bucket/tfds: must be on a local disk: tfds writes and reads"):
    prepare_imagenet2012(bucket / "manual", bucket / "tfds")
