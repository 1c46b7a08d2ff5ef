"""The embedding store on its own: dtypes, memory-mapped reads, refusal of mixed settings."""

import numpy as np
import pytest

from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError


def _metadata(dtype, n=10):
  return {"backbone": "test", "dtype": dtype, "dim": 4, "n_items": n, "shard_size": 4, "source": "test"}


@pytest.mark.parametrize("dtype, tolerance", [("float32", 0.0), ("bfloat16", 1e-2)])
def test_round_trip_and_memory_mapped_shards(tmp_path, dtype, tolerance):
  store = EmbeddingStore(tmp_path / dtype)
  store.open(_metadata(dtype))
  rng = np.random.default_rng(0)
  data = rng.normal(size=(10, 4)).astype(np.float32)
  assert store.missing_shards() == [0, 1, 2]
  for k in (2, 0, 1):  # any order; the store reads in item order
    store.write_shard(
      k, np.array([f"item{i}" for i in range(4 * k, min(4 * k + 4, 10))]), data[4 * k : 4 * k + 4]
    )
  ids, embeddings = store.read()
  assert list(ids) == [f"item{i}" for i in range(10)] and embeddings.dtype == np.float32
  np.testing.assert_allclose(embeddings, data, rtol=tolerance, atol=tolerance)
  if dtype == "bfloat16":
    assert (tmp_path / dtype / "shard_00000.npy").stat().st_size < 128 + 4 * 4 * 4  # 2 bytes a value
    assert not np.array_equal(embeddings, data)  # really rounded
  _, mapped = store.read_shard(1, mmap=True)
  assert isinstance(mapped.base, np.memmap) or isinstance(mapped, np.memmap)
  np.testing.assert_allclose(np.asarray(mapped, np.float32), embeddings[4:8])


def test_incomplete_or_reconfigured_stores_are_refused(tmp_path):
  store = EmbeddingStore(tmp_path)
  store.open(_metadata("float32"))
  store.write_shard(0, np.array(["a", "b", "c", "d"]), np.zeros((4, 4)))
  with pytest.raises(DataError, match="2 of 3 shards missing"):
    store.read()
  with pytest.raises(DataError, match="other settings \\(n_items\\)"):
    EmbeddingStore(tmp_path).open(_metadata("float32", n=11))
  with pytest.raises(ValueError, match="ids but"):
    store.write_shard(1, np.array(["x"]), np.zeros((2, 4)))


def test_a_store_in_a_bucket_round_trips_and_checks_its_shards(bucket):
  root = bucket / "store"
  store = EmbeddingStore(root)
  store.open(_metadata("bfloat16"))
  data = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
  for k in (1, 0, 2):
    store.write_shard(
      k, np.array([f"item{i}" for i in range(4 * k, min(4 * k + 4, 10))]), data[4 * k : 4 * k + 4]
    )
  assert sorted(p.name for p in root.iterdir()) == ["metadata.json"] + [
    f"shard_{k:05d}{suffix}" for k in range(3) for suffix in (".ids.npy", ".json", ".npy")
  ]
  ids, embeddings = EmbeddingStore("gs://bucket/store").read()  # a new reader, from the URL string
  assert list(ids) == [f"item{i}" for i in range(10)]
  np.testing.assert_allclose(embeddings, data, rtol=1e-2, atol=1e-2)
  _, shard = store.read_shard(1, mmap=True)  # no memory map in a bucket: read whole
  np.testing.assert_array_equal(np.asarray(shard, np.float32), embeddings[4:8])
  with pytest.raises(DataError, match="other settings"):
    EmbeddingStore(root).open(_metadata("float32"))
  with (root / "shard_00002.npy").open("wb") as f:  # corrupt a shard in place
    np.save(f, np.zeros((2, 4), np.uint16))
  with pytest.raises(DataError, match=r"gs://bucket/store/shard_00002.npy: sha256 differs"):
    store.read()
