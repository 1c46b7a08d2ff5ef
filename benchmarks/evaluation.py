"""How long evaluation takes: odd-one-out accuracy on 4.7 M THINGS-sized triplets, and a full report.

  python -m benchmarks.evaluation [--triplets=4700000] [--skip_report]

Prints (never asserts) seconds for:
1. reading a 4.7 M-line `odd_last` file over 1,854 objects, the pair similarities of all triplets
   (similarity matrix once, then gathers) and the accuracy, per category too; the uncertainty metrics
   (5-fold temperature search) on the same triplets;
2. a full report for three models on the shared data (SPoSE 49-d dot, SPoSE cosine, random 384-d):
   three `experiments.evaluate` commands and one `experiments.report`, each a fresh process, as a
   user runs them.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from aligned import metrics, uncertainty
from aligned.data import things
from aligned.data import triplets as triplets_io
from aligned.data.cache import data_dir
from aligned.triplet_similarities import triplet_similarities

_TRIPLETS = flags.DEFINE_integer("triplets", 4_700_000, "triplets in the large file")
_SKIP_REPORT = flags.DEFINE_bool("skip_report", False, "only the large-file figures")

REPO = pathlib.Path(__file__).resolve().parents[1]


def _timed(label: str, fn):
  start = time.perf_counter()
  out = fn()
  print(f"  {label:<52s} {time.perf_counter() - start:7.2f} s", flush=True)
  return out


def large_file(folder: pathlib.Path) -> None:
  n = _TRIPLETS.value
  spose = np.loadtxt(data_dir() / "things" / "spose_embedding_49d_sorted.txt").astype(np.float32)
  rng = np.random.default_rng(0)
  items = rng.integers(0, things.N_OBJECTS, size=(2 * n, 3))
  items = items[(items[:, 0] != items[:, 1]) & (items[:, 0] != items[:, 2]) & (items[:, 1] != items[:, 2])][
    :n
  ]
  path = folder / "triplets.txt"
  np.savetxt(path, items, fmt="%d")
  print(
    f"{n:,} triplets over {things.N_OBJECTS} objects ({path.stat().st_size / 1e6:.0f} MB file), SPoSE 49-d:"
  )
  human = _timed("read_triplets (parse + unique + counts)", lambda: triplets_io.read_triplets(path))
  sims = _timed("pair similarities (compile + run)", lambda: triplet_similarities(spose, human.triplets))
  sims = _timed("pair similarities (compiled)", lambda: triplet_similarities(spose, human.triplets))
  summary = _timed("accuracy + 95 % interval", lambda: metrics.accuracy_summary(sims, human.counts))
  concepts = things.load_concepts()
  _timed(
    "accuracy per category (27 + mixed)",
    lambda: metrics.per_category_accuracy(
      sims, human.counts, human.triplets, concepts.categories, concepts.category_names
    ),
  )
  _timed(
    "uncertainty (5-fold temperature, KL, ECE)",
    lambda: uncertainty.uncertainty_alignment(sims, human.counts, folds=5),
  )
  print(f"  accuracy {100 * summary['accuracy']:.2f} % on {human.n_responses:,} responses")


def full_report(folder: pathlib.Path) -> None:
  things_dir = data_dir() / "things"
  rng = np.random.default_rng(0)
  np.save(folder / "random384.npy", rng.normal(size=(things.N_OBJECTS, 384)).astype(np.float32))
  models = [
    ("spose_dot", [f"--config.embeddings={things_dir / 'spose_embedding_49d_sorted.txt'}"]),
    ("spose_cosine", ["--config.similarity=cosine"]),
    ("random384", [f"--config.embeddings={folder / 'random384.npy'}"]),
  ]
  env = dict(os.environ, JAX_PLATFORMS="cpu")

  def run(args):
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
      raise RuntimeError(done.stderr)

  print("Full report for three models on the shared data (each command a fresh process):")
  start = time.perf_counter()
  for name, overrides in models:
    _timed(
      f"experiments.evaluate {name}",
      lambda name=name, overrides=overrides: run(
        [
          "experiments.evaluate",
          "--config=configs/evaluate.py:spose",
          f"--workdir={folder / name}",
          *overrides,
        ]
      ),
    )
  runs = ",".join(str(folder / name) for name, _ in models)
  _timed(
    "experiments.report",
    lambda: run(
      [
        "experiments.report",
        "--config=configs/report.py",
        f"--config.runs={runs}",
        f"--workdir={folder / 'R'}",
      ]
    ),
  )
  print(
    f"  total {time.perf_counter() - start:.1f} s on {os.cpu_count()} cores; report: {folder / 'R' / 'report.md'}"
  )


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    large_file(pathlib.Path(tmp))
    if not _SKIP_REPORT.value:
      full_report(pathlib.Path(tmp))


if __name__ == "__main__":
  app.run(main)
