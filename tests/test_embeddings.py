"""Embedding files: formats, object order, validation."""

import numpy as np
import pytest

from aligned import paths
from aligned.data import embeddings, things
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError


def test_txt_and_npy_load_identically_as_float32(tmp_path, data_dir):
  spose = embeddings.load_embeddings(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  assert spose.shape == (1854, 49) and spose.dtype == np.float32
  reference = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  np.testing.assert_allclose(spose, reference, rtol=1e-6)
  embeddings.save_embeddings(tmp_path / "e.npy", spose)
  np.testing.assert_array_equal(embeddings.load_embeddings(tmp_path / "e.npy"), spose)


def test_raw_order_is_converted_to_sorted(tmp_path):
  s = things.load_sortindex()
  e_sorted = np.random.default_rng(0).normal(size=(1854, 3)).astype(np.float32)
  e_raw = np.empty_like(e_sorted)
  e_raw[s] = e_sorted  # so that e_sorted == e_raw[s]
  np.save(tmp_path / "raw.npy", e_raw)
  loaded = embeddings.load_embeddings(tmp_path / "raw.npy", order="raw")
  np.testing.assert_array_equal(loaded, e_sorted)
  assert not np.array_equal(e_raw, e_sorted)  # the orders really differ


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_object(tmp_path, bad):
  e = np.ones((10, 4))
  e[7, 2] = bad
  np.save(tmp_path / "e.npy", e)
  with pytest.raises(DataError, match=r"object 7 \(0-based\), feature 2"):
    embeddings.load_embeddings(tmp_path / "e.npy")


def test_bad_files_are_refused(tmp_path):
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))  # np.save pickles objects by default
  with pytest.raises(DataError, match="plain numeric"):
    embeddings.load_embeddings(tmp_path / "obj.npy")
  np.save(tmp_path / "flat.npy", np.ones(5))
  with pytest.raises(DataError, match="2-D"):
    embeddings.load_embeddings(tmp_path / "flat.npy")
  (tmp_path / "ragged.txt").write_text("1 2 3\n4 5\n")
  with pytest.raises(DataError, match="2 values") as e:
    embeddings.load_embeddings(tmp_path / "ragged.txt")
  assert e.value.row == 2
  np.save(tmp_path / "short.npy", np.ones((10, 3)))
  with pytest.raises(DataError, match="1854 rows"):
    embeddings.load_embeddings(tmp_path / "short.npy", order="raw")


def test_thingsvision_output_reads_as_paths_and_rows(tmp_path):
  features = np.arange(12, dtype=np.float32).reshape(4, 3)
  np.save(tmp_path / "features.npy", features)
  (tmp_path / "file_names.txt").write_text("a/a_01b.jpg\na/a_02b.jpg\nb/b_01b.jpg\nc/c_01b.jpg\n")
  paths, array = embeddings.read_thingsvision(tmp_path / "features.npy", tmp_path / "file_names.txt")
  assert paths == ["a/a_01b.jpg", "a/a_02b.jpg", "b/b_01b.jpg", "c/c_01b.jpg"]
  np.testing.assert_array_equal(array, features)
  (tmp_path / "short.txt").write_text("a/a_01b.jpg\na/a_02b.jpg\nb/b_01b.jpg\n")
  with pytest.raises(DataError, match="3 file names but features.npy has 4 rows"):
    embeddings.read_thingsvision(tmp_path / "features.npy", tmp_path / "short.txt")
  (tmp_path / "gap.txt").write_text("a/a_01b.jpg\n\nb/b_01b.jpg\nc/c_01b.jpg\n")
  with pytest.raises(DataError, match="row 2: empty line"):
    embeddings.read_thingsvision(tmp_path / "features.npy", tmp_path / "gap.txt")
  with pytest.raises(DataError, match="not a file"):
    embeddings.read_thingsvision(tmp_path, tmp_path / "file_names.txt")


def test_embedding_files_and_stores_in_a_bucket(bucket, data_dir):
  spose = data_dir / "things" / "spose_embedding_49d_sorted.txt"
  paths.copy_file(spose, bucket / "spose.txt")
  disk = embeddings.load_embeddings(spose)
  np.testing.assert_array_equal(embeddings.load_embeddings(bucket / "spose.txt"), disk)
  embeddings.save_embeddings(bucket / "out" / "e.npy", disk)
  np.testing.assert_array_equal(embeddings.load_embeddings("gs://bucket/out/e.npy"), disk)
  store = EmbeddingStore(bucket / "store")
  store.open(
    {"backbone": "t", "dtype": "float32", "dim": 49, "n_items": 1854, "shard_size": 1000, "source": "t"}
  )
  for k in (0, 1):
    store.write_shard(
      k, np.arange(1854)[1000 * k : 1000 * (k + 1)].astype(str), disk[1000 * k : 1000 * (k + 1)]
    )
  np.testing.assert_array_equal(embeddings.load_embeddings(bucket / "store"), disk)
  with (bucket / "tv" / "features.npy").open("wb") as f:
    np.save(f, disk[:3])
  (bucket / "tv" / "file_names.txt").write_text("a/a_01b.jpg\nb/b_01b.jpg\nc/c_01b.jpg\n")
  names, array = embeddings.read_thingsvision(
    bucket / "tv" / "features.npy", bucket / "tv" / "file_names.txt"
  )
  assert names == ["a/a_01b.jpg", "b/b_01b.jpg", "c/c_01b.jpg"]
  np.testing.assert_array_equal(array, disk[:3])
  with pytest.raises(DataError, match=r"gs://bucket/tv/none.txt: not found"):
    embeddings.read_thingsvision(bucket / "tv" / "features.npy", bucket / "tv" / "none.txt")
