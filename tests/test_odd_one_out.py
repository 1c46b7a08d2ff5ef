"""Odd-one-out kernels against plain NumPy references: similarities, probabilities, losses, metrics."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from aligned import odd_one_out as ooo

LOG2 = float(np.log(2.0))
LOG3 = float(np.log(3.0))
PAIRS = [(0, 1), (0, 2), (1, 2)]


# ------------------------------------------------------------------------------------------------
# NumPy references (float64)
# ------------------------------------------------------------------------------------------------


def np_pair_sims(x, similarity="dot"):
  """[*b, 3, d] -> [*b, 3] with explicit loops over the batch and the pairs."""
  x = np.asarray(x, np.float64)
  batch = x.shape[:-2]
  out = np.zeros(batch + (3,))
  for idx in np.ndindex(*batch):
    items = x[idx]
    for k, (i, j) in enumerate(PAIRS):
      a, b = items[i], items[j]
      if similarity == "cosine":
        na, nb = np.sqrt(np.sum(a * a)), np.sqrt(np.sum(b * b))
        a = a / na if na > 0 else a
        b = b / nb if nb > 0 else b
      out[idx + (k,)] = float(np.sum(a * b))
  return out


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  zmax = z.max(-1, keepdims=True)
  return z - zmax - np.log(np.sum(np.exp(z - zmax), axis=-1, keepdims=True))


def np_softmax(z):
  return np.exp(np_log_softmax(z))


def np_kl(p, q):
  """sum_k p_k log(p_k / q_k) with 0 log 0 = 0."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  out = np.zeros(p.shape[:-1])
  for idx in np.ndindex(*p.shape[:-1]):
    for k in range(p.shape[-1]):
      if p[idx + (k,)] > 0:
        out[idx] += p[idx + (k,)] * np.log(p[idx + (k,)] / q[idx + (k,)])
  return out


def np_jsd(p, q):
  m = 0.5 * (np.asarray(p, np.float64) + np.asarray(q, np.float64))
  return 0.5 * (np_kl(p, m) + np_kl(q, m))


def np_entropy(p):
  p = np.asarray(p, np.float64)
  logs = np.log(np.where(p > 0, p, 1.0))
  return -np.sum(np.where(p > 0, p * logs, 0.0), axis=-1)


def random_probs(rng, shape):
  p = rng.uniform(0.05, 1.0, size=shape)
  return p / p.sum(-1, keepdims=True)


@pytest.fixture
def x64():
  """Enables float64 for one test and restores the previous setting afterwards."""
  previous = jnp.zeros(()).dtype
  with jax.enable_x64(True):
    assert jnp.zeros(()).dtype == jnp.float64
    yield
  assert jnp.zeros(()).dtype == previous


# ------------------------------------------------------------------------------------------------
# 1. Pair similarities
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("batch", [(), (7,), (5, 4)])
def test_pair_similarities_match_numpy_loops(similarity, batch):
  rng = np.random.default_rng(1)
  x = rng.normal(size=batch + (3, 6)).astype(np.float32)
  got = ooo.pair_similarities(jnp.asarray(x), similarity)
  assert got.shape == batch + (3,)
  np.testing.assert_allclose(np.asarray(got), np_pair_sims(x, similarity), rtol=1e-5, atol=1e-5)


def test_pair_similarities_einsum_reference_on_5_4_3_d():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(5, 4, 3, 8))
  gram = np.einsum("...id,...jd->...ij", x, x)
  expected = np.stack([gram[..., 0, 1], gram[..., 0, 2], gram[..., 1, 2]], axis=-1)
  np.testing.assert_allclose(
    np.asarray(ooo.pair_similarities(jnp.asarray(x, jnp.float32))), expected, rtol=1e-5, atol=1e-5
  )
  xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
  gram = np.einsum("...id,...jd->...ij", xn, xn)
  expected = np.stack([gram[..., 0, 1], gram[..., 0, 2], gram[..., 1, 2]], axis=-1)
  got = np.asarray(ooo.pair_similarities(jnp.asarray(x, jnp.float32), "cosine"))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert np.all(np.abs(got) <= 1 + 1e-6)


def test_cosine_is_scale_invariant_and_dot_is_not():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(4, 3, 5)), jnp.float32)
  scale = jnp.asarray([[[2.0], [0.5], [3.0]]])
  np.testing.assert_allclose(
    ooo.pair_similarities(x * scale, "cosine"), ooo.pair_similarities(x, "cosine"), rtol=1e-5, atol=1e-6
  )
  dot_scaled = np.asarray(ooo.pair_similarities(x * scale))
  np.testing.assert_allclose(
    dot_scaled, np.asarray(ooo.pair_similarities(x)) * [1.0, 6.0, 1.5], rtol=1e-5, atol=1e-5
  )


def test_cosine_of_zero_vector_is_finite_zero():
  x = jnp.asarray([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [2.0, -1.0, 2.0]])
  got = np.asarray(ooo.pair_similarities(x, "cosine"))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, [0.0, 0.0, (2.0 - 2.0 + 4.0) / 9.0], atol=1e-6)
  all_zero = np.asarray(ooo.pair_similarities(jnp.zeros((2, 3, 4)), "cosine"))
  np.testing.assert_array_equal(all_zero, np.zeros((2, 3)))
  m = np.asarray(ooo.similarity_matrix(x, "cosine"))
  assert np.all(np.isfinite(m)) and m[0, 0] == 0.0


