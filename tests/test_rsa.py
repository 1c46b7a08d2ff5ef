"""RSA and human similarity matrices on the real RDM48."""

import numpy as np
import pytest
import scipy.io
import scipy.stats

from aligned import odd_one_out, rsa
from aligned.data import embeddings, similarity_matrices, things
from aligned.errors import DataError


def test_rsa_matches_scipy_on_the_upper_triangle():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(30, 30))
  b = a + rng.normal(size=(30, 30))
  a, b = a + a.T, b + b.T
  b[np.diag_indices(30)] = 1e6  # the diagonal must not count
  iu = np.triu_indices(30, k=1)
  got = rsa.rsa(a, b)
  assert got["n_pairs"] == 30 * 29 // 2
  assert got["spearman"] == pytest.approx(scipy.stats.spearmanr(a[iu], b[iu]).statistic, abs=1e-12)
  assert got["pearson"] == pytest.approx(scipy.stats.pearsonr(a[iu], b[iu]).statistic, abs=1e-12)
  ties = np.round(a, 0)  # heavy ties: average ranks, as scipy
  assert rsa.spearman(ties[iu], b[iu]) == pytest.approx(scipy.stats.spearmanr(ties[iu], b[iu]).statistic)


def test_rdm48_loads_with_its_objects_in_row_order(data_dir):
  human = similarity_matrices.load_human_rsm(
    data_dir / "things" / "RDM48_triplet.mat",
    data_dir / "things" / "spose_embedding66d_rescaled_48val_reordered.csv",
  )
  raw = scipy.io.loadmat(data_dir / "things" / "RDM48_triplet.mat")["RDM48_triplet"]
  np.testing.assert_allclose(human.similarity, 1.0 - raw)  # an RDM becomes a similarity
  assert human.object_ids[:2] == ("pizza", "beaver")
  concepts = things.load_concepts()
  assert [concepts.ids[i] for i in human.object_indices] == list(human.object_ids)
  # SPoSE, a model of human triplet choices, must correlate strongly with the human RDM; with the
  # rows shuffled (a wrong object order) the correlation collapses.
  spose = embeddings.load_embeddings(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  model = np.asarray(odd_one_out.similarity_matrix(spose[human.object_indices]))
  assert rsa.rsa(model, human.similarity)["spearman"] > 0.8
  shuffled = np.random.default_rng(0).permutation(human.object_indices)
  model_wrong = np.asarray(odd_one_out.similarity_matrix(spose[shuffled]))
  assert abs(rsa.rsa(model_wrong, human.similarity)["spearman"]) < 0.3


def test_bad_matrices(tmp_path, data_dir):
  objects = data_dir / "things" / "spose_embedding66d_rescaled_48val_reordered.csv"
  np.save(tmp_path / "rect.npy", np.zeros((48, 47)))
  with pytest.raises(DataError, match="square"):
    similarity_matrices.load_human_rsm(tmp_path / "rect.npy", objects)
  asym = np.random.default_rng(0).normal(size=(48, 48))
  np.save(tmp_path / "asym.npy", asym)
  with pytest.raises(DataError, match="symmetric"):
    similarity_matrices.load_human_rsm(tmp_path / "asym.npy", objects)
  np.save(tmp_path / "small.npy", np.eye(10))
  with pytest.raises(DataError, match="10 x 10"):
    similarity_matrices.load_human_rsm(tmp_path / "small.npy", objects)
  (tmp_path / "ids.txt").write_text("aardvark\nunicorn\n")
  np.save(tmp_path / "two.npy", np.eye(2))
  with pytest.raises(DataError, match="unicorn"):
    similarity_matrices.load_human_rsm(tmp_path / "two.npy", tmp_path / "ids.txt")


def _triplet_softmax_reference(x, temperature=1.0):
  s = x @ x.T / temperature
  m = len(x)
  out = np.ones((m, m))
  for i in range(m):
    for j in range(m):
      if i == j:
        continue
      ps = []
      for k in range(m):
        if k in (i, j):
          continue
        logits = np.array([s[i, j], s[i, k], s[j, k]])
        e = np.exp(logits - logits.max())
        ps.append(e[0] / e.sum())  # p(i, j chosen as the pair) = p(k is the odd one out)
      out[i, j] = np.mean(ps)
  return out


def test_triplet_softmax_matches_a_loop_and_other_kinds_match_the_kernels():
  x = np.random.default_rng(1).normal(size=(11, 4))  # 11 rows: the last chunk of 8 is partial
  got = rsa.model_rsm(x, "triplet_softmax", temperature=0.7)
  np.testing.assert_allclose(got, _triplet_softmax_reference(x, 0.7), atol=1e-6)
  np.testing.assert_allclose(got, got.T, atol=1e-7)
  np.testing.assert_allclose(rsa.model_rsm(x, "dot"), x @ x.T, rtol=1e-5, atol=1e-5)
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(rsa.model_rsm(x, "cosine"), unit @ unit.T, atol=1e-6)
  with pytest.raises(ValueError, match="unknown RSM kind"):
    rsa.model_rsm(x, "euclid")


def test_triplet_softmax_of_spose_tracks_the_human_rdm(data_dir):
  human = similarity_matrices.load_human_rsm(
    data_dir / "things" / "RDM48_triplet.mat",
    data_dir / "things" / "spose_embedding66d_rescaled_48val_reordered.csv",
  )
  spose = embeddings.load_embeddings(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  model = rsa.model_rsm(spose[human.object_indices], "triplet_softmax")
  assert rsa.rsa(model, human.similarity)["spearman"] > 0.85  # RDM48 is itself a triplet-choice matrix


def test_bootstrap_intervals_resample_objects_and_drop_self_pairs():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(30, 30))
  a = a + a.T
  b = a.copy()
  np.fill_diagonal(a, 100.0)  # diagonals disagree: they must never enter a resampled pair
  np.fill_diagonal(b, -100.0)
  same = rsa.bootstrap_rsa(a, b, n_boot=200)
  assert same["spearman_ci95"] == pytest.approx([1.0, 1.0]) and same["pearson_ci95"] == pytest.approx(
    [1.0, 1.0]
  )

  noisy = a + 2.0 * rng.normal(size=a.shape)
  noisy = noisy + noisy.T
  point = rsa.rsa(a, noisy)
  ci = rsa.bootstrap_rsa(a, noisy, n_boot=400, seed=3)
  assert ci["spearman_ci95"][0] < point["spearman"] < ci["spearman_ci95"][1]
  assert ci["pearson_ci95"][0] < point["pearson"] < ci["pearson_ci95"][1]
  assert ci == rsa.bootstrap_rsa(a, noisy, n_boot=400, seed=3)  # seeded
  # Fewer objects: a wider interval.
  small = rsa.bootstrap_rsa(a[:8, :8], noisy[:8, :8], n_boot=400, seed=3)
  width = lambda c: c["spearman_ci95"][1] - c["spearman_ci95"][0]  # noqa: E731
  assert width(small) > width(ci)
