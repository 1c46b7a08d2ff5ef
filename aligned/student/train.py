"""Fine-tune a student on AligNet triplets: `finetune(config, workdir)` (what experiments.finetune runs).

  mesh (data[, fsdp]) -> student (backbone + triplet head) -> optimiser (Adam, decay to init,
  warmup-cosine) -> state restored from the last orbax checkpoint, if any -> jitted step with donated
  state over batches that are a function of (seed, step) -> evaluations, checkpoints, metrics.jsonl
  -> results.json (+ things_embeddings.npy when the THINGS objects can be embedded).

Loss (DESIGN.md): predictions `softmax(d / tau)` of raw dot products `d` of head outputs, `tau = 100`;
targets `softmax(similarities)` of the file's similarities, no temperature. `jsd` (default), `kl`
(KL(targets || predictions)) or `contrastive` (hard label: pair (0, 1) is the most similar).

Faults. SIGTERM: the run writes a checkpoint at the current step and exits (status "preempted");
rerunning the same command resumes. After kill -9, the same command resumes from the last complete
checkpoint (orbax writes to a temporary folder and renames) and ends with the parameters of an
uninterrupted run. A step whose loss or gradient is not finite is not applied; the run stops with
the step and its triplets (file, row) named, and no checkpoint after the last good step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aligned import artifacts, odd_one_out, plots
from aligned.data import triplets as triplets_io
from aligned.errors import DataError
from aligned.evaluate import triplet_metrics
from aligned.progress import Progress
from aligned.student import data as student_data
from aligned.student.model import Student
from aligned.student.optimizer import make_optimizer, warmup_cosine
from aligned.triplet_similarities import triplet_similarities

LOSSES = ("jsd", "kl", "contrastive")
# Settings that change the trained parameters: a resumed run must have the same ones.
_RESUME_KEYS = (
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


# ------------------------------------------------------------------------------------------------
# Mesh and shardings
# ------------------------------------------------------------------------------------------------


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
  """A (data, fsdp) mesh over all devices; -1 takes what the other axis leaves."""
  n = jax.device_count()
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"fsdp={fsdp} does not divide the {n} devices")
  data = n // fsdp if data == -1 else data
  if data * fsdp != n:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} != {n} devices")
  devices = np.asarray(jax.devices()).reshape(data, fsdp)
  return Mesh(devices, ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = 1 << 14) -> P:
  """Shards the largest dimension divisible by `fsdp` over `fsdp` (arrays of >= min_size elements)."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      return P(*([None] * dim + ["fsdp"]))
  return P()


def state_shardings(abstract_state, mesh: Mesh):
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape, fsdp)), abstract_state)


BATCH_AXES = ("data", "fsdp")  # batches are split over every device


# ------------------------------------------------------------------------------------------------
# Loss and steps
# ------------------------------------------------------------------------------------------------


def triplet_loss(sims: jax.Array, targets: jax.Array, loss: str, tau: float) -> jax.Array:
  """Per-triplet loss of `[b, 3]` raw dot products against `[b, 3]` target similarities."""
  if loss == "jsd":
    return odd_one_out.jensen_shannon_divergence(sims, target_sims=targets, temperature=tau)
  if loss == "kl":
    return odd_one_out.kl_divergence(sims, target_sims=targets, temperature=tau)
  if loss == "contrastive":
    return odd_one_out.contrastive_loss(sims, temperature=tau)
  raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


