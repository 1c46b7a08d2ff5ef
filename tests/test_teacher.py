"""The teacher: loss pieces against references, both paths, a problem with a known optimum, CV, data."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from aligned import odd_one_out
from aligned.distributed import data_mesh
from aligned.sampling import sample_triplets
from aligned.teacher import cross_validation, model, standin
from aligned.teacher.model import Hyperparams, TripletTargets
from aligned.teacher.optimize import FitOptions, Fitter
from aligned.transform import load_transform
from tests.conftest import REPO


def _problem(n_objects=60, d=6, n_triplets=3000, seed=0, temperature=0.7):
  """Random embeddings, a random true transform and its soft choice distributions (known optimum)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n_objects, d)).astype(np.float32)
  true_w = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
  triplets = sample_triplets("random", n_triplets, seed, n_objects)
  z = x @ true_w
  sims = np.asarray(odd_one_out.pair_similarities(z[triplets]))
  probs = np.asarray(odd_one_out.choice_probs(sims, temperature), np.float32)
  return x, TripletTargets(triplets, probs, np.ones(n_triplets, np.float32))


def test_regularizers_match_numpy():
  w = np.random.default_rng(0).normal(size=(5, 5))
  expected = np.sum((w - np.mean(np.diag(w)) * np.eye(5)) ** 2)
  assert float(model.regularization(jnp.asarray(w), "identity")) == pytest.approx(expected, rel=1e-5)
  assert float(model.regularization(jnp.asarray(3.0 * np.eye(5)), "identity")) == 0.0
  assert float(model.regularization(jnp.asarray(w), "l2")) == pytest.approx(np.sum(w**2), rel=1e-5)
  with pytest.raises(ValueError, match="square"):
    model.regularization(jnp.ones((3, 4)), "identity")


def test_objectives_are_the_foundation_kernels():
  rng = np.random.default_rng(1)
  sims = jnp.asarray(rng.normal(size=(20, 3)), jnp.float32)
  labels = rng.integers(0, 3, size=20)
  one_hot = jnp.asarray(np.eye(3)[labels], jnp.float32)
  hard = model.per_triplet_loss(sims, one_hot, jnp.float32(1.0), "hard")
  np.testing.assert_allclose(hard, odd_one_out.hard_label_cross_entropy(sims, labels), rtol=1e-6)
  soft = jnp.asarray(rng.dirichlet(np.ones(3), size=20), jnp.float32)
  distill = model.per_triplet_loss(sims, soft, jnp.float32(0.5), "distill")
  np.testing.assert_allclose(
    distill, odd_one_out.kl_divergence(sims, target_probs=soft, temperature=0.5), rtol=1e-6
  )
  # Cross-entropy and KL differ by the (constant) target entropy.
  hard_soft = model.per_triplet_loss(sims, soft, jnp.float32(0.5), "hard")
  np.testing.assert_allclose(hard_soft - distill, odd_one_out.probs_entropy(soft), rtol=1e-5, atol=1e-6)


def _batch(data):
  return {
    "triplets": jnp.asarray(data.triplets),
    "probs": jnp.asarray(data.probs),
    "weights": jnp.asarray(data.weights),
  }


