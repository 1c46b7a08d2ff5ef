"""AligNet .npz files: the release format, its order invariant, and refusal of bad files."""

import numpy as np
import pytest

from aligned import odd_one_out
from aligned.data import alignet_files
from aligned.errors import DataError
from aligned.npz_stream import NpzReader, NpzStreamWriter


def _random_triplets(n, n_images=1000, d=8, seed=0):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(n_images, d))
  indices = np.stack([rng.choice(n_images, 3, replace=False) for _ in range(n)])
  sims = np.asarray(odd_one_out.pair_similarities(emb[indices].astype(np.float32)))
  filenames = np.char.add(np.char.add("n0000_", indices.astype(str)), ".JPEG")
  return emb, filenames, sims, indices


def test_write_sorts_items_with_their_similarities_and_reads_back(tmp_path):
  emb, filenames, sims, indices = _random_triplets(200)
  path = alignet_files.alignet_path(tmp_path, "uncertainty_distillation", "train", "cluster_border_500")
  assert path == tmp_path / "uncertainty_distillation" / "train_cluster_border_500.npz"
  alignet_files.write_alignet(path, filenames, sims, indices, n_images=1000)
  got = alignet_files.read_alignet(path, n_images=1000)

  s01, s02, s12 = got.similarities.T
  assert np.all(s01 >= s02) and np.all(s02 >= s12)  # odd-one-out last and s12 smallest
  # Each stored similarity belongs to the stored items: recompute from the embeddings.
  recomputed = odd_one_out.pair_similarities(emb[got.indices].astype(np.float32))
  np.testing.assert_allclose(got.similarities, recomputed, rtol=1e-5, atol=1e-5)
  # Filenames moved with their indices, and each row holds the same images as before.
  np.testing.assert_array_equal(
    got.filenames, np.char.add(np.char.add("n0000_", got.indices.astype(str)), ".JPEG")
  )
  assert [set(r) for r in got.indices.tolist()] == [set(r) for r in indices.tolist()]
  with np.load(path, allow_pickle=False) as data:
    assert sorted(data.files) == ["filenames", "indices", "similarities"]
    assert data["filenames"].dtype.kind == "U" and data["indices"].dtype == np.int64


def _write_raw(path, **arrays):
  np.savez(path, **arrays)
  return path


def test_unordered_similarities_are_refused_with_the_row(tmp_path):
  _, filenames, sims, indices = _random_triplets(50)
  sims, indices = odd_one_out.sort_odd_one_out_last(indices, sims)[::-1]
  bad = sims.copy()
  bad[17] = bad[17][[2, 1, 0]]  # s12 largest: the odd-one-out is no longer last
  path = _write_raw(tmp_path / "bad.npz", filenames=filenames, similarities=bad, indices=indices)
  with pytest.raises(DataError, match=r"triplet 17 \(0-based\).*odd-one-out-last"):
    alignet_files.read_alignet(path)
  good = _write_raw(tmp_path / "good.npz", filenames=filenames, similarities=sims, indices=indices)
  assert len(alignet_files.read_alignet(good)) == 50


def test_other_bad_files(tmp_path):
  _, filenames, sims, indices = _random_triplets(20)
  sims, indices = odd_one_out.sort_odd_one_out_last(indices, sims)[::-1]
  cases = {
    "missing": dict(filenames=filenames, similarities=sims),
    "shape": dict(filenames=filenames, similarities=sims[:, :2], indices=indices),
    "nan": dict(
      filenames=filenames, similarities=np.where(np.arange(20)[:, None] == 3, np.nan, sims), indices=indices
    ),
    "range": dict(filenames=filenames, similarities=sims, indices=indices + 1000),
    "repeat": dict(
      filenames=filenames, similarities=sims, indices=np.where(np.arange(3) == 2, indices[:, :1], indices)
    ),
    "int_sims": dict(filenames=filenames, similarities=np.ones((20, 3), int), indices=indices),
  }
  messages = {
    "missing": "missing arrays",
    "shape": "shape",
    "nan": r"triplet 3 \(0-based\): non-finite",
    "range": "out of range",
    "repeat": "repeated",
    "int_sims": "must be floats",
  }
  for name, arrays in cases.items():
    path = _write_raw(tmp_path / f"{name}.npz", **arrays)
    with pytest.raises(DataError, match=messages[name]):
      alignet_files.read_alignet(path, n_images=1000)
  pickled = tmp_path / "pickled.npz"
  np.savez(pickled, filenames=np.array([{"x": 1}] * 20, dtype=object), similarities=sims, indices=indices)
  with pytest.raises(DataError, match="plain-array"):
    alignet_files.read_alignet(pickled)


def test_bad_names_and_no_partial_file(tmp_path):
  with pytest.raises(ValueError, match="transform"):
    alignet_files.alignet_path(tmp_path, "aligned", "train", "random")
  with pytest.raises(ValueError, match="split"):
    alignet_files.alignet_path(tmp_path, "untransformed", "test", "random")
  _, filenames, sims, indices = _random_triplets(10)
  target = tmp_path / "untransformed" / "val_random.npz"
  with pytest.raises(DataError):
    alignet_files.write_alignet(target, filenames, sims, indices, n_images=5)  # indices out of range
  assert not target.exists() and not list(target.parent.glob("*"))


def test_alignet_files_in_a_bucket_written_whole_and_streamed(bucket):
  emb, filenames, sims, indices = _random_triplets(60)
  path = alignet_files.alignet_path(bucket, "untransformed", "val", "random")
  assert str(path) == "gs://bucket/untransformed/val_random.npz"
  written = alignet_files.write_alignet(path, filenames, sims, indices, n_images=1000)
  got = alignet_files.read_alignet(path, n_images=1000)
  np.testing.assert_array_equal(got.filenames, written.filenames)
  np.testing.assert_array_equal(got.indices, written.indices)
  np.testing.assert_array_equal(got.similarities, written.similarities)
  assert alignet_files.read_alignet(path, filenames=False).filenames is None
  # The streamed writer uploads an ordinary .npz; the streamed reader reads it back chunk by chunk.
  streamed = bucket / "streamed" / "x.npz"
  with NpzStreamWriter(streamed, compress=True) as npz:
    npz.add("indices", (60, 3), np.int64, (written.indices[i : i + 7] for i in range(0, 60, 7)))
  with NpzReader(streamed) as npz:
    assert npz.names == ["indices"] and npz.shape("indices") == (60, 3)
    chunks = list(npz.chunks("indices", rows=25))
  assert [len(c) for c in chunks] == [25, 25, 10]
  np.testing.assert_array_equal(np.concatenate(chunks), written.indices)
  with pytest.raises(DataError, match=r"gs://bucket/missing.npz: not an .npz"):
    NpzReader(bucket / "missing.npz")
  with pytest.raises(DataError):  # refused: indices out of range, and nothing uploaded
    alignet_files.write_alignet(bucket / "bad" / "val_random.npz", filenames, sims, indices, n_images=5)
  assert not (bucket / "bad" / "val_random.npz").exists()
