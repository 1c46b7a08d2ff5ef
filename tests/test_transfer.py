"""Transfer: few-shot ridge / logistic probes and distribution shift on a tiny tfds dataset the test writes."""

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import tensorflow_datasets as tfds
from jax.test_util import check_grads
from PIL import Image

from aligned import probes, transfer
from aligned.configs import transfer as transfer_config
from aligned.data.class_labels import map_labels, store_labels
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError

CLASSES = ("n01440764", "n01443537", "n01484850", "n01491361")
SPLITS = {"train": 40, "test": 24}


def _png(value: int) -> io.BytesIO:
  out = io.BytesIO()
  Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(out, format="PNG")
  out.seek(0)
  return out


class TransferBlobs(tfds.core.GeneratorBasedBuilder):
  """Four ImageNet synsets, balanced; written as array_record without TensorFlow (PNG bytes in)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(4, 4, 3)),
          "label": tfds.features.ClassLabel(names=CLASSES),
          "file_name": tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split, n) for split, n in SPLITS.items()}

  def _generate_examples(self, split, n):
    for i in range(n):
      # Train file names start with their synset, as ImageNet's (labels then come from the ids).
      name = f"{CLASSES[i % len(CLASSES)]}_{i:03d}.png" if split == "train" else f"{split}_{i:03d}.png"
      yield name, {"image": _png(i), "label": i % len(CLASSES), "file_name": name}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  TransferBlobs(data_dir=str(root), file_format="array_record").download_and_prepare()
  return root


def _records(data_dir, split):
  source = tfds.data_source("transfer_blobs", split=split, data_dir=str(data_dir))
  names = [source[i]["file_name"] for i in range(len(source))]
  labels = np.asarray([source[i]["label"] for i in range(len(source))])
  return np.asarray([n.decode() if isinstance(n, bytes) else n for n in names]), labels


def _write_store(path, ids, features, source="tfds", root=""):
  store = EmbeddingStore(path)
  store.open(
    {"source": source, "root": root, "dtype": "float32", "n_items": len(ids), "shard_size": 16, "dim": 8}
  )
  for k, lo in enumerate(range(0, len(ids), 16)):
    store.write_shard(k, ids[lo : lo + 16], features[lo : lo + 16])
  return path


def _features(labels, kind, seed):
  rng = np.random.default_rng(seed)
  if kind == "constant":
    return np.ones((len(labels), 8), np.float32)
  # Every feature carries the class (a noise-only feature would be scaled up by standardisation).
  centers = 10.0 * np.random.default_rng(99).normal(size=(len(CLASSES), 8)).astype(np.float32)
  return centers[labels] + rng.normal(size=(len(labels), 8)).astype(np.float32)


@pytest.fixture(scope="module")
def stores(data_dir, tmp_path_factory):
  """{kind: {split: store path}} for separable and constant features of the tfds splits."""
  out = {}
  for kind in ("separable", "constant"):
    for split in SPLITS:
      ids, labels = _records(data_dir, split)
      path = tmp_path_factory.mktemp(f"{kind}_{split}") / "store"
      features = _features(labels, kind, seed=len(split))
      out.setdefault(kind, {})[split] = _write_store(path, ids, features, root=f"transfer_blobs/{split}")
  return out


def _config(data_dir, stores, **overrides):
  config = transfer_config.get_config()
  config.update(data_dir=str(data_dir), stores=tuple(str(s) for s in stores), seeds=(0, 1), **overrides)
  return config


# -- Labels -------------------------------------------------------------------------------------


def test_labels_come_from_the_tfds_label_feature_in_store_order(data_dir, stores, tmp_path):
  ids, labels = _records(data_dir, "train")
  got = store_labels(stores["separable"]["train"], data_dir=str(data_dir))
  np.testing.assert_array_equal(got.labels, labels)
  assert got.names == CLASSES
  relabelled = ids.copy()
  relabelled[0] = CLASSES[(labels[0] + 1) % len(CLASSES)] + relabelled[0][9:]
  shuffled = _write_store(
    tmp_path / "s", relabelled, np.zeros((40, 8), np.float32), root="transfer_blobs/train"
  )
  with pytest.raises(DataError, match="has tfds label"):  # synset in the id != the record's label
    store_labels(shuffled, data_dir=str(data_dir))
  test_ids, test_labels = _records(data_dir, "test")  # ids without synsets: every record is read
  np.testing.assert_array_equal(
    store_labels(stores["constant"]["test"], data_dir=str(data_dir)).labels, test_labels
  )
  swapped = _write_store(
    tmp_path / "t", test_ids[::-1].copy(), np.zeros((24, 8), np.float32), root="transfer_blobs/test"
  )
  with pytest.raises(DataError, match="another data_dir or build"):
    store_labels(swapped, data_dir=str(data_dir))


def test_image_folder_labels_are_parent_folders_and_names_map_across_datasets(tmp_path):
  ids = np.asarray(["n01484850/a.jpg", "n01440764/b.jpg", "n01484850/c.jpg"])
  got = store_labels(_write_store(tmp_path / "f", ids, np.zeros((3, 8), np.float32), "image_folder"))
  assert got.names == ("n01440764", "n01484850") and got.labels.tolist() == [1, 0, 1]
  np.testing.assert_array_equal(map_labels(got.labels, got.names, CLASSES, "x"), [2, 0, 2])
  with pytest.raises(DataError, match="not in the probe's label space"):
    map_labels(np.array([0]), ("n99999999",), CLASSES, "x")
  flat = _write_store(tmp_path / "g", np.asarray(["a.jpg"]), np.zeros((1, 8), np.float32), "image_folder")
  with pytest.raises(DataError, match="not in a class folder"):
    store_labels(flat)


# -- Probes against references ------------------------------------------------------------------


def _augmented(x):
  z = (x - x.mean(0)) / (x.std(0) + 1e-5)
  return np.concatenate([z, np.full((len(x), 1), probes.BIAS_FEATURE)], 1).astype(np.float64)


@pytest.mark.parametrize("n, d", [(30, 6), (9, 20)])  # primal (n > d) and dual (n < d) forms
def test_ridge_equals_the_lstsq_solution_and_its_leave_one_out(n, d):
  rng = np.random.default_rng(n)
  x, y, l2 = rng.normal(size=(n, d)).astype(np.float32), np.arange(n) % 3, 3.0
  probe = probes.fit_ridge(x, y, 3, (l2,))
  z, t = _augmented(x), 2.0 * np.eye(3)[y] - 1.0

  def solve(rows):
    a = np.concatenate([z[rows], np.sqrt(l2) * np.eye(d + 1)])
    return np.linalg.lstsq(a, np.concatenate([t[rows], np.zeros((d + 1, 3))]), rcond=None)[0]

  reference = solve(np.arange(n))
  np.testing.assert_allclose(probe.w, reference[:-1], atol=2e-3, rtol=2e-3)
  np.testing.assert_allclose(probe.b, probes.BIAS_FEATURE * reference[-1], atol=2e-3)
  _, loo_accuracy, loo_error = probes._ridge(
    jnp.asarray(x), jnp.asarray(y), jnp.asarray([l2]), jnp.arange(n), n_classes=3
  )
  refits = np.stack([z[i] @ solve(np.arange(n) != i) for i in range(n)])  # n refits without row i
  np.testing.assert_allclose(loo_accuracy[0], np.mean(refits.argmax(1) == y), atol=1e-6)
  np.testing.assert_allclose(loo_error[0], np.mean((refits - t) ** 2), rtol=1e-3)


def test_logistic_matches_scipy_and_its_gradient_is_right():
  rng = np.random.default_rng(1)
  x, y, l2 = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40), 0.01
  probe = probes.fit_logistic(x, y, 3, (l2,))
  z = (x - x.mean(0)) / (x.std(0) + 1e-5)

  def objective(v):
    w, b = v[:15].reshape(5, 3), v[15:]
    logits = z @ w + b
    log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    return -log_p[np.arange(40), y].mean() + 0.5 * l2 * np.sum(w**2)

  reference = scipy.optimize.minimize(objective, np.zeros(18), method="L-BFGS-B", options={"gtol": 1e-10}).x
  np.testing.assert_allclose(probe.w, reference[:15].reshape(5, 3), atol=1e-3)
  np.testing.assert_allclose(probe.b, reference[15:], atol=1e-3)
  params = {"w": jnp.asarray(rng.normal(size=(5, 3))), "b": jnp.zeros(3)}
  onehot, weights = jax.nn.one_hot(y, 3), jnp.asarray(rng.uniform(size=40))
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    check_grads(
      lambda p: probes.logistic_loss(p, jnp.asarray(z, jnp.float64), onehot, weights, l2), (params64,), 1
    )


def test_shots_are_nested_and_balanced():
  y = np.repeat(np.arange(3), 30)
  order = transfer.shot_order(y, 3, seed=0)
  one, five = transfer.k_shot_indices(order, 1), transfer.k_shot_indices(order, 5)
  assert np.bincount(y[five]).tolist() == [5, 5, 5] and set(one) <= set(five)
  assert not np.array_equal(five, transfer.k_shot_indices(transfer.shot_order(y, 3, seed=1), 5))


# -- The job on the tfds dataset ----------------------------------------------------------------


def test_separable_features_score_100_percent_and_constant_features_chance(data_dir, stores, tmp_path):
  fewshot = ("transfer_blobs/train->transfer_blobs/test",)
  config = _config(data_dir, stores["separable"].values(), fewshot=fewshot, shots=(1, 5))
  results = transfer.transfer(config, tmp_path / "separable")
  for method in ("ridge", "logistic"):
    for k in ("1", "5"):
      assert results["fewshot"]["transfer_blobs"][method][k] == {"mean": 1.0, "std": 0.0, "seeds": [1.0, 1.0]}
  constant = transfer.transfer(
    _config(data_dir, stores["constant"].values(), fewshot=fewshot, shots=(1, 5)), tmp_path / "constant"
  )
  for method in ("ridge", "logistic"):
    assert constant["fewshot"]["transfer_blobs"][method]["5"]["mean"] == pytest.approx(1 / len(CLASSES))
  assert (tmp_path / "constant" / "results.json").exists() and (
    tmp_path / "constant" / "config.json"
  ).exists()


def test_shift_to_an_identical_dataset_equals_in_distribution_accuracy(data_dir, stores, tmp_path):
  rng = np.random.default_rng(0)
  test_ids, test_labels = _records(data_dir, "test")
  noisy = _features(test_labels, "separable", 0) + 6.0 * rng.normal(size=(24, 8)).astype(np.float32)
  noisy_store = _write_store(tmp_path / "noisy", test_ids, noisy, root="transfer_blobs/test")
  # The same test set as an image folder of two of the classes, another dataset name.
  subset = np.flatnonzero(test_labels >= 2)
  folder_ids = np.asarray([f"{CLASSES[test_labels[i]]}/{test_ids[i]}" for i in subset])
  folder_store = _write_store(tmp_path / "folder", folder_ids, noisy[subset], "image_folder", "/x/shifted")
  config = _config(
    data_dir,
    (str(stores["separable"]["train"]), f"same={noisy_store}", str(folder_store)),
    shift=("transfer_blobs/train->same,shifted,imagenet_a/test",),
    restrict_to_eval_classes=False,
  )
  results = transfer.transfer(config, tmp_path / "w")
  shift = results["shift"]["transfer_blobs"]
  _, train_x = EmbeddingStore(stores["separable"]["train"]).read()
  probe = probes.fit_ridge(train_x, _records(data_dir, "train")[1], len(CLASSES))
  in_distribution = probes.accuracy(probe, noisy, test_labels)
  assert 0.3 < in_distribution < 1.0  # noisy enough to make the comparison mean something
  assert shift["same"] == in_distribution
  assert shift["shifted"] == probes.accuracy(probe, noisy[subset], test_labels[subset])
  assert results["details"]["skipped"] == ["imagenet_a/test"]
  config.restrict_to_eval_classes = True  # the ImageNet-A/R protocol: argmax over the eval classes only
  restricted = transfer.transfer(config, tmp_path / "r")["shift"]["transfer_blobs"]
  allowed = np.isin(np.arange(len(CLASSES)), [2, 3])
  assert restricted["shifted"] == probes.accuracy(probe, noisy[subset], test_labels[subset], allowed)
  assert restricted["shifted"] >= shift["shifted"]


def test_subpopulation_shift_with_a_superclass_mapping(data_dir, stores, tmp_path):
  mapping = tmp_path / "living.tsv"
  mapping.write_text(
    f"# synset superclass\n{CLASSES[0]}\tfish\n{CLASSES[1]} fish\n{CLASSES[2]} shark\n{CLASSES[3]} shark\n"
  )
  train_ids, train_labels = _records(data_dir, "train")
  test_ids, test_labels = _records(data_dir, "test")
  superclass = np.array([0, 0, 1, 1])  # features carry the superclass only: unseen subclasses transfer
  rng = np.random.default_rng(0)
  paths = [
    _write_store(
      tmp_path / split,
      ids,
      5.0 * np.eye(8, dtype=np.float32)[superclass[y]] + rng.normal(size=(len(y), 8)).astype(np.float32),
      root=f"transfer_blobs/{split}",
    )
    for split, ids, y in (("train", train_ids, train_labels), ("test", test_ids, test_labels))
  ]
  config = _config(
    data_dir, paths, breeds=("transfer_blobs/train->transfer_blobs/test",), superclasses=str(mapping)
  )
  results = transfer.transfer(config, tmp_path / "w")
  assert results["shift"]["transfer_blobs:breeds_living"] == {"source": 1.0, "target": 1.0}
  assert results["details"]["shift"]["transfer_blobs:breeds_living"]["superclasses"] == ["fish", "shark"]
  # The same task from the WordNet hierarchy: 11 steps below `entity` the two tench-like classes are
  # bony fish and the two sharks cartilaginous fish.
  config.superclasses = "wordnet:11"
  results = transfer.transfer(config, tmp_path / "wordnet")
  assert results["shift"]["transfer_blobs:breeds_wordnet11"] == {"source": 1.0, "target": 1.0}
  details = results["details"]["shift"]["transfer_blobs:breeds_wordnet11"]
  assert details["superclasses"] == ["n01480516 cartilaginous fish", "n02514825 bony fish"]
  config.superclasses = "wordnet:10"  # all four are fish: fewer than 2 superclasses
  with pytest.raises(DataError, match="fewer than 2 superclasses"):
    transfer.transfer(config, tmp_path / "fish")
  config.superclasses = "wordnet:deep"
  with pytest.raises(ValueError, match="expected wordnet:DEPTH"):
    transfer.transfer(config, tmp_path / "deep")
  config.superclasses = str(mapping)
  mapping.write_text(f"{CLASSES[0]} fish\n{CLASSES[0]} shark\n")
  with pytest.raises(DataError, match="row 2: class 'n01440764' listed twice"):
    transfer.transfer(config, tmp_path / "w2")


def test_bad_settings_are_reported(data_dir, stores, tmp_path):
  config = _config(data_dir, stores["separable"].values(), fewshot=("transfer_blobs/train",))
  with pytest.raises(ValueError, match="want TRAIN->EVAL"):
    transfer.transfer(config, tmp_path / "a")
  config = _config(data_dir, stores["separable"].values(), fewshot=("nope/train->transfer_blobs/test",))
  with pytest.raises(ValueError, match="no store named 'nope/train'"):
    transfer.transfer(config, tmp_path / "b")
  config = _config(
    tmp_path / "empty", stores["separable"].values(), fewshot=("transfer_blobs/train->transfer_blobs/test",)
  )
  with pytest.raises(DataError, match="cannot open tfds transfer_blobs/train"):
    transfer.transfer(config, tmp_path / "c")


def test_stores_mapping_and_workdir_in_a_bucket_give_the_same_results(data_dir, stores, tmp_path, bucket):
  """`transfer` with its stores, superclass file and workdir in `gs://` (conftest's in-memory bucket;
  the tfds data_dir stays on disk: array_record is read by C++): the results of the same run on disk."""
  mapping = f"{CLASSES[0]} fish\n{CLASSES[1]} fish\n{CLASSES[2]} shark\n{CLASSES[3]} shark\n"
  (tmp_path / "living.tsv").write_text(mapping)
  (bucket / "living.tsv").write_text(mapping)
  remote_stores = []
  for split, path in stores["separable"].items():
    ids, x = EmbeddingStore(path).read()
    remote_stores.append(_write_store(bucket / split / "store", ids, x, root=f"transfer_blobs/{split}"))
  pair = "transfer_blobs/train->transfer_blobs/test"
  jobs = dict(fewshot=(pair,), shift=(pair,), breeds=(pair,), shots=(1, 5))
  local = transfer.transfer(
    _config(data_dir, stores["separable"].values(), superclasses=str(tmp_path / "living.tsv"), **jobs),
    tmp_path / "w",
  )
  remote = transfer.transfer(
    _config(data_dir, remote_stores, superclasses=str(bucket / "living.tsv"), **jobs), bucket / "w"
  )
  for results in (local, remote):
    del results["details"]["seconds"]
  assert remote == local
  assert remote["fewshot"]["transfer_blobs"]["ridge"]["5"]["mean"] == 1.0
  assert remote["details"]["shift"]["transfer_blobs:breeds_living"]["superclasses"] == ["fish", "shark"]
  written = json.loads((bucket / "w" / "results.json").read_text())
  assert written["fewshot"] == remote["fewshot"] and written["shift"] == remote["shift"]
  assert json.loads((bucket / "w" / "config.json").read_text())["superclasses"] == "gs://bucket/living.tsv"