@dataclasses.dataclass
class Trainer:
  """The compiled pieces of one run: initial state, train step and evaluation step."""

  student: Student
  optimizer: optax.GradientTransformation
  mesh: Mesh
  loss: str = "jsd"
  tau: float = 100.0

  def __post_init__(self):
    self.batch_sharding = NamedSharding(self.mesh, P(BATCH_AXES))
    self.replicated = NamedSharding(self.mesh, P())

  def _init(self, rng):
    params = self.student.init(rng)
    return {
      "step": jnp.zeros((), jnp.int32),
      "bad_step": jnp.full((), -1, jnp.int32),  # first step whose update was not finite
      "params": params,
      "opt_state": self.optimizer.init(params),
    }

  def abstract_state(self, seed: int):
    """The state's shapes, dtypes and shardings (sets `state_sharding`), without computing it."""
    abstract = jax.eval_shape(self._init, jax.random.key(seed))
    self.state_sharding = state_shardings(abstract, self.mesh)
    return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.state_sharding
    )

  def init_state(self, seed: int):
    self.abstract_state(seed)
    return jax.jit(self._init, out_shardings=self.state_sharding)(jax.random.key(seed))

  def _losses(self, params, inputs, targets):
    z = self.student.triplet_embed(params, inputs)
    sims = odd_one_out.pair_similarities(z, "dot")
    return triplet_loss(sims, targets, self.loss, self.tau), sims

  def _train_step(self, state, batch):
    def mean_loss(params):
      per, sims = self._losses(params, batch["inputs"], batch["targets"])
      return jnp.mean(per), sims

    (loss, sims), grads = jax.value_and_grad(mean_loss, has_aux=True)(state["params"])
    updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
    new_state = {
      "step": state["step"] + 1,
      "bad_step": jnp.where((state["bad_step"] < 0) & ~ok, state["step"], state["bad_step"]),
      "params": keep(params, state["params"]),
      "opt_state": keep(opt_state, state["opt_state"]),
    }
    metrics = {
      "loss": loss,
      "accuracy": jnp.mean(odd_one_out.odd_one_out_correct(sims)),
      "grad_norm": grad_norm,
    }
    return new_state, metrics

  def compile(self):
    self.train_step = jax.jit(
      self._train_step,
      donate_argnums=0,
      in_shardings=(self.state_sharding, self.batch_sharding),
      out_shardings=(self.state_sharding, self.replicated),
    )

    def eval_step(params, inputs, targets, weights):
      per, sims = self._losses(params, inputs, targets)
      correct = odd_one_out.odd_one_out_correct(sims)
      return jnp.sum(per * weights), jnp.sum(correct * weights)

    self.eval_step = jax.jit(eval_step, out_shardings=self.replicated)
    self.embed = jax.jit(self.student.embed, out_shardings=self.replicated)

  def put(self, local):
    """This process's rows (an array or a tree of them) -> global arrays sharded over every device."""
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x)), local
    )

  def put_batch(self, local: dict) -> dict:
    return {"inputs": self.put(local["inputs"]), "targets": self.put(local["targets"])}


# ------------------------------------------------------------------------------------------------
# Evaluations
# ------------------------------------------------------------------------------------------------


def _process_slice(n: int) -> slice:
  per = n // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def evaluate_rows(trainer: Trainer, params, rows, items, batch_size: int) -> dict:
  """Mean loss and triplet accuracy (the file's most similar pair strictly the student's) on rows."""
  n, loss_sum, correct_sum = len(rows), 0.0, 0.0
  for start in range(0, n, batch_size):
    ids = np.arange(start, start + batch_size)
    weights = (ids < n).astype(np.float32)
    ids = np.minimum(ids, n - 1)
    mine = _process_slice(batch_size)
    local = student_data.load_batch(rows, items, ids[mine])
    batch = trainer.put_batch(local)
    loss, correct = trainer.eval_step(params, batch["inputs"], batch["targets"], trainer.put(weights[mine]))
    loss_sum += float(loss)
    correct_sum += float(correct)
  return {"loss": loss_sum / n, "accuracy": correct_sum / n, "n_triplets": n}


def embed_items(trainer: Trainer, params, items, batch_size: int) -> np.ndarray:
  """[len(items), head_dim] head outputs of every item (padded batches, sharded)."""
  n, out = len(items), []
  for start in range(0, n, batch_size):
    ids = np.minimum(np.arange(start, start + batch_size), n - 1)
    local = items.load(ids[_process_slice(batch_size)])
    out.append(np.asarray(trainer.embed(params, trainer.put(local))))
  return np.concatenate(out)[:n]


# ------------------------------------------------------------------------------------------------
# Building a run from its config
# ------------------------------------------------------------------------------------------------


def _dtype(name: str):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build_backbone(config):
  """(backbone, kind) from the config: a registered backbone from a local checkpoint, or random."""
  from aligned.backbones import build_backbone as build

  random_config = config.random_backbone.to_dict() if config.random_backbone else None
  return build(config.backbone, config.checkpoint, random_config, seed=config.seed)


