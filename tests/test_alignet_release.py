"""Files of the official AligNet release: read in their published layout, re-ordered to ours, imported.

The release's README states its order as "s12 < s01 and s12 < s02"; this project (and the release's
code) needs s01 to be the largest. A valid release row with s02 > s01 is re-ordered, not refused; so is
a row whose s12 ties for the smallest (one float equality must not stop a 10 M-row import), while a
row whose s12 is strictly larger than s01 or s02 is refused.
"""

import itertools
import json

import ml_collections
import numpy as np
import pytest

from aligned import artifacts, odd_one_out
from aligned.artifacts import sha256_of
from aligned.cli.launch import config_file, run_job
from aligned.configs import import_release as import_release_config
from aligned.data import alignet_files
from aligned.errors import DataError
from aligned.npz_stream import NpzReader
from aligned.student.data import TripletRows

N_IMAGES = 500


def _names(indices):
  return np.char.add(np.char.add("n0000_", indices.astype(str)), ".JPEG")


def _release_rows(n=300, seed=0):
  """Rows in the published layout from random embeddings: s12 strictly smallest in every row, and
  the most similar pair (0, 1) in the even rows (already our order), (0, 2) in the odd rows.

  Returns (embeddings, filenames, float64 similarities, indices, rows that need re-ordering)."""
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(N_IMAGES, 8))
  items = np.stack([rng.choice(N_IMAGES, 3, replace=False) for _ in range(n)])

  def sim(a, b):
    return float(emb[a] @ emb[b])

  rows, needs = [], []
  for k, (a, b, c) in enumerate(items.tolist()):
    pairs = {(a, b): sim(a, b), (a, c): sim(a, c), (b, c): sim(b, c)}
    (top, _), _, (low, _) = sorted(pairs.items(), key=lambda kv: -kv[1])
    first = ({a, b, c} - set(low)).pop()  # items 1 and 2 form the least similar pair: s12 smallest
    partner = (set(top) - {first}).pop()  # every pair but the least similar one holds `first`
    other = (set(low) - {partner}).pop()
    rows.append([first, partner, other] if k % 2 == 0 else [first, other, partner])
    needs.append(k % 2 == 1)
  indices = np.array(rows)
  sims = np.array([[sim(i, j), sim(i, k), sim(j, k)] for i, j, k in rows])
  return emb, _names(indices), sims, indices, np.array(needs)


def _write(path, compressed=True, **arrays):
  path.parent.mkdir(parents=True, exist_ok=True)
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  return path


def _brute_force(items, sims):
  """Our order by brute force: of the 6 item orders, the first (identity first) whose pair
  similarities, computed by pair lookup, are s01 >= s02 >= s12."""
  out_items, out_sims = [], []
  for row, (s01, s02, s12) in zip(items.tolist(), sims.tolist(), strict=True):
    lookup = {frozenset((0, 1)): s01, frozenset((0, 2)): s02, frozenset((1, 2)): s12}
    for order in itertools.permutations(range(3)):
      s = [lookup[frozenset((order[p], order[q]))] for p, q in ((0, 1), (0, 2), (1, 2))]
      if s[0] >= s[1] >= s[2]:
        out_items.append([row[o] for o in order])
        out_sims.append(s)
        break
  return np.array(out_items), np.array(out_sims)