@pytest.mark.parametrize("objective", ["hard", "distill"])
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_matrix_and_chunked_paths_agree_in_value_and_gradient(objective, similarity):
  x, data = _problem(n_triplets=1000)
  data = TripletTargets(
    data.triplets, data.probs, np.random.default_rng(2).uniform(0.5, 2, 1000).astype(np.float32)
  )
  hparams = Hyperparams(objective=objective, similarity=similarity)
  params = model.init_params(6)
  params["weights"] = params["weights"] + 0.1 * jnp.asarray(
    np.random.default_rng(3).normal(size=(6, 6)), jnp.float32
  )
  mean, std = model.standardization(x)
  temp = 1.3

  def matrix(p):
    sums = model.data_sums_matrix(p, jnp.asarray(x), mean, std, _batch(data), hparams, temp)
    return sums["loss"] / sums["weight"]

  def chunked(p):
    sums = model.data_sums_chunked(p, jnp.asarray(x), mean, std, _batch(data), hparams, 250, temp)
    return sums["loss"] / sums["weight"]

  assert float(matrix(params)) == pytest.approx(float(chunked(params)), rel=1e-5)
  hits = [
    float(model.data_sums_matrix(params, jnp.asarray(x), mean, std, _batch(data), hparams, temp)["hits"]),
    float(
      model.data_sums_chunked(params, jnp.asarray(x), mean, std, _batch(data), hparams, 250, temp)["hits"]
    ),
  ]
  assert hits[0] == pytest.approx(hits[1], rel=1e-5)
  g_matrix, g_chunked = jax.grad(matrix)(params), jax.grad(chunked)(params)
  for key in params:
    np.testing.assert_allclose(g_matrix[key], g_chunked[key], rtol=1e-4, atol=1e-6)
  # A plain NumPy reference of the weighted mean loss.
  z = ((x - mean) / std) @ np.asarray(params["weights"]) + np.asarray(params["bias"])
  if similarity == "cosine":
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
  t = temp
  s = (
    np.stack([np.sum(z[data.triplets[:, a]] * z[data.triplets[:, b]], 1) for a, b in odd_one_out.PAIRS], 1)
    / t
  )
  log_q = s - s.max(1, keepdims=True) - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
  ce = -(data.probs * log_q).sum(1)
  per = ce if objective == "hard" else ce + (data.probs * np.log(data.probs)).sum(1)
  assert float(matrix(params)) == pytest.approx(np.average(per, weights=data.weights), rel=1e-4)


def test_loss_gradients_check_out():
  x, data = _problem(n_objects=12, d=3, n_triplets=40)
  with jax.enable_x64(True):
    x64 = jnp.asarray(x, jnp.float64)
    batch = {
      k: jnp.asarray(v, jnp.float64 if k != "triplets" else jnp.int32) for k, v in _batch(data).items()
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.init_params(3))
    params["weights"] = params["weights"] + 0.2

    def loss(weights, bias):
      p = {"weights": weights, "bias": bias}
      sums = model.data_sums_matrix(p, x64, 0.1, 1.3, batch, Hyperparams(), jnp.float64(0.8))
      return sums["loss"] / sums["weight"] + 0.01 * model.regularization(weights, "identity")

    check_grads(loss, (params["weights"], params["bias"]), order=2, modes=["rev"])


def test_distillation_recovers_a_known_optimum():
  """Targets come from an affine model: the fit must reach KL ~ 0 and reproduce the probabilities."""
  x, data = _problem()
  mean, std = model.standardization(x)
  hparams = Hyperparams(objective="distill", lam=0.0, learning_rate=3e-2)
  fitter = Fitter(x, mean, std, hparams, FitOptions(steps=800, log_every=800, init_scale=0.5), data_mesh())
  params, history = fitter.fit(data)
  start_kl = fitter.evaluate(model.init_params(6, 0.5), data)["loss"]
  assert history[-1]["data_loss"] < 2e-3 < start_kl / 20
  # W absorbed the generating temperature (0.7) at T = 1, so step 2 finds T close to 1.
  temp = fitter.fit_temperature(params, data)
  assert temp == pytest.approx(1.0, abs=0.05)
  transform = model.to_transform(params, mean, std)
  sims = odd_one_out.pair_similarities(jnp.asarray(transform(x))[data.triplets])
  np.testing.assert_allclose(np.asarray(odd_one_out.choice_probs(sims, temp)), data.probs, atol=0.05)
  assert fitter.evaluate(params, data, temp)["loss"] <= fitter.evaluate(params, data, 1.0)["loss"] + 1e-6