def build_items(config, backbone, kind: str):
  """The item source the triplet indices point into."""
  d = config.data
  if d.source == "synthetic":
    return student_data.SyntheticImages(d.synthetic.n_items, d.synthetic.image_size, seed=d.synthetic.seed)
  if d.source == "things_words":
    if kind != "text":
      raise ValueError("data.source=things_words needs a text backbone (e.g. minilm)")
    from aligned.extract import things_texts

    return student_data.TextItems(things_texts(d.template)[1], backbone)
  if d.source == "tfds":
    if kind != "image":
      raise ValueError("data.source=tfds needs an image backbone")
    from aligned.extract import TfdsSource

    size = d.image_size or backbone.image_size
    normalization = d.normalization if d.preprocessing == "backbone" else "none"
    return student_data.ImageItems(
      TfdsSource(d.tfds_name, d.tfds_split, d.tfds_data_dir), size, normalization, workers=d.workers
    )
  raise ValueError(f"unknown data.source {d.source!r}; expected tfds, things_words or synthetic")


def things_items(config, backbone, kind: str):
  """The 1,854 THINGS objects as student inputs (sorted order), or None when they cannot be made."""
  h = config.human_eval
  if not h.triplets:
    return None
  if kind == "text":
    from aligned.extract import things_texts

    return student_data.TextItems(things_texts(h.template or config.data.template)[1], backbone)
  if h.image_folder:  # one image per THINGS concept, files sorted in the sorted THINGS order
    from aligned.extract import ImageFolderSource

    source = ImageFolderSource(h.image_folder)
    if len(source) != 1854:
      raise DataError(h.image_folder, f"expected 1854 THINGS images (one per concept), found {len(source)}")
    size = config.data.image_size or backbone.image_size
    return student_data.ImageItems(source, size, "none", workers=config.data.workers)
  return None


def _check_resume(workdir: pathlib.Path, config) -> None:
  path = workdir / "config.json"
  current = {k: config.to_dict().get(k) for k in _RESUME_KEYS}
  if path.exists():
    saved = json.loads(path.read_text())
    before = {k: saved.get(k) for k in _RESUME_KEYS}
    if json.loads(json.dumps(before)) != json.loads(json.dumps(current)):
      changed = [k for k in _RESUME_KEYS if json.dumps(before[k]) != json.dumps(current[k])]
      raise ValueError(
        f"{workdir} holds a run with other settings ({', '.join(changed)}); use a new --workdir"
      )
  if jax.process_index() == 0:
    artifacts.write_json(path, config.to_dict())


def initialize_distributed(config) -> None:
  """jax.distributed for multi-process runs (a TPU pod slice detects everything itself)."""
  d = config.distributed
  if d.coordinator:
    # CPU devices of several processes talk through gloo (no effect on GPU/TPU devices). Nothing may
    # touch the backend before `initialize`.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(d.coordinator, num_processes=d.num_processes, process_id=d.process_id)
  elif d.auto:
    jax.distributed.initialize()


