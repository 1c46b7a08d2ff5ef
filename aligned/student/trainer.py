"""The student's train state and its pure, jitted steps.

`Trainer.create(student, optimizer, mesh, loss, tau, seed)` builds everything at once: the abstract
state with its shardings (parameters FSDP-sharded over `fsdp` when that axis is > 1, see
`aligned.distributed`), the jitted `init`, `train_step` (state donated) and `eval_step`, and `embed`.
Nothing has to be called in a particular order.

Loss: predictions `softmax(d / tau)` of raw dot products `d` of head outputs; targets
`softmax(similarities)` of the file's similarities, with no temperature (the stored similarities
carry the teacher's calibrated uncertainty). `LOSSES` maps a name to its per-triplet function:
`jsd` (the release's default), `kl` (KL(targets || predictions)), `contrastive` (hard label: pair
(0, 1) is the most similar). A step whose loss or gradient norm is not finite is not applied, and
`bad_step` records the first such step on the device.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aligned import distributed, odd_one_out
from aligned.backbones.student import Student

LOSSES: dict[str, Callable[[jax.Array, jax.Array, float], jax.Array]] = {
  "jsd": lambda sims, targets, tau: odd_one_out.jensen_shannon_divergence(
    sims, target_sims=targets, temperature=tau
  ),
  "kl": lambda sims, targets, tau: odd_one_out.kl_divergence(sims, target_sims=targets, temperature=tau),
  "contrastive": lambda sims, targets, tau: odd_one_out.contrastive_loss(sims, temperature=tau),
}


def triplet_loss(sims: jax.Array, targets: jax.Array, loss: str, tau: float) -> jax.Array:
  """Per-triplet loss of `[b, 3]` raw dot products against `[b, 3]` target similarities."""
  if loss not in LOSSES:
    raise ValueError(f"unknown loss {loss!r}; expected one of {tuple(LOSSES)}")
  return LOSSES[loss](sims, targets, tau)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32: steps applied or skipped
  bad_step: jax.Array  # [] int32: first step whose update was not finite (-1: none)
  params: Any
  opt_state: Any

  def to_dict(self) -> dict:
    """The checkpoint layout (a plain dict of the four fields)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def student_losses(student: Student, params, inputs: dict, targets: jax.Array, loss: str, tau: float):
  """(per-triplet losses [b], raw dot products [b, 3]) of the student on inputs [b, 3, ...]."""
  sims = odd_one_out.pair_similarities(student.triplet_embed(params, inputs), "dot")
  return triplet_loss(sims, targets, loss, tau), sims


def train_step(state: TrainState, batch: dict, *, student: Student, optimizer, loss: str, tau: float):
  """One update on a batch {inputs: [b, 3, ...], targets: [b, 3]}: (new state, metrics)."""

  def mean_loss(params):
    per, sims = student_losses(student, params, batch["inputs"], batch["targets"], loss, tau)
    return jnp.mean(per), sims

  (value, sims), grads = jax.value_and_grad(mean_loss, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(value) & jnp.isfinite(grad_norm)

  def keep(new, old):
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

  new_state = TrainState(
    step=state.step + 1,
    bad_step=jnp.where((state.bad_step < 0) & ~ok, state.step, state.bad_step),
    params=keep(params, state.params),
    opt_state=keep(opt_state, state.opt_state),
  )
  metrics = {
    "loss": value,
    "accuracy": jnp.mean(odd_one_out.odd_one_out_correct(sims)),
    "grad_norm": grad_norm,
  }
  return new_state, metrics


def eval_step(params, inputs, targets, weights, *, student: Student, loss: str, tau: float):
  """Weighted sums of the loss and of correct triplets (weights 0 mark padding rows)."""
  per, sims = student_losses(student, params, inputs, targets, loss, tau)
  return jnp.sum(per * weights), jnp.sum(odd_one_out.odd_one_out_correct(sims) * weights)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The compiled pieces of one run. Build it with `Trainer.create`."""

  student: Student
  mesh: Mesh
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings (a restore target)
  init: Callable[[], TrainState]
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
  eval_step: Callable[..., tuple[jax.Array, jax.Array]]
  embed: Callable[[Any, dict], jax.Array]

  @classmethod
  def create(
    cls,
    student: Student,
    optimizer,
    mesh: Mesh,
    loss: str = "jsd",
    tau: float = 100.0,
    seed: int = 0,
    fsdp_min_size: int = 1 << 14,
  ):
    if loss not in LOSSES:
      raise ValueError(f"unknown loss {loss!r}; expected one of {tuple(LOSSES)}")

    def init_state(rng):
      params = student.init(rng)
      return TrainState(jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32), params, optimizer.init(params))

    rng = jax.random.key(seed)
    shapes = jax.eval_shape(init_state, rng)
    sharding = distributed.state_shardings(shapes, mesh, fsdp_min_size)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, sharding)
    batch, replicated = NamedSharding(mesh, P(distributed.BATCH_AXES)), NamedSharding(mesh, P())
    step = functools.partial(train_step, student=student, optimizer=optimizer, loss=loss, tau=tau)
    return cls(
      student=student,
      mesh=mesh,
      abstract_state=abstract,
      init=functools.partial(jax.jit(init_state, out_shardings=sharding), rng),
      train_step=jax.jit(
        step, donate_argnums=0, in_shardings=(sharding, batch), out_shardings=(sharding, replicated)
      ),
      eval_step=jax.jit(
        functools.partial(eval_step, student=student, loss=loss, tau=tau), out_shardings=replicated
      ),
      embed=jax.jit(student.embed, out_shardings=replicated),
    )

  @property
  def sharded_params(self) -> tuple[int, int]:
    """(parameter arrays split over `fsdp`, all parameter arrays)."""
    specs = [a.sharding.spec for a in jax.tree.leaves(self.abstract_state.params)]
    return sum("fsdp" in spec for spec in specs), len(specs)

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(distributed.BATCH_AXES))

  def put(self, local):
    """This process's rows (an array or a tree of them) -> global arrays sharded over every device."""
    return distributed.put_global(self.batch_sharding, local)

  def put_batch(self, local: dict) -> dict:
    return {"inputs": self.put(local["inputs"]), "targets": self.put(local["targets"])}


def state_from_dict(tree: dict) -> TrainState:
  """A TrainState from its checkpoint layout (`TrainState.to_dict`)."""
  return TrainState(**{k: tree[k] for k in ("step", "bad_step", "params", "opt_state")})
