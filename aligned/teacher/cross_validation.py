"""Object-disjoint k-fold cross-validation of the teacher's hyper-parameters.

Objects (not triplets) are split into k folds. For fold f the validation triplets are those whose
three objects all lie in fold f, the training triplets those with no object in f; triplets that mix
are used by neither. So a validation score measures generalisation to *new objects*, which is what
the teacher must do on ImageNet. The embedding standardisation of each split is computed on its
training objects only.
"""

from __future__ import annotations

import itertools

import numpy as np

from aligned.teacher import model
from aligned.teacher.model import Hyperparams, TripletTargets


def object_folds(n_objects: int, k: int, seed: int) -> np.ndarray:
  """[n_objects] fold id in 0..k-1, balanced, a random function of the seed."""
  if k < 2:
    raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
  folds = np.arange(n_objects) % k
  return np.random.default_rng(seed).permutation(folds)


def fold_masks(triplets: np.ndarray, fold_of_object: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation) boolean masks over triplets for one fold."""
  in_fold = fold_of_object[triplets] == fold  # [n, 3]
  return ~in_fold.any(axis=1), in_fold.all(axis=1)


def used_objects(triplets: np.ndarray) -> np.ndarray:
  return np.unique(triplets)


def grid(lambdas, learning_rates) -> list[dict]:
  """The grid points, lambda-major."""
  if not len(lambdas) or not len(learning_rates):
    raise ValueError("the hyper-parameter grid is empty: give at least one lambda and one learning rate")
  return [
    {"lam": float(lam), "learning_rate": float(lr)} for lam, lr in itertools.product(lambdas, learning_rates)
  ]


def cross_validate(
  x: np.ndarray,
  data: TripletTargets,
  base: Hyperparams,
  points: list[dict],
  k: int,
  seed: int,
  make_fitter,
  on_result=None,
) -> tuple[list[dict], dict]:
  """Fits every grid point on every fold; returns (rows, best point by mean validation loss).

  Args:
    make_fitter: (x, mean, std, hparams) -> an object with `fit(data)` and `evaluate(params, data)`.
    on_result: called with each row as it is computed (for metrics.jsonl and progress).
  """
  folds = object_folds(len(x), k, seed)
  rows = []
  for fold in range(k):
    train_mask, val_mask = fold_masks(data.triplets, folds, fold)
    if not train_mask.any() or not val_mask.any():
      raise ValueError(
        f"fold {fold} has {train_mask.sum()} training and {val_mask.sum()} validation triplets"
      )
    train, val = data.select(train_mask), data.select(val_mask)
    mean, std = model.standardization(x[used_objects(train.triplets)])
    for point in points:
      hparams = Hyperparams(**{**base.__dict__, **point})
      fitter = make_fitter(x, mean, std, hparams)
      params, _ = fitter.fit(train)
      row = {
        "fold": fold,
        **point,
        "n_train": int(train_mask.sum()),
        "n_val": int(val_mask.sum()),
        **{f"train_{k}": v for k, v in fitter.evaluate(params, train).items()},
        **{f"val_{k}": v for k, v in fitter.evaluate(params, val).items()},
      }
      rows.append(row)
      if on_result:
        on_result(row)
  summary = []
  for point in points:
    mine = [r for r in rows if r["lam"] == point["lam"] and r["learning_rate"] == point["learning_rate"]]
    summary.append(
      {
        **point,
        "val_loss": float(np.mean([r["val_loss"] for r in mine])),
        "val_accuracy": float(np.mean([r["val_accuracy"] for r in mine])),
      }
    )
  best = min(summary, key=lambda s: s["val_loss"])
  return rows, {"best": best, "summary": summary}
