"""The image demo's stand-in for people: odd-one-out judgments that follow the class labels.

A "person" sees two images of one class and one of another (another colour or shape kind) and picks
the image of the other class as the odd one out. `simulate_people` writes a training file for the
teacher and a held-out file for evaluation that share no triplet, both in the `odd_last` format
(`i j k` a line, the odd one out last, 0-based item indices into the store).
"""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np

from aligned import artifacts
from aligned.data.class_labels import labels_from_ids
from aligned.embedding_store import EmbeddingStore
from aligned.sampling import sample_triplets

TRAIN_FILE, EVAL_FILE, EMBEDDINGS_FILE = "train_triplets.txt", "eval_triplets.txt", "item_embeddings.npy"


def label_triplets(labels, n: int, seed: int, exclude=None) -> np.ndarray:
  """[n, 3] triplets, odd one out last: two items with one label and one with another."""
  labels = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)
  triplets = sample_triplets("class_border", n, seed, len(labels), labels, exclude=exclude)
  t = labels[triplets]
  odd = np.where(t[:, 0] == t[:, 1], 2, np.where(t[:, 0] == t[:, 2], 1, 0))
  order = np.stack([np.delete(np.arange(3), k) for k in range(3)])[odd]  # the two of one class
  return np.concatenate([np.take_along_axis(triplets, order, 1), triplets[np.arange(n), odd][:, None]], 1)


def read_hierarchy(path: str | pathlib.Path) -> dict[str, str]:
  """synset -> superclass from a `synset  class  superclass` file with one header row."""
  superclass_of = {}
  for line in pathlib.Path(path).read_text().splitlines()[1:]:
    synset, _, superclass = line.split("\t")
    superclass_of[synset] = superclass
  return superclass_of


def _write_triplets(path: pathlib.Path, triplets) -> None:
  with artifacts.atomic_path(path) as tmp:
    tmp.write_text("".join(f"{i} {j} {k}\n" for i, j, k in triplets))


def simulate_people(config: ml_collections.ConfigDict, folder: pathlib.Path) -> dict:
  """Reads the base store (`config.store`), writes its embeddings and the two triplet files.

  Config: store, hierarchy (the shapes' hierarchy.tsv), n_eval_triplets, n_teacher_triplets, seed.
  """
  ids, x = EmbeddingStore(config.store).read()
  artifacts.save_npy(folder / EMBEDDINGS_FILE, x.astype(np.float32))
  labels = labels_from_ids(ids, config.store)
  held_out = label_triplets(labels.labels, config.n_eval_triplets, config.seed)
  train = label_triplets(labels.labels, config.n_teacher_triplets, config.seed + 1, exclude=held_out)
  _write_triplets(folder / EVAL_FILE, held_out)
  _write_triplets(folder / TRAIN_FILE, train)
  superclass_of = read_hierarchy(config.hierarchy)
  n_kinds = len({superclass_of[labels.names[k]] for k in labels.labels})
  results = {"items": f"{len(ids)} shapes images ({n_kinds} shape kinds)", "n_items": len(ids)}
  artifacts.write_json(folder / "results.json", results)
  return results