@pytest.mark.parametrize("shape", [(4, 5), (2, 4, 5), (2, 5)])
def test_pair_similarities_wrong_item_axis_raises(shape):
  with pytest.raises(ValueError, match=r"\[\.\.\., 3, d\]"):
    ooo.pair_similarities(jnp.ones(shape))


def test_unknown_similarity_raises():
  with pytest.raises(ValueError, match="unknown similarity"):
    ooo.pair_similarities(jnp.ones((3, 2)), "euclidean")
  with pytest.raises(ValueError, match="unknown similarity"):
    ooo.similarity_matrix(jnp.ones((3, 2)), "euclidean")


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_pair_similarities_from_matrix_matches_pair_similarities(similarity):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(12, 6)).astype(np.float32)
  x[3] = 0.0  # a zero embedding must stay finite for cosine in both paths
  triplets = rng.integers(0, 12, size=(5, 4, 3))
  triplets[0, 0] = [3, 1, 2]
  matrix = ooo.similarity_matrix(jnp.asarray(x), similarity)
  np.testing.assert_allclose(np.asarray(matrix), np.asarray(matrix).T, rtol=1e-6, atol=1e-6)
  got = ooo.pair_similarities_from_matrix(matrix, jnp.asarray(triplets))
  expected = ooo.pair_similarities(jnp.asarray(x[triplets]), similarity)
  assert got.shape == (5, 4, 3)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got), np_pair_sims(x[triplets], similarity), rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(got)))


def test_pair_similarities_from_matrix_pair_order_uses_asymmetric_matrix():
  # An asymmetric matrix pins down which entry each pair reads: [M[i, j], M[i, k], M[j, k]].
  m = jnp.arange(16.0).reshape(4, 4)
  got = np.asarray(ooo.pair_similarities_from_matrix(m, jnp.asarray([[2, 0, 3], [1, 3, 2]])))
  np.testing.assert_array_equal(got, [[8.0, 11.0, 3.0], [7.0, 6.0, 14.0]])


# ------------------------------------------------------------------------------------------------
# 2. Choice probabilities
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.3, 100.0])
def test_choice_probs_match_numpy_softmax(temperature):
  rng = np.random.default_rng(5)
  sims = rng.normal(scale=3.0, size=(5, 4, 3))
  expected_log = np_log_softmax(sims / temperature)
  got_log = np.asarray(ooo.choice_log_probs(jnp.asarray(sims, jnp.float32), temperature))
  got = np.asarray(ooo.choice_probs(jnp.asarray(sims, jnp.float32), temperature))
  np.testing.assert_allclose(got_log, expected_log, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got, np.exp(expected_log), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-6)
  # A temperature given as an array behaves like the float.
  got_arr = np.asarray(ooo.choice_probs(jnp.asarray(sims, jnp.float32), jnp.asarray(temperature)))
  np.testing.assert_allclose(got_arr, got, rtol=1e-6, atol=1e-7)


def test_choice_probs_uniform_and_order():
  np.testing.assert_allclose(np.asarray(ooo.choice_probs(jnp.zeros(3))), np.full(3, 1 / 3), rtol=1e-6)
  p = np.asarray(ooo.choice_probs(jnp.asarray([3.0, 1.0, 2.0])))
  assert p[0] > p[2] > p[1]


# ------------------------------------------------------------------------------------------------
# 3. Losses
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.5, 7.0])
def test_hard_label_cross_entropy_matches_numpy(temperature):
  rng = np.random.default_rng(6)
  sims = rng.normal(scale=2.0, size=(5, 4, 3))
  labels = rng.integers(0, 3, size=(5, 4))
  log_q = np_log_softmax(sims / temperature)
  expected = np.zeros((5, 4))
  for idx in np.ndindex(5, 4):
    expected[idx] = -log_q[idx + (labels[idx],)]
  got = ooo.hard_label_cross_entropy(jnp.asarray(sims, jnp.float32), jnp.asarray(labels), temperature)
  assert got.shape == (5, 4)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
  # Scalar labels broadcast.
  got2 = ooo.hard_label_cross_entropy(jnp.asarray(sims, jnp.float32), 2, temperature)
  np.testing.assert_allclose(np.asarray(got2), -log_q[..., 2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.25, 100.0])
