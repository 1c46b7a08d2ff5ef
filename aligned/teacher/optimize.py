"""Fitting the teacher transform: sharded, jit-compiled Adam on full or large batches.

Mesh -> data placement -> loss (matrix or chunked path) -> jitted step -> loop. Triplets are sharded
over the `data` axis of the mesh; parameters and embeddings are replicated. The same code runs on 1
CPU, 8 simulated CPU devices, a GPU or a TPU slice, and gives the same fit within float tolerance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aligned.progress import Progress
from aligned.teacher import model
from aligned.teacher.model import Hyperparams, TripletTargets
from aligned.triplet_similarities import triplet_similarities

Path = Literal["auto", "matrix", "chunked"]
# Up to this many objects the [n, n] similarity matrix is cheap: build it once per step.
MATRIX_PATH_MAX_OBJECTS = 20_000


@dataclasses.dataclass(frozen=True)
class FitOptions:
  steps: int = 300
  batch_size: int = 0  # 0: full batch (one step = one epoch)
  seed: int = 0
  path: Path = "auto"
  chunk: int = 16_384  # triplets per scan step on the chunked path
  init_scale: float | None = None  # W = init_scale * I; default 1 / sqrt(d)
  log_every: int = 50


def choose_path(n_objects: int, path: Path) -> Literal["matrix", "chunked"]:
  if path == "auto":
    return "matrix" if n_objects <= MATRIX_PATH_MAX_OBJECTS else "chunked"
  if path not in ("matrix", "chunked"):
    raise ValueError(f"unknown path {path!r}; expected auto, matrix or chunked")
  return path


def _pad(data: TripletTargets, multiple: int) -> TripletTargets:
  """Pads to a multiple of `multiple` with weight-0 triplets (they contribute nothing)."""
  extra = -(-max(len(data), 1) // multiple) * multiple - len(data)
  return TripletTargets(
    np.concatenate([data.triplets, np.tile(np.array([[0, 1, 2]], np.int32), (extra, 1))]),
    np.concatenate([data.probs, np.full((extra, 3), 1 / 3, np.float32)]),
    np.concatenate([data.weights, np.zeros(extra, np.float32)]),
  )


class Fitter:
  """Holds the compiled step and loss for one (embeddings, hyper-parameters, mesh) combination."""

  def __init__(
    self, x: np.ndarray, mean: float, std: float, hparams: Hyperparams, options: FitOptions, mesh: Mesh
  ):
    self.mean, self.std, self.hparams, self.options, self.mesh = mean, std, hparams, options, mesh
    self.path = choose_path(len(x), options.path)
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P("data"))
    self.x = jax.device_put(jnp.asarray(x, jnp.float32), self.replicated)
    n_devices = mesh.devices.size
    self.multiple = n_devices * (options.chunk if self.path == "chunked" else 1)
    schedule = optax.cosine_decay_schedule(hparams.learning_rate, max(options.steps, 1), alpha=0.05)
    self.optimizer = optax.adam(schedule)
    self._step = jax.jit(self._step_fn, donate_argnums=(0, 1))
    self._metrics = jax.jit(self._metrics_fn)

  # -- Loss ------------------------------------------------------------------------------------

  def _data_sums(self, params, x, batch, temp=1.0) -> dict:
    """Weighted sums of loss, weight and hits over the global batch.

    Each device works on its own shard of triplets (`shard_map`), with the replicated parameters and
    embeddings; only three scalars are summed across devices (and, in the backward pass, the
    parameter gradients), never the triplets, [n, 3, d] rows or the [n, n] similarity matrix.
    """

    def local(params, x, batch, temp):
      if self.path == "matrix":
        sums = model.data_sums_matrix(params, x, self.mean, self.std, batch, self.hparams, temp)
      else:
        sums = model.data_sums_chunked(
          params, x, self.mean, self.std, batch, self.hparams, self.options.chunk, temp
        )
      return jax.lax.psum(sums, "data")

    return jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(), P("data"), P()), out_specs=P())(
      params, x, batch, jnp.asarray(temp, jnp.float32)
    )

  def _loss_fn(self, params, x, batch):
    sums = self._data_sums(params, x, batch)
    data_loss = sums["loss"] / sums["weight"]
    penalty = model.regularization(params["weights"], self.hparams.regularizer)
    return data_loss + self.hparams.lam * penalty, data_loss

  def _step_fn(self, params, opt_state, x, batch):
    (loss, data_loss), grads = jax.value_and_grad(self._loss_fn, has_aux=True)(params, x, batch)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, data_loss

  def _metrics_fn(self, params, x, batch, temp):
    """Weighted mean loss at temperature `temp` and accuracy (fraction of responses / expected
    agreement) on a batch."""
    sums = self._data_sums(params, x, batch, temp)
    return sums["loss"] / sums["weight"], sums["hits"] / sums["weight"]

  # -- Data placement -----------------------------------------------------------------------------

  def place(self, data: TripletTargets) -> dict:
    arrays = model.batch_arrays(_pad(data, self.multiple), len(self.x))
    if self.path == "chunked":
      del arrays["pairs"]  # no [n, n] matrix on this path
    return jax.device_put(arrays, self.sharded)

  # -- Loop ---------------------------------------------------------------------------------------

  def fit(self, data: TripletTargets, on_log: Callable[[dict], None] | None = None, progress: bool = False):
    """Runs `options.steps` Adam steps on W, b (T = 1) from W = c I; returns (params, history)."""
    if len(data) == 0:
      raise ValueError("no training triplets")
    params = jax.device_put(model.init_params(self.x.shape[1], self.options.init_scale), self.replicated)
    opt_state = self.optimizer.init(params)
    full_batch = self.options.batch_size <= 0 or self.options.batch_size >= len(data)
    placed = self.place(data) if full_batch else None
    rng = np.random.default_rng(self.options.seed)
    order, cursor = rng.permutation(len(data)), 0
    history = []
    reporter = Progress(self.options.steps, "steps", enabled=progress)
    for step in range(1, self.options.steps + 1):
      if full_batch:
        batch = placed
      else:  # minibatches: a fresh permutation per epoch, a function of (seed, epoch)
        if cursor + self.options.batch_size > len(data):
          order, cursor = rng.permutation(len(data)), 0
        batch = self.place(data.select(order[cursor : cursor + self.options.batch_size]))
        cursor += self.options.batch_size
      params, opt_state, loss, data_loss = self._step(params, opt_state, self.x, batch)
      # One step in flight at a time. A step is a large batch, so this costs little, and the CPU
      # runtime can deadlock when steps of several simulated devices queue up behind a collective.
      loss.block_until_ready()
      if step % self.options.log_every == 0 or step == self.options.steps:
        record = {"step": step, "loss": float(loss), "data_loss": float(data_loss)}
        if not np.isfinite(record["loss"]):
          raise FloatingPointError(f"teacher loss is {record['loss']} at step {step} (lr too high?)")
        history.append(record)
        if on_log:
          on_log(record)
        reporter.update(step, loss=record["loss"])
    return params, history

  def evaluate(self, params, data: TripletTargets, temperature: float = 1.0) -> dict:
    loss, accuracy = self._metrics(params, self.x, self.place(data), temperature)
    return {"loss": float(loss), "accuracy": float(accuracy)}

  def similarities(self, params, data: TripletTargets) -> np.ndarray:
    """[n, 3] the teacher's pair similarities of `data.triplets` (for the temperature fit)."""
    z = model.transformed(params, self.x, self.mean, self.std)
    return triplet_similarities(np.asarray(z), data.triplets, self.hparams.similarity)

  def fit_temperature(self, params, data: TripletTargets) -> float:
    """Step 2 of the fit: T alone, W and b fixed (see `aligned.teacher.model`)."""
    return model.fit_temperature(self.similarities(params, data), data)
