"""AligNet generation end to end on a tiny store: release format, labels, strategies, resumption."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from aligned import artifacts, odd_one_out
from aligned.artifacts import sha256_of
from aligned.configs import generate as generate_config
from aligned.data.alignet_files import read_alignet
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.generation import generate as generate_module
from aligned.generation.generate import generate
from tests.conftest import REPO

N_CLASSES, PER_CLASS, DIM = 4, 15, 6


def _inputs(folder, n_per_class=PER_CLASS, dim=DIM, similarity="dot", seed=0):
  rng = np.random.default_rng(0)
  n = N_CLASSES * n_per_class
  ids = np.array([f"n{c:08d}_{i}.JPEG" for c in range(N_CLASSES) for i in range(n_per_class)])
  x = (
    rng.normal(size=(N_CLASSES, dim))[np.repeat(np.arange(N_CLASSES), n_per_class)]
    + 0.5 * rng.normal(size=(n, dim))
  ).astype(np.float32)
  store = EmbeddingStore(folder / "store")
  store.open(
    {"backbone": "test", "dtype": "float32", "dim": dim, "n_items": n, "shard_size": 16, "source": "test"}
  )
  for k in range(store.n_shards):
    store.write_shard(k, ids[16 * k : 16 * k + 16], x[16 * k : 16 * k + 16])
  weights = (rng if seed == 0 else np.random.default_rng(seed)).normal(size=(dim, dim)).astype(np.float32)
  artifacts.save_npz(  # a local folder or a bucket
    folder / "transform.npz",
    weights=weights,
    bias=np.zeros(dim, np.float32),
    mean=np.float32(0.1),
    std=np.float32(2.0),
    temperature=np.float32(0.5),
    base_temperature=np.float32(0.8),
    **({"similarity": np.asarray(similarity)} if similarity else {}),  # None: a gLocal file records none
  )
  return ids, x, weights


def _config(folder, **overrides):
  config = generate_config.get_config("smoke")
  config.update({"store": str(folder / "store"), "teacher": str(folder / "transform.npz"), **overrides})
  return config


def test_files_labels_and_strategies(tmp_path):
  ids, x, weights = _inputs(tmp_path)
  generate(_config(tmp_path, samplings=("cluster_border_3", "class_border", "random")), tmp_path / "w")
  z = ((x - 0.1) / 2.0) @ weights
  assignments = np.load(tmp_path / "w" / "clusters" / "kmeans_3.npz")["assignments"]
  classes = np.repeat(np.arange(N_CLASSES), PER_CLASS)
  manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
  assert len(manifest["files"]) == 3 * 2 * 2
  for sampling in ("cluster_border_3", "class_border", "random"):
    triplet_sets = {}
    # the control's labels: raw similarities at the base model's own temperature (calibrated control)
    for transform, table, scale in (("uncertainty_distillation", z, 1 / 0.5), ("untransformed", x, 1 / 0.8)):
      for split, count in (("val", 200), ("train", 2000)):
        path = tmp_path / "w" / transform / f"{split}_{sampling}.npz"
        data = read_alignet(path, n_images=len(ids))  # shapes, dtypes, order invariant, index range
        assert len(data) == count
        assert manifest["files"][f"{transform}/{split}_{sampling}.npz"]["sha256"] == sha256_of(path)
        np.testing.assert_array_equal(data.filenames, ids[data.indices])
        expected = np.asarray(odd_one_out.pair_similarities(table[data.indices])) * scale
        np.testing.assert_allclose(data.similarities, expected, rtol=1e-4, atol=1e-4)
        assert (data.similarities[:, 1] >= data.similarities[:, 2]).all()  # s12 smallest too
        entropy = -np.sum(
          np.exp(odd_one_out.choice_log_probs(data.similarities))
          * odd_one_out.choice_log_probs(data.similarities),
          axis=1,
        )
        record = manifest["files"][f"{transform}/{split}_{sampling}.npz"]
        assert record["mean_label_entropy"] == pytest.approx(float(entropy.mean()), rel=1e-4)
        triplet_sets[transform, split] = {tuple(sorted(t)) for t in data.indices.tolist()}
        labels = {"cluster_border_3": assignments, "class_border": classes}.get(sampling)
        if labels is not None:  # exactly two items share a label
          assert all(len(set(labels[t])) == 2 for t in data.indices)
    # Both twins hold the same triplets; train and val never share one.
    assert triplet_sets["uncertainty_distillation", "train"] == triplet_sets["untransformed", "train"]
    assert (
      not triplet_sets["uncertainty_distillation", "train"] & triplet_sets["uncertainty_distillation", "val"]
    )

  assert manifest["temperatures"] == {"uncertainty_distillation": 0.5, "untransformed": pytest.approx(0.8)}
  assert set(manifest["label_entropy"]) == {"uncertainty_distillation", "untransformed"}


def test_the_control_temperature_options(tmp_path):
  _inputs(tmp_path)
  entropies = {}
  for control in ("raw", "entropy_matched"):
    generate(_config(tmp_path, samplings=("random",), control=control), tmp_path / control)
    manifest = json.loads((tmp_path / control / "manifest.json").read_text())
    entropies[control] = manifest["label_entropy"]
    if control == "raw":
      assert manifest["temperatures"]["untransformed"] == 1.0
  matched = entropies["entropy_matched"]
  # matched on 20 k random triplets of the store; the files hold other random triplets
  assert matched["untransformed"]["train"] == pytest.approx(
    matched["uncertainty_distillation"]["train"], abs=0.01
  )
  assert entropies["raw"]["untransformed"]["train"] != pytest.approx(
    matched["untransformed"]["train"], abs=0.01
  )
  with pytest.raises(ValueError, match="unknown control"):
    generate(_config(tmp_path, samplings=("random",), control="flat"), tmp_path / "bad")


@pytest.mark.slow
def test_killed_and_rerun_gives_identical_files(tmp_path):
  _inputs(tmp_path, n_per_class=400, dim=32)
  command = [
    sys.executable,
    "-m",
    "experiments.generate",
    "--config=configs/generate.py:smoke",
    f"--config.store={tmp_path / 'store'}",
    f"--config.teacher={tmp_path / 'transform.npz'}",
    "--config.n_train=60000",
    "--config.chunk=4096",
  ]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  reference = subprocess.run(
    [*command, f"--workdir={tmp_path / 'ref'}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert reference.returncode == 0, reference.stderr[-2000:]
  process = subprocess.Popen(
    [*command, f"--workdir={tmp_path / 'w'}"],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  manifest = tmp_path / "w" / "manifest.json"
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if manifest.exists() and len(json.loads(manifest.read_text())["files"]) >= 2:
      break
    time.sleep(0.02)
  assert process.poll() is None, "generation finished before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  written = len(json.loads(manifest.read_text())["files"])
  assert 2 <= written < 8
  rerun = subprocess.run(
    [*command, f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  ref_files = sorted(
    p.relative_to(tmp_path / "ref") for p in (tmp_path / "ref").rglob("*.npz") if "clusters" not in str(p)
  )
  assert len(ref_files) == 8
  for relative in ref_files:
    assert sha256_of(tmp_path / "w" / relative) == sha256_of(tmp_path / "ref" / relative), relative
  assert not [p for p in (tmp_path / "w").rglob(".*") if p.is_file()]  # no temporaries left


def test_bad_inputs_fail_before_any_work(tmp_path):
  _inputs(tmp_path)
  np.savez(tmp_path / "wide.npz", weights=np.eye(7), mean=0.0, std=1.0)
  with pytest.raises(DataError, match="expects 7 features"):
    generate(_config(tmp_path, teacher=str(tmp_path / "wide.npz")), tmp_path / "a")
  with pytest.raises(DataError, match="requested"):
    generate(_config(tmp_path, samplings=("within_class",), n_train=10_000), tmp_path / "b")
  with pytest.raises(ValueError, match="unknown strategy"):
    generate(_config(tmp_path, samplings=("odd",)), tmp_path / "c")
  (tmp_path / "store" / "shard_00001.json").unlink()
  with pytest.raises(DataError, match="shards missing"):
    generate(_config(tmp_path), tmp_path / "d")
  assert not (tmp_path / "a").exists() and not (tmp_path / "d" / "manifest.json").exists()


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_labelling_matches_the_kernel_in_any_chunking(similarity):
  from aligned.triplet_similarities import iter_pair_similarities

  rng = np.random.default_rng(3)
  table = rng.normal(size=(500, 7)).astype(np.float32)
  triplets = rng.integers(0, 500, size=(2500, 3))
  expected = np.asarray(odd_one_out.pair_similarities(table[triplets], similarity)) * 0.5
  for chunk in (1000, 4096):  # rounded up to whole 1,024-triplet steps; the last chunk is padded
    got = np.concatenate(list(iter_pair_similarities(table, triplets, 0.5, similarity, chunk)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_two_processes_write_disjoint_parts_of_the_same_files(tmp_path):
  _inputs(tmp_path)
  single = _config(tmp_path)
  generate(single, tmp_path / "one")
  for index in (1, 0):  # in any order; the second to finish merges the manifest
    generate(_config(tmp_path, process_count=2, process_index=index), tmp_path / "two")
  one = json.loads((tmp_path / "one" / "manifest.json").read_text())["files"]
  parts = [
    json.loads((tmp_path / "two" / f"manifest.part-{i}-of-2.json").read_text())["files"] for i in (0, 1)
  ]
  assert set(parts[0]) | set(parts[1]) == set(one) and not set(parts[0]) & set(parts[1])
  merged = json.loads((tmp_path / "two" / "manifest.json").read_text())["files"]
  assert {k: v["sha256"] for k, v in merged.items()} == {k: v["sha256"] for k, v in one.items()}


def test_border_strategies_need_two_classes(tmp_path):
  _inputs(tmp_path)
  store = EmbeddingStore(tmp_path / "store")
  ids, x = store.read()
  single_class = EmbeddingStore(tmp_path / "single")
  single_class.open({**store.metadata})
  for k in range(store.n_shards):
    single_class.write_shard(
      k,
      np.array([f"n00000001_{i}.JPEG" for i in range(16 * k, min(16 * k + 16, len(ids)))]),
      x[16 * k : 16 * k + 16],
    )
  with pytest.raises(DataError, match="at least 2 classes"):
    generate(_config(tmp_path, store=str(tmp_path / "single"), samplings=("class_border",)), tmp_path / "w")


def test_matrix_and_streamed_paths_agree(monkeypatch):
  from aligned import triplet_similarities as module

  rng = np.random.default_rng(4)
  table = rng.normal(size=(300, 5)).astype(np.float32)
  triplets = rng.integers(0, 300, size=(1500, 3))
  for similarity in ("dot", "cosine"):
    via_matrix = module.triplet_similarities(table, triplets, similarity)
    monkeypatch.setattr(module, "MAX_MATRIX_ITEMS", 10)  # force the streamed path
    streamed = module.triplet_similarities(table, triplets, similarity)
    monkeypatch.undo()
    np.testing.assert_allclose(streamed, via_matrix, rtol=1e-5, atol=1e-5)


def test_store_teacher_and_workdir_in_a_bucket_give_the_same_files(tmp_path, bucket, monkeypatch):
  """`generate` from a store and teacher in `gs://` into `gs://` (conftest's in-memory bucket): the
  files, clusters and manifest of the same run on disk, byte for byte; a rerun keeps every file."""
  samplings = ("cluster_border_3", "random")
  _inputs(tmp_path)
  _inputs(bucket)
  local = generate(_config(tmp_path, samplings=samplings), tmp_path / "w")
  remote = generate(_config(bucket, samplings=samplings), bucket / "w")
  assert remote == {**local, "workdir": "gs://bucket/w", "manifest": "gs://bucket/w/manifest.json"}
  manifest = json.loads((bucket / "w" / "manifest.json").read_text())
  local_manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
  assert manifest == {**local_manifest, "store": "gs://bucket/store", "teacher": "gs://bucket/transform.npz"}
  assert len(manifest["files"]) == 2 * 2 * 2
  for key in [*manifest["files"], "clusters/kmeans_3.npz"]:
    assert sha256_of(bucket / "w" / key) == sha256_of(tmp_path / "w" / key), key
  data = read_alignet(
    bucket / "w" / "uncertainty_distillation" / "val_random.npz", n_images=N_CLASSES * PER_CLASS
  )
  assert len(data) == 200
  monkeypatch.setattr(generate_module, "_write_file", None)  # a rerun checks each file's sha256, writes none
  assert generate(_config(bucket, samplings=samplings), bucket / "w") == remote


def _hand_cosine(table, triplets):
  """[s01, s02, s12] cosine similarities of [m, 3] index triplets, computed by hand."""
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)
  a, b, c = (unit[triplets[:, k]] for k in range(3))
  return np.stack([(a * b).sum(1), (a * c).sum(1), (b * c).sum(1)], axis=1)


def test_labels_use_the_teachers_own_similarity(tmp_path):
  """A cosine teacher labels with cosine (the config says nothing); a stated other similarity is
  refused naming the teacher file and both values; a gLocal file (no similarity) must be told."""
  _, x, weights = _inputs(tmp_path, similarity="cosine")
  generate(_config(tmp_path, samplings=("random",)), tmp_path / "w")
  manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
  assert manifest["similarity"] == "cosine" and manifest["indices"] == "store_rows"
  z = ((x - 0.1) / 2.0) @ weights
  for transform, table, temperature in (("uncertainty_distillation", z, 0.5), ("untransformed", x, 0.8)):
    data = read_alignet(tmp_path / "w" / transform / "val_random.npz", n_images=len(x))
    rows = data.indices[:5]
    np.testing.assert_allclose(
      data.similarities[:5], _hand_cosine(table, rows) / temperature, rtol=1e-5, atol=1e-5
    )
    dots = np.stack([(table[rows[:, i]] * table[rows[:, j]]).sum(1) for i, j in ((0, 1), (0, 2), (1, 2))], 1)
    assert not np.allclose(data.similarities[:5], dots / temperature, atol=1e-3)  # not dot
  with pytest.raises(
    DataError, match=r"transform.npz: .*fitted with similarity 'cosine' but config.similarity is 'dot'"
  ):
    generate(_config(tmp_path, samplings=("random",), similarity="dot"), tmp_path / "dot")
  generate(
    _config(tmp_path, samplings=("random",), similarity="cosine"), tmp_path / "stated"
  )  # the same: fine

  _inputs(tmp_path / "glocal", similarity=None)
  with pytest.raises(DataError, match=r"transform.npz: the teacher file records no similarity"):
    generate(_config(tmp_path / "glocal", samplings=("random",)), tmp_path / "glocal" / "w")
  generate(
    _config(tmp_path / "glocal", samplings=("random",), similarity="cosine"), tmp_path / "glocal" / "w"
  )
  manifest = json.loads((tmp_path / "glocal" / "w" / "manifest.json").read_text())
  assert manifest["similarity"] == "cosine"


def test_release_indices_need_the_whole_imagenet_train_split(tmp_path):
  """`indices` mean imagenet2012/train records only for a store of that whole split; any other store
  is refused unless the config says the indices are rows of this store."""
  _inputs(tmp_path)
  with pytest.raises(
    DataError, match=r"metadata.json: release-format indices .* set --config.indices=store_rows"
  ):
    generate(_config(tmp_path, indices=""), tmp_path / "w")
  store = EmbeddingStore(tmp_path / "store")
  shapes_like = {**store.metadata, "source": "tfds", "root": "imagenet2012/train"}  # a small "imagenet2012"
  (tmp_path / "store" / "metadata.json").write_text(json.dumps(shapes_like))
  with pytest.raises(DataError, match="with 60 items"):
    generate(_config(tmp_path, indices=""), tmp_path / "w")
  assert generate_module.check_indices(_config(tmp_path), store) == "store_rows"
  whole = {**shapes_like, "n_items": 1_281_167}
  (tmp_path / "store" / "metadata.json").write_text(json.dumps(whole))
  assert generate_module.check_indices(_config(tmp_path, indices=""), store) == "imagenet2012/train"


def test_reruns_compare_settings_and_inputs_before_reusing_anything(tmp_path, monkeypatch):
  samplings = ("cluster_border_3", "random")
  _inputs(tmp_path)
  _inputs(tmp_path / "other", seed=1)  # same store, another teacher
  w = tmp_path / "w"
  first = generate(_config(tmp_path, samplings=samplings), w)
  files = json.loads((w / "manifest.json").read_text())["files"]
  record = json.loads((w / "provenance.json").read_text())
  assert record["stage"] == "generate" and set(record["inputs"]) == {"store", "teacher"}
  assert record["inputs"]["teacher"]["sha256"] == sha256_of(tmp_path / "transform.npz")

  other_teacher = str(tmp_path / "other" / "transform.npz")
  with pytest.raises(
    DataError, match=r"provenance.json: .*other settings or inputs: .*teacher .*restart=True"
  ):
    generate(_config(tmp_path, samplings=samplings, teacher=other_teacher), w)
  with pytest.raises(DataError, match=r"provenance.json: .*n_train 2000 -> 3000"):
    generate(_config(tmp_path, samplings=samplings, n_train=3000), w)
  with pytest.raises(DataError, match=r"samplings"):
    generate(_config(tmp_path, samplings=("random",)), w)
  # nothing was touched by the refusals; the same settings resume (every file kept, none written)
  with monkeypatch.context() as m:
    m.setattr(generate_module, "_write_file", None)
    assert generate(_config(tmp_path, samplings=samplings), w) == first
  assert json.loads((w / "manifest.json").read_text())["files"] == files

  # restart: the old files go, the new ones are a fresh run's
  generate(_config(tmp_path, samplings=samplings, teacher=other_teacher, restart=True), w)
  generate(_config(tmp_path, samplings=samplings, teacher=other_teacher), tmp_path / "fresh")
  renewed = json.loads((w / "manifest.json").read_text())
  fresh = json.loads((tmp_path / "fresh" / "manifest.json").read_text())
  assert renewed["files"] == fresh["files"] and renewed["files"] != files
  for key in [*fresh["files"], "clusters/kmeans_3.npz"]:
    assert sha256_of(w / key) == sha256_of(tmp_path / "fresh" / key), key
  assert json.loads((w / "provenance.json").read_text())["inputs"]["teacher"]["path"] == other_teacher
  # restart never empties a folder that provenance.json does not show as generate's
  (tmp_path / "plain").mkdir()
  (tmp_path / "plain" / "manifest.json").write_text("{}")
  with pytest.raises(DataError, match="restart: no provenance.json here"):
    generate(_config(tmp_path, samplings=samplings, restart=True), tmp_path / "plain")
  assert (tmp_path / "plain" / "manifest.json").exists()