def test_contrastive_equals_hard_label_ce_with_label_zero(temperature):
  rng = np.random.default_rng(7)
  sims = rng.normal(scale=4.0, size=(6, 3))
  got = np.asarray(ooo.contrastive_loss(jnp.asarray(sims, jnp.float32), temperature))
  ce = np.asarray(ooo.hard_label_cross_entropy(jnp.asarray(sims, jnp.float32), 0, temperature))
  np.testing.assert_allclose(got, ce, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got, -np_log_softmax(sims / temperature)[..., 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_kl_divergence_matches_numpy(temperature):
  rng = np.random.default_rng(8)
  sims = rng.normal(scale=2.0, size=(5, 4, 3))
  target_sims = rng.normal(scale=2.0, size=(5, 4, 3))
  target_probs = random_probs(rng, (5, 4, 3))
  q = np_softmax(sims / temperature)
  s = jnp.asarray(sims, jnp.float32)
  # target_sims: p = softmax(target_sims) with NO temperature even though the prediction has one.
  got = ooo.kl_divergence(s, target_sims=jnp.asarray(target_sims, jnp.float32), temperature=temperature)
  assert got.shape == (5, 4)
  np.testing.assert_allclose(np.asarray(got), np_kl(np_softmax(target_sims), q), rtol=1e-4, atol=1e-5)
  got = ooo.kl_divergence(s, target_probs=jnp.asarray(target_probs, jnp.float32), temperature=temperature)
  np.testing.assert_allclose(np.asarray(got), np_kl(target_probs, q), rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(got) >= -1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_jensen_shannon_matches_numpy(temperature):
  rng = np.random.default_rng(9)
  sims = rng.normal(scale=2.0, size=(5, 4, 3))
  target_sims = rng.normal(scale=2.0, size=(5, 4, 3))
  target_probs = random_probs(rng, (5, 4, 3))
  q = np_softmax(sims / temperature)
  s = jnp.asarray(sims, jnp.float32)
  got = ooo.jensen_shannon_divergence(
    s, target_sims=jnp.asarray(target_sims, jnp.float32), temperature=temperature
  )
  assert got.shape == (5, 4)
  np.testing.assert_allclose(np.asarray(got), np_jsd(np_softmax(target_sims), q), rtol=1e-4, atol=1e-6)
  got = ooo.jensen_shannon_divergence(
    s, target_probs=jnp.asarray(target_probs, jnp.float32), temperature=temperature
  )
  np.testing.assert_allclose(np.asarray(got), np_jsd(target_probs, q), rtol=1e-4, atol=1e-6)


def test_kl_and_jsd_of_identical_distributions_are_zero():
  rng = np.random.default_rng(10)
  sims = jnp.asarray(rng.normal(scale=2.0, size=(8, 3)), jnp.float32)
  for loss in (ooo.kl_divergence, ooo.jensen_shannon_divergence):
    np.testing.assert_allclose(np.asarray(loss(sims, target_sims=sims)), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(loss(sims, target_probs=ooo.choice_probs(sims))), 0.0, atol=1e-6)
    # With a temperature, identical means softmax(sims / tau) == p.
    np.testing.assert_allclose(
      np.asarray(loss(2.0 * sims, target_sims=sims, temperature=2.0)), 0.0, atol=1e-6
    )
  # And not zero when the distributions differ (guards against a loss that is always 0).
  shifted = sims + jnp.asarray([1.0, 0.0, 0.0])
  for loss in (ooo.kl_divergence, ooo.jensen_shannon_divergence):
    assert np.all(np.asarray(loss(sims, target_sims=shifted)) > 1e-3)


def test_jensen_shannon_symmetric_and_bounded():
  rng = np.random.default_rng(11)
  a = rng.normal(scale=3.0, size=(10, 3))
  b = rng.normal(scale=3.0, size=(10, 3))
  sa, sb = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  pa, pb = ooo.choice_probs(sa), ooo.choice_probs(sb)
  jsd_ab = np.asarray(ooo.jensen_shannon_divergence(sa, target_probs=pb))
  jsd_ba = np.asarray(ooo.jensen_shannon_divergence(sb, target_probs=pa))
  np.testing.assert_allclose(jsd_ab, jsd_ba, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(ooo.jensen_shannon_divergence(sa, target_sims=sb)),
    np.asarray(ooo.jensen_shannon_divergence(sb, target_sims=sa)),
    rtol=1e-4,
    atol=1e-6,
  )
  assert np.all(jsd_ab >= -1e-7) and np.all(jsd_ab <= LOG2 + 1e-6)
  # Nearly disjoint supports: JSD approaches log 2 from below (KL would blow up instead).
  extreme = jnp.asarray([[60.0, 0.0, 0.0], [0.0, 0.0, 60.0]])
  far = ooo.jensen_shannon_divergence(extreme, target_probs=jnp.asarray([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
  far = np.asarray(far)
  assert np.all(far <= LOG2 + 1e-6)
  np.testing.assert_allclose(far, LOG2, atol=1e-5)
  assert np.all(
    np.asarray(ooo.kl_divergence(extreme, target_probs=jnp.asarray([[0.0, 0.0, 1.0], [1.0, 0, 0]]))) > 50
  )


@pytest.mark.parametrize("loss", [ooo.kl_divergence, ooo.jensen_shannon_divergence])
def test_losses_require_exactly_one_target(loss):
  sims = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="exactly one"):
    loss(sims)
  with pytest.raises(ValueError, match="exactly one"):
    loss(sims, target_sims=sims, target_probs=ooo.choice_probs(sims))


# ------------------------------------------------------------------------------------------------
# 4. Gradients (float64)
# ------------------------------------------------------------------------------------------------


def _loss_fns(rng, temperature):
  target_sims = jnp.asarray(rng.normal(size=(4, 3)))
  target_probs = jnp.asarray(random_probs(rng, (4, 3)))
  labels = jnp.asarray([0, 1, 2, 1])
  return {
    "hard_ce": lambda s: ooo.hard_label_cross_entropy(s, labels, temperature),
    "contrastive": lambda s: ooo.contrastive_loss(s, temperature),
    "kl_sims": lambda s: ooo.kl_divergence(s, target_sims=target_sims, temperature=temperature),
    "kl_probs": lambda s: ooo.kl_divergence(s, target_probs=target_probs, temperature=temperature),
    "jsd_sims": lambda s: ooo.jensen_shannon_divergence(s, target_sims=target_sims, temperature=temperature),
    "jsd_probs": lambda s: ooo.jensen_shannon_divergence(
      s, target_probs=target_probs, temperature=temperature
    ),
    "entropy": lambda s: ooo.choice_entropy(ooo.choice_log_probs(s, temperature)),
  }


@pytest.mark.parametrize(
  "name", ["hard_ce", "contrastive", "kl_sims", "kl_probs", "jsd_sims", "jsd_probs", "entropy"]
)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_loss_gradients_check_grads(x64, name, temperature):
  rng = np.random.default_rng(12)
  f = _loss_fns(rng, temperature)[name]
  sims = jnp.asarray(rng.normal(size=(4, 3)))
  assert sims.dtype == jnp.float64
  check_grads(f, (sims,), order=2, modes=["fwd", "rev"])


def test_kl_gradient_matches_closed_form(x64):
  # d KL(p || softmax(s / tau)) / ds = (q - p) / tau.
  rng = np.random.default_rng(13)
  sims = rng.normal(size=(6, 3))
  p = random_probs(rng, (6, 3))
  tau = 0.8
  grad = jax.grad(lambda s: ooo.kl_divergence(s, target_probs=jnp.asarray(p), temperature=tau).sum())(
    jnp.asarray(sims)
  )
  np.testing.assert_allclose(np.asarray(grad), (np_softmax(sims / tau) - p) / tau, rtol=1e-10, atol=1e-12)
  # Targets are constants: no gradient flows into target_sims or target_probs, for either loss.
  s = jnp.asarray(sims)
  for loss in (ooo.kl_divergence, ooo.jensen_shannon_divergence):
    g_target = jax.grad(lambda t, loss=loss: loss(s, target_sims=t).sum())(jnp.asarray(p))
    np.testing.assert_array_equal(np.asarray(g_target), 0.0)
    g_target = jax.grad(lambda t, loss=loss: loss(s, target_probs=t).sum())(jnp.asarray(p))
    np.testing.assert_array_equal(np.asarray(g_target), 0.0)


# ------------------------------------------------------------------------------------------------
# 5. Exact zeros in the targets
# ------------------------------------------------------------------------------------------------

ZERO_TARGETS = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 0.3, 0.7]])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_zero_target_probs_give_finite_values_matching_numpy(temperature):
  rng = np.random.default_rng(14)
  sims = rng.normal(scale=2.0, size=(4, 3))
  s, p = jnp.asarray(sims, jnp.float32), jnp.asarray(ZERO_TARGETS, jnp.float32)
  q = np_softmax(sims / temperature)
  kl = np.asarray(ooo.kl_divergence(s, target_probs=p, temperature=temperature))
  jsd = np.asarray(ooo.jensen_shannon_divergence(s, target_probs=p, temperature=temperature))
  ent = np.asarray(ooo.probs_entropy(p))
  for v in (kl, jsd, ent):
    assert np.all(np.isfinite(v))
  np.testing.assert_allclose(kl, np_kl(ZERO_TARGETS, q), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jsd, np_jsd(ZERO_TARGETS, q), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(ent, np_entropy(ZERO_TARGETS), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ent[[0, 2]], 0.0, atol=0)
  np.testing.assert_allclose(ent[1], LOG2, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_zero_target_probs_give_finite_correct_gradients(x64, temperature):
  rng = np.random.default_rng(15)
  sims = jnp.asarray(rng.normal(scale=2.0, size=(4, 3)))
  p = jnp.asarray(ZERO_TARGETS)
  kl = lambda s: ooo.kl_divergence(s, target_probs=p, temperature=temperature)  # noqa: E731
  jsd = lambda s: ooo.jensen_shannon_divergence(s, target_probs=p, temperature=temperature)  # noqa: E731
  for f in (kl, jsd):
    g = np.asarray(jax.grad(lambda s, f=f: f(s).sum())(sims))
    assert np.all(np.isfinite(g))
    h = np.asarray(jax.hessian(lambda s, f=f: f(s).sum())(sims))
    assert np.all(np.isfinite(h))
    check_grads(f, (sims,), order=2, modes=["fwd", "rev"])
  # KL gradient in closed form, exact zeros included.
  g = np.asarray(jax.grad(lambda s: kl(s).sum())(sims))
  np.testing.assert_allclose(
    g, (np_softmax(np.asarray(sims) / temperature) - ZERO_TARGETS) / temperature, atol=1e-12
  )


def test_entropy_with_zero_probabilities_has_finite_gradients(x64):
  log_p = jnp.log(jnp.asarray(ZERO_TARGETS))
  assert np.any(np.isneginf(np.asarray(log_p)))
  np.testing.assert_allclose(np.asarray(ooo.choice_entropy(log_p)), np_entropy(ZERO_TARGETS), atol=1e-12)
  g = np.asarray(jax.grad(lambda lp: ooo.choice_entropy(lp).sum())(log_p))
  assert np.all(np.isfinite(g))
  # d/d(log p_k) of -sum p log p = -p_k (log p_k + 1), and 0 where p_k = 0.
  safe = np.log(np.where(ZERO_TARGETS > 0, ZERO_TARGETS, 1.0))
  np.testing.assert_allclose(g, np.where(ZERO_TARGETS > 0, -ZERO_TARGETS * (safe + 1.0), 0.0), atol=1e-12)
  g = np.asarray(jax.grad(lambda p: ooo.probs_entropy(p).sum())(jnp.asarray(ZERO_TARGETS)))
  # d/dp_k of -sum p log p = -(log p_k + 1) where p_k > 0, and 0 (not NaN) at exact zeros.
  np.testing.assert_allclose(g, np.where(ZERO_TARGETS > 0, -(safe + 1.0), 0.0), atol=1e-6)
  # Entropy of the model's own distribution at saturation: finite value and gradient w.r.t. sims.
  sims = jnp.asarray([[800.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-900.0, 900.0, 0.0]])
  f = lambda s: ooo.choice_entropy(ooo.choice_log_probs(s)).sum()  # noqa: E731
  assert np.isfinite(float(f(sims)))
  assert np.all(np.isfinite(np.asarray(jax.grad(f)(sims))))


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_kl_with_one_hot_target_equals_hard_label_ce(temperature):
  rng = np.random.default_rng(16)
  sims = jnp.asarray(rng.normal(scale=2.0, size=(9, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=9))
  one_hot = jax.nn.one_hot(labels, 3)
  kl = ooo.kl_divergence(sims, target_probs=one_hot, temperature=temperature)
  ce = ooo.hard_label_cross_entropy(sims, labels, temperature)
  np.testing.assert_allclose(np.asarray(kl), np.asarray(ce), rtol=1e-5, atol=1e-6)
  g_kl = jax.grad(lambda s: ooo.kl_divergence(s, target_probs=one_hot, temperature=temperature).sum())(sims)
  g_ce = jax.grad(lambda s: ooo.hard_label_cross_entropy(s, labels, temperature).sum())(sims)
  np.testing.assert_allclose(np.asarray(g_kl), np.asarray(g_ce), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# 6. Accuracy
# ------------------------------------------------------------------------------------------------


def test_odd_one_out_correct_hand_built():
  sims = jnp.asarray(
    [
      [0.9, 0.1, 0.2],  # strict max at s01
      [0.5, 0.5, 0.1],  # tie s01 == s02 at the top
      [0.5, 0.1, 0.5],  # tie s01 == s12 at the top
      [0.3, 0.3, 0.3],  # all tied
      [0.1, 0.9, 0.2],  # s02 max
      [0.1, 0.2, 0.9],  # s12 max
      [0.9, 0.2, 0.2],  # tie below the top does not matter
      [-1.0, -2.0, -3.0],  # negative similarities
    ]
  )
  expected = [True, False, False, False, False, False, True, True]
  np.testing.assert_array_equal(np.asarray(ooo.odd_one_out_correct(sims)), expected)
  onehot = np.asarray(ooo.predicted_pair_onehot(sims))
  np.testing.assert_array_equal(
    onehot,
    [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0]],
  )


def test_predicted_pair_onehot_ties_are_all_zero():
  ties = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [2.0, 2.0, 2.0]])
  np.testing.assert_array_equal(np.asarray(ooo.predicted_pair_onehot(ties)), np.zeros((4, 3)))


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_constant_embedding_scores_exactly_zero(similarity):
  rng = np.random.default_rng(17)
  v = rng.normal(size=7).astype(np.float32)
  x = jnp.asarray(np.broadcast_to(v, (20, 3, 7)).copy())
  sims = ooo.pair_similarities(x, similarity)
  assert float(ooo.odd_one_out_accuracy(sims)) == 0.0
  counts = jnp.asarray(rng.integers(1, 5, size=(20, 3)))
  assert float(ooo.odd_one_out_accuracy(sims, counts)) == 0.0
  # Through the matrix path too.
  table = jnp.asarray(np.broadcast_to(v, (6, 7)).copy())
  triplets = jnp.asarray(rng.integers(0, 6, size=(20, 3)))
  msims = ooo.pair_similarities_from_matrix(ooo.similarity_matrix(table, similarity), triplets)
  assert float(ooo.odd_one_out_accuracy(msims)) == 0.0
  assert float(ooo.odd_one_out_accuracy(msims, counts)) == 0.0


def np_weighted_accuracy(sims, counts):
  hits = 0.0
  for row, c in zip(sims, counts, strict=True):
    top = np.argmax(row)
    if np.sum(row == row[top]) == 1:
      hits += c[top]
  return hits / counts.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_odd_one_out_accuracy_with_counts_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  n = 200
  # Small integer similarities produce many ties, which must count as misses.
  sims_int = rng.integers(0, 3, size=(n, 3)).astype(np.float32)
  sims_real = rng.normal(size=(n, 3)).astype(np.float32)
  counts = rng.integers(0, 6, size=(n, 3))
  counts[0] = [1, 0, 0]
  for sims in (sims_int, sims_real):
    got = float(ooo.odd_one_out_accuracy(jnp.asarray(sims), jnp.asarray(counts)))
    np.testing.assert_allclose(got, np_weighted_accuracy(sims, counts), rtol=1e-6)
    got_float_counts = float(ooo.odd_one_out_accuracy(jnp.asarray(sims), jnp.asarray(counts, jnp.float32)))
    np.testing.assert_allclose(got_float_counts, np_weighted_accuracy(sims, counts), rtol=1e-6)
  assert np.sum(np.sum(sims_int == sims_int.max(-1, keepdims=True), -1) > 1) > 20  # ties really occur


@pytest.mark.parametrize("seed", [0, 1])
def test_odd_one_out_accuracy_without_counts_is_mean_of_correct(seed):
  rng = np.random.default_rng(seed)
  for sims in (
    rng.integers(0, 3, size=(300, 3)).astype(np.float32),
    rng.normal(size=(300, 3)).astype(np.float32),
  ):
    s = jnp.asarray(sims)
    correct = np.asarray(ooo.odd_one_out_correct(s))
    np.testing.assert_array_equal(correct, (sims[:, 0] > sims[:, 1]) & (sims[:, 0] > sims[:, 2]))
    got = float(ooo.odd_one_out_accuracy(s))
    np.testing.assert_allclose(got, correct.mean(), rtol=1e-6)
    # One response per triplet for pair 0 (odd-one-out last) is the same as the counted form.
    counts = np.zeros((300, 3), np.int32)
    counts[:, 0] = 1
    np.testing.assert_allclose(float(ooo.odd_one_out_accuracy(s, jnp.asarray(counts))), got, rtol=1e-6)


def test_odd_one_out_accuracy_batched_shape():
  rng = np.random.default_rng(18)
  sims = rng.normal(size=(4, 5, 3)).astype(np.float32)
  counts = rng.integers(1, 4, size=(4, 5, 3))
  got = float(ooo.odd_one_out_accuracy(jnp.asarray(sims), jnp.asarray(counts)))
  np.testing.assert_allclose(got, np_weighted_accuracy(sims.reshape(-1, 3), counts.reshape(-1, 3)), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# 7. Permuting and sorting triplets
# ------------------------------------------------------------------------------------------------


def _random_triplets(rng, n, d=5):
  table = rng.normal(size=(3 * n + 4, d))
  triplets = np.stack([rng.choice(len(table), size=3, replace=False) for _ in range(n)])
  return table, triplets


def test_permute_triplets_per_row_perms_match_recomputed_similarities():
  rng = np.random.default_rng(19)
  n = 60
  table, triplets = _random_triplets(rng, n)
  sims = np.asarray(ooo.pair_similarities(jnp.asarray(table[triplets])))
  perm = np.stack([rng.permutation(3) for _ in range(n)])
  new_triplets, new_sims = ooo.permute_triplets(triplets, sims, perm)
  for r in range(n):
    np.testing.assert_array_equal(new_triplets[r], [triplets[r, perm[r, p]] for p in range(3)])
  expected = np_pair_sims(table[new_triplets])
  np.testing.assert_allclose(new_sims, expected, rtol=1e-5, atol=1e-5)
  # Embeddings permuted directly (x[:, perm]) give the same similarities too.
  x_perm = np.take_along_axis(table[triplets], perm[..., None], axis=1)
  np.testing.assert_allclose(
    new_sims, np.asarray(ooo.pair_similarities(jnp.asarray(x_perm))), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_permute_triplets_shared_perm_and_counts(perm):
  rng = np.random.default_rng(20)
  n = 10
  table, triplets = _random_triplets(rng, n)
  sims = np_pair_sims(table[triplets])
  new_triplets, new_sims = ooo.permute_triplets(triplets, sims, np.asarray(perm))
  np.testing.assert_allclose(new_sims, np_pair_sims(table[new_triplets]), rtol=1e-10)
  # Counts follow their pair: the count of pair {a, b} stays attached to the same two items.
  counts = rng.integers(0, 9, size=(n, 3))
  _, new_counts = ooo.permute_triplets(triplets, counts, np.asarray(perm))
  for r in range(n):
    old = {frozenset((triplets[r, i], triplets[r, j])): counts[r, k] for k, (i, j) in enumerate(PAIRS)}
    for k, (i, j) in enumerate(PAIRS):
      assert new_counts[r, k] == old[frozenset((new_triplets[r, i], new_triplets[r, j]))]
  # Applying the inverse permutation restores the original.
  inverse = np.argsort(perm)
  back_t, back_s = ooo.permute_triplets(new_triplets, new_sims, inverse)
  np.testing.assert_array_equal(back_t, triplets)
  np.testing.assert_allclose(back_s, sims, rtol=1e-12)


def test_permute_triplets_leading_batch_shape():
  rng = np.random.default_rng(21)
  x = rng.normal(size=(4, 5, 3, 6))
  items = np.broadcast_to(np.arange(3), (4, 5, 3))
  perm = np.stack([rng.permutation(3) for _ in range(20)]).reshape(4, 5, 3)
  new_items, new_sims = ooo.permute_triplets(items, np_pair_sims(x), perm)
  np.testing.assert_array_equal(new_items, perm)
  x_perm = np.take_along_axis(x, perm[..., None], axis=-2)
  np.testing.assert_allclose(new_sims, np_pair_sims(x_perm), rtol=1e-10)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_sort_odd_one_out_last(similarity):
  rng = np.random.default_rng(22)
  n = 120
  table, triplets = _random_triplets(rng, n)
  sims = np_pair_sims(table[triplets], similarity)
  new_triplets, new_sims = ooo.sort_odd_one_out_last(triplets, sims)
  assert new_triplets.shape == (n, 3) and new_sims.shape == (n, 3)
  assert np.all(new_sims[:, 0] >= new_sims[:, 1]) and np.all(new_sims[:, 1] >= new_sims[:, 2])
  np.testing.assert_allclose(new_sims, np_pair_sims(table[new_triplets], similarity), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(new_sims, -np.sort(-sims, axis=-1), rtol=1e-12)
  np.testing.assert_array_equal(np.sort(new_triplets, -1), np.sort(triplets, -1))
  top = np.argmax(sims, -1)
  for r in range(n):
    i, j = PAIRS[top[r]]
    odd = ({0, 1, 2} - {i, j}).pop()
    assert new_triplets[r, 2] == triplets[r, odd]
    assert set(new_triplets[r, :2]) == {triplets[r, i], triplets[r, j]}
  # The sorted output counts as correct for the model that produced it.
  assert bool(np.all(np.asarray(ooo.odd_one_out_correct(jnp.asarray(new_sims)))))


def test_sort_odd_one_out_last_hand_built_and_batched():
  triplets = np.array([[10, 11, 12], [10, 11, 12], [10, 11, 12], [10, 11, 12], [10, 11, 12], [10, 11, 12]])
  # Sims [s01, s02, s12]; every ordering of three distinct values.
  sims = np.array(
    [[3.0, 2.0, 1.0], [3.0, 1.0, 2.0], [2.0, 3.0, 1.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0], [1.0, 2.0, 3.0]]
  )
  new_t, new_s = ooo.sort_odd_one_out_last(triplets, sims)
  np.testing.assert_array_equal(new_s, np.tile([3.0, 2.0, 1.0], (6, 1)))
  # Worked out by hand, e.g. row 1: pair {10, 11} is top, odd item 12; {11, 12} = 2 > {10, 12} = 1, so
  # item 11 goes first to make s02 the larger: order 11, 10, 12.
  np.testing.assert_array_equal(
    new_t,
    [[10, 11, 12], [11, 10, 12], [10, 12, 11], [12, 10, 11], [11, 12, 10], [12, 11, 10]],
  )
  batched_t, batched_s = ooo.sort_odd_one_out_last(triplets.reshape(2, 3, 3), sims.reshape(2, 3, 3))
  np.testing.assert_array_equal(batched_t.reshape(6, 3), new_t)
  np.testing.assert_array_equal(batched_s.reshape(6, 3), new_s)
  one_t, one_s = ooo.sort_odd_one_out_last(triplets[3], sims[3])
  np.testing.assert_array_equal(one_t, new_t[3])
  np.testing.assert_array_equal(one_s, new_s[3])


def test_sort_odd_one_out_last_with_ties_is_still_sorted():
  triplets = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]])
  sims = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
  new_t, new_s = ooo.sort_odd_one_out_last(triplets, sims)
  assert np.all(new_s[:, 0] >= new_s[:, 1]) and np.all(new_s[:, 1] >= new_s[:, 2])
  np.testing.assert_array_equal(np.sort(new_t, -1), triplets)
  for r in range(4):
    # Similarities stay attached to their pairs of items.
    old = {frozenset((triplets[r, i], triplets[r, j])): sims[r, k] for k, (i, j) in enumerate(PAIRS)}
    for k, (i, j) in enumerate(PAIRS):
      assert new_s[r, k] == old[frozenset((new_t[r, i], new_t[r, j]))]


# ------------------------------------------------------------------------------------------------
# 8. Entropy
# ------------------------------------------------------------------------------------------------


def test_entropy_matches_numpy_and_uniform_is_log3():
  rng = np.random.default_rng(23)
  p = random_probs(rng, (5, 4, 3))
  got = np.asarray(ooo.probs_entropy(jnp.asarray(p, jnp.float32)))
  assert got.shape == (5, 4)
  np.testing.assert_allclose(got, np_entropy(p), rtol=1e-5, atol=1e-6)
  got = np.asarray(ooo.choice_entropy(jnp.asarray(np.log(p), jnp.float32)))
  np.testing.assert_allclose(got, np_entropy(p), rtol=1e-5, atol=1e-6)
  sims = rng.normal(scale=2.0, size=(6, 3))
  got = np.asarray(ooo.choice_entropy(ooo.choice_log_probs(jnp.asarray(sims, jnp.float32), 0.5)))
  np.testing.assert_allclose(got, np_entropy(np_softmax(sims / 0.5)), rtol=1e-5, atol=1e-6)
  assert np.all(got <= LOG3 + 1e-6) and np.all(got >= 0)
  uniform = jnp.full((2, 3), 1 / 3)
  np.testing.assert_allclose(np.asarray(ooo.probs_entropy(uniform)), LOG3, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ooo.choice_entropy(jnp.log(uniform))), LOG3, rtol=1e-6)
  np.testing.assert_allclose(
    np.asarray(ooo.choice_entropy(ooo.choice_log_probs(jnp.zeros(3)))), LOG3, rtol=1e-6
  )


# ------------------------------------------------------------------------------------------------
# 9. jit and vmap
# ------------------------------------------------------------------------------------------------


def test_jit_matches_eager():
  rng = np.random.default_rng(24)
  sims = jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32)
  target_sims = jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32)
  target_probs = jnp.asarray(
    np.concatenate([random_probs(rng, (5, 3, 3)), np.tile(ZERO_TARGETS[:1], (5, 1, 1))], 1)
  )
  for loss in (ooo.jensen_shannon_divergence, ooo.kl_divergence):
    for kwargs in (dict(target_sims=target_sims), dict(target_probs=target_probs)):
      eager = np.asarray(loss(sims, temperature=0.5, **kwargs))
      jitted = np.asarray(jax.jit(loss)(sims, temperature=0.5, **kwargs))
      np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
      assert np.all(np.isfinite(jitted))
  jit_x = jax.jit(ooo.pair_similarities, static_argnames="similarity")
  x = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
  np.testing.assert_allclose(
    np.asarray(jit_x(x, "cosine")), np.asarray(ooo.pair_similarities(x, "cosine")), rtol=1e-6
  )
  acc = jax.jit(ooo.odd_one_out_accuracy)
  counts = jnp.asarray(rng.integers(0, 4, size=(5, 4, 3)))
  np.testing.assert_allclose(
    float(acc(sims, counts)), float(ooo.odd_one_out_accuracy(sims, counts)), rtol=1e-6
  )


