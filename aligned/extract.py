"""`extract(config, workdir)`: embed the items of a source with a backbone into an embedding store.

Resumable: the store's shards are written atomically in item order, and a rerun with the same
config skips the complete ones. For THINGS sources it also writes `workdir/embeddings.npy`
([1854, d], sorted order), which `aligned-evaluate` and `aligned-teacher` take directly.

Sources:
- `things_words`: the 1,854 THINGS concepts as text from a template (`{word}`, `{word}: {definition}`);
- `wordnet_nouns`: concrete WordNet nouns outside THINGS (`config.wordnet`), texts from lemma and gloss,
  ids = synset ids `nXXXXXXXX`;
- `image_folder`: every image under `config.root`, ids = relative paths in sorted order;
- `things_images`: an image folder of THINGS concepts (the THINGS database layout
  `object_images/aardvark/aardvark_01b.jpg`, or one image per concept named by its id); besides the
  per-image store it writes `embeddings.npy`, the mean embedding of each concept's images in sorted
  order. Every image must belong to a concept and every concept must have an image.
- `tfds`: a tfds split prepared as array_record, item i = record i (the indices AligNet files store).

Backbone: a registered one (`config.backbone` + `config.checkpoint`, or random weights), or a trained
student (`config.student` = a finetune workdir): its head output (`student_output = "head"`, the
embedding the triplet loss trained) or its fine-tuned backbone's pooled features (`"pooled"`), with
the run's own preprocessing. So base, AligNet and UnAligNet students are embedded and evaluated alike.
Image batches are decoded and resized (uint8) by host threads ahead of the device (prefetch), sent
as uint8 (a quarter of float32's bytes), scaled and normalised on the device, sharded over the `data`
axis of a mesh of all devices, optionally computed in bfloat16. With `config.image_cache` (a cache
of `aligned-cache-images` built from the same source at the same size) the host only reads
bytes: no decoding, no resize.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from aligned import artifacts, provenance
from aligned.backbones import build_backbone, load_text_backbone
from aligned.backbones.preprocessing import NORMALIZATIONS, resize_for_model
from aligned.backbones.student import StudentEncoder
from aligned.data import things
from aligned.data.embeddings import save_embeddings
from aligned.data.image_cache import ImageCache, check_image_cache, describe_source
from aligned.data.items import TEXT_SOURCES, ImageFolderSource, TfdsSource, text_source
from aligned.distributed import data_mesh
from aligned.embedding_store import EmbeddingStore
from aligned.paths import absolute, as_path
from aligned.progress import Progress

SOURCES = (*TEXT_SOURCES, "image_folder", "things_images", "tfds")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# settings a resumed extraction may change: how the items are read and batched, not what they are
VOLATILE = ("decode_threads", "image_cache", "batch_size", "restart")
OWNED = ("store", "embeddings.npy", "config.json", "results.json")  # what restart=True deletes


class ImageEmbedder:
  """Batches of preprocessed images -> embeddings, sharded over the `data` axis of a mesh."""

  def __init__(self, config, mesh, encoder=None):
    if encoder is None:
      random_config = config.get("random_backbone")
      random_config = random_config.to_dict() if random_config else None
      encoder, _ = build_backbone(
        config.backbone, config.checkpoint, random_config, seed=config.get("seed", 0)
      )
    self.encoder = encoder
    self.mesh, self.batch_size = mesh, config.batch_size
    self.lookahead = max(2, config.get("decode_threads", 2))
    self.size, self.normalization = config.image_size or self.encoder.image_size, config.normalization
    if self.batch_size % mesh.devices.size:
      raise ValueError(f"batch_size {self.batch_size} is not a multiple of the {mesh.devices.size} devices")
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"unknown normalization {self.normalization!r}; known: {', '.join(NORMALIZATIONS)}")
    dtype = DTYPES[config.compute_dtype]
    replicated = NamedSharding(mesh, P())
    self.params = jax.device_put(jax.tree.map(lambda a: a.astype(dtype), self.encoder.params), replicated)
    self.sharding = NamedSharding(mesh, P("data"))
    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATIONS[self.normalization])

    def apply(params, images):  # uint8 -> [0, 1] -> normalised, as `preprocessing.scale_and_normalize`
      x = (images.astype(jnp.float32) / jnp.float32(255.0) - mean) / std
      return self.encoder.apply(params, x.astype(dtype))

    self._apply = jax.jit(apply)

  def prepare(self, source, indices: list[int]) -> tuple[list[str], np.ndarray]:
    """Host side: read, decode, resize (uint8); padded to the batch size (one compiled shape)."""
    ids, images = [], []
    for i in indices:
      item_id, image = source.record(i)
      ids.append(item_id)
      images.append(resize_for_model(image, self.size))
    images = np.stack(images)
    return ids, np.pad(images, ((0, self.batch_size - len(images)), (0, 0), (0, 0), (0, 0)))

  def embed(
    self, source, lo: int, hi: int, pool: concurrent.futures.Executor
  ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, [hi - lo, d] float32) of items lo..hi.

    `pool` decodes up to `lookahead` batches ahead, and batch i + 1 is dispatched to the device
    before batch i's result is fetched, so neither side waits for the other in steady state.
    """
    batches = [list(range(i, min(i + self.batch_size, hi))) for i in range(lo, hi, self.batch_size)]
    futures = [pool.submit(self.prepare, source, batch) for batch in batches[: self.lookahead]]
    ids, out, pending = [], [], None
    for i, batch in enumerate(batches):
      batch_ids, images = futures[i].result()
      if i + self.lookahead < len(batches):
        futures.append(pool.submit(self.prepare, source, batches[i + self.lookahead]))
      embedded = self._apply(self.params, jax.device_put(images, self.sharding))  # asynchronous
      if pending is not None:
        out.append(np.asarray(pending[0], np.float32)[: pending[1]])
      pending = (embedded, len(batch))
      ids.extend(batch_ids)
    out.append(np.asarray(pending[0], np.float32)[: pending[1]])
    return np.asarray(ids), np.concatenate(out)


