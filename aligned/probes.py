"""Linear probes on frozen embeddings: closed-form ridge and L-BFGS logistic regression.

Definitions:

- **Standardisation.** A probe standardises features with the mean and standard deviation (+ 1e-5)
  of its own training examples; test features use the same statistics.
- **Ridge probe** (the closed-form few-shot probe of big_vision's evaluator, re-derived here): targets
  are one-hot vectors rescaled to {-1, +1}; a constant feature of value 100 is appended so the bias is
  almost unregularised; weights `W = argmin ||Z W - T||^2 + l2 ||W||^2`, computed from one
  eigendecomposition of `Z^T Z` (n >= d + 1) or of `Z Z^T` (n < d + 1, the dual form), which gives the
  solution for every l2 of a grid at the cost of one. l2 is chosen on held-out shots by exact
  leave-one-out (`pred_-i = (fitted_i - h_ii t_i) / (1 - h_ii)`, h the hat matrix): the highest
  leave-one-out accuracy, ties broken by the lowest leave-one-out squared error (so at 1 shot, where
  a left-out class has no other example, the squared error decides). Prediction: argmax of scores.
- **Logistic probe**: multinomial logistic regression, mean cross-entropy + `l2 / 2 ||W||^2`
  (bias unregularised), fitted full-batch by L-BFGS (optax, zoom line search) until the gradient norm is
  below 1e-5 (at most 100 steps), all l2 of a grid at once (vmap). l2 is chosen by 2-fold cross-validation over the shots
  (shots alternate between folds within each class; highest mean held-out accuracy, ties to the
  larger l2); with one shot per class there is nothing to hold out and `logistic_l2` is used.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

BIAS_FEATURE = 100.0  # large, so the bias weight is barely regularised
RIDGE_L2S = tuple(2.0**p for p in range(0, 21, 2))
LOGISTIC_L2S = (1e-3, 1e-2, 1e-1, 1.0)
_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 / bf16 passes in Gram matrices and solves
_CHUNK = 16384  # rows scored per step


class LinearProbe(NamedTuple):
  """scores = ((x - mean) / std) @ w + b.  mean, std: [d]; w: [d, c]; b: [c]; l2: the chosen l2."""

  mean: jax.Array
  std: jax.Array
  w: jax.Array
  b: jax.Array
  l2: jax.Array


def _standardize(x):
  mean = jnp.mean(x, axis=0)
  std = jnp.std(x, axis=0) + 1e-5
  return mean, std, (x - mean) / std


# -- Ridge --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_classes",))
def _ridge(x, y, l2s, loo_rows, n_classes: int):
  mean, std, z = _standardize(x)
  n, d = z.shape
  z = jnp.concatenate([z, jnp.full((n, 1), BIAS_FEATURE, z.dtype)], axis=1)
  t = 2.0 * jax.nn.one_hot(y, n_classes, dtype=z.dtype) - 1.0
  dot = functools.partial(jnp.matmul, precision=_HIGHEST)
  primal = n >= d + 1
  # Fitted values on rows R are left[R] @ diag(s(l2)) @ right, and the hat diagonal is left^2 @ s(l2):
  # primal  Z^T Z = Q E Q^T:  left = Z Q, right = Q^T Z^T T, s = 1 / (e + l2)
  # dual    Z Z^T = Q E Q^T:  left = Q,   right = Q^T T,     s = e / (e + l2)
  e, q = jnp.linalg.eigh(dot(z.T, z) if primal else dot(z, z.T))
  e = jnp.maximum(e, 0.0)
  if primal:
    right, left = dot(q.T, dot(z.T, t)), dot(z[loo_rows], q)
  else:
    right, left = dot(q.T, t), q[loo_rows]
  t_rows, y_rows = t[loo_rows], y[loo_rows]

  def leave_one_out(l2):
    s = 1.0 / (e + l2) if primal else e / (e + l2)
    fitted = dot(left, s[:, None] * right)
    h = dot(left**2, s)
    pred = (fitted - h[:, None] * t_rows) / jnp.maximum(1.0 - h, 1e-6)[:, None]
    return jnp.mean(jnp.argmax(pred, -1) == y_rows), jnp.mean((pred - t_rows) ** 2)

  accs, errors = jax.lax.map(leave_one_out, l2s)
  best = jnp.argmin(jnp.where(accs == accs.max(), errors, jnp.inf))
  l2 = l2s[best]
  coef = right / (e + l2)[:, None]
  w = dot(q, coef) if primal else dot(z.T, dot(q, coef))
  return LinearProbe(mean, std, w[:-1], BIAS_FEATURE * w[-1], l2), accs, errors


def fit_ridge(
  x: np.ndarray,
  y: np.ndarray,
  n_classes: int,
  l2s: tuple[float, ...] = RIDGE_L2S,
  max_loo_rows: int = 20000,
  seed: int = 0,
) -> LinearProbe:
  """Ridge probe on standardised features, l2 chosen by exact leave-one-out over `l2s`.

  Args:
    x: [n, d] features; y: [n] int labels in [0, n_classes).
    l2s: the grid (one value: no selection).
    max_loo_rows: leave-one-out is scored on at most this many rows (a seeded sample); the fit
      always uses all rows.

  >>> x = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]], np.float32)
  >>> probe = fit_ridge(x, np.array([0, 0, 1, 1]), 2)
  >>> predict(probe, np.array([[0.0, 1.1], [1.2, 0.1]], np.float32)).tolist()
  [0, 1]
  """
  n = len(x)
  rows = (
    np.arange(n) if n <= max_loo_rows else np.sort(np.random.default_rng(seed).choice(n, max_loo_rows, False))
  )
  probe, _, _ = _ridge(
    jnp.asarray(x, jnp.float32),
    jnp.asarray(y, jnp.int32),
    jnp.asarray(l2s, jnp.float32),
    jnp.asarray(rows, jnp.int32),
    n_classes,
  )
  return probe


# -- Logistic regression ------------------------------------------------------------------------


def logistic_loss(params: dict, z, onehot, weights, l2):
  """Weighted mean cross-entropy of softmax(z @ w + b) plus l2 / 2 ||w||^2.

  z: [n, d] standardised features; onehot: [n, c]; weights: [n] (0 leaves a row out).
  """
  logits = jnp.matmul(z, params["w"], precision=_HIGHEST) + params["b"]
  cross_entropy = -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)
  return jnp.sum(weights * cross_entropy) / jnp.sum(weights) + 0.5 * l2 * jnp.sum(params["w"] ** 2)


def _lbfgs(z, onehot, weights, l2, steps: int, tol: float = 1e-5):
  """Minimises `logistic_loss` from zero by L-BFGS until the gradient norm is below `tol` (at most
  `steps` steps). Stopping matters: a zero step would turn the L-BFGS memory into NaN."""
  fun = functools.partial(logistic_loss, z=z, onehot=onehot, weights=weights, l2=l2)
  params = {"w": jnp.zeros((z.shape[1], onehot.shape[1]), z.dtype), "b": jnp.zeros(onehot.shape[1], z.dtype)}
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fun)

  def not_done(carry):
    _, state, step = carry
    grad = optax.tree_utils.tree_get(state, "grad")
    return (step < steps) & ((step == 0) | (optax.tree.norm(grad) >= tol))

  def step(carry):
    params, state, i = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(params, updates), state, i + 1

  params, _, _ = jax.lax.while_loop(not_done, step, (params, solver.init(params), 0))
  return params


@functools.partial(jax.jit, static_argnames=("n_classes", "steps"))
def _logistic_grid(x, y, train_weights, eval_weights, l2s, n_classes: int, steps: int):
  """Fits one model per row of (train_weights [b, n], l2s [b]); held-out accuracy on eval_weights."""
  mean, std, z = _standardize(x)
  onehot = jax.nn.one_hot(y, n_classes, dtype=z.dtype)

  def one(train_w, eval_w, l2):
    params = _lbfgs(z, onehot, train_w, l2, steps)
    correct = jnp.argmax(jnp.matmul(z, params["w"], precision=_HIGHEST) + params["b"], -1) == y
    return params, jnp.sum(eval_w * correct) / jnp.maximum(jnp.sum(eval_w), 1.0)

  # Sequential, not vmapped: each fit stops at its own convergence (a vmapped while_loop waits for the slowest).
  params, accuracy = jax.lax.map(lambda a: one(*a), (train_weights, eval_weights, l2s))
  return mean, std, params, accuracy


def _rank_in_class(y: np.ndarray) -> np.ndarray:
  """Position of each item among the items of its class, in the given order."""
  order = np.argsort(y, kind="stable")
  starts = np.searchsorted(y[order], y[order])
  rank = np.empty(len(y), np.int64)
  rank[order] = np.arange(len(y)) - starts
  return rank


def fit_logistic(
  x: np.ndarray,
  y: np.ndarray,
  n_classes: int,
  l2s: tuple[float, ...] = LOGISTIC_L2S,
  default_l2: float = 1e-3,
  steps: int = 100,
) -> LinearProbe:
  """Multinomial logistic probe on standardised features; l2 by 2-fold CV over the items.

  Each class's items alternate between the two folds (in the given order); when a class has a
  single item, or `l2s` has one value, no selection happens (`default_l2`, or that value).

  >>> x = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]], np.float32)
  >>> probe = fit_logistic(x, np.array([0, 0, 1, 1]), 2, steps=50)
  >>> predict(probe, np.array([[0.0, 1.1], [1.2, 0.1]], np.float32)).tolist()
  [0, 1]
  """
  x, y = jnp.asarray(x, jnp.float32), np.asarray(y, np.int64)
  counts = np.bincount(y, minlength=n_classes)
  l2 = float(l2s[0]) if len(l2s) == 1 else default_l2
  if len(l2s) > 1 and counts[counts > 0].min() >= 2:
    fold = _rank_in_class(y) % 2
    a, b = (fold == 0).astype(np.float32), (fold == 1).astype(np.float32)
    grid = np.repeat(np.asarray(l2s, np.float32), 2)
    train_w, eval_w = np.tile(np.stack([a, b]), (len(l2s), 1)), np.tile(np.stack([b, a]), (len(l2s), 1))
    *_, accuracy = _logistic_grid(x, jnp.asarray(y), train_w, eval_w, grid, n_classes, steps)
    mean_accuracy = np.asarray(accuracy).reshape(len(l2s), 2).mean(1)
    l2 = float(l2s[len(l2s) - 1 - int(np.argmax(mean_accuracy[::-1]))])  # ties: the larger l2
  ones = np.ones((1, len(y)), np.float32)
  mean, std, params, _ = _logistic_grid(x, jnp.asarray(y), ones, ones, jnp.asarray([l2]), n_classes, steps)
  return LinearProbe(mean, std, params["w"][0], params["b"][0], jnp.asarray(l2))


# -- Prediction ---------------------------------------------------------------------------------


@jax.jit
def _predict_chunk(probe: LinearProbe, x, allowed):
  scores = jnp.matmul((x - probe.mean) / probe.std, probe.w, precision=_HIGHEST) + probe.b
  return jnp.argmax(jnp.where(allowed, scores, -jnp.inf), axis=-1)


def predict(probe: LinearProbe, x: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
  """[n] predicted classes: argmax of the scores over all classes, or over `allowed` ([c] bool)."""
  allowed = jnp.ones(probe.b.shape, bool) if allowed is None else jnp.asarray(allowed, bool)
  out = []
  for lo in range(0, len(x), _CHUNK):
    chunk = np.asarray(x[lo : lo + _CHUNK], np.float32)
    rows = len(chunk)
    if len(x) > _CHUNK:  # one compiled shape for every chunk
      chunk = np.pad(chunk, ((0, _CHUNK - rows), (0, 0)))
    out.append(np.asarray(_predict_chunk(probe, jnp.asarray(chunk), allowed))[:rows])
  return np.concatenate(out) if out else np.zeros(0, np.int64)


def accuracy(probe: LinearProbe, x: np.ndarray, y: np.ndarray, allowed: np.ndarray | None = None) -> float:
  """Fraction of rows whose predicted class is y."""
  return float(np.mean(predict(probe, x, allowed) == np.asarray(y)))


def fit_probe(method: str, x, y, n_classes: int, config=None, seed: int = 0) -> LinearProbe:
  """A probe by name ("ridge" | "logistic") with the settings of a transfer config (or defaults)."""
  get = (lambda key, default: config.get(key, default)) if config is not None else (lambda _, d: d)
  if method == "ridge":
    return fit_ridge(x, y, n_classes, tuple(get("ridge_l2s", RIDGE_L2S)), get("max_loo_rows", 20000), seed)
  if method == "logistic":
    return fit_logistic(
      x,
      y,
      n_classes,
      tuple(get("logistic_l2s", LOGISTIC_L2S)),
      get("logistic_l2", 1e-3),
      get("logistic_steps", 100),
    )
  raise ValueError(f"unknown probe {method!r}; expected ridge or logistic")