def test_a_release_file_is_reordered_to_our_convention(tmp_path):
  emb, names, sims, indices, needs = _release_rows()
  assert np.all(sims[:, 2] < sims[:, 0]) and np.all(sims[:, 2] < sims[:, 1])  # the published rule
  assert needs.sum() == 150 and np.all((sims[:, 1] > sims[:, 0]) == needs)
  path = _write(
    tmp_path / "untransformed" / "val_between_class.npz",
    filenames=names.astype("S"),  # bytes, as a file written by Python 2-era tools would hold them
    similarities=sims,  # float64
    indices=indices.astype(np.int32),
  )
  got, reordered = alignet_files.read_release(path, n_images=N_IMAGES, chunk_rows=7)

  assert got.filenames.dtype.kind == "U" and got.similarities.dtype == np.float32
  assert got.indices.dtype == np.int64
  s01, s02, s12 = got.similarities.T
  assert np.all(s01 >= s02) and np.all(s01 >= s12) and np.all(s02 >= s12)  # ours (and the README's)
  np.testing.assert_array_equal(reordered, needs)
  assert reordered.sum() == 150
  # Against an independent reference: brute force over the 6 orders, and the embeddings themselves.
  ref_items, ref_sims = _brute_force(indices, sims)
  np.testing.assert_array_equal(got.indices, ref_items)
  np.testing.assert_array_equal(got.similarities, ref_sims.astype(np.float32))
  recomputed = np.einsum("nd,nd->n", emb[got.indices[:, 0]], emb[got.indices[:, 1]])
  np.testing.assert_allclose(got.similarities[:, 0], recomputed, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(got.filenames, _names(got.indices))  # names moved with their items
  # Rows already in our order are bit-identical (after the declared casts).
  keep = ~needs
  np.testing.assert_array_equal(got.indices[keep], indices[keep])
  np.testing.assert_array_equal(got.filenames[keep], names[keep])
  assert got.similarities[keep].tobytes() == sims[keep].astype(np.float32).tobytes()
  # The re-ordered rows swapped items 1 and 2: s01 <-> s02, s12 kept.
  np.testing.assert_array_equal(got.indices[needs], indices[needs][:, [0, 2, 1]])
  np.testing.assert_array_equal(got.similarities[needs], sims[needs][:, [1, 0, 2]].astype(np.float32))


# Rows whose s12 ties for the smallest, at rows spread over several chunks of 4: (row, [s01, s02, s12]).
_TIES = {
  3: [0.5, 0.3, 0.3],  # s12 == s02 < s01: already our order, kept bit for bit
  5: [0.3, 0.5, 0.3],  # s12 == s01 < s02: items 1 and 2 swapped -> [0.5, 0.3, 0.3]
  8: [0.4, 0.4, 0.4],  # all equal: kept
  14: [-0.25, 0.125, -0.25],  # s12 == s01 < s02, negative values
  17: [0.1, 0.0, -0.0],  # s12 == s02 < s01 as signed zeros (equal as floats): kept, -0.0 included
  19: [-0.0, 0.2, 0.0],  # s12 == s01 < s02 as signed zeros: swapped
}
_NOT_TIES = {11: [0.4, 0.4, 0.2]}  # a tie at the top, s12 strictly smallest: kept, not a tie row


def _with_ties(n=24, seed=5, dtype=np.float64):
  arrays = _good(n, seed)
  sims = arrays["similarities"].copy()
  for k, values in {**_TIES, **_NOT_TIES}.items():
    sims[k] = values
  return {**arrays, "similarities": sims.astype(dtype)}


@pytest.mark.parametrize("sims_dtype", [np.float16, np.float32, np.float64])
def test_rows_whose_s12_ties_for_the_smallest_are_accepted_and_end_in_our_order(tmp_path, sims_dtype):
  arrays = _with_ties(dtype=sims_dtype)
  items, sims = arrays["indices"], arrays["similarities"]
  path = _write(tmp_path / "untransformed" / "val_random.npz", **arrays)
  got, reordered = alignet_files.read_release(path, n_images=N_IMAGES, chunk_rows=4)

  s01, s02, s12 = got.similarities.T
  assert np.all(s01 >= s02) and np.all(s02 >= s12)  # ours
  # Against the brute-force reference, in the file's precision (identity first, so kept rows are kept).
  ref_items, ref_sims = _brute_force(items, sims)
  np.testing.assert_array_equal(got.indices, ref_items)
  np.testing.assert_array_equal(got.similarities, ref_sims.astype(np.float32))
  np.testing.assert_array_equal(got.filenames, _names(got.indices))  # names moved with their items
  np.testing.assert_array_equal(reordered, (ref_items != items).any(axis=1))
  keep = ~reordered
  assert got.similarities[keep].tobytes() == sims[keep].astype(np.float32).tobytes()  # bit for bit
  # The tie rows one by one: which were kept, which had items 1 and 2 swapped.
  swapped = [5, 14, 19]
  assert set(np.flatnonzero(reordered)) & set(_TIES) == set(swapped)
  for k in _TIES:
    np.testing.assert_array_equal(got.indices[k], items[k][[0, 2, 1]] if k in swapped else items[k])
  assert got.similarities[5].tolist() == np.array([0.5, 0.3, 0.3], sims_dtype).astype(np.float32).tolist()
  assert np.signbit(got.similarities[17, 2]) and not np.signbit(got.similarities[17, 1])
  assert got.similarities[19].tobytes() == np.array([0.2, -0.0, 0.0], sims_dtype).astype(np.float32).tobytes()
  # And the chunked reader flags exactly the rows whose smallest similarity is tied in the file.
  tied = np.concatenate([t for *_, t in alignet_files.release_chunks(path, N_IMAGES, False, chunk_rows=4)])
  np.testing.assert_array_equal(tied, sims[:, 2] == np.minimum(sims[:, 0], sims[:, 1]))
  if sims_dtype == np.float64:
    assert sorted(np.flatnonzero(tied)) == sorted(_TIES)


def test_which_swap_fixes_a_row():
  # Items a, b, c with s(a,b) = 0.4, s(a,c) = 0.7, s(b,c) = 0.1: valid as published (s12 smallest),
  # but the most similar pair is (a, c).
  items, sims = np.array([[10, 11, 12]]), np.array([[0.4, 0.7, 0.1]])
  # Swapping items 0 and 1 keeps s01 and exchanges s02 and s12: s01 is still not the largest.
  swapped01 = odd_one_out.permute_triplets(items, sims, np.array([1, 0, 2]))
  np.testing.assert_array_equal(swapped01[0], [[11, 10, 12]])
  np.testing.assert_allclose(swapped01[1], [[0.4, 0.1, 0.7]])
  # Swapping items 1 and 2 keeps s12 and exchanges s01 and s02: our order, and the README's.
  swapped12 = odd_one_out.permute_triplets(items, sims, np.array([0, 2, 1]))
  np.testing.assert_array_equal(swapped12[0], [[10, 12, 11]])
  np.testing.assert_allclose(swapped12[1], [[0.7, 0.4, 0.1]])
  # That is the permutation the sort helper (and so read_release) applies.
  np.testing.assert_array_equal(odd_one_out.sort_odd_one_out_last(items, sims)[0], swapped12[0])


@pytest.mark.parametrize("names_dtype", ["U", "S"])
@pytest.mark.parametrize("indices_dtype", [np.int32, np.int64, np.uint16])
@pytest.mark.parametrize("sims_dtype", [np.float16, np.float32, np.float64])
def test_published_dtypes_are_read_into_ours(tmp_path, names_dtype, indices_dtype, sims_dtype):
  names = np.array([["a.JPEG", "b.JPEG", "c.JPEG"], ["d.JPEG", "e.JPEG", "f.JPEG"]], dtype=names_dtype)
  sims = np.array([[0.5, 0.5, 0.25], [0.25, 0.75, 0.125]], dtype=sims_dtype)  # a tie at the top: kept
  path = _write(
    tmp_path / "f.npz",
    compressed=False,
    filenames=names,
    similarities=sims,
    indices=np.array([[0, 1, 2], [3, 4, 5]], dtype=indices_dtype),
  )
  got, reordered = alignet_files.read_release(path, n_images=6)
  assert got.filenames.dtype.kind == "U" and got.similarities.dtype == np.float32
  assert got.indices.dtype == np.int64
  np.testing.assert_array_equal(reordered, [False, True])
  np.testing.assert_array_equal(
    got.filenames, [["a.JPEG", "b.JPEG", "c.JPEG"], ["d.JPEG", "f.JPEG", "e.JPEG"]]
  )
  np.testing.assert_array_equal(got.indices, [[0, 1, 2], [3, 5, 4]])
  np.testing.assert_array_equal(got.similarities, [[0.5, 0.5, 0.25], [0.75, 0.25, 0.125]])


def test_the_streamed_reader_equals_np_load(tmp_path):
  rng = np.random.default_rng(1)
  arrays = {
    "a": rng.normal(size=(101, 3)).astype(np.float16),
    "b": np.array([[f"x{i}", "yy", "z" * (i % 5)] for i in range(101)]),
    "c": np.asfortranarray(rng.integers(0, 9, size=(101, 3))),  # Fortran order: read whole, then cut
    "d": np.zeros((0, 3), np.int32),
  }
  for compressed in (False, True):
    path = _write(tmp_path / f"x{compressed}.npz", compressed=compressed, **arrays)
    with NpzReader(path) as npz, np.load(path) as ref:
      assert npz.names == ref.files
      for name in arrays:
        assert npz.shape(name) == ref[name].shape and npz.dtype(name) == ref[name].dtype
        got = list(npz.chunks(name, rows=10))
        if len(ref[name]):
          assert [len(c) for c in got] == [10] * 10 + [1]
          np.testing.assert_array_equal(np.concatenate(got), ref[name])
        else:
          assert got == []


def _good(n=20, seed=0):
  _, names, sims, indices, _ = _release_rows(n, seed)
  return dict(filenames=names, similarities=sims, indices=indices)


def _bad_files():
  good = _good()

  def row(k, values, array="similarities"):
    out = good[array].copy()
    out[k] = values
    return {**good, array: out}

  return {
    "object": (
      {**good, "filenames": good["filenames"].astype(object)},
      r"'filenames' has dtype object.*pickle",
    ),
    "nan": (row(6, [0.5, np.nan, 0.1]), r"triplet 6 \(0-based\): non-finite similarities \[0.5, nan, 0.1\]"),
    "not_release_order": (
      row(4, [0.9, 0.1, 0.5]),  # valid in our order, not in the published one
      r"triplet 4 \(0-based\).*\[0.9, 0.1, 0.5\]: s12 is not the smallest.*read_alignet",
    ),
    "tied_but_not_smallest": (
      row(9, [0.3, 0.5, 0.5]),  # s12 ties s02 but is strictly larger than s01
      r"triplet 9 \(0-based\).*\[0.3, 0.5, 0.5\]: s12 is not the smallest",
    ),
    "shape": ({**good, "similarities": good["similarities"][:, :2]}, r"'similarities' has shape \(20, 2\)"),
    "rows": (
      {**good, "indices": good["indices"][:-1]},
      r"'filenames' has shape \(20, 3\); expected \(n, 3\)",
    ),
    "missing": ({k: v for k, v in good.items() if k != "indices"}, r"missing arrays \['indices'\]"),
    "negative": (
      row(3, [1, -2, 3], "indices"),
      r"triplet 3 \(0-based\): image index \[1, -2, 3\] out of range",
    ),
    "range": (row(12, [1, 2, N_IMAGES], "indices"), r"triplet 12 \(0-based\): image index .* out of range"),
    "repeat": (row(5, [7, 8, 7], "indices"), r"triplet 5 \(0-based\): image repeated"),
    "int_sims": ({**good, "similarities": np.ones((20, 3), int)}, "must be floats"),
    "float32_overflow": (row(2, [1e300, 1e299, 0.0]), r"triplet 2 \(0-based\).*do not fit float32"),
    "not_ascii": (
      {**good, "filenames": np.char.encode(row(8, ["a", "é", "c"], "filenames")["filenames"], "utf-8")},
      r"triplet 8 \(0-based\): file names .* are not ASCII",
    ),
  }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_bad_release_files_are_refused_naming_file_and_row(tmp_path, case):
  arrays, message = _bad_files()[case]
  path = _write(tmp_path / f"{case}.npz", **arrays)
  with pytest.raises(DataError, match=message) as error:
    alignet_files.read_release(path, n_images=N_IMAGES, chunk_rows=4)  # rows found across chunks
  assert str(error.value).startswith(str(path))


def test_not_an_npz_and_corrupt_data_are_refused(tmp_path):
  path = tmp_path / "x.npz"
  np.save(path, np.zeros((2, 3)))  # an .npy under an .npz name
  with pytest.raises(DataError, match="not an .npz"):
    alignet_files.read_release(path)
  corrupt = _write(tmp_path / "corrupt.npz", compressed=False, **_good(2000))
  data = bytearray(corrupt.read_bytes())
  at = data.index(b"similarities.npy") + 400  # inside the stored similarities, past its header
  data[at] ^= 0xFF
  corrupt.write_bytes(bytes(data))
  with pytest.raises(DataError, match="array 'similarities': truncated or corrupt data .Bad CRC"):
    alignet_files.read_release(corrupt)


def _config(root, **overrides):
  return ml_collections.ConfigDict(
    {"root": str(root), "files": [], "n_images": N_IMAGES, "chunk_rows": 16, **overrides}
  )


def test_import_release_writes_our_files_and_a_manifest(tmp_path):
  root, out = tmp_path / "release", tmp_path / "imported"
  train = _good(100, seed=1)
  train = {**train, "filenames": train["filenames"].astype("S"), "indices": train["indices"].astype(np.int32)}
  val = _good(30, seed=2)
  _write(root / "uncertainty_distillation" / "train_cluster_border_500.npz", **train)
  _write(root / "uncertainty_distillation" / "val_cluster_border_500.npz", **val)
  _write(root / "representations" / "siglip.npz", x=np.zeros(3))  # not a triplet file: skipped

  results = alignet_files.import_release(_config(root), out)

  manifest = json.loads((out / "manifest.json").read_text())
  assert sorted(manifest["files"]) == [
    "uncertainty_distillation/train_cluster_border_500.npz",
    "uncertainty_distillation/val_cluster_border_500.npz",
  ]
  assert manifest["skipped"] == ["representations/siglip.npz"] == results["skipped"]
  for rel, record in manifest["files"].items():
    source, written = root / rel, out / rel
    expected, moved = alignet_files.read_release(source, n_images=N_IMAGES)
    assert record["rows"] == len(expected) and record["reordered"] == int(moved.sum()) > 0
    assert record["rows_tied"] == 0  # random similarities: no ties
    assert record["source_sha256"] == sha256_of(source) and record["sha256"] == sha256_of(written)
    got = alignet_files.read_alignet(written, n_images=N_IMAGES)  # the strict reader accepts it
    np.testing.assert_array_equal(got.filenames, expected.filenames)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.similarities, expected.similarities)
  assert manifest["files"]["uncertainty_distillation/train_cluster_border_500.npz"]["source_dtypes"] == {
    "filenames": str(train["filenames"].dtype),
    "similarities": "float64",
    "indices": "int32",
  }
  assert results["rows"] == 130 and results["reordered"] == manifest["reordered"] == 65
  assert results["rows_tied"] == manifest["rows_tied"] == 0
  assert "130 rows, 65 re-ordered, 0 with a tie" in alignet_files.format_import(results)
  # The student's reader takes the imported folder as it is.
  paths = [alignet_files.alignet_path(out, "uncertainty_distillation", "train", "cluster_border_500")]
  rows = TripletRows(paths, n_items=N_IMAGES)
  assert len(rows) == 100 and np.all(rows.similarities[:, 0] >= rows.similarities[:, 1:].max(axis=1))
  # Explicit files: only those.
  again = alignet_files.import_release(
    _config(root, files=["uncertainty_distillation/val_cluster_border_500.npz"]), tmp_path / "one"
  )
  assert again["files"] == 1 and again["rows"] == 30
  with pytest.raises(ValueError, match="not a release file path"):
    alignet_files.import_release(_config(root, files=["representations/siglip.npz"]), tmp_path / "two")


