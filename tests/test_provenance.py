"""provenance.json: a workdir's settings and inputs recorded, a rerun compared, restart confined."""

import json

import numpy as np
import pytest

from aligned import artifacts, provenance
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError


def _store(folder, scale=1.0):
  store = EmbeddingStore(folder)
  store.open(
    {"backbone": "test", "dtype": "float32", "dim": 2, "n_items": 4, "shard_size": 2, "source": "test"}
  )
  for k in range(2):
    store.write_shard(k, np.array([f"a{2 * k}", f"a{2 * k + 1}"]), scale * np.ones((2, 2), np.float32) * k)
  return folder


def test_a_store_is_fingerprinted_by_its_records_and_a_file_by_its_bytes(tmp_path):
  a, b = _store(tmp_path / "a"), _store(tmp_path / "b")
  assert provenance.fingerprint(a) == provenance.fingerprint(b)  # same content, another place
  assert provenance.fingerprint(_store(tmp_path / "c", 2.0)) != provenance.fingerprint(a)
  (a / "shard_00001.json").unlink()  # an unfinished store is another store
  assert provenance.fingerprint(a) != provenance.fingerprint(b)
  artifacts.save_npy(tmp_path / "x.npy", np.zeros(3))
  assert provenance.fingerprint(tmp_path / "x.npy") == artifacts.sha256_of(tmp_path / "x.npy")
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="empty folder"):
    provenance.fingerprint(tmp_path / "empty")
  with pytest.raises(DataError, match="not found"):
    provenance.fingerprint(tmp_path / "missing.npy")


def _folder(root, weights=b"w" * 10, name="model.safetensors"):
  (root / "sub").mkdir(parents=True)
  (root / "config.json").write_text("{}")
  (root / "sub" / name).write_bytes(weights)
  return root


def test_another_folder_is_fingerprinted_by_every_file_or_by_its_listing(tmp_path):
  a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b")
  assert provenance.fingerprint(a) == provenance.fingerprint(b)  # same files, another place
  same_size = _folder(tmp_path / "c", b"W" * 10)  # other weights of the same size
  assert provenance.fingerprint(same_size) != provenance.fingerprint(a)
  assert provenance.fingerprint(same_size, listing=True) == provenance.fingerprint(a, listing=True)
  renamed = _folder(tmp_path / "d", name="other.safetensors")
  assert provenance.fingerprint(renamed) != provenance.fingerprint(a)
  assert provenance.fingerprint(renamed, listing=True) != provenance.fingerprint(a, listing=True)
  longer = _folder(tmp_path / "e", b"w" * 11)
  assert provenance.fingerprint(longer, listing=True) != provenance.fingerprint(a, listing=True)


def test_a_listed_input_is_recorded_as_a_listing_and_compared_by_it(tmp_path):
  images = _folder(tmp_path / "images")
  w = tmp_path / "w"
  provenance.check_or_record(w, "s", {}, {"root": images}, listed=("root",))
  recorded = json.loads((w / "provenance.json").read_text())["inputs"]["root"]
  assert recorded["of"].startswith("listing") and recorded["sha256"] == provenance.fingerprint(images, True)
  (images / "sub" / "new.png").write_bytes(b"x")
  with pytest.raises(DataError, match=r"root .*images \(sha256 .*\) -> "):
    provenance.check_or_record(w, "s", {}, {"root": images}, listed=("root",))


def test_check_or_record_compares_settings_inputs_and_stage(tmp_path):
  artifacts.save_npy(tmp_path / "x.npy", np.zeros(3))
  w, inputs = tmp_path / "w", {"x": tmp_path / "x.npy"}
  config = {"n": 1, "nested": {"a": 1}, "restart": False}
  assert provenance.check_or_record(w, "s", config, inputs, volatile=("restart",)) == "recorded"
  assert provenance.check_or_record(w, "s", {**config, "restart": True}, inputs, ("restart",)) == "same"
  with pytest.raises(DataError, match=r"provenance.json: .*nested.a 1 -> 2; use a new workdir or"):
    provenance.check_or_record(w, "s", {**config, "nested": {"a": 2}}, inputs, ("restart",))
  with pytest.raises(DataError, match=r"belongs to stage 's', not 't'"):
    provenance.check_or_record(w, "t", config, inputs, ("restart",))
  artifacts.save_npy(tmp_path / "x.npy", np.ones(3))
  with pytest.raises(DataError, match=r"x .*x.npy \(sha256 [0-9a-f]{12}\) -> .*x.npy \(sha256"):
    provenance.check_or_record(w, "s", config, inputs, ("restart",))
  assert json.loads((w / "provenance.json").read_text())["config"] == {"n": 1, "nested.a": 1}
  # an input's path is compared by content: the same bytes elsewhere are the same input
  artifacts.save_npy(tmp_path / "y.npy", np.zeros(3))
  artifacts.save_npy(tmp_path / "x.npy", np.zeros(3))
  moved = {**config, "x": str(tmp_path / "y.npy")}
  assert provenance.check_or_record(w, "s", moved, {"x": tmp_path / "y.npy"}, ("restart",)) == "same"
  provenance.record(w, "s", {"n": 2}, inputs)  # recomputing stages: overwritten, no comparison
  assert json.loads((w / "provenance.json").read_text())["config"] == {"n": 2}


def test_start_over_deletes_only_the_stages_own_files_and_only_in_its_workdir(tmp_path):
  w = tmp_path / "w"
  (w / "out").mkdir(parents=True)
  (w / "out" / "f.npz").write_text("x")
  (w / "keep.txt").write_text("not the stage's")
  with pytest.raises(DataError, match="restart: no provenance.json here"):
    provenance.start_over(w, "s", ("out", "results.json"))
  assert (w / "out" / "f.npz").exists()
  provenance.check_or_record(w, "s", {}, {})
  with pytest.raises(DataError, match="belongs to stage 's', not 't'"):
    provenance.start_over(w, "t", ("out",))
  assert provenance.start_over(w, "s", ("out", "results.json")) == ["out"]
  assert not (w / "out").exists() and not (w / "provenance.json").exists() and (w / "keep.txt").exists()
  assert provenance.start_over(tmp_path / "new", "s", ("out",)) == []