def test_the_temperature_step_undoes_a_rescaling():
  """(W, b) -> (cW, cb) multiplies every similarity by c^2: step 2 must return c^2 times the T it found
  before, with the same loss (the predictions are unchanged), which is why T is fit after W, b."""
  x, data = _problem()
  mean, std = model.standardization(x)
  fitter = Fitter(x, mean, std, Hyperparams(lam=0.0), FitOptions(steps=300, log_every=300), data_mesh())
  params, _ = fitter.fit(data)
  temp = fitter.fit_temperature(params, data)
  scaled = jax.tree.map(lambda a: 1.7 * a, params)
  assert fitter.fit_temperature(scaled, data) == pytest.approx(1.7**2 * temp, rel=2e-3)
  assert fitter.evaluate(scaled, data, 1.7**2 * temp)["loss"] == pytest.approx(
    fitter.evaluate(params, data, temp)["loss"], rel=1e-4, abs=1e-6
  )
  # The identity penalty is not scale-invariant: it grows with c^2 (so lambda is identifiable only at
  # a fixed T).
  off = float(model.regularization(params["weights"], "identity"))
  assert float(model.regularization(scaled["weights"], "identity")) == pytest.approx(1.7**2 * off, rel=1e-5)


def test_hard_labels_from_an_affine_model_are_learned():
  """Hard choices of an affine model are linearly realisable: the fit must reproduce nearly all."""
  x, data = _problem(n_triplets=2000)
  labels = np.argmax(data.probs, axis=1)
  hard = TripletTargets(data.triplets, np.eye(3, dtype=np.float32)[labels], data.weights)
  mean, std = model.standardization(x)
  hparams = Hyperparams(objective="hard", lam=0.0, learning_rate=3e-2)
  fitter = Fitter(x, mean, std, hparams, FitOptions(steps=600, log_every=600, init_scale=0.5), data_mesh())
  before = fitter.evaluate(model.init_params(6, 0.5), hard)["accuracy"]
  params, _ = fitter.fit(hard)
  accuracy = fitter.evaluate(params, hard)["accuracy"]
  assert accuracy > 0.95 > before + 0.2
  transform = model.to_transform(params, mean, std)
  sims = odd_one_out.pair_similarities(jnp.asarray(transform(x))[hard.triplets])
  counts = jnp.asarray(hard.probs)  # one response each
  assert accuracy == pytest.approx(float(odd_one_out.odd_one_out_accuracy(sims, counts)), abs=1e-6)
  assert set(params) == {"weights", "bias"}  # T is not a parameter of step 1


def test_a_huge_identity_penalty_keeps_w_a_scaled_identity():
  x, data = _problem()
  mean, std = model.standardization(x)
  fitter = Fitter(
    x, mean, std, Hyperparams(lam=1e3, learning_rate=1e-2), FitOptions(steps=200, log_every=200), data_mesh()
  )
  params, _ = fitter.fit(data)
  w = np.asarray(params["weights"])
  off = w - np.mean(np.diag(w)) * np.eye(6)
  assert np.abs(off).max() < 1e-2 * np.abs(np.diag(w)).mean()


def test_object_disjoint_folds():
  rng = np.random.default_rng(0)
  triplets = sample_triplets("random", 20000, 0, 300)
  folds = cross_validation.object_folds(300, 3, seed=5)
  assert np.bincount(folds).tolist() == [100, 100, 100]
  assert np.array_equal(folds, cross_validation.object_folds(300, 3, seed=5))
  for f in range(3):
    train, val = cross_validation.fold_masks(triplets, folds, f)
    assert not (train & val).any()
    assert (folds[triplets[val]] == f).all()
    assert (folds[triplets[train]] != f).all()
    # About 1/27 of random triplets lie inside one fold, 8/27 wholly outside it.
    assert abs(val.mean() - 1 / 27) < 0.01 and abs(train.mean() - 8 / 27) < 0.02
  with pytest.raises(ValueError, match="empty"):
    cross_validation.grid([], [1e-2])
  del rng