def test_vmap_matches_batched_call():
  rng = np.random.default_rng(25)
  sims = jnp.asarray(rng.normal(size=(6, 4, 3)), jnp.float32)
  target_sims = jnp.asarray(rng.normal(size=(6, 4, 3)), jnp.float32)
  target_probs = jnp.asarray(random_probs(rng, (6, 4, 3)), jnp.float32)
  jsd = jax.vmap(lambda s, t: ooo.jensen_shannon_divergence(s, target_sims=t, temperature=0.7))(
    sims, target_sims
  )
  np.testing.assert_allclose(
    np.asarray(jsd),
    np.asarray(ooo.jensen_shannon_divergence(sims, target_sims=target_sims, temperature=0.7)),
    rtol=1e-5,
    atol=1e-6,
  )
  kl = jax.vmap(lambda s, p: ooo.kl_divergence(s, target_probs=p))(sims, target_probs)
  np.testing.assert_allclose(
    np.asarray(kl), np.asarray(ooo.kl_divergence(sims, target_probs=target_probs)), rtol=1e-5, atol=1e-6
  )
  x = jnp.asarray(rng.normal(size=(6, 4, 3, 5)), jnp.float32)
  ps = jax.vmap(lambda a: ooo.pair_similarities(a, "cosine"))(x)
  np.testing.assert_allclose(
    np.asarray(ps), np.asarray(ooo.pair_similarities(x, "cosine")), rtol=1e-6, atol=1e-6
  )
  labels = jnp.asarray(rng.integers(0, 3, size=(6, 4)))
  ce = jax.vmap(ooo.hard_label_cross_entropy)(sims, labels)
  np.testing.assert_allclose(
    np.asarray(ce), np.asarray(ooo.hard_label_cross_entropy(sims, labels)), rtol=1e-6
  )
  # vmap over per-batch temperatures.
  temps = jnp.asarray([0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
  lp = jax.vmap(ooo.choice_log_probs)(sims, temps)
  np.testing.assert_allclose(
    np.asarray(lp), np_log_softmax(np.asarray(sims) / np.asarray(temps)[:, None, None]), atol=1e-5
  )


# ------------------------------------------------------------------------------------------------
# 10. Mean choice probability
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_mean_choice_prob_matches_numpy(temperature):
  rng = np.random.default_rng(26)
  sims = rng.normal(scale=2.0, size=(5, 4, 3))
  counts = rng.integers(0, 5, size=(5, 4, 3))
  q = np_softmax(sims / temperature)
  total, n = 0.0, 0
  for idx in np.ndindex(5, 4):
    for k in range(3):
      total += counts[idx + (k,)] * q[idx + (k,)]
      n += counts[idx + (k,)]
  got = float(ooo.mean_choice_prob(jnp.asarray(sims, jnp.float32), jnp.asarray(counts), temperature))
  np.testing.assert_allclose(got, total / n, rtol=1e-5)
  # One response for pair 0 per triplet: the mean of p(s01 chosen).
  one = np.zeros((5, 4, 3), np.int32)
  one[..., 0] = 1
  got = float(ooo.mean_choice_prob(jnp.asarray(sims, jnp.float32), jnp.asarray(one), temperature))
  np.testing.assert_allclose(got, q[..., 0].mean(), rtol=1e-5)