class _Job(NamedTuple):
  """What extraction needs from a source: item count, expected ids, shard embedder, description."""

  n_items: int
  expected_ids: np.ndarray | None  # None: ids come from the records (tfds)
  embed_shard: Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # (lo, hi) -> (ids, [hi - lo, d])
  description: dict  # how the embeddings were made (the store's metadata)
  pool: concurrent.futures.Executor | None = None
  inputs: dict | None = None  # {name: path} fingerprinted in provenance.json (weights, a student run)
  source: dict | None = None  # what the records are (tfds name/split/count, an image folder's listing)
  check: Callable[[list[int]], None] | None = None  # items -> DataError if one cannot be read (headers)


def _student(config) -> StudentEncoder | None:
  """The trained student of `config.student`, or None (a registered backbone)."""
  if not config.get("student"):
    return None
  step = config.get("student_step", -1)
  return StudentEncoder(config.student, config.get("student_output", "head"), None if step < 0 else step)


def _describe_backbone(config, encoder, layer: str) -> dict:
  if isinstance(encoder, StudentEncoder):
    return {
      "backbone": f"student:{encoder.config['backbone']}",
      "checkpoint": os.fspath(absolute(encoder.checkpoint)),
      "layer": f"student {encoder.output} output",
      "student": encoder.describe(),
    }
  return {"backbone": config.backbone, "checkpoint": str(encoder.checkpoint), "layer": layer}


def _weights(encoder) -> dict:
  """{name: path} of the files the embeddings depend on: a registered backbone's weights folder, or
  the trained student's checkpoint step (random weights: none, the config and seed define them)."""
  if isinstance(encoder, StudentEncoder):
    return {"student": encoder.checkpoint, "student config": encoder.run / "config.json"}
  checkpoint = getattr(encoder, "checkpoint", None)
  return {"checkpoint": checkpoint} if checkpoint else {}


def _text_job(config) -> _Job:
  ids, texts = text_source(config.source, config.template, config.get("wordnet"))
  encoder = _student(config) or load_text_backbone(config.backbone, config.checkpoint)
  if isinstance(encoder, StudentEncoder) and encoder.kind != "text":
    raise ValueError(f"{config.student} is an image student; source {config.source} holds texts")
  mesh, dtype = data_mesh(), DTYPES[config.compute_dtype]

  def embed_shard(lo, hi):
    return ids[lo:hi], encoder.encode(texts[lo:hi], config.batch_size, mesh=mesh, dtype=dtype)

  description = {
    **_describe_backbone(config, encoder, "mean-pooled last hidden state, L2-normalised"),
    "preprocessing": {"template": config.template, "max_length": encoder.max_length},
    "dim": encoder.dim,
    "compute_dtype": config.compute_dtype,
    "root": "",
  }
  return _Job(len(ids), ids, embed_shard, description, inputs=_weights(encoder))


def _student_preprocessing(config, student: StudentEncoder):
  """The extraction config with the student run's image size and normalisation (a conflicting
  explicit setting is an error: a student is evaluated on the inputs it was trained on)."""
  if student.kind != "image":
    raise ValueError(f"{config.student} is a text student; source {config.source} holds images")
  if config.image_size and config.image_size != student.image_size:
    raise ValueError(
      f"image_size {config.image_size}: the student {config.student} reads {student.image_size}"
    )
  if config.normalization not in ("none", student.normalization):
    raise ValueError(
      f"normalization {config.normalization!r}: the student {config.student} reads {student.normalization!r}"
    )
  config = ml_collections.ConfigDict(config.to_dict())
  config.image_size, config.normalization = student.image_size, student.normalization
  return config