def test_tie_rows_are_imported_and_counted_in_the_manifest(tmp_path):
  root, out = tmp_path / "release", tmp_path / "imported"
  ties = _with_ties(dtype=np.float32)  # float32, as the release's files hold them
  _write(root / "untransformed" / "val_random.npz", **ties)
  _write(root / "untransformed" / "train_random.npz", **_good(40, seed=6))  # no ties
  results = alignet_files.import_release(_config(root, chunk_rows=4), out)

  manifest = json.loads((out / "manifest.json").read_text())
  record = manifest["files"]["untransformed/val_random.npz"]
  sims = ties["similarities"]
  assert (sims[:, 2] == np.minimum(sims[:, 0], sims[:, 1])).sum() == len(_TIES)  # float32 made no others
  assert record["rows_tied"] == len(_TIES) == 6
  assert manifest["files"]["untransformed/train_random.npz"]["rows_tied"] == 0
  assert results["rows_tied"] == manifest["rows_tied"] == 6
  ref_items, _ = _brute_force(ties["indices"], sims)
  moved = (ref_items != ties["indices"]).any(axis=1)
  assert record["reordered"] == int(moved.sum())  # the swapped tie rows (5, 14, 19) among them
  assert moved[[5, 14, 19]].all() and not moved[[3, 8, 11, 17]].any()
  assert "6 with a tie for the smallest similarity" in alignet_files.format_import(results)
  got = alignet_files.read_alignet(out / "untransformed" / "val_random.npz", n_images=N_IMAGES)
  np.testing.assert_array_equal(got.indices, ref_items)


