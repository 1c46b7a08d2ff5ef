"""`extract(config, workdir)`: embed the items of a source with a backbone into an embedding store.

Resumable: the store's shards are written atomically in item order, and a rerun with the same
config skips the complete ones. For THINGS sources it also writes `workdir/embeddings.npy`
([1854, d], sorted order), which `experiments.evaluate` and `experiments.teacher` take directly.

Sources so far: `things_words` (the 1,854 THINGS concepts as text from a template such as `{word}`
or `{word}: {definition}`). Image sources are the open part of the backbones issue.
"""

from __future__ import annotations

import os
import pathlib

import ml_collections
import numpy as np

from aligned import artifacts
from aligned.backbones import load_text_backbone
from aligned.data import things
from aligned.data.embeddings import save_embeddings
from aligned.embedding_store import EmbeddingStore
from aligned.progress import Progress

SOURCES = ("things_words",)


def things_texts(template: str) -> tuple[np.ndarray, list[str]]:
  """(concept ids, texts) of the 1,854 THINGS concepts in sorted order, from a template with the
  fields {word}, {id}, {definition}."""
  concepts = things.load_concepts()
  try:
    texts = [
      template.format(word=w, id=i, definition=d)
      for w, i, d in zip(concepts.words, concepts.ids, concepts.definitions, strict=True)
    ]
  except (KeyError, IndexError) as e:
    raise ValueError(
      f"template {template!r} uses an unknown field {e}; known: word, id, definition"
    ) from None
  return np.asarray(concepts.ids), texts


def extract(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  workdir = pathlib.Path(workdir)
  if config.source not in SOURCES:
    raise ValueError(f"unknown source {config.source!r}; supported: {', '.join(SOURCES)}")
  ids, texts = things_texts(config.template)
  encoder = load_text_backbone(config.backbone, config.checkpoint)
  store = EmbeddingStore(workdir / "store")
  store.open(
    {
      "backbone": config.backbone,
      "checkpoint": str(encoder.checkpoint),
      "layer": "mean-pooled last hidden state, L2-normalised",
      "preprocessing": {"template": config.template, "max_length": encoder.max_length},
      "dtype": "float32",
      "dim": encoder.dim,
      "n_items": len(ids),
      "shard_size": config.shard_size,
      "source": config.source,
    }
  )
  artifacts.write_json(workdir / "config.json", config.to_dict())
  todo = store.missing_shards()
  progress = Progress(len(ids), "items")
  done = sum(
    min(config.shard_size, len(ids) - k * config.shard_size) for k in set(range(store.n_shards)) - set(todo)
  )
  for shard in todo:
    lo, hi = shard * config.shard_size, min((shard + 1) * config.shard_size, len(ids))
    store.write_shard(shard, ids[lo:hi], encoder.encode(texts[lo:hi], config.batch_size))
    done += hi - lo
    progress.update(done)
  store_ids, embeddings = store.read()
  if not np.array_equal(store_ids, ids):
    raise RuntimeError(f"{store.root}: the store's ids are not the source's item order")
  save_embeddings(workdir / "embeddings.npy", embeddings)  # sorted THINGS order, for evaluate/teacher
  results = {
    "store": str(store.root),
    "embeddings": str(workdir / "embeddings.npy"),
    "n_items": len(ids),
    "dim": int(embeddings.shape[1]),
    "shards_written": len(todo),
    "shards_total": store.n_shards,
  }
  artifacts.write_json(workdir / "results.json", results)
  return results


def format_results(results: dict) -> str:
  return (
    f"{results['n_items']:,} items x {results['dim']} in {results['store']} "
    f"({results['shards_written']} of {results['shards_total']} shards written this run); "
    f"embeddings: {results['embeddings']}"
  )