class _Preemption:
  """SIGTERM sets a flag; the loop checkpoints and exits at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some notebook runners): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _agree(flag: bool) -> bool:
  """True on every process when it is True on any (a preemption must be acted on together)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def finetune(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Trains (or resumes) the student described by `config` in `workdir`; returns the results."""
  import orbax.checkpoint as ocp

  initialize_distributed(config)
  workdir = pathlib.Path(workdir).absolute()
  if config.loss not in LOSSES:
    raise ValueError(f"unknown loss {config.loss!r}; expected one of {LOSSES}")
  if config.batch_size % jax.device_count():
    raise ValueError(f"batch_size {config.batch_size} is not a multiple of the {jax.device_count()} devices")
  workdir.mkdir(parents=True, exist_ok=True)

  d = config.data
  if d.source == "synthetic" and not d.root:  # the smoke task writes its own AligNet files
    d = config.data = ml_collections.ConfigDict(config.data.to_dict())
    synthetic_root = workdir / "synthetic_alignet"
    written_last = student_data.alignet_path(synthetic_root, "uncertainty_distillation", "train", "synthetic")
    if jax.process_index() == 0 and not written_last.exists():
      source = student_data.SyntheticImages(
        d.synthetic.n_items, d.synthetic.image_size, seed=d.synthetic.seed
      )
      source.write_alignet(synthetic_root, d.synthetic.n_train, d.synthetic.n_val, seed=d.synthetic.seed)
    _barrier("synthetic data")
    d.root, d.samplings, d.transform = str(synthetic_root), ("synthetic",), "uncertainty_distillation"
  elif not d.root:
    raise ValueError("set --config.data.root to a folder of AligNet files (experiments.generate)")
  _check_resume(workdir, config)

  mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
  backbone, kind = build_backbone(config)
  student = Student(backbone, kind, config.head_dim, config.train, _dtype(config.dtype))
  items = build_items(config, backbone, kind)
  train_rows = student_data.TripletRows(
    student_data.alignet_files(d.root, d.transform, "train", d.samplings), n_items=len(items)
  )
  val_rows = {
    s: student_data.TripletRows([p], n_items=len(items), limit=config.eval.max_triplets)
    for s, p in zip(
      d.samplings, student_data.alignet_files(d.root, d.transform, "val", d.samplings), strict=True
    )
    if p.exists()
  }
  human_items = things_items(config, backbone, kind)
  human = (
    triplets_io.read_triplets(
      config.human_eval.triplets, config.human_eval.format, n_objects=len(human_items)
    )
    if human_items is not None
    else None
  )

  o = config.optimizer
  schedule = warmup_cosine(o.learning_rate, config.steps, o.warmup_steps)
  optimizer = make_optimizer(
    learning_rate=schedule,
    decay_rate=o.decay_to_init,
    b1=o.b1,
    b2=o.b2,
    eps=o.eps,
    clip_norm=o.clip_norm,
    trainable=student.trainable_mask,
  )
  trainer = Trainer(student, optimizer, mesh, config.loss, config.tau)

  c = config.checkpointing
  manager = ocp.CheckpointManager(
    workdir / "checkpoints",
    options=ocp.CheckpointManagerOptions(
      max_to_keep=c.keep, enable_async_checkpointing=c.use_async, cleanup_tmp_directories=True
    ),
  )
  latest = manager.latest_step()
  if latest is not None:
    state = manager.restore(latest, args=ocp.args.StandardRestore(trainer.abstract_state(config.seed)))
  else:
    state = trainer.init_state(config.seed)
  trainer.compile()
  start = int(state["step"])
  if start > config.steps:
    raise ValueError(f"{workdir} has a checkpoint at step {start}, beyond steps={config.steps}")

  order = student_data.BatchOrder(len(train_rows), config.batch_size, config.seed)
  log = (
    artifacts.MetricsLog(workdir / "metrics.jsonl", keep_until_step=start)
    if jax.process_index() == 0
    else None
  )
  progress = Progress(config.steps, "steps", enabled=jax.process_index() == 0)

  def evaluate_now(step: int) -> dict:
    record = {"step": step}
    for sampling, rows in val_rows.items():
      m = evaluate_rows(trainer, state["params"], rows, items, config.batch_size)
      record[f"val/{sampling}/loss"], record[f"val/{sampling}/accuracy"] = m["loss"], m["accuracy"]
    if human_items is not None:
      embeddings = embed_items(trainer, state["params"], human_items, config.batch_size)
      sims = triplet_similarities(embeddings, human.triplets, "dot")
      record["human/accuracy"] = triplet_metrics(sims, human.counts)["accuracy"]
      record["_embeddings"] = embeddings
    return record

  def check_finite(step: int) -> None:
    bad = int(state["bad_step"])
    if bad >= 0:
      rows = order.rows(bad)
      where = sorted({f"{p.name} row {r}" for p, r in (train_rows.locate(int(x)) for x in rows[:3])})
      raise FloatingPointError(
        f"non-finite loss or gradient at step {bad} (batch rows {rows[:3].tolist()}...: {', '.join(where)}); "
        f"the update was not applied and nothing after step {bad} was saved; the last checkpoint is "
        f"step {manager.latest_step()}. Lower optimizer.learning_rate or set optimizer.clip_norm."
      )

  def save(step: int, force: bool = False) -> None:
    if force or step % c.every == 0:
      check_finite(step)  # never save after a step that was not applied
      if manager.latest_step() != step:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)

  t0, steps_done, window = time.perf_counter(), 0, []
  evals: list[dict] = []
  prefetch = student_data.Prefetcher(
    train_rows, items, order, start, config.steps, jax.process_index(), jax.process_count(), depth=d.prefetch
  )
  pending = None
  try:
    if start == 0 and config.eval.every:  # where fine-tuning starts from (pretrained + fresh head)
      record = evaluate_now(0)
      record.pop("_embeddings", None)
      evals.append(record)
      if log:
        log.write(record)
    t0 = time.perf_counter()
    with _Preemption() as preemption:
      for step in range(start, config.steps):
        got, local = prefetch.next()
        assert got == step, (got, step)
        state, metrics = trainer.train_step(state, trainer.put_batch(local))
        if pending is not None:
          window.append(jax.device_get(pending))
        pending = metrics
        if jax.default_backend() == "cpu":  # keep one step in flight (simulated devices share 2 cores)
          jax.block_until_ready(metrics)
        done = step + 1
        steps_done += 1
        if done % config.log_every == 0 or done == config.steps:
          window.append(jax.device_get(pending))
          pending = None
          check_finite(done)
          record = {"step": done, **{k: float(np.mean([w[k] for w in window])) for k in window[0]}}
          record["learning_rate"] = float(schedule(done - 1))
          window = []
          if log:
            log.write(record)
          progress.update(done, loss=record["loss"], acc=record["accuracy"])
        if config.eval.every and (done % config.eval.every == 0) and done != config.steps:
          record = evaluate_now(done)
          record.pop("_embeddings", None)
          evals.append(record)
          if log:
            log.write(record)
        save(done)
        # Multi-process runs agree on a preemption at logging steps (one tiny all-gather).
        at_sync = jax.process_count() == 1 or done % config.log_every == 0
        if at_sync and _agree(preemption.requested):
          save(done, force=True)
          manager.wait_until_finished()
          return {"status": "preempted", "step": done, "workdir": str(workdir)}
    wall = time.perf_counter() - t0
    save(config.steps, force=True)
    manager.wait_until_finished()
    final = evaluate_now(config.steps)
    embeddings = final.pop("_embeddings", None)
    if log:
      log.write(final)
  finally:
    prefetch.close()
    if log:
      log.close()
  results = {
    "status": "completed",
    "steps": config.steps,
    "resumed_from_step": start,
    "backbone": config.backbone,
    "train": config.train,
    "loss": config.loss,
    "batch_size": config.batch_size,
    "n_train_triplets": len(train_rows),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "steps_per_s": steps_done / wall if steps_done else None,
    "examples_per_s": steps_done * config.batch_size / wall if steps_done else None,
    "final": final,
    "evaluations": evals,
  }
  item_embeddings = (
    embed_items(trainer, state["params"], items, config.batch_size) if config.save_item_embeddings else None
  )
  if jax.process_index() == 0:
    if item_embeddings is not None:  # every training item, in item (index) order
      artifacts.save_npy(workdir / "item_embeddings.npy", item_embeddings.astype(np.float32))
      results["item_embeddings"] = str(workdir / "item_embeddings.npy")
    if embeddings is not None:
      artifacts.save_npy(workdir / "things_embeddings.npy", embeddings.astype(np.float32))
      results["things_embeddings"] = str(workdir / "things_embeddings.npy")
    plots.plot_training_curves(workdir / "metrics.jsonl", workdir / "plots" / "training.png")
    artifacts.write_json(workdir / "results.json", results)
  return results


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def restore_params(workdir: str | os.PathLike, step: int | None = None) -> dict:
  """The parameters of a run's checkpoint (the latest by default), as host numpy arrays."""
  import orbax.checkpoint as ocp

  manager = ocp.CheckpointManager(
    pathlib.Path(workdir).absolute() / "checkpoints", item_handlers=ocp.StandardCheckpointHandler()
  )
  step = manager.latest_step() if step is None else step
  if step is None:
    raise DataError(workdir, "no checkpoint")
  # Restore onto this process's first device whatever mesh wrote the checkpoint.
  metadata = manager.item_metadata(step).tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  return jax.tree.map(np.asarray, restored["params"])


def format_results(results: dict) -> str:
  if results["status"] == "preempted":
    return f"preempted at step {results['step']}: checkpoint written; rerun the same command to resume"
  final = results["final"]
  lines = [
    f"student {results['backbone']} ({results['train']}), {results['steps']} steps, {results['loss']} loss"
  ]
  for key, value in final.items():
    if key != "step":
      lines.append(f"  {key:32s} {value:.4f}")
  if results["steps_per_s"]:
    lines.append(f"  {results['steps_per_s']:.3g} steps/s, {results['examples_per_s']:.3g} triplets/s")
  return "\n".join(lines)