def _image_job(config) -> _Job:
  if config.source in ("image_folder", "things_images"):
    source, where = ImageFolderSource(config.root), str(config.root)
  else:
    source, where = (
      TfdsSource(config.tfds_name, config.split, config.data_dir, ids=config.get("tfds_ids", "file_name")),
      f"{config.tfds_name}/{config.split}",
    )
  if config.source == "things_images":  # before any work: every image of a concept, every concept
    things.image_concepts(source.ids, where=config.root)
  student = _student(config)
  if student is not None:
    config = _student_preprocessing(config, student)
  embedder = ImageEmbedder(config, data_mesh(), student)
  expected_ids = source.ids if config.source != "tfds" else None
  described = describe_source(source)  # the records, not the cache that may stand in for them
  if config.get("image_cache"):  # the same records, already resized: the host only reads bytes
    cache = ImageCache(config.image_cache)
    check_image_cache(cache, described, embedder.size)
    source = cache
  pool = concurrent.futures.ThreadPoolExecutor(max(1, config.decode_threads))
  description = {
    **_describe_backbone(config, embedder.encoder, "pooled (see aligned.backbones)"),
    "preprocessing": {
      "resize": "cubic (OpenCV INTER_CUBIC), no crop",
      "size": embedder.size,
      "normalization": config.normalization,
    },
    "dim": embedder.encoder.dim,
    "compute_dtype": config.compute_dtype,
    "root": where,
  }
  if (
    config.get("random_backbone") and student is None
  ):  # random weights: the store is defined by the config and seed
    description["random_backbone"] = {**config.random_backbone.to_dict(), "seed": config.seed}
  return _Job(
    len(source),
    expected_ids,
    lambda lo, hi: embedder.embed(source, lo, hi, pool),
    description,
    pool,
    inputs={} if config.get("random_backbone") and student is None else _weights(embedder.encoder),
    source=described,
    check=None if config.get("image_cache") else getattr(source, "check_headers", None),
  )


def extract(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Embeds the configured source into `workdir/store` (resuming), see the module docstring."""
  workdir = as_path(workdir)
  if config.source not in SOURCES:
    raise ValueError(f"unknown source {config.source!r}; supported: {', '.join(SOURCES)}")
  if config.get("restart", False) and jax.process_index() == 0:
    provenance.start_over(workdir, "extract", OWNED)
  job = _text_job(config) if config.source in TEXT_SOURCES else _image_job(config)
  n_items, expected_ids, embed_shard, description, pool = job[:5]
  store = EmbeddingStore(workdir / "store")
  if job.check is not None:  # before anything is written: every image still to embed has a readable header
    size = config.shard_size
    pending = [k for k in range(-(-n_items // size)) if not store.is_complete(k)]
    job.check([i for k in pending for i in range(k * size, min((k + 1) * size, n_items))])
  # the settings, the weights' sha256 and the records' description: a rerun on other weights or another
  # folder at the same paths is refused before a shard of the old store is reused
  provenance.check_or_record(
    workdir,
    "extract",
    {**config.to_dict(), "source_records": job.source or {}},
    job.inputs or {},
    volatile=VOLATILE,
    write=jax.process_index() == 0,
  )
  store.open(
    {
      **description,
      "dtype": config.store_dtype,
      "n_items": n_items,
      "shard_size": config.shard_size,
      "source": config.source,
    }
  )
  artifacts.write_json(workdir / "config.json", config.to_dict())
  todo = store.missing_shards()
  progress = Progress(n_items, "items")
  done = sum(
    min(config.shard_size, n_items - k * config.shard_size) for k in set(range(store.n_shards)) - set(todo)
  )
  try:
    for shard in todo:
      lo, hi = shard * config.shard_size, min((shard + 1) * config.shard_size, n_items)
      store.write_shard(shard, *embed_shard(lo, hi))
      done += hi - lo
      progress.update(done)
  finally:
    if pool is not None:
      pool.shutdown(cancel_futures=True)
  store_ids, embeddings = store.read()
  if expected_ids is not None and not np.array_equal(store_ids, expected_ids):
    raise RuntimeError(f"{store.root}: the store's ids are not the source's item order")
  results = {
    "store": str(store.root),
    "n_items": n_items,
    "dim": int(embeddings.shape[1]),
    "shards_written": len(todo),
    "shards_total": store.n_shards,
    "embeddings": None,
  }
  if config.source == "things_words":
    save_embeddings(workdir / "embeddings.npy", embeddings)  # sorted THINGS order, for evaluate/teacher
    results["embeddings"] = str(workdir / "embeddings.npy")
  elif config.source == "things_images":
    means, counts = things.concept_means(store_ids, embeddings, where=config.root)
    save_embeddings(workdir / "embeddings.npy", means)
    results["embeddings"] = str(workdir / "embeddings.npy")
    results["images_per_concept"] = {"min": int(counts.min()), "max": int(counts.max())}
  artifacts.write_json(workdir / "results.json", results)
  return results


def format_results(results: dict) -> str:
  line = (
    f"{results['n_items']:,} items x {results['dim']} in {results['store']} "
    f"({results['shards_written']} of {results['shards_total']} shards written this run)"
  )
  return line + (f"; embeddings: {results['embeddings']}" if results["embeddings"] else "")
