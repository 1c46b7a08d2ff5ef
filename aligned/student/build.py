"""A student run built from its config: everything `finetune` needs, checked before any training.

`build_run(config, workdir)`: mesh -> backbone + triplet head -> item source (what the files'
indices point into) -> AligNet rows -> optimiser (Adam, decay to init, warmup-cosine) -> `Trainer` ->
evaluators (validation files, human triplets) -> orbax checkpoint manager. A workdir that holds a run
with other settings (`RESUME_KEYS`) is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath

from aligned import artifacts, distributed, evaluators, odd_one_out, paths, provenance, uncertainty
from aligned.backbones import build_backbone
from aligned.backbones.student import ARCHITECTURE_FILE, Student, architecture, checkpoint_folder
from aligned.data import items as item_sources
from aligned.data import things
from aligned.data import triplets as triplets_io
from aligned.data.alignet_files import alignet_path, read_alignet
from aligned.data.image_cache import ImageCache, check_image_cache
from aligned.errors import DataError
from aligned.student import data as student_data
from aligned.student.evaluators import HumanEvaluator, ValidationEvaluator, embed_items
from aligned.student.optimizer import make_optimizer, warmup_cosine
from aligned.student.trainer import LOSSES, Trainer

# Settings that change the trained parameters: a resumed run must have the same ones.
RESUME_KEYS = (
  "backbone",
  "checkpoint",
  "random_backbone",
  "head_dim",
  "train",
  "data",
  "loss",
  "tau",
  "optimizer",
  "batch_size",
  "steps",
  "seed",
  "dtype",
)
# Settings of `config.data` that change how inputs are read, not what they are (an image cache holds the
# decode path's pixels bit for bit; tfds_ids only names the records read by index): a resumed run may
# change them.
INPUT_ONLY = ("workers", "prefetch", "image_cache", "loader", "grain_workers", "tfds_ids")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class Run:
  """One student run, built and checked: the trainer, its data, its evaluators and checkpoints."""

  config: ml_collections.ConfigDict
  workdir: epath.Path
  trainer: Trainer
  tau: float  # the loss temperature in use (config.tau, or fitted when it is 0)
  schedule: optax.Schedule
  items: object  # the item source of the AligNet files' indices
  train_rows: student_data.TripletRows
  order: student_data.BatchOrder
  validation: list[evaluators.Evaluator]  # ValidationEvaluator per val file: run(params) -> dict
  human: HumanEvaluator | None
  checkpoints: ocp.CheckpointManager


def build_items(config, backbone, kind: str):
  """The item source the triplet indices point into."""
  d = config.data
  if d.source == "synthetic":
    return item_sources.SyntheticImages(d.synthetic.n_items, d.synthetic.image_size, seed=d.synthetic.seed)
  if d.source in item_sources.TEXT_SOURCES:
    if kind != "text":
      raise ValueError(f"data.source={d.source} needs a text backbone (e.g. minilm)")
    ids, texts = item_sources.text_source(d.source, d.template, d.get("wordnet"))
    check_item_ids(alignet_path(d.root, d.transform, "val", d.samplings[0]), ids)
    return item_sources.TextItems(texts, backbone)
  if d.source == "tfds":
    if kind != "image":
      raise ValueError("data.source=tfds needs an image backbone")
    size = d.image_size or backbone.image_size
    normalization = d.normalization if d.preprocessing == "backbone" else "none"
    source = item_sources.TfdsSource(
      d.tfds_name, d.tfds_split, d.tfds_data_dir, ids=d.get("tfds_ids", "file_name")
    )
    if d.get("image_cache"):  # the same records already resized: only /255 and the normalisation left
      cache = ImageCache(d.image_cache)
      check_image_cache(cache, source.description(), size)
      cache.verify()  # the first batches touch nearly every shard; loader processes inherit the check
      return item_sources.ImageItems(cache, size, normalization, workers=d.workers, resized=True)
    return item_sources.ImageItems(source, size, normalization, workers=d.workers)
  raise ValueError(
    f"unknown data.source {d.source!r}; expected tfds, synthetic or one of {item_sources.TEXT_SOURCES}"
  )


def decay_rate(optimizer_config, steps: int) -> float:
  """Decay-to-init's rate: `decay_to_init`, or from `decay_strength` when that is > 0.

  The pull toward the initial parameters has time constant 1 / (rate * lr) steps, so what it does
  depends on the run's length: the release's rate 1.0 at peak lr 3e-5 over 100 k steps has strength
  rate * lr * steps = 3 (its time constant, 33 k steps, is a third of the run). `decay_strength = 3`
  keeps that ratio for any length and learning rate: rate = strength / (lr * steps).
  """
  if optimizer_config.get("decay_strength", 0.0) > 0:
    return optimizer_config.decay_strength / (optimizer_config.learning_rate * steps)
  return optimizer_config.decay_to_init


def check_item_ids(path: epath.Path, ids: np.ndarray) -> None:
  """Refuses AligNet files made over other items: their file names must be `ids` at their indices
  (e.g. a store of other WordNet nouns, or of another template's item order)."""
  if not path.exists():
    return
  triplets = read_alignet(path, n_images=len(ids))
  wrong = np.flatnonzero((ids[triplets.indices] != triplets.filenames).any(axis=1))
  if len(wrong):
    row = int(wrong[0])
    raise DataError(
      path,
      f"file names {list(triplets.filenames[row])} are not this source's items "
      f"{list(ids[triplets.indices[row]])} at indices {list(triplets.indices[row])}: the files were "
      "generated from another item set (check data.source and its settings)",
      row=row + 1,
    )


def things_items(config, backbone, kind: str):
  """The 1,854 THINGS objects as student inputs (sorted order), or None when they cannot be made."""
  h = config.human_eval
  if not h.triplets:
    return None
  if kind == "text":
    return item_sources.TextItems(item_sources.things_texts(h.template or config.data.template)[1], backbone)
  if h.image_folder:  # one image per THINGS concept, named by its id: item i = concept i (sorted order)
    paths = item_sources.image_folder_items(h.image_folder)
    order = things.one_image_per_concept(paths, where=h.image_folder)
    source = item_sources.ImageFolderSource(h.image_folder, ids=paths[order])
    size = config.data.image_size or backbone.image_size
    return item_sources.ImageItems(source, size, "none", workers=config.data.workers)
  return None


def resolve_data(config, workdir: epath.Path) -> ml_collections.ConfigDict:
  """`config.data` with its AligNet root; the smoke task first writes its own synthetic files."""
  d = config.data
  if d.source != "synthetic" or d.root:
    if not d.root:
      raise ValueError("set --config.data.root to a folder of AligNet files (aligned-generate)")
    return d
  d = ml_collections.ConfigDict(d.to_dict())
  root = workdir / "synthetic_alignet"
  written_last = alignet_path(root, "uncertainty_distillation", "train", "synthetic")
  if jax.process_index() == 0 and not written_last.exists():
    source = item_sources.SyntheticImages(d.synthetic.n_items, d.synthetic.image_size, seed=d.synthetic.seed)
    source.write_alignet(root, d.synthetic.n_train, d.synthetic.n_val, seed=d.synthetic.seed)
  distributed.barrier("synthetic data")
  d.root, d.samplings, d.transform = str(root), ("synthetic",), "uncertainty_distillation"
  return d


def _compared(settings: dict) -> dict:
  kept = {k: settings.get(k) for k in RESUME_KEYS}
  kept["data"] = {k: v for k, v in (kept["data"] or {}).items() if k not in INPUT_ONLY}
  return kept


# what a run writes into its workdir: `restart=True` deletes these (and the run's checkpoint folder)
OWNED = (
  "config.json",
  ARCHITECTURE_FILE,
  "tau.json",
  "metrics.jsonl",
  "results.json",
  "plots",
  "things_embeddings.npy",
  "item_embeddings.npy",
  "synthetic_alignet",
  "checkpoints",
)


def start_over(workdir: epath.Path) -> list[str]:
  """`restart=True`: deletes the run in `workdir` (its files and the checkpoint folder its config.json
  names, which may lie elsewhere), only where provenance.json shows finetune wrote them."""
  checkpoints = checkpoint_folder(workdir)  # the old run's, from its config.json
  deleted = provenance.start_over(workdir, "finetune", OWNED)
  if deleted and checkpoints.exists():
    paths.rmtree(checkpoints)
  return deleted


def check_inputs(workdir: epath.Path, config, train_files, validation, weights) -> None:
  """provenance.json: the run's settings and the sha256 of every AligNet file and of the backbone's
  weights (a local file or folder); a rerun whose files changed at the same paths is refused, naming
  them. The item source is checked through the files' ids (`check_item_ids`)."""
  inputs = {f"train {path.name}": path for path in train_files}
  inputs |= {f"val {name}": path for name, path in validation}
  if weights is not None:  # the backbone's weights folder (its default one when config.checkpoint is "")
    inputs["checkpoint"] = weights
  provenance.check_or_record(
    workdir,
    "finetune",
    _compared(config.to_dict()),
    inputs,
    write=jax.process_index() == 0,
    remedy="use a new --workdir or --config.restart=True",
  )


def check_resume(workdir: epath.Path, config, write: bool = True) -> None:
  """Refuses a workdir whose config.json has other `RESUME_KEYS`; writes config.json otherwise (unless
  `write` is False: the caller writes it once its other checks pass)."""
  path = workdir / "config.json"
  current = _compared(config.to_dict())
  if path.exists():
    before = _compared(json.loads(path.read_text()))
    if json.loads(json.dumps(before)) != json.loads(json.dumps(current)):
      changed = [k for k in RESUME_KEYS if json.dumps(before[k]) != json.dumps(current[k])]
      raise ValueError(
        f"{workdir} holds a run with other settings ({', '.join(changed)}); use a new --workdir or "
        "--config.restart=True"
      )
  if write and jax.process_index() == 0:
    artifacts.write_json(path, config.to_dict())


def checkpoint_manager(folder: epath.Path, keep: int = 3, use_async: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, enable_async_checkpointing=use_async, cleanup_tmp_directories=True
  )
  return ocp.CheckpointManager(folder, options=options)


def _human_evaluator(config, trainer: Trainer, backbone, kind: str) -> HumanEvaluator | None:
  objects = things_items(config, backbone, kind)
  if objects is None:
    return None
  h = config.human_eval
  human = triplets_io.read_triplets(
    h.triplets, h.format, n_objects=len(objects), index_base=h.get("index_base")
  )
  embed = functools.partial(embed_items, trainer, items=objects, batch_size=config.batch_size)
  return HumanEvaluator(evaluators.HumanTripletEvaluator(human, embed, "dot"))


def fit_tau(student: Student, seed: int, items, rows: student_data.TripletRows, n: int = 512) -> float:
  """The student's tau when `config.tau` is 0: the temperature at which the student *at initialisation*
  best predicts the targets of `n` validation triplets (the same 1-D fit as the teacher's T).

  The release's tau = 100 suits SigLIP-like features with large norms; for a unit-norm backbone such
  as MiniLM, dot products of head outputs are O(1), softmax(d / 100) is flat and the student cannot
  express the teacher's confidence until its head has grown a hundredfold. Fitting tau once, before
  the first step, puts the student's choice model on the targets' scale from the start.
  """
  params = jax.jit(student.init)(jax.random.key(seed))
  batch = student_data.load_batch(rows, items, np.arange(min(n, len(rows))))
  embed = jax.jit(student.triplet_embed)
  sims = np.asarray(odd_one_out.pair_similarities(embed(params, batch["inputs"]), "dot"))
  targets = np.asarray(jax.nn.softmax(jnp.asarray(batch["targets"]), axis=-1))
  return uncertainty.fit_temperature(sims, targets)


def _tau(config, workdir: epath.Path, student: Student, items, validation_file: epath.Path) -> float:
  """`config.tau`, or (when 0) the fitted tau, kept in workdir/tau.json so that a resumed run uses it."""
  if config.tau > 0:
    return float(config.tau)
  path = workdir / "tau.json"
  if path.exists():
    return float(json.loads(path.read_text())["tau"])
  if not validation_file.exists():
    raise DataError(validation_file, "tau = 0 (fit) needs the validation file of the first sampling")
  tau = fit_tau(student, config.seed, items, student_data.TripletRows([validation_file], n_items=len(items)))
  distributed.barrier("tau fitted")
  if jax.process_index() == 0:
    artifacts.write_json(path, {"tau": tau, "fit_on": str(validation_file)})
  return tau


def validation_files(config) -> list[tuple[str, epath.Path]]:
  """(name, path) of every validation file the run evaluates on: `val_{sampling}.npz` of each of
  `data.samplings` under the run's own labels (`data.transform`; name = the sampling) and under each
  label set of `eval.transforms` (name = `sampling@transform`). A missing one is a DataError naming
  it, never skipped: a run whose metrics silently lack a sampling looks like one that has them all."""
  d = config.data
  files = []
  for transform in dict.fromkeys((d.transform, *config.eval.transforms)):
    paths = student_data.alignet_files(d.root, transform, "val", d.samplings)
    for sampling, path in zip(d.samplings, paths, strict=True):
      if transform == d.transform:
        name, why = sampling, f"the validation file of sampling {sampling} (data.samplings) is missing"
      else:
        name = f"{sampling}@{transform}"
        why = (
          f"the validation file of sampling {sampling} under the eval.transforms label set {transform} is "
          f"missing; generate it, or leave {transform} out of --config.eval.transforms"
        )
      if not path.exists():
        raise DataError(path, why)
      files.append((name, path))
  return files


def build_run(config: ml_collections.ConfigDict, workdir: epath.Path) -> Run:
  """Everything a run needs, from its config (see the module docstring). Sets `config.data.root` (and
  samplings) of the smoke task to the synthetic files it writes, so config.json records them."""
  if config.loss not in LOSSES:
    raise ValueError(f"unknown loss {config.loss!r}; expected one of {tuple(LOSSES)}")
  if config.batch_size % jax.device_count():
    raise ValueError(f"batch_size {config.batch_size} is not a multiple of the {jax.device_count()} devices")
  workdir.mkdir(parents=True, exist_ok=True)
  d = config.data = resolve_data(config, workdir)
  validation_files(config)  # all there before anything is built

  mesh = distributed.make_mesh(config.mesh.data, config.mesh.fsdp)
  random_config = config.random_backbone.to_dict() if config.random_backbone else None
  backbone, kind = build_backbone(config.backbone, config.checkpoint, random_config, seed=config.seed)
  student = Student(backbone, kind, config.head_dim, config.train, DTYPES[config.dtype])
  items = build_items(config, backbone, kind)
  train_files = student_data.alignet_files(d.root, d.transform, "train", d.samplings)
  train_rows = student_data.TripletRows(train_files, n_items=len(items))
  val_rows = [  # every AligNet file read (and checked) before config.json or backbone.json is written
    (name, student_data.TripletRows([p], n_items=len(items), limit=config.eval.max_triplets))
    for name, p in validation_files(config)
  ]
  check_resume(workdir, config, write=False)
  weights = None if config.random_backbone else getattr(backbone, "checkpoint", None)
  check_inputs(workdir, config, train_files, validation_files(config), weights)
  if jax.process_index() == 0:  # both checks passed: the settings this run goes on with
    artifacts.write_json(workdir / "config.json", config.to_dict())
  if jax.process_index() == 0 and (arch := architecture(backbone)) is not None:
    # what reading the run back needs (aligned.backbones.student.StudentEncoder), without the checkpoint
    artifacts.write_json(workdir / ARCHITECTURE_FILE, {"backbone": config.backbone, "architecture": arch})

  o = config.optimizer
  schedule = warmup_cosine(o.learning_rate, config.steps, o.warmup_steps)
  optimizer = make_optimizer(
    learning_rate=schedule,
    decay_rate=decay_rate(o, config.steps),
    b1=o.b1,
    b2=o.b2,
    eps=o.eps,
    clip_norm=o.clip_norm,
    trainable=student.trainable_mask,
  )
  tau = _tau(config, workdir, student, items, alignet_path(d.root, d.transform, "val", d.samplings[0]))
  trainer = Trainer.create(
    student, optimizer, mesh, config.loss, tau, config.seed, config.mesh.get("fsdp_min_size", 1 << 14)
  )
  validation = [ValidationEvaluator(name, rows, items, trainer, config.batch_size) for name, rows in val_rows]
  c = config.checkpointing
  return Run(
    config=config,
    workdir=workdir,
    trainer=trainer,
    tau=tau,
    schedule=schedule,
    items=items,
    train_rows=train_rows,
    order=student_data.BatchOrder(len(train_rows), config.batch_size, config.seed),
    validation=validation,
    human=_human_evaluator(config, trainer, backbone, kind),
    checkpoints=checkpoint_manager(checkpoint_folder(workdir, config.to_dict()), c.keep, c.use_async),
  )
