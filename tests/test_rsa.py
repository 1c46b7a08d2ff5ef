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
