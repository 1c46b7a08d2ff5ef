"""The evaluation entry point on the real human data, and its failures on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aligned import evaluate as evaluate_lib
from aligned.configs import evaluate as evaluate_config
from aligned.data import things
from aligned.errors import DataError
from tests.conftest import REPO


def _run(workdir, *overrides, config="configs/evaluate.py:spose"):
  command = [sys.executable, "-m", "experiments.evaluate", f"--config={config}", f"--workdir={workdir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [*command, *overrides], cwd=REPO, capture_output=True, text=True, env=env, timeout=300
  )


@pytest.mark.slow
def test_spose_on_the_2171_human_triplets_via_the_command_line(tmp_path):
  done = _run(tmp_path)
  assert done.returncode == 0, done.stderr
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["n_triplets"] == results["n_responses"] == 2171
  assert results["accuracy"] == pytest.approx(0.6573, abs=5e-5)  # 1427 of 2171, a known value
  assert results["noise_ceiling"] is None
  assert 1 / 3 < results["mean_human_choice_prob"] < 1
  assert results["rsm_n_objects"] == 48 and results["rsa_spearman"] > 0.8
  assert json.loads((tmp_path / "config.json").read_text())["similarity"] == "dot"
  assert "65.73 %" in done.stdout


@pytest.mark.slow
def test_plain_config_takes_inputs_from_flags_and_adds_rsa_only_when_asked(tmp_path, data_dir):
  embeddings = data_dir / "things" / "spose_embedding_49d_sorted.txt"
  triplets = data_dir / "things" / "2171trials_humans.txt"
  done = _run(tmp_path / "a", config="configs/evaluate.py")
  assert done.returncode == 2 and "--config.embeddings" in done.stderr
  done = _run(
    tmp_path / "b",
    f"--config.embeddings={embeddings}",
    f"--config.triplets={triplets}",
    config="configs/evaluate.py",
  )
  assert done.returncode == 0, done.stderr
  results = json.loads((tmp_path / "b" / "results.json").read_text())
  assert results["accuracy"] == pytest.approx(0.6573, abs=5e-5) and "rsa_spearman" not in results


def _config(**overrides):
  config = evaluate_config.get_config("spose")
  config.rsm = ""
  config.update(overrides)
  return config


def test_mixing_object_orders_lowers_accuracy_on_moved_objects(tmp_path, data_dir):
  e_sorted = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  s = things.load_sortindex()
  e_raw = np.empty_like(e_sorted)
  e_raw[s] = e_sorted
  np.save(tmp_path / "raw.npy", e_raw)
  right = evaluate_lib.evaluate(
    _config(embeddings=str(tmp_path / "raw.npy"), embeddings_order="raw"), tmp_path / "a"
  )
  wrong = evaluate_lib.evaluate(
    _config(embeddings=str(tmp_path / "raw.npy"), embeddings_order="sorted"), tmp_path / "b"
  )
  assert right["accuracy"] == pytest.approx(0.6573, abs=5e-5)
  assert wrong["accuracy"] < right["accuracy"]

  # Restricted to the triplets that touch one of the 21 moved objects the loss is large.
  triplets = np.loadtxt(data_dir / "things" / "2171trials_humans.txt", dtype=int)
  touching = np.isin(triplets, things.moved_objects(s)).any(axis=1)
  np.savetxt(tmp_path / "touching.txt", triplets[touching], fmt="%d")
  subset = dict(triplets=str(tmp_path / "touching.txt"), embeddings=str(tmp_path / "raw.npy"), index_base=0)
  right = evaluate_lib.evaluate(_config(**subset, embeddings_order="raw"), tmp_path / "c")
  wrong = evaluate_lib.evaluate(_config(**subset, embeddings_order="sorted"), tmp_path / "d")
  assert right["n_triplets"] == touching.sum() > 10
  assert wrong["accuracy"] < right["accuracy"] - 0.1


def test_a_one_based_triplet_file_is_refused_unless_index_base_says_so(tmp_path, data_dir):
  rows = np.loadtxt(data_dir / "things" / "2171trials_humans.txt", dtype=int)
  kept = rows[(rows < 1853).all(axis=1)]  # + 1 stays in range: only the smallest index tells
  np.savetxt(tmp_path / "zero_based.txt", kept, fmt="%d")
  np.savetxt(tmp_path / "one_based.txt", kept + 1, fmt="%d")
  fast = dict(uncertainty_folds=0, categories=False)
  with pytest.raises(
    DataError, match=r"one_based.txt: smallest index is 1, not 0: a 1-based file\? set index_base=1"
  ):
    evaluate_lib.evaluate(_config(triplets=str(tmp_path / "one_based.txt"), **fast), tmp_path / "a")
  assert not (tmp_path / "a" / "results.json").exists()
  stated = evaluate_lib.evaluate(
    _config(triplets=str(tmp_path / "one_based.txt"), index_base=1, **fast), tmp_path / "b"
  )
  plain = evaluate_lib.evaluate(_config(triplets=str(tmp_path / "zero_based.txt"), **fast), tmp_path / "c")
  assert stated["n_triplets"] == plain["n_triplets"] == len(kept)
  assert stated["accuracy"] == plain["accuracy"] > 0.6


def test_noise_ceiling_file_identity_transform_and_cosine(tmp_path, data_dir):
  rng = np.random.default_rng(0)
  e = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  s = things.load_sortindex()
  # 40 triplets x 5 people, each person choosing by the SPoSE choice model.
  rows = []
  for _ in range(40):
    items = rng.choice(1854, 3, replace=False)
    logits = np.array([e[items[1]] @ e[items[2]], e[items[0]] @ e[items[2]], e[items[0]] @ e[items[1]]])
    p = np.exp(logits - logits.max())
    for subject in range(5):
      odd = rng.choice(3, p=p / p.sum())  # odd-one-out position: softmax over the pair left behind
      rows.append([*(s[items] + 1), odd + 1, subject])
  np.savetxt(tmp_path / "nc.tsv", np.array(rows), fmt="%d", delimiter="\t")
  np.savez(tmp_path / "identity.npz", weights=np.eye(49), mean=0.0, std=1.0)
  config = _config(
    triplets=str(tmp_path / "nc.tsv"),
    triplets_format="things_noise_ceiling",
    transform=str(tmp_path / "identity.npz"),
  )
  results = evaluate_lib.evaluate(config, tmp_path / "w")
  assert results["n_triplets"] == 40 and results["n_responses"] == 200
  assert 0.0 < results["noise_ceiling"] <= 1.0 and results["loo_agreement"] <= results["noise_ceiling"]
  low, high = results["noise_ceiling_ci95"]
  assert low < results["noise_ceiling"] < high
  # People sampled from SPoSE: the SPoSE model beats chance clearly.
  assert results["accuracy"] > 0.45
  cosine = evaluate_lib.evaluate(_config(similarity="cosine"), tmp_path / "cos")
  assert cosine["accuracy"] != results["accuracy"] and cosine["accuracy"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize(
  "case, content, overrides, message",
  [
    ("malformed", "1 2 3\n4 5\n", {}, "row 2: expected 3 integer columns"),
    ("out_of_range", "1 2 3\n4 5 99999\n", {}, "row 2: object index 99999 out of range"),
    ("repeated", "1 2 3\n7 7 9\n", {}, "row 2: object repeated"),
    ("one_based", "\n".join(f"{i} {i + 1} {i + 2}" for i in range(1, 1853)), {}, "looks 1-based"),
    ("zero_in_noise_ceiling", "0\t1\t2\t1\t0\n", {"triplets_format": "things_noise_ceiling"}, "1-based"),
    (
      "one_based_in_range",
      "1 2 3\n4 5 6\n",
      {},
      "smallest index is 1, not 0: a 1-based file? set index_base=1",
    ),
    (
      "zero_when_stated_one_based",
      "1 2 3\n0 5 6\n",
      {"index_base": 1},
      "row 2: object index 0 out of range [1,",
    ),
  ],
)
def test_bad_triplet_files_fail_with_file_row_and_problem(tmp_path, case, content, overrides, message):
  path = tmp_path / f"{case}.txt"
  path.write_text(content)
  flags = [f"--config.triplets={path}"] + [f"--config.{k}={v}" for k, v in overrides.items()]
  done = _run(tmp_path / "w", *flags)
  assert done.returncode == 2
  assert str(path) in done.stderr and message in done.stderr
  assert not (tmp_path / "w" / "results.json").exists()


@pytest.mark.slow
def test_bad_embeddings_and_transform_fail(tmp_path, data_dir):
  e = np.ones((1854, 49))
  e[5, 0] = np.nan
  np.save(tmp_path / "nan.npy", e)
  done = _run(tmp_path / "w", f"--config.embeddings={tmp_path / 'nan.npy'}")
  assert done.returncode == 2 and "object 5" in done.stderr
  transform = data_dir / "glocal" / "resnet18" / "avgpool" / "transform.npz"
  done = _run(tmp_path / "w", f"--config.transform={transform}")
  assert done.returncode == 2 and "expects 512 features" in done.stderr and "49" in done.stderr
  assert not (tmp_path / "w" / "results.json").exists()


def test_inputs_and_workdir_in_a_bucket_give_the_same_results(tmp_path, data_dir, bucket):
  """`evaluate` reading embeddings, triplets, transform, RSM and its object list from `gs://` and
  writing there (conftest's in-memory bucket): the results and arrays of the same run on disk."""
  from aligned import artifacts, paths

  config, remote_config = evaluate_config.get_config("spose"), evaluate_config.get_config("spose")
  config.bootstrap = remote_config.bootstrap = 100
  for key in ("embeddings", "triplets", "rsm", "rsm_objects"):
    remote_config[key] = str(bucket / "things" / os.path.basename(config[key]))
    paths.copy_file(config[key], remote_config[key])
  identity = dict(weights=np.eye(49, dtype=np.float32), mean=np.float32(0.0), std=np.float32(1.0))
  artifacts.save_npz(tmp_path / "identity.npz", **identity)
  artifacts.save_npz(bucket / "identity.npz", **identity)
  config.transform, remote_config.transform = str(tmp_path / "identity.npz"), str(bucket / "identity.npz")
  local = evaluate_lib.evaluate(config, tmp_path / "w")
  remote = evaluate_lib.evaluate(remote_config, bucket / "w")
  remote_paths = {key: remote_config[key] for key in ("embeddings", "triplets", "rsm", "transform")}
  assert remote == {**local, **remote_paths}
  assert remote["accuracy"] == pytest.approx(0.6573, abs=5e-5) and remote["rsm_n_objects"] == 48
  assert json.loads((bucket / "w" / "results.json").read_text()) == json.loads(json.dumps(remote))
  arrays, local_arrays = (
    paths.load_npz(bucket / "w" / "arrays.npz"),
    paths.load_npz(tmp_path / "w" / "arrays.npz"),
  )
  assert sorted(arrays) == sorted(local_arrays) and "rsm_model" in arrays
  for key, value in local_arrays.items():
    np.testing.assert_array_equal(arrays[key], value, err_msg=key)