def test_a_refused_file_leaves_nothing_behind(tmp_path):
  root, out = tmp_path / "release", tmp_path / "imported"
  good = _write(root / "untransformed" / "train_random.npz", **_good(40, seed=3))
  alignet_files.import_release(_config(root), out)
  assert (out / "manifest.json").exists() and (out / "untransformed" / "train_random.npz").exists()
  bad = _bad_files()["tied_but_not_smallest"][0]
  _write(root / "untransformed" / "val_random.npz", **bad)
  _write(good, **{**_good(40, seed=3), "indices": _good(40, seed=3)["indices"] + N_IMAGES})  # now refused

  with pytest.raises(DataError, match="train_random.npz: triplet 0 .*out of range"):
    alignet_files.import_release(_config(root), out)
  # No manifest, no output for the refused file (not even the earlier import's), no temporaries.
  assert sorted(p.name for p in out.rglob("*")) == ["untransformed"]
  with pytest.raises(DataError, match=r"val_random.npz: triplet 9 \(0-based\).*s12 is not the smallest"):
    alignet_files.import_release(_config(root, files=["untransformed/val_random.npz"]), out)
  assert sorted(p.name for p in out.rglob("*")) == ["untransformed"]


def test_the_command_with_its_packaged_config(tmp_path, capsys):
  assert config_file("import_release").endswith("aligned/configs/import_release.py")
  config = import_release_config.get_config()
  assert config.n_images == 1_281_167 and not config.files  # ImageNet-2012 train; every file
  root, out = tmp_path / "release", tmp_path / "imported"
  _write(root / "untransformed" / "val_between_class.npz", **_good(12, seed=4))
  config.root = str(root)
  results = run_job(alignet_files.import_release, alignet_files.format_import, config, str(out))
  assert results["rows"] == 12 and "12 rows, 6 re-ordered" in capsys.readouterr().out
  _write(root / "untransformed" / "val_random.npz", **_bad_files()["nan"][0])
  with pytest.raises(SystemExit) as exit_:
    run_job(alignet_files.import_release, alignet_files.format_import, config, str(out))
  assert (
    exit_.value.code == 2 and "val_random.npz: triplet 6 (0-based): non-finite" in capsys.readouterr().err
  )
  assert not (out / "manifest.json").exists() and not (out / "untransformed" / "val_random.npz").exists()


def test_import_release_from_a_bucket_into_a_bucket(bucket):
  root, out = bucket / "release", bucket / "imported"
  rel = "uncertainty_distillation/train_cluster_border_500.npz"
  artifacts.save_npz(root / rel, compressed=True, **_good(40, seed=3))
  artifacts.save_npz(root / "representations" / "siglip.npz", x=np.zeros(3))

  results = alignet_files.import_release(_config(root), out)

  assert (
    results["files"] == 1 and results["rows"] == 40 and results["skipped"] == ["representations/siglip.npz"]
  )
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["root"] == "gs://bucket/release" and list(manifest["files"]) == [rel]
  assert manifest["files"][rel]["sha256"] == sha256_of(out / rel)
  expected, moved = alignet_files.read_release(root / rel, n_images=N_IMAGES)
  got = alignet_files.read_alignet(out / rel, n_images=N_IMAGES)
  assert moved.sum() == results["reordered"] > 0
  np.testing.assert_array_equal(got.filenames, expected.filenames)
  np.testing.assert_array_equal(got.indices, expected.indices)
  with pytest.raises(ValueError, match="is the release folder itself"):
    alignet_files.import_release(_config(root), "gs://bucket/release/")