def test_standin_folds_sample_full_size_sets_within_their_objects(data_dir):
  spose = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  exclude = np.loadtxt(data_dir / "things" / "2171trials_humans.txt", dtype=int)
  folds = cross_validation.object_folds(len(spose), 3, seed=0)
  fold_data = standin.standin_folds(spose, 5000, 800, seed=0, exclude=exclude)
  banned = {tuple(sorted(t)) for t in exclude.tolist()}
  seen = []
  for f in range(3):
    train, val = fold_data(f, folds)
    assert len(train) == 5000 and len(val) == 800  # full size, not a masked sliver
    assert (folds[train.triplets] != f).all() and (folds[val.triplets] == f).all()
    for part in (train, val):
      assert not {tuple(sorted(t)) for t in part.triplets.tolist()} & banned
      dots = np.stack(
        [np.sum(spose[part.triplets[:, a]] * spose[part.triplets[:, b]], 1) for a, b in odd_one_out.PAIRS], 1
      )
      expected = np.exp(dots - dots.max(1, keepdims=True))
      np.testing.assert_allclose(part.probs, expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    seen.append(train.triplets)
  assert not np.array_equal(seen[0], seen[1])
  np.testing.assert_array_equal(fold_data(0, folds)[0].triplets, seen[0])  # a function of (seed, fold)


def test_standin_triplets_and_labels(data_dir):
  spose = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  exclude = np.loadtxt(data_dir / "things" / "2171trials_humans.txt", dtype=int)
  soft = standin.standin_targets(spose, 30000, seed=3, exclude=exclude)
  again = standin.standin_targets(spose, 30000, seed=3, exclude=exclude)
  np.testing.assert_array_equal(soft.triplets, again.triplets)
  keys = {tuple(sorted(t)) for t in soft.triplets.tolist()}
  assert len(keys) == 30000  # unique unordered triples
  assert not keys & {tuple(sorted(t)) for t in exclude.tolist()}
  assert all(len(set(t)) == 3 for t in soft.triplets[:1000].tolist())
  # Labels: softmax over the three SPoSE pair dot products.
  t = soft.triplets[:50]
  dots = np.stack([np.sum(spose[t[:, a]] * spose[t[:, b]], 1) for a, b in odd_one_out.PAIRS], 1)
  expected = np.exp(dots - dots.max(1, keepdims=True))
  np.testing.assert_allclose(soft.probs[:50], expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
  sampled = standin.standin_targets(spose, 30000, seed=3, responses=20, exclude=exclude)
  np.testing.assert_array_equal(sampled.triplets, soft.triplets)
  assert (sampled.weights == 20).all()
  # 20 simulated people per triplet: their choice proportions scatter around the model's probabilities.
  assert abs(float(np.mean(sampled.probs - soft.probs))) < 1e-3
  assert 0.05 < float(np.mean(np.abs(sampled.probs - soft.probs))) < 0.15


MULTI_DEVICE = textwrap.dedent(
  """
  import os, sys, numpy as np, jax
  sys.path.insert(0, {repo!r})
  from tests.test_teacher import _problem
  from aligned.teacher import model
  from aligned.distributed import data_mesh
  from aligned.teacher.optimize import FitOptions, Fitter
  assert len(jax.devices()) == 8
  x, data = _problem(n_objects=40, d=5, n_triplets=1001)
  mean, std = model.standardization(x)
  out = {{}}
  for path, chunk in (("matrix", 16384), ("chunked", 64)):
    for n in (1, 8):
      options = FitOptions(steps=50, log_every=50, path=path, chunk=chunk)
      fitter = Fitter(x, mean, std, model.Hyperparams(lam=1e-2, learning_rate=1e-2), options, data_mesh(jax.devices()[:n]))
      params, _ = fitter.fit(data)
      out[path, n] = {{k: np.asarray(v) for k, v in params.items()}}
  for path in ("matrix", "chunked"):
    for k in out[path, 1]:
      np.testing.assert_allclose(out[path, 1][k], out[path, 8][k], rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(out[path, 1][k], out["matrix", 1][k], rtol=1e-3, atol=1e-4)
  print("same fit on 1 and 8 devices")
  """
)


@pytest.mark.slow
def test_eight_simulated_devices_give_the_same_fit():
  # 8 simulated devices on 2 cores: single-threaded Eigen keeps intra-op work from competing with
  # the device threads that a collective waits for (the fit also keeps one step in flight).
  flags = "--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  done = subprocess.run(
    [sys.executable, "-c", MULTI_DEVICE.format(repo=str(REPO))],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "same fit on 1 and 8 devices" in done.stdout


@pytest.mark.slow
def test_entry_point_improves_distorted_embeddings(tmp_path, data_dir):
  """SPoSE seen through a random linear map loses accuracy; the teacher must win it back."""
  spose = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  distortion = np.random.default_rng(0).normal(size=(49, 32)) * np.linspace(0.1, 2.0, 32)
  np.save(tmp_path / "distorted.npy", (spose @ distortion).astype(np.float32))
  command = [
    sys.executable,
    "-m",
    "experiments.teacher",
    "--config=configs/teacher.py:smoke",
    f"--config.embeddings={tmp_path / 'distorted.npy'}",
    f"--workdir={tmp_path / 'w'}",
  ]
  done = subprocess.run(
    command, cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu")
  )
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  evaluation = results["evaluations"][0]
  assert evaluation["n_responses"] == 2171
  assert evaluation["teacher_accuracy"] > evaluation["base_accuracy"] + 0.03
  assert results["chosen"]["lam"] in (1e-2, 1.0) and len(results["cv_rows"]) == 2 * 2
  assert (tmp_path / "w" / "plots" / "cv_curve.png").stat().st_size > 1000
  lines = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert {line["event"] for line in lines} == {"cv", "fit", "final"}
  transform = load_transform(tmp_path / "w" / "transform.npz")
  assert transform.weights.shape == (32, 32)
  with np.load(tmp_path / "w" / "transform.npz") as raw:
    assert float(raw["temperature"]) == pytest.approx(results["temperature"], rel=1e-6)
  # The evaluation entry point reads the teacher and agrees with the teacher's own report.
  evaluate = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.evaluate",
      f"--config.embeddings={tmp_path / 'distorted.npy'}",
      f"--config.transform={tmp_path / 'w' / 'transform.npz'}",
      f"--config.triplets={data_dir / 'things' / '2171trials_humans.txt'}",
      f"--workdir={tmp_path / 'e'}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert evaluate.returncode == 0, evaluate.stderr
  evaluated = json.loads((tmp_path / "e" / "results.json").read_text())
  assert evaluated["accuracy"] == pytest.approx(evaluation["teacher_accuracy"], abs=1e-9)


def test_bad_teacher_input(tmp_path, data_dir):
  from aligned.configs import teacher as teacher_config
  from aligned.errors import DataError
  from aligned.teacher.train import fit_teacher

  config = teacher_config.get_config("smoke")
  np.save(tmp_path / "small.npy", np.ones((100, 4), np.float32))
  config.embeddings = str(tmp_path / "small.npy")
  config.triplets = str(data_dir / "things" / "2171trials_humans.txt")
  with pytest.raises(DataError, match="out of range"):  # the file uses objects beyond 100
    fit_teacher(config, tmp_path / "a")
  config.triplets = ""
  with pytest.raises(DataError, match="1854"):  # the stand-in labels 1,854 objects
    fit_teacher(config, tmp_path / "b")
  config.lambdas = ()
  config.embeddings = str(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  with pytest.raises(ValueError, match="grid is empty"):
    fit_teacher(config, tmp_path / "c")
  assert not (tmp_path / "c" / "transform.npz").exists()


def test_cross_validation_fits_each_fold_on_its_own_objects_and_prefers_the_true_model():
  """Targets come from a non-identity affine model: a huge identity penalty must lose to none."""
  x, data = _problem(n_objects=90, n_triplets=4000)
  fold_data = cross_validation.masked_folds(data)
  seen = []

  def make_fitter(x_, mean, std, hparams):
    seen.append(len(x_))
    return Fitter(x_, mean, std, hparams, FitOptions(steps=100, log_every=100, init_scale=0.5), data_mesh())

  points = cross_validation.grid([0.0, 1e3], [3e-2])
  rows, cv = cross_validation.cross_validate(x, fold_data, Hyperparams(), points, 2, 0, make_fitter)
  assert len(rows) == 4 and cv["best"]["lam"] == 0.0
  folds = cross_validation.object_folds(90, 2, 0)
  for row in rows:
    train, val = fold_data(row["fold"], folds)
    assert row["n_train"] == len(train) and row["n_val"] == len(val)
    assert row["temperature"] > 0
  # each fold's fitter holds only the objects its training triplets use
  assert all(
    n == len(np.unique(fold_data(f, folds)[0].triplets)) for n, f in zip(seen, [0, 0, 1, 1], strict=True)
  )
  by_lam = {s["lam"]: s for s in cv["summary"]}
  assert by_lam[0.0]["val_accuracy"] > by_lam[1e3]["val_accuracy"] + 0.05


def test_score_is_the_fitters_evaluation():
  x, data = _problem()
  mean, std = model.standardization(x)
  hparams = Hyperparams(lam=0.0)
  fitter = Fitter(x, mean, std, hparams, FitOptions(steps=50, log_every=50), data_mesh())
  params, _ = fitter.fit(data)
  for temp in (1.0, 0.6):
    scored = model.score(params, x, mean, std, data, hparams, temp)
    evaluated = fitter.evaluate(params, data, temp)
    assert scored["loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert scored["accuracy"] == pytest.approx(evaluated["accuracy"], rel=1e-6)


def test_soft_targets_replace_one_hot_responses_by_a_choice_models_probabilities(data_dir, tmp_path):
  from aligned.configs import teacher as teacher_config
  from aligned.errors import DataError
  from aligned.teacher.train import training_data

  spose_path = data_dir / "things" / "spose_embedding_49d_sorted.txt"
  spose = np.loadtxt(spose_path)
  config = teacher_config.get_config("distill")
  config.triplets = str(data_dir / "things" / "2171trials_humans.txt")
  x = np.zeros((1854, 4), np.float32)
  hard, _ = training_data(config, x)
  assert set(np.unique(hard.probs)) == {0.0, 1.0}  # one response per triplet
  config.soft_targets = str(spose_path)
  soft, fold_data = training_data(config, x)
  np.testing.assert_array_equal(soft.triplets, hard.triplets)
  np.testing.assert_allclose(soft.probs, standin.choice_probs(spose, hard.triplets), rtol=1e-5)
  assert (soft.weights == 1).all()
  train, val = fold_data(0, cross_validation.object_folds(1854, 3, 0))  # folds select from the file
  assert len(train) + len(val) < len(soft)
  np.save(tmp_path / "short.npy", spose[:100].astype(np.float32))
  config.soft_targets = str(tmp_path / "short.npy")
  with pytest.raises(DataError, match="short.npy: the soft-target choice model has 100 rows"):
    training_data(config, x)


def test_index_bases_of_training_and_evaluation_files_reach_the_reader(data_dir, tmp_path):
  from aligned.configs import teacher as teacher_config
  from aligned.errors import DataError
  from aligned.teacher.train import training_data

  rows = np.loadtxt(data_dir / "things" / "2171trials_humans.txt", dtype=int)
  kept = rows[(rows < 1853).all(axis=1)]  # + 1 stays in range: only the smallest index tells
  np.savetxt(tmp_path / "zero.txt", kept, fmt="%d")
  np.savetxt(tmp_path / "one.txt", kept + 1, fmt="%d")
  x = np.zeros((1854, 4), np.float32)
  config = teacher_config.get_config("smoke")
  config.triplets = str(tmp_path / "one.txt")
  with pytest.raises(
    DataError, match=r"one.txt: smallest index is 1, not 0: a 1-based file\? set index_base=1"
  ):
    training_data(config, x)
  config.index_base = 1
  stated, _ = training_data(config, x)
  config.triplets, config.index_base = str(tmp_path / "zero.txt"), None
  np.testing.assert_array_equal(stated.triplets, training_data(config, x)[0].triplets)
  # the stand-in excludes the evaluation files' triplets: each read with its own base
  config.triplets, config.eval_triplets = "", (str(tmp_path / "zero.txt"), str(tmp_path / "one.txt"))
  with pytest.raises(DataError, match="one.txt: smallest index is 1"):
    training_data(config, x)
  config.eval_index_bases = (0, 1)
  training_data(config, x)
  config.eval_index_bases = (0, 1, 1)
  with pytest.raises(ValueError, match="2 eval_triplets but 3 eval_index_bases"):
    training_data(config, x)


def test_embeddings_and_workdir_in_a_bucket_give_the_same_teacher(tmp_path, data_dir, bucket):
  """`fit_teacher` reading its embeddings from and writing its run into `gs://` (conftest's in-memory
  bucket): the transform, results, metrics and CV plot of the same run on disk."""
  from aligned import artifacts
  from aligned.configs import teacher as teacher_config
  from aligned.teacher.train import fit_teacher

  spose = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  distorted = (spose @ np.random.default_rng(0).normal(size=(49, 8))).astype(np.float32)
  artifacts.save_npy(tmp_path / "x.npy", distorted)
  artifacts.save_npy(bucket / "x.npy", distorted)
  config = teacher_config.get_config("smoke")
  config.standin.n_triplets, config.standin.n_val, config.steps = 4000, 1000, 20
  config.embeddings = str(tmp_path / "x.npy")
  local = fit_teacher(config, tmp_path / "w")
  config.embeddings = str(bucket / "x.npy")
  remote = fit_teacher(config, bucket / "w")
  for key in ("chosen", "temperature", "base_temperature", "train", "evaluations"):
    assert remote[key] == pytest.approx(local[key], rel=1e-6), key
  transform = load_transform(bucket / "w" / "transform.npz")
  np.testing.assert_allclose(
    transform.weights, load_transform(tmp_path / "w" / "transform.npz").weights, rtol=1e-6
  )
  assert json.loads((bucket / "w" / "results.json").read_text())["temperature"] == remote["temperature"]
  lines = [json.loads(line) for line in (bucket / "w" / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == len((tmp_path / "w" / "metrics.jsonl").read_text().splitlines())
  assert {line["event"] for line in lines} == {"cv", "fit", "final"}
  assert (bucket / "w" / "plots" / "cv_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_rerun_with_other_settings_or_inputs_is_refused_and_the_same_one_runs(tmp_path, data_dir):
  """provenance.json: the same settings and inputs run again; other embeddings (same path, other bytes)
  or another setting are refused naming what changed, before config.json is touched; restart=True
  starts over."""
  from aligned import artifacts
  from aligned.configs import teacher as teacher_config
  from aligned.errors import DataError
  from aligned.teacher.train import fit_teacher

  spose = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  x = (spose @ np.random.default_rng(0).normal(size=(49, 8))).astype(np.float32)
  artifacts.save_npy(tmp_path / "x.npy", x)
  config = teacher_config.get_config("smoke")
  config.standin.n_triplets, config.standin.n_val, config.steps, config.lambdas = 4000, 1000, 20, (1e-2,)
  config.embeddings = str(tmp_path / "x.npy")
  w = tmp_path / "w"
  first = fit_teacher(config, w)
  recorded = json.loads((w / "provenance.json").read_text())
  assert recorded["stage"] == "teacher"
  assert set(recorded["inputs"]) == {"embeddings", "standin.spose", "eval_triplets[0]"}
  written = (w / "config.json").read_text()
  config.steps = 30
  with pytest.raises(DataError, match=r"provenance.json: .*other settings or inputs: steps 20 -> 30"):
    fit_teacher(config, w)
  config.steps = 20
  artifacts.save_npy(tmp_path / "x.npy", 2 * x)
  with pytest.raises(DataError, match=r"provenance.json: .*: embeddings .*x.npy .* -> .*restart=True"):
    fit_teacher(config, w)
  assert (w / "config.json").read_text() == written
  artifacts.save_npy(tmp_path / "x.npy", x)
  again = fit_teacher(config, w)  # the same settings and inputs: runs
  assert again["temperature"] == pytest.approx(first["temperature"], rel=1e-6)
  artifacts.save_npy(tmp_path / "x.npy", 2 * x)
  config.restart = True
  fit_teacher(config, w)
  assert (
    json.loads((w / "provenance.json").read_text())["inputs"]["embeddings"]["sha256"]
    != (recorded["inputs"]["embeddings"]["sha256"])
  )
